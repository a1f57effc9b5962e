"""Is a SQUID-family score measuring anomaly, or how well the generator reconstructs? (issue #23's first question)

For a finished run, on its validation images, per epoch checkpoint asked for (``model.pt``: the kept epoch;
``--last``: the last epoch, finalised into a temporary copy): the mean reconstruction error ``|x - G(x)|`` per
class, the AUROC of that error (pneumonia = positive), the AUROC of the run's own score (``-D(G(x))``,
standardised), and Spearman's correlation between the score and the error over all validation images. A score
that tracks reconstruction error with the wrong sign explains a validation AUROC below chance: if pneumonia
images are *easier* to reconstruct, their reconstructions look more real to the discriminator.
Writes one CSV row per checkpoint to ``--out`` (default ``results/<profile>/diagnostics/score_vs_fidelity.csv``).

    python scripts/score_vs_fidelity.py runs/cpu/squid_s0 --data PATH/zhanglab128_train.npz --last [--eval-norm per_image]

``--eval-norm`` re-scores a run with the other discriminator normalisation (``disc_eval_norm``): runs trained before
that option existed were scored with running statistics, the official code with each image's own.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib import data as D  # noqa: E402
from cxrlib import metrics as M  # noqa: E402
from cxrlib.methods import load_scorer  # noqa: E402
from cxrlib.methods.squid.discriminator import EVAL_NORMS  # noqa: E402
from cxrlib.methods.squid.scorer import last_epoch_scorer  # noqa: E402

COLUMNS = ["run", "checkpoint", "epoch", "split_version", "disc_eval_norm", "n_val", "recon_err_normal",
           "recon_err_pneumonia", "auroc_recon_err", "auroc_score", "spearman_score_vs_err"]


def fidelity_row(scorer, ds, idx, run: str, which: str) -> dict:
    y = ds.labels[idx]
    x = ds.images[idx].astype(np.float64) / 255.0
    recon = scorer.reconstruct(ds.images[idx])[:, 0].numpy().astype(np.float64)
    err = np.abs(x - recon).mean(axis=(1, 2))
    score = scorer.score(ds.images[idx])
    return {"run": run, "checkpoint": which, "epoch": int(scorer.meta.get("best_epoch", -1)) + 1,
            "split_version": scorer.meta.get("split_version", "image-v1"), "disc_eval_norm": scorer.disc.eval_norm,
            "n_val": len(idx),
            "recon_err_normal": float(err[y == 0].mean()), "recon_err_pneumonia": float(err[y == 1].mean()),
            "auroc_recon_err": M.auroc(y, err), "auroc_score": M.auroc(y, score),
            "spearman_score_vs_err": float(spearmanr(score, err).statistic)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--last", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--eval-norm", choices=EVAL_NORMS, default=None,
                    help="score with this discriminator normalisation instead of the checkpoint's own (the kept epoch "
                         "stays the one the run selected)")
    args = ap.parse_args(argv)
    scorer = load_scorer(args.run_dir / "model.pt")
    if args.eval_norm:
        scorer.disc.eval_norm = args.eval_norm
    ds = D.load(args.data, size=scorer.image_size)
    split = D.development_split(ds, seed=scorer.meta.get("split_seed", 0))
    rows = [fidelity_row(scorer, ds, split.val, args.run_dir.name, "kept (model.pt)")]
    if args.last:
        last = last_epoch_scorer(args.run_dir, ds, split, scorer.method)
        if args.eval_norm:
            last.disc.eval_norm = args.eval_norm
        rows.append(fidelity_row(last, ds, split.val, args.run_dir.name, "last (last.pt)"))
    out = args.out or ROOT / "results" / "cpu" / "diagnostics" / "score_vs_fidelity.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    def key(r):  # rows written before the column existed were scored with running statistics
        return r["run"], r["checkpoint"], r.get("disc_eval_norm") or "running"
    old = [{**r, "disc_eval_norm": key(r)[2]} for r in (csv.DictReader(open(out)) if out.exists() else [])
           if key(r) not in {key(r2) for r2 in rows}]
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(old + [{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows])
    for r in rows:
        print(f"{r['run']} {r['checkpoint']} epoch {r['epoch']}: |x-G(x)| normal {r['recon_err_normal']:.4f} "
              f"pneumonia {r['recon_err_pneumonia']:.4f}; AUROC of the error {r['auroc_recon_err']:.3f}, of the "
              f"score {r['auroc_score']:.3f}; Spearman(score, error) {r['spearman_score_vs_err']:.2f}")
    print(f"rows in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
