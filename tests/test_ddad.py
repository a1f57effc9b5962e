"""DDAD-ASR: backbones, losses, discrepancy maps, synthetic anomalies, exact resume, NaN guard and the CLI."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrlib import data as D
from cxrlib.checkpoint import TrainingDivergedError
from cxrlib.cli import main
from cxrlib.methods import load_scorer
from cxrlib.methods.ddad import ddad
from cxrlib.methods.ddad.networks import (ConvAE, MemAE, MemoryUnit, RefineNet, build_backbone,
                                          heteroscedastic_loss, memory_entropy)


@pytest.fixture(autouse=True)
def _one_thread(_two_threads):
    # DDAD's networks are tiny: one thread is faster than two, by far when other jobs share the CPU
    torch.set_num_threads(1)
    yield


# ------------------------------------------------------------------------------------------------ models
@pytest.mark.parametrize("name", ["ae", "memae", "aeu"])
def test_backbone_shapes_and_official_widths(name):
    net = build_backbone(name).eval()
    x = torch.randn(3, 1, 64, 64)
    out = net(x)
    assert out["recon"].shape == (3, 1, 64, 64)
    assert ("logvar" in out) == (name == "aeu") and ("att" in out) == (name == "memae")
    if name == "aeu":
        assert out["logvar"].shape == (3, 1, 64, 64)
    if name == "memae":
        assert out["att"].shape == (3, 25)
    assert net.encode(x).shape == (3, 16)
    convs = [m.out_channels for m in net.encoder if isinstance(m, torch.nn.Conv2d)]
    assert convs == [16, 32, 64, 64]
    lin = [m for m in net.linear_enc if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(1024, 2048), (2048, 16)]


def test_refine_net_shapes():
    assert RefineNet(2).eval()(torch.randn(2, 2, 64, 64)).shape == (2, 2, 64, 64)
    assert RefineNet(1, 16).eval()(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)


def test_heteroscedastic_loss_by_hand():
    mean = torch.tensor([0.0, 1.0, 2.0, -1.0]).view(1, 1, 2, 2)
    x = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    logvar = torch.tensor([0.0, math.log(2), math.log(4), -math.log(2)]).view(1, 1, 2, 2)
    loss, weighted, reg = heteroscedastic_loss(mean, logvar, x)
    # squared errors 1, 0, 4, 1 weighted by 1, 1/2, 1/4, 2
    assert weighted.item() == pytest.approx((1 + 0 + 1 + 2) / 4)
    assert reg.item() == pytest.approx((0 + math.log(2) + math.log(4) - math.log(2)) / 4)
    assert loss.item() == pytest.approx(weighted.item() + reg.item())


def test_memory_addressing_and_entropy():
    torch.manual_seed(0)
    mem = MemoryUnit(mem_dim=5, dim=3)
    z = torch.randn(4, 3)
    z_hat, w = mem(z)
    m = mem.weight.detach().numpy()
    logits = z.numpy() @ m.T
    w_ref = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(w.detach().numpy(), w_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z_hat.detach().numpy(), w_ref @ m, rtol=1e-5, atol=1e-6)
    # entropy: uniform weights give log(M), a one-hot gives 0
    assert memory_entropy(torch.full((2, 5), 0.2)).item() == pytest.approx(math.log(5), rel=1e-5)
    assert memory_entropy(torch.eye(5)).item() == pytest.approx(0.0, abs=1e-6)
    # hard shrinkage keeps only weights above the threshold and re-normalises them
    shrunk = MemoryUnit(5, 3, shrink_thres=0.2)
    shrunk.weight.data.copy_(mem.weight.data)
    _, ws = shrunk(z)
    keep = w_ref > 0.2
    np.testing.assert_allclose(ws.detach().numpy().sum(1), 1.0, rtol=1e-5)
    assert ((ws.detach().numpy() > 0) == keep).all()
    assert isinstance(build_backbone("memae"), MemAE) and isinstance(build_backbone("aeu"), ConvAE)


def test_focal_loss_matches_torchvision_and_cross_entropy():
    from torchvision.ops import sigmoid_focal_loss

    torch.manual_seed(1)
    logits = torch.randn(2, 2, 5, 5) * 3
    target = torch.randint(0, 2, (2, 5, 5))
    # two-class softmax = sigmoid of the logit difference; alpha < 0 switches torchvision's class weight off
    ref = sigmoid_focal_loss(logits[:, 1] - logits[:, 0], target.float(), alpha=-1, gamma=2, reduction="mean")
    assert ddad.focal_loss(logits, target, gamma=2).item() == pytest.approx(ref.item(), rel=1e-5)
    assert ddad.focal_loss(logits, target, gamma=0).item() == pytest.approx(F.cross_entropy(logits, target).item(),
                                                                            rel=1e-5)


# ------------------------------------------------------------------------------------------------ scores
def test_discrepancy_maps_on_a_constructed_ensemble():
    x = torch.zeros(1, 1, 2, 2)
    ndm = torch.stack([torch.full((1, 1, 2, 2), v) for v in (0.0, 1.0, 2.0)])  # mean 1, unbiased std 1
    udm = torch.full((3, 1, 1, 2, 2), 3.0)  # mean 3
    m = ddad.discrepancy_maps(x, udm, ndm)
    assert torch.allclose(m["rec"], torch.ones(1, 1, 2, 2))
    assert torch.allclose(m["intra"], torch.ones(1, 1, 2, 2))
    assert torch.allclose(m["inter"], torch.full((1, 1, 2, 2), 2.0))
    mu = ddad.discrepancy_maps(x, udm, ndm, ndm_var=torch.full((1, 1, 2, 2), 4.0))  # AE-U: divided by sigma = 2
    assert torch.allclose(mu["rec"], torch.full((1, 1, 2, 2), 0.25))
    assert torch.allclose(mu["intra"], torch.full((1, 1, 2, 2), 0.5))
    assert torch.allclose(mu["inter"], torch.full((1, 1, 2, 2), 1.0))
    both = ddad.refine_inputs(m, "dual")
    assert both.shape == (1, 2, 2, 2) and torch.equal(both[:, 0], m["inter"][:, 0])
    assert ddad.refine_inputs(m, "intra").shape == (1, 1, 2, 2)


def test_synthetic_anomaly_masks():
    s, n = 64, 6
    pool = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, s, s).contiguous()
    idx = torch.arange(n).repeat(20)
    x = pool[idx]
    g = torch.Generator().manual_seed(0)
    xs, mask = ddad.synthetic_anomalies(x, pool, idx, g, p=1.0)
    assert mask.shape == (len(idx), s, s) and mask.dtype == torch.int64
    for i in range(len(idx)):
        m = mask[i].bool()
        rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
        if not m.any():  # alpha drawn as exactly 0: nothing changes
            assert torch.equal(xs[i], x[i])
            continue
        # one axis-aligned square: every pixel of its bounding box is in it
        assert m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert m.sum() == len(rows) * len(cols)
        assert 1 <= len(rows) <= 24 and 1 <= len(cols) <= 24  # half-width 3..12, clipped at the border
        assert torch.equal(xs[i, 0][~m], x[i, 0][~m])  # outside the square: untouched
        inside = xs[i, 0][m]
        assert torch.allclose(inside, inside[0].expand_as(inside))  # one blend of two constant images
        v = float(inside[0])
        assert v != float(x[i, 0, 0, 0]) and 0 <= v <= n - 1  # changed, toward another image of the pool
    g = torch.Generator().manual_seed(0)
    xs0, mask0 = ddad.synthetic_anomalies(x, pool, idx, g, p=0.0)
    assert torch.equal(xs0, x) and mask0.sum() == 0
    g = torch.Generator().manual_seed(0)
    _, mh = ddad.synthetic_anomalies(pool[torch.arange(n).repeat(100)], pool, torch.arange(n).repeat(100), g, p=0.5)
    assert 0.4 < mh.flatten(1).any(1).float().mean() < 0.6


# ------------------------------------------------------------------------------------------------ training
def tiny_cfg(**kw):
    base = dict(image_size=32, hidden=32, epochs=2, batch_size=16, n_unlabelled=20, refine_epochs=2,
                refine_mid=8, refine_batch_size=16)
    base.update(kw)
    return ddad.ddad_config("quick", **base)


@pytest.fixture(scope="module")
def tiny_data():
    ds = D.load("embedded", size=32)
    split = D.semi_supervised_protocol(ds, 20, 0.6, seed=0)
    split.train = split.train[:48]
    return ds, split


def _all_weights(folder, cfg):
    return {n: torch.load(folder / f"{n}.pt", weights_only=False)["net"] for n in ddad.network_names(cfg.ensemble)}


@pytest.mark.parametrize("fast", [False, True], ids=["fp32", "bf16-channels-last"])
def test_exact_resume_across_networks(tmp_path, tiny_data, fast):
    ds, split = tiny_data
    cfg = tiny_cfg(precision="bf16", channels_last=True) if fast else tiny_cfg()
    quiet = dict(show_progress=False, log=lambda *_: None)
    full = ddad.fit_ddad(cfg, ds, split, tmp_path / "a", seed=3, **quiet)
    assert full["finished"]
    # stop in the middle of the 2nd UDM network, then inside ASR-Net, then finish
    part = ddad.fit_ddad(cfg, ds, split, tmp_path / "b", seed=3, max_epochs=3, **quiet)
    assert not part["finished"] and set(part["states"]) == {"udm0", "udm1"}
    part = ddad.fit_ddad(cfg, ds, split, tmp_path / "b", seed=3, resume=True, max_epochs=10, **quiet)
    assert not part["finished"] and part["states"]["refine"]["epoch"] == 1
    done = ddad.fit_ddad(cfg, ds, split, tmp_path / "b", seed=3, resume=True, **quiet)
    assert done["finished"]
    a, b = _all_weights(tmp_path / "a", cfg), _all_weights(tmp_path / "b", cfg)
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    with pytest.raises(Exception, match="another run"):
        ddad.fit_ddad(cfg, ds, split, tmp_path / "b", seed=4, resume=True, **quiet)


def test_ndm_reuse_is_the_same_as_training_it(tmp_path, tiny_data):
    """WSCXR Table I's protocol changes only the pool: a run taking the NDM of another trains the same model."""
    import copy

    from cxrlib.checkpoint import CheckpointError

    ds, split = tiny_data
    other = copy.deepcopy(split)
    other.unlabelled = split.unlabelled[::2]  # another pool, the same labelled normals
    quiet = dict(show_progress=False, log=lambda *_: None)
    cfg_a, cfg_b = tiny_cfg(), tiny_cfg(n_unlabelled=10, anomaly_rate=1.0)
    ddad.fit_ddad(cfg_a, ds, split, tmp_path / "a", seed=1, **quiet)
    ddad.fit_ddad(cfg_b, ds, other, tmp_path / "scratch", seed=1, **quiet)
    ddad.fit_ddad(cfg_b, ds, other, tmp_path / "reused", seed=1, ndm_from=tmp_path / "a", **quiet)
    scratch, reused = _all_weights(tmp_path / "scratch", cfg_b), _all_weights(tmp_path / "reused", cfg_b)
    for name in scratch:  # NDM copied, UDM and ASR-Net trained: all bit-identical to training everything
        assert all(torch.equal(scratch[name][k], reused[name][k]) for k in scratch[name]), name
    st = torch.load(tmp_path / "reused" / "ndm0.pt", weights_only=False)
    assert st["reused_from"].endswith("ndm0.pt") and st["cfg"] == cfg_b.training_dict()
    ddad.finalize_ddad(tmp_path / "reused", cfg_b, ds, other, seed=1)  # the copies pass the run's own checks
    fewer = copy.deepcopy(other)
    fewer.train = other.train[:32]
    for kw, message in [(dict(seed=2, split=other), "seed is 1"),
                        (dict(seed=1, split=fewer), "other normal images"),
                        (dict(seed=1, split=other, cfg=tiny_cfg(n_unlabelled=10, latent=8)), "configuration")]:
        with pytest.raises(CheckpointError, match=message):
            ddad.fit_ddad(kw.get("cfg", cfg_b), ds, kw["split"], tmp_path / "bad", seed=kw["seed"],
                          ndm_from=tmp_path / "a", **quiet)
    # resuming in a folder that holds networks of other images is refused too
    with pytest.raises(CheckpointError, match="other images"):
        ddad.fit_ddad(cfg_b, ds, fewer, tmp_path / "reused", seed=1, resume=True, **quiet)


