"""How much of "normal vs pneumonia" on ZhangLab is image sharpness? A no-learning check (issue #23, and a
caution for every table).

For each development split and image size, on the validation and development-test images, the AUROC
(pneumonia = positive) of four image statistics that know nothing of anatomy:

* ``laplacian_energy``: mean absolute Laplacian, a measure of fine detail (sharpness);
* ``blur_residual``: mean squared difference between the image and its Gaussian blur (sigma 1.5 px), the
  error of an ideal "blurry reconstruction";
* ``mean_intensity`` and ``intensity_std`` (all four from :mod:`cxrlib.image_stats`).

An AUROC far from 0.5 means the classes differ in that statistic. A reconstruction model that blurs will then
reconstruct the class with less detail *better*, whatever it learned about anatomy, and a discriminator
trained on real vs. reconstructed images will separate them by detail. Writes
``results/cpu/diagnostics/sharpness_confound.csv``.

    python scripts/sharpness_confound.py --data PATH/zhanglab128_train.npz
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib import data as D  # noqa: E402
from cxrlib import metrics as M  # noqa: E402
from cxrlib.image_stats import IMAGE_STATISTICS as STATISTICS  # noqa: E402

COLUMNS = ["size", "split_seed", "part", "n_normal", "n_pneumonia", *[f"auroc_{k}" for k in STATISTICS],
           "split_version"]


def confound_rows(data, sizes=(64, 128), split_seeds=(0, 1)) -> list[dict]:
    rows = []
    for size in sizes:
        ds = D.load(data, size=size)
        for split_seed in split_seeds:
            split = D.unsupervised_protocol(ds, seed=split_seed)
            for part in ("val", "test"):
                idx = getattr(split, part)
                x, y = ds.images[idx], ds.labels[idx]
                row = {"size": size, "split_seed": split_seed, "part": part, "n_normal": int((y == 0).sum()),
                       "n_pneumonia": int((y == 1).sum()), "split_version": D.SPLIT_VERSION}
                for name, stat in STATISTICS.items():
                    row[f"auroc_{name}"] = round(M.auroc(y, stat(x)), 4)
                rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cpu" / "diagnostics" / "sharpness_confound.csv")
    args = ap.parse_args(argv)
    rows = confound_rows(args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(" ".join(f"{k}={v}" for k, v in r.items()))
    print(f"rows in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
