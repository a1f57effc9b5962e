"""Peak memory and images/s of one pass over N generated X-ray-sized images, in memory vs lazy (issue #24).

For each N of ``--sizes`` it generates N grey images (``--image-size`` px, half "normal", half "pneumonia";
smooth random shapes plus noise, so PNG decoding does real work) twice: as a Kaggle-style PNG folder tree
and as an uncompressed ``.npz`` (what ``cxrlib.data.index_npz`` memory-maps). Then, in a fresh subprocess per
(N, source, path), it opens the source with ``cxrlib.lazy_data.open_dataset(lazy=False | True)`` and iterates
once over a ``DataLoader`` (batch ``--batch`` = 64, ``--workers`` = 2, no shuffling), recording:

- the seconds to open (the in-memory path decodes everything here; the lazy path lists files or reads
  headers) and to iterate, and images/s of the whole pass (open + iterate);
- peak resident memory: ``ru_maxrss`` of the process itself (``RUSAGE_SELF``) and of its largest
  finished ``DataLoader`` worker (``RUSAGE_CHILDREN``, the workers are joined at the end of the pass), and
  the process's ``ru_maxrss`` after importing torch, before any data (the floor both paths share).
  Forked workers share the parent's pages; ``ru_maxrss`` counts shared pages in each process.

Torch runs ``--threads`` threads (``torch.set_num_threads`` and ``OMP_NUM_THREADS`` in each subprocess),
recorded with the machine (CPU model, logical CPUs, torch, Python) and the git commit.

Run from the repository root (see benchmarks/README.md)::

    python benchmarks/bench_data_scale.py                         # N = 1k, 10k, 50k
    python benchmarks/bench_data_scale.py --sizes 50 100 --out-dir /tmp/ds   # a quick check

Writes ``benchmarks/results/data_scale.{json,md}`` (or into ``--out-dir``).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_model, measure_in_subprocess, shown_command  # noqa: E402
SIZES = (1000, 10000, 50000)
PATHS = ("memory", "lazy")
KINDS = ("folder", "npz")
KIB_PER_MIB = 1024


# ---------------------------------------------------------------------------------------------
# generated data
# ---------------------------------------------------------------------------------------------

def _image(rng, size: int) -> np.ndarray:
    """One grey image: a smooth random 8x8 field upsampled (bilinear) plus noise, uint8 ``(size, size)``."""
    from PIL import Image

    coarse = Image.fromarray(rng.integers(40, 215, (8, 8), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((size, size), Image.BILINEAR), np.int16)
    return np.clip(smooth + rng.integers(-12, 13, (size, size)), 0, 255).astype(np.uint8)


def generate(root: Path, n: int, size: int, seed: int = 0) -> dict:
    """Write N images as ``root/tree/{NORMAL,PNEUMONIA}/img_NNNNNN.png`` and as ``root/set.npz`` (stored,
    with ``labels`` and ``names``), the same pixels in both; one image in memory at a time (the ``.npz``'s
    images go through an ``.npy`` memmap). Returns ``{"folder": path, "npz": path}``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    tree = root / "tree"
    labels = (np.arange(n) >= n // 2).astype(np.int64)
    names = np.array([f"{'PNEUMONIA' if y else 'NORMAL'}/img_{i:06d}.png" for i, y in enumerate(labels)])
    for cls in ("NORMAL", "PNEUMONIA"):
        (tree / cls).mkdir(parents=True, exist_ok=True)
    npy = root / "images.npy"
    images = np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(n, size, size))
    for i in range(n):
        im = _image(rng, size)
        Image.fromarray(im).save(tree / names[i])
        images[i] = im
    images.flush()
    del images
    with zipfile.ZipFile(root / "set.npz", "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.write(npy, "images.npy")
        for key, arr in (("labels", labels), ("names", names)):
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            zf.writestr(f"{key}.npy", buf.getvalue())
    npy.unlink()
    return {"folder": str(tree), "npz": str(root / "set.npz")}


# ---------------------------------------------------------------------------------------------
# one measurement (in a fresh subprocess)
# ---------------------------------------------------------------------------------------------

def run_worker(spec: dict) -> dict:
    """Open ``spec["source"]`` on ``spec["path"]`` and iterate once over a DataLoader; times and peak RSS."""
    import torch
    from torch.utils.data import DataLoader

    from cxrlib.lazy_data import open_dataset

    torch.set_num_threads(spec["threads"])
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    ds = open_dataset(spec["source"], size=spec["image_size"], lazy=spec["path"] == "lazy")
    t1 = time.perf_counter()
    n, checksum = 0, 0.0
    for x, y in DataLoader(ds, batch_size=spec["batch"], num_workers=spec["workers"], shuffle=False):
        n += len(y)
        checksum += float(x.sum())
    t2 = time.perf_counter()
    return {"n": n, "dataset": type(ds).__name__, "open_s": t1 - t0, "iterate_s": t2 - t1,
            "images_per_s": n / (t2 - t0), "iterate_images_per_s": n / (t2 - t1), "checksum": checksum,
            "floor_rss_kib": floor,
            "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "peak_worker_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            "torch_threads": torch.get_num_threads()}


def _measure(spec: dict, timeout: float) -> dict:
    """Run one measurement in a fresh subprocess; its result or ``{"error": ...}``."""
    return measure_in_subprocess(__file__, spec, timeout, {"OMP_NUM_THREADS": str(spec["threads"])})


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def _git(args: list[str]) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def _mib(kib) -> str:
    return "–" if kib is None else f"{kib / KIB_PER_MIB:.0f}"


def growth(rows: list[dict]) -> list[str]:
    """Per (source, path): peak RSS above the floor at the largest N over that at the smallest N."""
    lines = []
    for kind in KINDS:
        for path in PATHS:
            ok = sorted((r for r in rows if r["kind"] == kind and r["path"] == path and "error" not in r),
                        key=lambda r: r["n_images"])
            if len(ok) >= 2:
                lo, hi = ok[0], ok[-1]
                d_lo = lo["peak_rss_kib"] - lo["floor_rss_kib"]
                d_hi = hi["peak_rss_kib"] - hi["floor_rss_kib"]
                lines.append(f"- {kind}, {path}: peak RSS above the floor {_mib(d_lo)} MiB at N = {lo['n_images']}, "
                             f"{_mib(d_hi)} MiB at N = {hi['n_images']}")
    return lines


def report_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Data at scale: in memory vs lazy (`benchmarks/bench_data_scale.py`)", "",
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']}, Python {m['python']}; "
        f"{report['threads']} torch thread(s), {report['workers']} DataLoader workers, batch {report['batch']}, "
        f"{report['image_size']} px; commit {report['commit'][:10]}{' (dirty)' if report['dirty'] else ''}.",
        f"Command: `{report['command']}`", "",
        "| N | source | path | images/s (pass) | open s | iterate s | peak RSS MiB | largest worker MiB | "
        "floor MiB | note |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['n_images']} | {r['kind']} | {r['path']} | – | – | – | – | – | – | {r['error']} |")
            continue
        lines.append(f"| {r['n_images']} | {r['kind']} | {r['path']} | {r['images_per_s']:.0f} | {r['open_s']:.1f} | "
                     f"{r['iterate_s']:.1f} | {_mib(r['peak_rss_kib'])} | {_mib(r['peak_worker_rss_kib'])} | "
                     f"{_mib(r['floor_rss_kib'])} | {r['dataset']} |")
    lines += ["", "Peak RSS of the main process above its floor (torch imported, no data yet):", *growth(report["rows"]),
              "", "`ru_maxrss` counts pages shared with forked workers in each process."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="numbers of images (default 1000 10000 50000)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads / OMP_NUM_THREADS (default 1)")
    p.add_argument("--batch", type=int, default=64, help="DataLoader batch size (default 64)")
    p.add_argument("--image-size", type=int, default=128, help="side length of the images (default 128)")
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of memory,lazy")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of folder,npz")
    p.add_argument("--data-dir", help="generate (and keep) the images here; default a temporary folder, removed")
    p.add_argument("--out-dir", "--out", dest="out_dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--timeout", type=float, default=3600, help="seconds per measurement subprocess (default 3600)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        Path(args.worker_out).write_text(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    paths = [x for x in args.paths.split(",") if x]
    kinds = [x for x in args.kinds.split(",") if x]
    if not set(paths) <= set(PATHS) or not set(kinds) <= set(KINDS):
        p.error(f"--paths from {PATHS}, --kinds from {KINDS}")
    if min(args.sizes) < 2 or args.workers < 0 or args.threads < 1:
        p.error("--sizes must be >= 2, --workers >= 0, --threads >= 1")

    import torch

    from cxrlib.utils import atomic_write_bytes, atomic_write_json

    base = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="data_scale_"))
    rows = []
    try:
        for n in args.sizes:
            root = base / f"n{n}_{args.image_size}px"
            print(f"[bench] generating {n} images in {root} ...", flush=True)
            t0 = time.perf_counter()
            sources = generate(root, n, args.image_size) if not (root / "set.npz").is_file() else \
                {"folder": str(root / "tree"), "npz": str(root / "set.npz")}
            print(f"[bench]   {time.perf_counter() - t0:.0f} s", flush=True)
            for kind in kinds:
                for path in paths:
                    spec = dict(source=sources[kind], path=path, image_size=args.image_size, batch=args.batch,
                                workers=args.workers, threads=args.threads)
                    print(f"[bench] N={n} {kind} {path} ...", flush=True)
                    res = _measure(spec, args.timeout)
                    msg = res.get("error") or f"{res['images_per_s']:.0f} images/s, peak {_mib(res['peak_rss_kib'])} MiB"
                    print(f"[bench]   {msg}", flush=True)
                    rows.append({"n_images": n, "kind": kind, "path": path, **res})
    finally:
        if not args.data_dir:
            shutil.rmtree(base, ignore_errors=True)

    try:
        commit = _git(["rev-parse", "HEAD"])
        dirty = bool(_git(["status", "--porcelain", "--untracked-files=no"]))
    except (subprocess.CalledProcessError, FileNotFoundError):
        commit, dirty = "unknown", False
    cli = list(sys.argv[1:] if argv is None else argv)
    report = {"machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
                          "python": platform.python_version()},
              "threads": args.threads, "workers": args.workers, "batch": args.batch, "image_size": args.image_size,
              "commit": commit, "dirty": dirty, "command": shown_command("benchmarks/bench_data_scale.py", cli, ROOT),
              "rows": rows}
    out_dir = Path(args.out_dir)
    md = report_markdown(report)
    atomic_write_json(report, out_dir / "data_scale.json")
    atomic_write_bytes(out_dir / "data_scale.md", md.encode())
    print(md)
    print(f"[bench] wrote {out_dir / 'data_scale.json'}, .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
