"""The GPU path, exercised: every method's ``full`` profile trained for one epoch, then scored, on a CUDA machine.

For each method it runs, each in a fresh subprocess, the same commands a user runs::

    python -m cxrlib train --method M --profile full --epochs 1 --precision auto --data D --out OUT/runs/M
    python -m cxrlib score --checkpoint OUT/runs/M/model.pt --data D --split test --out OUT/runs/M/test.csv

and records whether each succeeded, its wall seconds, the scoring images/s that ``score`` prints, and the
peak GPU memory ``nvidia-smi`` saw while it ran (sampled every 0.5 s). The report names the GPU, the driver,
torch and CUDA versions, the precision ``auto`` chose, and the git commit:
``OUT/gpu_check.json`` and ``OUT/gpu_check.md``.

``--dry-run`` runs the same pipeline on the CPU with the ``quick`` profile and the embedded sample (seconds per
method): it keeps this script tested where there is no GPU, and its report says that it measured no GPU.
PatchCore and WSCXR's ``full`` profile needs the ImageNet DenseNet-121 weights (downloaded by torchvision on
first use; see ``cxrlib.features``); offline, their rows fail with that message unless ``--random-backbone``
(implied by ``--dry-run``) trains them on a randomly initialised backbone.

    bash scripts/gpu_check.sh --data PATH/zhanglab128_train.npz       # on a CUDA machine
    bash scripts/gpu_check.sh --dry-run --out /tmp/gpu_check           # anywhere
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("squid", "simsid", "crtsc", "ddad", "patchcore", "wscxr")
TRAINS_NETWORKS = ("squid", "simsid", "crtsc", "ddad")


class GpuMemorySampler:
    """Peak used GPU memory (MiB, summed over GPUs) that ``nvidia-smi`` reports while the ``with`` block runs."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.peak_mib = None
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
                used = sum(float(v) for v in out.split())
                self.peak_mib = used if self.peak_mib is None else max(self.peak_mib, used)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.5)

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join()


def run_step(cmd: list[str], log_path: Path, gpu: bool, timeout: float) -> dict:
    """Run one command, its output to ``log_path``; seconds, exit status, peak GPU memory, the last error line."""
    t0 = time.time()
    with open(log_path, "w") as log, GpuMemorySampler(gpu) as mem:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    text = log_path.read_text(errors="replace")
    lines = text.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    ips = re.findall(r"\(([\d.]+) images/s\)", text)
    error = "" if rc == 0 else (errors or lines or [f"exit status {rc}"])[-1]
    return {"ok": rc == 0, "returncode": rc, "seconds": round(time.time() - t0, 1),
            "gpu_peak_mib": mem.peak_mib, "images_per_s": float(ips[-1]) if ips else None, "error": error}


def environment(dry_run: bool) -> dict:
    import torch

    from cxrlib import precision as P

    cuda = torch.cuda.is_available()
    env = {"dry_run": dry_run, "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
           "gpus": torch.cuda.device_count() if cuda else 0,
           "precision_auto": P.resolve("auto", "cuda" if cuda and not dry_run else "cpu")}
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT).stdout.strip()
    except OSError:
        env["commit"] = ""
    if cuda and shutil.which("nvidia-smi"):
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True).stdout.strip().splitlines()[0]
    return env


def markdown(report: dict) -> str:
    env = report["environment"]
    head = ("Dry run on the CPU (quick profile, embedded sample): no GPU was measured."
            if env["dry_run"] else
            f"{env['gpus']} × {env['gpu']} (driver {env.get('driver', '?')}), torch {env['torch']}, CUDA "
            f"{env['cuda']}; `--precision auto` chose {env['precision_auto']}.")
    lines = [f"# GPU check ({report['profile']} profile, 1 epoch per method)", "",
             head + f" Commit {env['commit']}; data {report['data']}.", "",
             "| method | train | train s | score | score s | scoring images/s | peak GPU MiB | error |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m, r in report["methods"].items():
        tr, sc = r["train"], r.get("score") or {}
        peak = max((v for v in (tr.get("gpu_peak_mib"), sc.get("gpu_peak_mib")) if v is not None), default=None)
        lines.append(f"| {m} | {'ok' if tr['ok'] else 'failed'} | {tr['seconds']} | "
                     f"{'ok' if sc.get('ok') else ('–' if not sc else 'failed')} | {sc.get('seconds', '–')} | "
                     f"{sc.get('images_per_s') or '–'} | {peak if peak is not None else '–'} | "
                     f"{(tr['error'] or sc.get('error') or '').replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="training data (default: embedded in --dry-run)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--dry-run", action="store_true", help="CPU, quick profile, embedded sample")
    p.add_argument("--random-backbone", action="store_true",
                   help="patchcore/wscxr with a randomly initialised backbone (no ImageNet download; implied by "
                        "--dry-run)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per command (default 1800)")
    args = p.parse_args(argv)

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device: run this on a GPU machine, or pass --dry-run to check the script on the CPU",
              file=sys.stderr)
        return 2
    if not args.dry_run and not args.data:
        print("error: pass --data PATH (e.g. zhanglab128_train.npz)", file=sys.stderr)
        return 2
    profile = "quick" if args.dry_run else "full"
    data = args.data or "embedded"
    device = ["--device", "cpu"] if args.dry_run else []
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"profile": profile, "data": str(data), "environment": environment(args.dry_run), "methods": {}}
    for m in args.methods:
        run = args.out / "runs" / m
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        train = [sys.executable, "-m", "cxrlib", "train", "--method", m, "--profile", profile, "--data", str(data),
                 "--out", str(run), "--no-progress", *device]
        if m in TRAINS_NETWORKS:
            train += ["--epochs", "1", "--precision", "auto"]
        elif args.dry_run or args.random_backbone:
            train += ["--weights", "random"]
        print(f"== {m}: {' '.join(train[1:])}", flush=True)
        r = {"train": run_step(train, run / "train.log", not args.dry_run, args.timeout)}
        if r["train"]["ok"]:
            score = [sys.executable, "-m", "cxrlib", "score", "--checkpoint", str(run / "model.pt"), "--data",
                     str(data), "--split", "test", "--out", str(run / "test.csv"), *device]
            r["score"] = run_step(score, run / "score.log", not args.dry_run, args.timeout)
        report["methods"][m] = r
        print(f"   train {'ok' if r['train']['ok'] else 'FAILED'} ({r['train']['seconds']} s)"
              + (f", score {'ok' if r['score']['ok'] else 'FAILED'}" if "score" in r else ""), flush=True)
    tmp = args.out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, args.out / "gpu_check.json")
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if all(r["train"]["ok"] and r.get("score", {}).get("ok") for r in report["methods"].values()) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
