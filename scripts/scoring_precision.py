"""What scoring in bf16 costs in quality: the same SQUID-family checkpoints scored in fp32 and in bf16 autocast.

``python -m cxrlib score --precision bf16`` runs the generator and discriminator under bf16 autocast with
channels-last tensors, about twice as fast on a CPU with bf16 units (``benchmarks/results/squid_speed.md``). The
scores then move a little. For each run's ``model.pt``, on the development-test images of its own split, this
script scores both ways and writes one CSV row: the AUROC of each, their difference, Spearman's correlation of
the two score vectors and the largest absolute score difference (in the scorer's standardised units).

    python scripts/scoring_precision.py runs/cpu/squid_s0 runs/cpu/squid_s1 ... --data PATH/zhanglab128_train.npz

Rows go to ``--out`` (default ``results/cpu/diagnostics/scoring_precision.csv``), upserted by run and split version.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib import benchmark as B  # noqa: E402
from cxrlib import data as D  # noqa: E402
from cxrlib import metrics as M  # noqa: E402
from cxrlib.methods import load_scorer  # noqa: E402

COLUMNS = ["run", "method", "seed", "split_seed", "split_version", "precision", "n_test", "auroc_fp32",
           "auroc_low", "auroc_change", "spearman", "max_abs_score_diff", "threads"]


def precision_row(run: Path, data, precision: str = "bf16") -> dict:
    """Score ``run/model.pt`` on its development-test images in fp32 and in ``precision``; the CSV row."""
    import torch

    scorer = load_scorer(run / "model.pt")
    ds = D.load(data, size=scorer.image_size)
    split = D.development_split(ds, seed=scorer.meta.get("split_seed", 0))
    x, y = ds.images[split.test], ds.labels[split.test]
    fp32 = scorer.score(x)
    low = scorer.set_precision(precision).score(x)
    return {"run": run.name, "method": scorer.method, "seed": scorer.meta.get("seed", ""),
            "split_seed": scorer.meta.get("split_seed", 0), "split_version": scorer.meta.get("split_version", ""),
            "precision": precision, "n_test": len(y), "auroc_fp32": M.auroc(y, fp32), "auroc_low": M.auroc(y, low),
            "auroc_change": M.auroc(y, low) - M.auroc(y, fp32), "spearman": float(spearmanr(fp32, low)[0]),
            "max_abs_score_diff": float(np.abs(low - fp32).max()), "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders holding model.pt")
    ap.add_argument("--data", required=True, help="the data the runs were trained on (zhanglab128_train.npz)")
    ap.add_argument("--precision", choices=("bf16", "fp16"), default="bf16")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cpu" / "diagnostics" / "scoring_precision.csv")
    args = ap.parse_args(argv)
    return B.diagnose_runs(
        args.runs, lambda run: precision_row(run, args.data, args.precision),
        lambda r: (f"{r['run']}: AUROC fp32 {r['auroc_fp32']:.4f}, {args.precision} {r['auroc_low']:.4f} "
                   f"({100 * r['auroc_change']:+.2f} points); Spearman {r['spearman']:.4f}"),
        args.out, COLUMNS, key=("run", "split_version", "precision"))


if __name__ == "__main__":
    sys.exit(main())
