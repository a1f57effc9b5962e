"""Does the SQUID family's reconstruction error rank pneumonia above normal once fine detail is taken out?

Normal ZhangLab images carry more fine detail than pneumonia ones (``scripts/sharpness_confound.py``), and a small
generator reproduces little of it, so the plain reconstruction error follows sharpness and can rank the classes
backwards (notebook 04). For each run's ``model.pt`` (the kept generator, the one that scores), this script
reconstructs the validation and development-test images of the run's own split and computes the AUROC of the
reconstruction error after a Gaussian low-pass of ``sigma`` px (:func:`cxrlib.image_stats.lowpass_error`) for each
``sigma`` of a grid; ``sigma`` is chosen on validation, and the test AUROC is read at that choice only. One CSV row per
run, beside the run's own discriminator score on the same images.

    python scripts/lowpass_error.py runs/cpu/squid_s0 ... --data PATH/zhanglab128_train.npz

Rows go to ``--out`` (default ``results/cpu/diagnostics/lowpass_error.csv``), upserted by run and split version.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib import benchmark as B  # noqa: E402
from cxrlib import data as D  # noqa: E402
from cxrlib import metrics as M  # noqa: E402
from cxrlib.image_stats import lowpass_error  # noqa: E402
from cxrlib.methods import load_scorer  # noqa: E402

#: the low-pass widths tried on validation, in pixels of the model's image size (0: the plain error)
SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
COLUMNS = ["run", "method", "seed", "split_seed", "split_version", "image_size", "sigma", "val_auroc_plain",
           "val_auroc_lowpass", "test_auroc_plain", "test_auroc_lowpass", "val_auroc_score", "test_auroc_score",
           "threads"]


def lowpass_row(run: Path, data, sigmas=SIGMAS) -> dict:
    """The CSV row of ``run/model.pt``: plain and low-pass error AUROC on validation and test (``sigma`` chosen on
    validation), and the run's score AUROC on both."""
    import torch

    scorer = load_scorer(run / "model.pt")
    ds = D.load(data, size=scorer.image_size)
    split = D.development_split(ds, seed=scorer.meta.get("split_seed", 0))
    auroc = {}
    for part, idx in (("val", split.val), ("test", split.test)):
        x, y = ds.images[idx], ds.labels[idx]
        recon = scorer.reconstruct(x).numpy()[:, 0]
        auroc[part] = {s: M.auroc(y, lowpass_error(x, recon, s)) for s in sigmas}
        auroc[part]["score"] = M.auroc(y, scorer.score(x))
    best = max(sigmas, key=lambda s: auroc["val"][s])
    return {"run": run.name, "method": scorer.method, "seed": scorer.meta.get("seed", ""),
            "split_seed": scorer.meta.get("split_seed", 0), "split_version": scorer.meta.get("split_version", ""),
            "image_size": scorer.image_size, "sigma": best, "val_auroc_plain": auroc["val"][0.0],
            "val_auroc_lowpass": auroc["val"][best], "test_auroc_plain": auroc["test"][0.0],
            "test_auroc_lowpass": auroc["test"][best], "val_auroc_score": auroc["val"]["score"],
            "test_auroc_score": auroc["test"]["score"], "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="SQUID-family run folders holding model.pt")
    ap.add_argument("--data", required=True, help="the data the runs were trained on (zhanglab128_train.npz)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cpu" / "diagnostics" / "lowpass_error.csv")
    args = ap.parse_args(argv)
    return B.diagnose_runs(
        args.runs, lambda run: lowpass_row(run, args.data),
        lambda r: (f"{r['run']}: error AUROC on validation {r['val_auroc_plain']:.3f} plain, "
                   f"{r['val_auroc_lowpass']:.3f} after a {r['sigma']:g} px low-pass; test {r['test_auroc_plain']:.3f} "
                   f"-> {r['test_auroc_lowpass']:.3f} (the score: {r['test_auroc_score']:.3f})"),
        args.out, COLUMNS, key=("run", "split_version"))


if __name__ == "__main__":
    sys.exit(main())
