"""Multi-process training with torchrun (gloo, CPU): 2 processes against 1, resume, one set of checkpoints.

Each test launches ``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py ...``
(the same module ``torchrun`` runs) on tiny models, so the whole file takes well under a minute. Marked
``distributed``: ``pytest -m "not distributed"`` skips them.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlib import distributed

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("ddp_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _run(mode, out, *extra, procs=2):
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
                if procs > 1 else [sys.executable])
    r = subprocess.run([*launcher, str(WORKER), mode, str(out), *extra], env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads((Path(out) / f"report_rank{k}.json").read_text()) for k in range(procs)]


def test_one_process_context_is_inert():
    ctx = distributed.context()
    assert (ctx.rank, ctx.world, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert distributed.rank_slice(16, ctx) == slice(0, 16)
    net = torch.nn.Linear(2, 2)
    assert distributed.wrap_ddp(net, ctx, torch.device("cpu")) is net and distributed.unwrap(net) is net
    t = torch.arange(6.0).view(1, 3, 2)
    assert distributed.all_gather_rows(t) is t
    with pytest.raises(ValueError, match="does not divide"):
        distributed.rank_slice(15, distributed.DistContext(rank=1, world=2))
    assert distributed.rank_slice(16, distributed.DistContext(rank=1, world=2)) == slice(8, 16)


def test_squid_two_processes_reproduce_one_without_batch_coupling(tmp_path):
    """With BatchNorm on running statistics nothing couples the images of a batch, so 2 processes holding half of
    each global batch must give one process's weights and memory queues, up to the order of float sums; the
    replicas of the two ranks are identical (DDP's gradient average; the queue's all-gather in rank order)."""
    one = _run("replicas", tmp_path / "one", "--frozen-bn", procs=1)[0]
    r0, r1 = _run("replicas", tmp_path / "two", "--frozen-bn")
    for key in ("params", "queues"):
        assert r0[key] == r1[key], key
        assert np.allclose(r0[key], one[key], rtol=0, atol=1e-6), key


def test_squid_replicas_agree_with_batchnorm_on_local_statistics(tmp_path):
    """Training-mode BatchNorm on CPU normalises each process's half batch (no SyncBatchNorm on CPU): the ranks
    still hold identical replicas and queues; they differ from one process by the local statistics."""
    r0, r1 = _run("replicas", tmp_path / "two")
    assert r0["params"] == r1["params"] and r0["queues"] == r1["queues"]


def test_squid_torchrun_resumes_and_writes_one_set_of_checkpoints(tmp_path):
    straight = tmp_path / "straight"
    _run("squid", straight)
    staged = tmp_path / "staged"
    reports = _run("squid", staged, "--max-epochs", "1")
    assert [r["finished"] for r in reports] == [False, False]
    reports = _run("squid", staged, "--resume")
    assert [r["finished"] for r in reports] == [True, True]
    assert sorted(p.name for p in staged.glob("*.pt")) == ["best.pt", "last.pt"]
    a = torch.load(straight / "last.pt", weights_only=False)
    b = torch.load(staged / "last.pt", weights_only=False)
    assert len(b["history"]) == 2
    for net in ("gen", "disc"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), (net, k)


def test_ddad_networks_spread_over_processes_equal_one_process(tmp_path):
    """DDAD's networks are independent: rank r trains networks r, r + W, ...; every checkpoint, ASR-Net included,
    is bit-identical to one process's, also when the 2-process run is stopped and resumed."""
    from cxrlib.methods.ddad import ddad

    _run("ddad", tmp_path / "one", procs=1)
    reports = _run("ddad", tmp_path / "two", "--max-epochs", "3")
    assert not all(r["finished"] for r in reports)
    reports = _run("ddad", tmp_path / "two", "--resume")
    assert all(r["finished"] for r in reports)
    names = ddad.network_names(3)  # the six reconstruction networks and "refine"
    assert sorted(p.stem for p in (tmp_path / "two").glob("*.pt")) == sorted(names)
    for name in names:
        a = torch.load(tmp_path / "one" / f"{name}.pt", weights_only=False)["net"]
        b = torch.load(tmp_path / "two" / f"{name}.pt", weights_only=False)["net"]
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_patchcore_feature_extraction_sharded_over_processes_builds_the_same_bank(tmp_path):
    """Each rank extracts a contiguous shard of the images, every rank gathers all the features in order, and rank
    0 alone builds the bank and writes model.pt: the same bank and threshold as one process."""
    one = _run("patchcore", tmp_path / "one", procs=1)[0]
    r0, r1 = _run("patchcore", tmp_path / "two")
    assert one["wrote"] and r0["wrote"] and not r1["wrote"]
    a = torch.load(tmp_path / "one" / "model.pt", weights_only=False)
    b = torch.load(tmp_path / "two" / "model.pt", weights_only=False)
    assert a["bank"].shape == b["bank"].shape and torch.allclose(a["bank"], b["bank"], atol=1e-5)
    assert a["threshold"] == pytest.approx(b["threshold"], abs=1e-5)


def test_gather_shards_bounds():
    assert distributed.shard_bounds(10, 3) == [0, 3, 6, 10]
    assert distributed.shard_bounds(2, 2) == [0, 1, 2]
