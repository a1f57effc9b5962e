"""Multi-process scaling on this CPU: 1 process against 2 under ``torchrun`` (gloo), issue #24.

Two measurements, each in fresh processes (``torch.distributed.run --standalone --nproc_per_node=N`` for N > 1):

- ``squid``: training throughput of the ``cpu`` profile's SQUID (64 px, base width 16), global batch 16 split
  over the processes by ``DistributedDataParallel`` (``cxrlib.methods.squid.train.train_step`` on
  ``cxrlib.distributed.wrap_ddp`` networks, the memory queues all-gathered). Images/s over ``--cycles`` timed
  cycles of ``n_critic`` iterations (after one untimed cycle), measured on rank 0 between two barriers;
- ``ddad``: wall seconds of :func:`cxrlib.methods.ddad.ddad.fit_ddad` for the ``cpu`` profile's six networks
  (``--ddad-epochs`` epochs each on the embedded sample) and ASR-Net, which rank 0 trains alone afterwards:
  networks are spread over processes, so the speed-up is bounded by that serial part.

Each process runs ``--threads`` torch threads (default 1), so 2 processes use 2 cores; a 1-process run with 2
threads is measured beside it as the fair single-process baseline on the same cores. Peak resident memory
(``ru_maxrss``) is rank 0's. Run on a quiet machine from the repository root::

    python benchmarks/bench_ddp.py                 # writes benchmarks/results/ddp_scaling.{json,md}
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_model, measure_in_subprocess  # noqa: E402

#: (processes, threads per process) measured for each workload
SETTINGS = ((1, 1), (1, 2), (2, 1))


def _worker_squid(spec, ctx):
    import torch

    from cxrlib import distributed
    from cxrlib.methods.squid.config import squid_config
    from cxrlib.methods.squid.generator import build_models
    from cxrlib.methods.squid.train import train_step

    cfg = squid_config("squid", "cpu")
    torch.manual_seed(0)
    gen, disc = build_models(cfg)
    gen_t, disc_t = (distributed.wrap_ddp(m, ctx, torch.device("cpu")) for m in (gen, disc))
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr, betas=cfg.d_betas)
    part = distributed.rank_slice(cfg.batch_size, ctx)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(cfg.batch_size, 1, cfg.image_size, cfg.image_size, generator=g)[part]

    def cycle():
        for it in range(cfg.n_critic):
            train_step(gen_t, disc_t, opt_g, opt_d, x, cfg, g_step=it == 0)

    cycle()
    distributed.barrier(ctx)
    t0 = time.perf_counter()
    for _ in range(spec["cycles"]):
        cycle()
    distributed.barrier(ctx)
    seconds = time.perf_counter() - t0
    images = spec["cycles"] * cfg.n_critic * cfg.batch_size
    return {"seconds": seconds, "images_per_s": images / seconds, "global_batch": cfg.batch_size}


def _worker_ddad(spec, ctx):
    from cxrlib import data as D
    from cxrlib import distributed
    from cxrlib.methods.ddad import ddad

    cfg = ddad.ddad_config("cpu", epochs=spec["ddad_epochs"], refine_epochs=spec["ddad_epochs"], n_unlabelled=100)
    ds = D.load("embedded", size=cfg.image_size)
    split = D.semi_supervised_protocol(ds, cfg.n_unlabelled, cfg.anomaly_rate, seed=0)
    # every rank writes into one run folder: rank 0 creates it and tells the others
    run = distributed.broadcast_object(tempfile.mkdtemp(prefix="bench_ddp_") if ctx.is_main else None, ctx)
    distributed.barrier(ctx)
    t0 = time.perf_counter()
    ddad.fit_ddad(cfg, ds, split, Path(run), seed=0, show_progress=False, log=lambda *_: None)
    seconds = time.perf_counter() - t0  # rank 0: its networks, the wait for the others, then ASR-Net
    if ctx.is_main:
        shutil.rmtree(run, ignore_errors=True)
    return {"seconds": seconds, "networks": 2 * cfg.ensemble + 1, "epochs_per_network": spec["ddad_epochs"]}


def worker(spec: dict, out: Path) -> None:
    import torch

    from cxrlib import distributed

    torch.set_num_threads(spec["threads"])
    ctx = distributed.context()
    result = {"squid": _worker_squid, "ddad": _worker_ddad}[spec["workload"]](spec, ctx)
    if ctx.is_main:
        result["peak_rss_mib_rank0"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out.write_text(json.dumps(result))
    distributed.shutdown(ctx)


def measure(spec: dict, timeout: float) -> dict:
    """One (workload, processes, threads) in fresh processes; rank 0's result or ``{"error": ...}``."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec['procs']}"]
                if spec["procs"] > 1 else None)
    return measure_in_subprocess(__file__, spec, timeout, {"OMP_NUM_THREADS": str(spec["threads"])}, launcher)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Multi-process scaling on the CPU (torchrun, gloo)", "",
             f"{m['cpu']}, {m['logical_cpus']} logical CPUs; torch {m['torch']}, Python {m['python']}; commit "
             f"{report['commit']}. Command: `{report['command']}`.", "",
             "| workload | processes | threads per process | result | speed-up vs 1 process, same cores | "
             "peak RSS rank 0 (MiB) |", "| --- | --- | --- | --- | --- | --- |"]
    rows = report["rows"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['workload']} | {r['procs']} | {r['threads']} | error: {r['error']} | | |")
            continue
        base = next((b for b in rows if b["workload"] == r["workload"] and b["procs"] == 1
                     and b["threads"] == r["procs"] * r["threads"] and "error" not in b), None)
        if r["workload"] == "squid":
            value = f"{r['images_per_s']:.1f} images/s (global batch {r['global_batch']})"
            speed = f"{r['images_per_s'] / base['images_per_s']:.2f}×" if base and r["procs"] > 1 else ""
        else:
            value = f"{r['seconds']:.1f} s for {r['networks']} networks × {r['epochs_per_network']} epochs"
            speed = f"{base['seconds'] / r['seconds']:.2f}×" if base and r["procs"] > 1 else ""
        lines.append(f"| {r['workload']} | {r['procs']} | {r['threads']} | {value} | {speed} | "
                     f"{r['peak_rss_mib_rank0']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=["squid", "ddad"], choices=["squid", "ddad"])
    p.add_argument("--cycles", type=int, default=10, help="timed SQUID cycles (default 10)")
    p.add_argument("--ddad-epochs", type=int, default=2, help="epochs per DDAD network (default 2)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker), Path(args.worker_out))
        return 0
    import torch

    rows = []
    for workload in args.workloads:
        for procs, threads in SETTINGS:
            spec = {"workload": workload, "procs": procs, "threads": threads, "cycles": args.cycles,
                    "ddad_epochs": args.ddad_epochs}
            print(f"{workload}: {procs} process(es) × {threads} thread(s)", flush=True)
            rows.append({**spec, **measure(spec, args.timeout)})
            print("   ", {k: v for k, v in rows[-1].items() if k not in spec}, flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    report = {"machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
                          "python": platform.python_version()},
              "commit": commit, "command": "python benchmarks/bench_ddp.py " + " ".join(argv or sys.argv[1:]),
              "rows": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "ddp_scaling.json").write_text(json.dumps(report, indent=1))
    (args.out_dir / "ddp_scaling.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
