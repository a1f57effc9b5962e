"""Speed and memory of DDAD-ASR training on this machine: the official fp32 recipe (``full`` profile) beside the
same recipe in bf16 mixed precision with channels-last tensors (``cpu`` profile).

Each measurement runs in a fresh subprocess and drives the project's own training code
(``cxrlib.methods.ddad.ddad._fit_backbone`` for one AE / MemAE / AE-U network,
``cxrlib.methods.ddad.ddad._fit_refine`` for ASR-Net, which includes the per-epoch synthetic anomalies and the
six-network discrepancy pass) on as many images as the development split gives that network (UDM: 719
labelled normals + a pool of 700; NDM and ASR-Net: 719), at the profile's batch size. Images are a fixed-seed
random tensor: throughput does not depend on content.

- training throughput: images/s of whole epochs (median over ``--epochs`` timed epochs after one warm-up epoch);
- inference throughput: the fp32 scorer (six reconstruction networks + ASR-Net, every score kind) at batch 64;
- peak resident memory of the subprocess (its own ``ru_maxrss`` at the end; includes Python + torch).

The official DDAD-ASR code (https://github.com/caiyu6666/DDAD-ASR) trains the same networks with a plain fp32
Adam loop, which is what the ``full`` rows run; it is not run here side by side (its data loaders read image
folders and a hard-coded config layout).

Run from the repository root on an otherwise idle machine::

    python benchmarks/bench_ddad.py                # all networks, both profiles, 1 and 2 threads
    python benchmarks/bench_ddad.py --nets ae --threads 1 --epochs 1   # a quick check

Writes ``benchmarks/results/ddad_speed.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETS = ("ae", "memae", "aeu", "refine")
PROFILES = ("full", "cpu")
#: training images per network on the development split of zhanglab128_train.npz
#: (see cxrlib.methods.ddad.ddad.DDADConfig)
N_TRAIN = {"udm": 1419, "ndm": 719, "refine": 719}


def _worker(spec: dict) -> dict:
    import numpy as np
    import torch

    from cxrlib.methods.ddad import ddad

    torch.set_num_threads(spec["threads"])
    backbone = spec["net"] if spec["net"] in ("ae", "memae", "aeu") else "ae"
    cfg = ddad.ddad_config(spec["profile"], backbone=backbone,
                           epochs=spec["epochs"] + 1, refine_epochs=spec["epochs"] + 1)
    g = torch.Generator().manual_seed(0)
    quiet = dict(show_progress=False, log=lambda *_: None, budget=ddad._Budget(None))
    with tempfile.TemporaryDirectory() as tmp:
        if spec["net"] == "refine":
            x = torch.rand(N_TRAIN["refine"], 1, 64, 64, generator=g) * 2 - 1
            nets = [ddad._build(cfg).eval() for _ in range(2 * cfg.ensemble)]
            _, state = ddad._fit_refine(cfg, nets[:cfg.ensemble], nets[cfg.ensemble:], x, Path(tmp) / "r.pt", 0,
                                        "cpu", **quiet)
            n = len(x)
        elif spec["net"] == "infer":
            nets = [ddad._build(cfg).eval() for _ in range(2 * cfg.ensemble)]
            scorer = ddad.DDADScorer(cfg, nets[:cfg.ensemble], nets[cfg.ensemble:], ddad._build_refine(cfg).eval())
            imgs = (np.random.default_rng(0).random((256, 64, 64)) * 255).astype(np.uint8)
            scorer.scores(imgs[:64])
            times = []
            for _ in range(spec["epochs"]):
                t0 = time.perf_counter()
                scorer.scores(imgs)
                times.append(time.perf_counter() - t0)
            return {"images_per_s": len(imgs) / statistics.median(times), "seconds": times}
        else:
            x = torch.rand(N_TRAIN["udm"], 1, 64, 64, generator=g) * 2 - 1
            _, state = ddad._fit_backbone("udm0", cfg, x, Path(tmp) / "n.pt", 0, "cpu", **quiet)
            n = len(x)
    times = [h["seconds"] for h in state["history"][1:]]  # the first epoch is the warm-up
    return {"images_per_s": n / statistics.median(times), "seconds": times, "n_train": n}


def measure(spec: dict, timeout: float) -> dict:
    """One measurement in a fresh subprocess: its result plus ``peak_gib``, or ``{"error": ...}``."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"}
    return json.loads(out.strip().splitlines()[-1])