def test_cpu_profile_is_the_official_recipe_in_mixed_precision():
    full, cpu = ddad.ddad_config("full"), ddad.ddad_config("cpu")
    assert (full.precision, full.channels_last) == ("fp32", False)
    assert (cpu.precision, cpu.channels_last) == ("bf16", True)
    # every other setting (epochs, batches, learning rates, widths, pool) is the official one
    assert cpu.replace(precision="fp32", channels_last=False) == full
    with pytest.raises(ValueError, match="precision"):
        ddad.ddad_config("full", precision="fp8")


def test_bf16_training_keeps_fp32_weights_and_scores_like_fp32(tmp_path, tiny_data):
    ds, split = tiny_data
    cfg = tiny_cfg(precision="bf16", channels_last=True)
    ddad.fit_ddad(cfg, ds, split, tmp_path, seed=0, show_progress=False, log=lambda *_: None)
    ddad.finalize_ddad(tmp_path, cfg, ds, split, seed=0)
    ck = torch.load(tmp_path / "model.pt", weights_only=False)
    assert all(v.dtype in (torch.float32, torch.int64) for w in ck["weights"].values() for v in w.values())
    scorer = load_scorer(tmp_path / "model.pt")
    s = scorer.scores(ds.images[split.val])
    assert all(np.isfinite(v).all() and v.dtype == np.float64 for v in s.values())


