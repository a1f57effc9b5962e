"""Issue #23's lever study: which change makes the SQUID family learn in the ``cpu`` budget?

Each lever is a named set of :class:`~cxrlib.methods.squid.config.SquidConfig` overrides on top of a method's
``cpu`` profile. For every (lever, seed) the script trains on development split 0 (patient-disjoint), keeps the
checkpoint by the profile's rule, and records:

* one row in ``results/cpu/squid_levers.csv``: kept epoch, its validation and development-test AUROC, the last
  epoch's validation and test AUROC, training minutes, threads, commit, split version, the overrides;
* one row per epoch in ``results/cpu/squid_levers_curves.csv``: validation AUROC of the score ``-D(G(x))``
  and, as diagnostics, of the reconstruction error ``|x - G(x)|`` and of the discriminator on the *real*
  image ``-D(x)``, with the epoch's mean loss terms.

Rows are upserted by (method, lever, seed, split_seed, epochs), so an interrupted study resumes at the next
missing row (a half-trained run resumes from its ``last.pt``).

    OMP_NUM_THREADS=1 python scripts/squid_levers.py --data PATH/zhanglab128_train.npz --levers cpu separate_forward --seeds 0
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib import data as D  # noqa: E402
from cxrlib import metrics as M  # noqa: E402
from cxrlib.benchmark import git_commit, thread_count  # noqa: E402
from cxrlib.methods import load_scorer  # noqa: E402
from cxrlib.methods.squid.config import squid_config  # noqa: E402
from cxrlib.methods.squid.generator import to_model_range  # noqa: E402
from cxrlib.methods.squid.scorer import finalize_squid, last_epoch_scorer  # noqa: E402
from cxrlib.methods.squid.train import fit_squid  # noqa: E402

#: lever name -> SquidConfig overrides on top of the method's cpu profile
LEVERS: dict[str, dict] = {
    "cpu": {},
    "separate_forward": dict(shared_forward=False),
    "n_critic_1": dict(n_critic=1),
    "bottleneck_4x4": dict(levels=3, decoder_ops=("concat", "concat", "none"), merge_level=1),
    "size_128": dict(image_size=128),
    "bf16": dict(precision="bf16", channels_last=True),
    "size_128_bf16": dict(image_size=128, precision="bf16", channels_last=True),
    "lr_1e-3": dict(lr=1e-3, eta_min=1e-4),
    "d_lr_1e-5": dict(d_lr=1e-5),
}

ROW_COLUMNS = ["method", "lever", "seed", "split_seed", "epochs", "kept_epoch", "val_auroc_kept", "test_auroc_kept",
               "val_auroc_last", "test_auroc_last", "train_minutes", "threads", "split_version", "commit",
               "overrides"]
CURVE_COLUMNS = ["method", "lever", "seed", "split_seed", "epoch", "val_auroc", "val_auroc_recon_err",
                 "val_auroc_d_real", "d", "recon", "seconds"]


def _upsert(path: Path, columns: list[str], new: list[dict], key: tuple[str, ...]) -> None:
    old = list(csv.DictReader(open(path))) if path.exists() else []
    keys = {tuple(str(r[k]) for k in key) for r in new}
    rows = [r for r in old if tuple(str(r[k]) for k in key) not in keys] + new
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    tmp.replace(path)


def diagnostics(ds, split, cfg):
    """The epoch callback: validation AUROC of the reconstruction error and of ``-D(x)`` on real images."""
    y = ds.labels[split.val]
    x = to_model_range(torch.from_numpy(ds.as_float(split.val)), cfg.normalize)

    @torch.no_grad()
    def callback(epoch, gen, disc):
        err, d_real = [], []
        for i in range(0, len(x), 64):
            xb = x[i:i + 64]
            err.append(((xb - gen(xb)["recon"]) ** 2).mean((1, 2, 3)))
            d_real.append(disc(xb).flatten())
        return {"val_auroc_recon_err": M.auroc(y, torch.cat(err).numpy()),
                "val_auroc_d_real": M.auroc(y, -torch.cat(d_real).numpy())}
    return callback


def run_lever(method, lever, seed, split_seed, data, epochs, out_root: Path, log=print):
    cfg = squid_config(method, "cpu", **LEVERS[lever], **({"epochs": epochs} if epochs else {}))
    ds = D.load(data, size=cfg.image_size)
    split = D.unsupervised_protocol(ds, seed=split_seed)
    out = out_root / f"{method}_{lever}_e{cfg.epochs}_s{seed}_split{split_seed}"
    resume = (out / "last.pt").exists()
    summary = fit_squid(cfg, ds, split, out, seed=seed, resume=resume, show_progress=False, method=method,
                        data_source=str(data), log=log, epoch_callback=diagnostics(ds, split, cfg))
    finalize_squid(out, ds, split, method=method)
    kept, last = load_scorer(out / "model.pt"), last_epoch_scorer(out, ds, split, method)
    y_test = ds.labels[split.test]
    hist = summary["history"]
    row = {"method": method, "lever": lever, "seed": seed, "split_seed": split_seed, "epochs": cfg.epochs,
           "kept_epoch": summary["best_epoch"] + 1, "val_auroc_kept": summary["best_val_auroc"],
           "test_auroc_kept": M.auroc(y_test, kept.score(ds.images[split.test])),
           "val_auroc_last": hist[-1]["val_auroc"],
           "test_auroc_last": M.auroc(y_test, last.score(ds.images[split.test])),
           "train_minutes": summary["train_minutes"], "threads": thread_count(),
           "split_version": D.SPLIT_VERSION, "commit": git_commit(ROOT),
           "overrides": json.dumps(LEVERS[lever], sort_keys=True)}
    curve = [{"method": method, "lever": lever, "seed": seed, "split_seed": split_seed, "epoch": h["epoch"] + 1,
              **{k: h.get(k, "") for k in CURVE_COLUMNS[5:]}} for h in hist]
    return row, curve


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--methods", nargs="+", default=["squid"])
    ap.add_argument("--levers", nargs="+", default=["cpu"], choices=sorted(LEVERS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "levers")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cpu" / "squid_levers.csv")
    args = ap.parse_args(argv)
    curves_path = args.out.with_name(args.out.stem + "_curves.csv")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["method"], r["lever"], r["seed"], r["split_seed"], r["epochs"])
            for r in (csv.DictReader(open(args.out)) if args.out.exists() else [])}
    for method in args.methods:
        for lever in args.levers:
            for seed in args.seeds:
                epochs = args.epochs or squid_config(method, "cpu").epochs
                if (method, lever, str(seed), str(args.split_seed), str(epochs)) in done:
                    continue
                t0 = time.time()
                print(f"== {method} / {lever} / seed {seed}", flush=True)
                row, curve = run_lever(method, lever, seed, args.split_seed, args.data, args.epochs, args.runs,
                                       log=lambda m: print(m, flush=True))
                _upsert(args.out, ROW_COLUMNS, [row], ("method", "lever", "seed", "split_seed", "epochs"))
                _upsert(curves_path, CURVE_COLUMNS, curve, ("method", "lever", "seed", "split_seed", "epoch"))
                print(f"   kept epoch {row['kept_epoch']}: val {row['val_auroc_kept']:.3f} test "
                      f"{row['test_auroc_kept']:.3f}; last: val {row['val_auroc_last']:.3f} test "
                      f"{row['test_auroc_last']:.3f}; {row['train_minutes']:.1f} min ({time.time() - t0:.0f} s)",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