def _peak_wrapper(spec: dict) -> dict:
    """Run :func:`_worker` and add this process's peak resident memory (KiB on Linux -> GiB)."""
    import resource

    res = _worker(spec)
    res["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return res


def _table(rows: list[dict]) -> str:
    lines = ["| network | threads | full (fp32) img/s | cpu (bf16, channels-last) img/s | speed-up | "
             "peak GiB full | peak GiB cpu |", "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["net"], r["threads"]) for r in rows}, key=lambda k: (list(NETS + ("infer",)).index(k[0]), k[1]))
    for net, th in keys:
        by = {r["profile"]: r for r in rows if r["net"] == net and r["threads"] == th}
        f, c = by.get("full", {}), by.get("cpu", {})
        fs, cs = f.get("images_per_s"), c.get("images_per_s")
        fmt = lambda v, d=1: "" if v is None else f"{v:.{d}f}"  # noqa: E731
        label = {"refine": "ASR-Net (training)", "infer": "scorer, 7 networks (inference, fp32)"}.get(
            net, f"{net} (training)")
        lines.append(f"| {label} | {th} | {fmt(fs) or f.get('error', '')} | {fmt(cs) or c.get('error', '')} | "
                     f"{fmt(cs / fs, 2) + 'x' if fs and cs else ''} | {fmt(f.get('peak_gib'), 2)} | "
                     f"{fmt(c.get('peak_gib'), 2)} |")
    return "\n".join(lines) + "\n"


def _figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r["net"] != "infer" and "images_per_s" in r]
    keys = sorted({(r["net"], r["threads"]) for r in train}, key=lambda k: (NETS.index(k[0]), k[1]))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    w = 0.38
    for j, prof in enumerate(PROFILES):
        vals = [next((r["images_per_s"] for r in train if (r["net"], r["threads"], r["profile"]) == (*k, prof)), 0)
                for k in keys]
        ax.bar([i + (j - 0.5) * w for i in range(len(keys))], vals, w,
               label={"full": "full: fp32 (official)", "cpu": "cpu: bf16 autocast + channels-last"}[prof])
    ax.set_xticks(range(len(keys)), [f"{n}\n{t} thr." for n, t in keys])
    ax.set_yscale("log")
    ax.set_ylabel("training images / s")
    ax.set_title("DDAD-ASR training throughput on this CPU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--nets", default=",".join(NETS + ("infer",)), help="ae,memae,aeu,refine,infer")
    p.add_argument("--profiles", default=",".join(PROFILES))
    p.add_argument("--threads", default="1,2", help="torch threads, comma-separated (default 1,2)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (or inference passes) per measurement")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--report", action="store_true", help="only rewrite the .md and .png from the .json")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_peak_wrapper(json.loads(args.worker))))
        return 0
    out = Path(args.out_dir)
    # a run of a subset replaces those measurements and keeps the others
    old_data = json.loads((out / "ddad_speed.json").read_text()) if (out / "ddad_speed.json").exists() else {}
    # each row keeps the machine, commit and command that measured it: subset re-runs may come from elsewhere
    old = [{"measured": old_data.get("machine", {}), **r} for r in old_data.get("rows", [])]
    rows = []
    if args.report:
        data = json.loads((out / "ddad_speed.json").read_text())
        _write_report(data["machine"], data["rows"], out, args.epochs)
        return 0
    for net in args.nets.split(","):
        for th in map(int, args.threads.split(",")):
            for prof in (args.profiles.split(",") if net != "infer" else ["full"]):
                spec = {"net": net, "profile": prof, "threads": th, "epochs": args.epochs}
                res = {**spec, **measure(spec, args.timeout)}
                rows.append(res)
                print(f"{net:7s} {prof:5s} {th} thr: " + (f"{res['images_per_s']:.1f} img/s, peak "
                      f"{res['peak_gib']:.2f} GiB" if "images_per_s" in res else res["error"]), flush=True)
    new = {(r["net"], r["profile"], r["threads"]) for r in rows}
    rows = [r for r in old if (r["net"], r["profile"], r["threads"]) not in new] + rows
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "cxrlib"], cwd=ROOT, capture_output=True,
                                    text=True).stdout.strip())
    except OSError:
        commit, dirty = "unknown", False
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.lower().startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    command = "python benchmarks/bench_ddad.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "commit": commit + (" (dirty)" if dirty else ""),
            "command": command.strip()}
    rows = [r if "measured" in r else {"measured": meta, **r} for r in rows]
    (out / "ddad_speed.json").write_text(json.dumps({"machine": meta, "rows": rows}, indent=1))
    _write_report(meta, rows, out, args.epochs)
    return 0


def _write_report(meta: dict, rows: list[dict], out: Path, epochs: int) -> None:
    ok = [r for r in rows if "images_per_s" in r]
    failed = [r for r in rows if "images_per_s" not in r]
    groups: dict[str, list[str]] = {}
    for r in rows:
        m = r.get("measured", meta)
        key = (f"CPU: {m.get('cpu')} ({m.get('logical_cpus')} logical CPUs), torch {m.get('torch')}; commit "
               f"{m.get('commit')}; command `{m.get('command')}`")
        groups.setdefault(key, []).append(f"{r['net']} {r['profile']} {r['threads']} thr.")
    where = "".join(f"- {key}: {', '.join(names)}\n" for key, names in groups.items())
    md = ("# DDAD-ASR training speed: fp32 (official recipe, `full`) vs bf16 + channels-last (`cpu`)\n\n"
          + ("Measured on more than one machine; compare rows of one machine only:\n\n" if len(groups) > 1 else "")
          + where + "\n" +
          f"Training: whole epochs of the project's training code on the development split's image counts "
          f"(UDM network: {N_TRAIN['udm']} images at batch 64; ASR-Net: {N_TRAIN['refine']} at batch 8), median of "
          f"{epochs} timed epochs after one warm-up. Inference: the fp32 scorer (6 networks + ASR-Net, all "
          f"score kinds) on 256 images at batch 64. Peak: resident memory of a fresh process per measurement.\n\n"
          + _table(ok))
    if failed:
        md += "\nNot measured (the measurement failed): " + "; ".join(
            f"{r['net']} {r['profile']} {r['threads']} thr. ({r['error']})" for r in failed) + "\n"
    (out / "ddad_speed.md").write_text(md)
    _figure(ok, out / "ddad_speed.png")
    print(md)


if __name__ == "__main__":
    sys.exit(main())