def test_nan_guard_names_network_epoch_and_term(tmp_path, tiny_data, monkeypatch):
    ds, split = tiny_data
    monkeypatch.setattr(ddad, "memory_entropy", lambda w: torch.tensor(float("nan")))
    with pytest.raises(TrainingDivergedError, match=r"UDM .*network 1/3, epoch 1.*'memory entropy' is nan"):
        ddad.fit_ddad(tiny_cfg(backbone="memae"), ds, split, tmp_path, show_progress=False, log=lambda *_: None)


def test_empty_pool_is_an_error(tmp_path, tiny_data):
    ds, _ = tiny_data
    with pytest.raises(D.DataError, match="unlabelled pool"):
        ddad.fit_ddad(tiny_cfg(), ds, D.development_split(ds, 0), tmp_path, show_progress=False)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_train_score_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train", "--method", "ddad", "--out", str(out), "--no-progress", "--epochs", "1", "--refine-epochs", "1",
              "--threads", "1"]
    assert main(common) == 0
    ck = torch.load(out / "model.pt", weights_only=False)
    assert ck["method"] == "ddad" and ck["score"] == "asr" and set(ck["thresholds"]) == set(ddad.SCORES)
    assert ck["threshold"] == ck["thresholds"]["asr"] and ck["split_seed"] == 0 and ck["backbone"] == "ae"
    scorer = load_scorer(out / "model.pt")
    ds = D.load("embedded", size=64)
    imgs = ds.images[:5]
    all_scores = scorer.scores(imgs)
    np.testing.assert_allclose(scorer.score(imgs), all_scores["asr"])
    assert scorer.anomaly_maps(imgs).shape == (5, 64, 64)
    np.testing.assert_allclose(scorer.with_kind("inter").score(imgs), all_scores["inter"])
    assert main(["score", "--checkpoint", str(out / "model.pt"), "--data", "embedded", "--split", "test",
                 "--out", str(tmp_path / "s.csv")]) == 0
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["method"] == "ddad" and res["n"] == 86 and 0 <= res["auroc"] <= 1
    assert ck["train_threads"] == [1]  # --threads 1: recorded, since the benchmark may reuse this run
    # the benchmark reuses the run only for the command that trains it now (B._check_reusable asks ddad)
    from cxrlib import benchmark as B

    B._check_reusable(out / "model.pt", "ddad", common)
    for flags, change in ((["--epochs", "2"], "epochs 1 -> 2"), (["--score", "intra"], "score 'asr' -> 'intra'"),
                          (["--seed", "1"], "seed 0 -> 1"), (["--data", "other.npz"], "data .embedded. -> .other.npz."), (["--n-unlabelled", "50"], "n_unlabelled 100 -> 50"),
                          (["--profile", "cpu", "--data", "embedded"], "precision 'fp32' -> 'bf16'")):
        with pytest.raises(B.CommandError, match=f"trained with another configuration .*{change}"):
            B._check_reusable(out / "model.pt", "ddad", common + flags)
    # the notebooks' reuse (matching_model) also refuses a model of another development-split definition
    from cxrlib.checkpoint import matching_model

    said = []
    assert matching_model(out / "model.pt", ck["cfg"], 0, ck["data"], log=said.append) is not None
    torch.save({**ck, "split_version": "image-v1"}, tmp_path / "old.pt")
    assert matching_model(tmp_path / "old.pt", ck["cfg"], 0, ck["data"], log=said.append) is None
    assert "trained on development split 'image-v1'" in said[-1]
    # another --score on the finished run only re-finalises: same weights, another chosen kind
    assert main(common + ["--score", "intra", "--resume"]) == 0
    ck2 = torch.load(out / "model.pt", weights_only=False)
    assert ck2["score"] == "intra" and ck2["threshold"] == ck["thresholds"]["intra"]
    assert torch.equal(ck2["weights"]["refine"]["model.0.weight"], ck["weights"]["refine"]["model.0.weight"])


