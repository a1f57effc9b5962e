"""Where a SQUID-family run's reconstruction error falls on the phantoms: lesion, body and background.

The localisation rows of the results table score SQUID, SimSID and CRTSC by their display map, the smoothed
reconstruction error ``|x - G(x)|`` (:meth:`cxrlib.methods.squid.scorer.SquidScorer.anomaly_maps`). This script explains such a
row: for the lesion phantoms of the development-test split it prints the mean error and the mean input and
reconstruction per region, and the pixel AUROC of the raw (unsmoothed) error, for the run's chosen checkpoint
(``model.pt``, the best-on-validation epoch) and, with ``--last``, for its last epoch (``last.pt``, finalised the
same way into a temporary copy of the run; the run folder itself is not touched).

    python scripts/reconstruction_error_by_region.py runs/cpu/localisation/squid_s0 --last
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrlib import data as D
from cxrlib.methods import load_scorer
from cxrlib.methods.squid.scorer import last_epoch_scorer

BODY_LEVEL = 0.25  # phantom background is 0.15, body 0.6 less the lungs' 0.4: above 0.25 is inside the body


def region_report(scorer, ds, test_idx) -> dict:
    idx = test_idx[ds.labels[test_idx] == 1]
    x = ds.images[idx].astype(np.float64) / 255.0
    masks = ds.masks[idx]
    recon = scorer.reconstruct(ds.images[idx])[:, 0].numpy().astype(np.float64)
    err = np.abs(x - recon)
    body = x > BODY_LEVEL
    regions = {"lesion": masks, "body outside lesions": body & ~masks, "background": ~body}
    out = {name: (err[r].mean(), x[r].mean(), recon[r].mean()) for name, r in regions.items()}
    out["pixel AUROC of |x - G(x)|"] = roc_auc_score(masks.ravel(), err.ravel())
    return out


def print_report(title: str, rep: dict) -> None:
    print(f"== {title}")
    print(f"{'region':<22} {'|x - G(x)|':>10} {'x':>7} {'G(x)':>7}")
    for name, v in rep.items():
        if isinstance(v, tuple):
            print(f"{name:<22} {v[0]:>10.3f} {v[1]:>7.3f} {v[2]:>7.3f}")
    print(f"pixel AUROC of the raw error: {rep['pixel AUROC of |x - G(x)|']:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="a finished squid/simsid/crtsc run on --data phantoms")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--last", action="store_true", help="also report the last epoch's generator")
    args = ap.parse_args(argv)
    model = args.run_dir / "model.pt"
    if not model.exists():
        sys.exit(f"{model}: not found; train the run first (see the localisation commands in the README)")
    scorer = load_scorer(model)
    ds = D.load("phantoms", size=scorer.image_size)
    split = D.unsupervised_protocol(ds, seed=args.split_seed)
    print_report(f"{args.run_dir} model.pt (best-on-validation epoch)", region_report(scorer, ds, split.test))
    if args.last:
        print_report(f"{args.run_dir} last.pt (last epoch)",
                     region_report(last_epoch_scorer(args.run_dir, ds, split, scorer.method), ds, split.test))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