@pytest.mark.parametrize("flags, message", [(["--n-unlabelled", "0"], "pool is empty"),
                                            (["--anomaly-rate", "1.5"], r"outside \[0, 1\]"),
                                            (["--anomaly-rate", "-0.1"], r"outside \[0, 1\]")])
def test_cli_bad_pool_is_one_error_line(tmp_path, capsys, flags, message):
    import re

    rc = main(["train", "--method", "ddad", "--out", str(tmp_path), "--no-progress", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and re.search(message, err[0])


def test_cli_overrides_reach_the_config():
    """``--batch-size`` and ``--n-unlabelled`` (used by the phantom localisation rows) override the profile."""
    from cxrlib.cli import build_parser

    args = build_parser("ddad").parse_args(["train", "--method", "ddad", "--profile", "cpu", "--out", "x",
                                            "--batch-size", "16", "--n-unlabelled", "100"])
    cfg = ddad._config_from_args(args)
    assert (cfg.batch_size, cfg.n_unlabelled) == (16, 100)
    assert cfg.epochs == ddad.ddad_config("cpu").epochs and cfg.precision == "bf16"
    assert ddad._config_from_args(build_parser("ddad").parse_args(
        ["train", "--method", "ddad", "--profile", "cpu", "--out", "x"])).batch_size == 64


def test_fp16_training_with_gradient_scaling_finishes(tmp_path, tiny_data):
    ds, split = tiny_data
    cfg = tiny_cfg(precision="fp16", ensemble=2, refine_epochs=1)
    out = ddad.fit_ddad(cfg, ds, split, tmp_path, seed=0, show_progress=False, log=lambda *_: None)
    assert out["finished"]
    for name in ddad.network_names(2):
        net = torch.load(tmp_path / f"{name}.pt", weights_only=False)["net"]
        assert all(torch.isfinite(v).all() for v in net.values() if v.is_floating_point()), name
