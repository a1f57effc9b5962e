"""Draw the results table's figures from a committed metrics CSV and its saved per-image scores.

Usage: python scripts/plot_results.py [--profile cpu] [--seed 0] [--fig-dir figures]

Writes, under --fig-dir, results_<profile>_roc.png (ROC of every method, one seed, split 0),
results_<profile>_scores.png (score distributions per class, the same runs), results_<profile>_auroc.png
(AUROC ± std over seeds per split, the papers' numbers marked), results_<profile>_cost_quality.png
(training minutes against AUROC) and results_<profile>_ranking.png (the order of methods on each split).
Nothing is trained: every number comes from results/<profile>/metrics.csv and results/<profile>/scores/.
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cxrlib import benchmark as B  # noqa: E402
from cxrlib import viz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def plot_results(csv_path: Path, profile: str, fig_dir: Path, seed: int = 0) -> list[Path]:
    # the current split version only; the localisation rows (phantoms) have their own table
    rows = B.current_rows(B.image_rows(B.read_rows(csv_path)))
    if not rows:
        raise SystemExit(f"{csv_path}: no rows; run `python -m cxrlib benchmark --profile {profile} ...` first")
    summary = B.summarize(rows)
    splits = sorted({int(s["split_seed"]) for s in summary})
    scores_dir = Path(csv_path).parent / "scores"
    first = [r for r in rows if int(r["split_seed"]) == splits[0] and int(r["seed"]) == seed]
    first.sort(key=lambda r: [s["method"] for s in summary].index(r["method"]))
    curves = {f"{r['method']} [{r['variant']}]": B.load_scores(scores_dir, r) for r in first}
    viz.set_style()
    out = []

    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    viz.plot_roc(curves, ax=ax, title=f"ROC, development test, split {splits[0]}, seed {seed}")
    out.append(viz.save_figure(fig, f"results_{profile}_roc.png", fig_dir))

    fig = viz.plot_score_distributions(curves, title=f"test scores per class, split {splits[0]}, seed {seed}")
    out.append(viz.save_figure(fig, f"results_{profile}_scores.png", fig_dir))

    n = max(sum(int(s["split_seed"]) == sp for s in summary) for sp in splits)
    fig, axes = plt.subplots(1, len(splits), figsize=(6.4 * len(splits), 0.45 * n + 1.6), squeeze=False)
    for ax, sp in zip(axes[0], splits):
        viz.plot_auroc_bars(summary, B.paper_auroc(), split_seed=sp, ax=ax)
    fig.tight_layout()
    out.append(viz.save_figure(fig, f"results_{profile}_auroc.png", fig_dir))

    fig = viz.plot_cost_quality(summary, rows, split_seed=splits[0])
    out.append(viz.save_figure(fig, f"results_{profile}_cost_quality.png", fig_dir))

    if len(splits) > 1:
        fig = viz.plot_ranking_across_splits(summary)
        out.append(viz.save_figure(fig, f"results_{profile}_ranking.png", fig_dir))
    plt.close("all")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="the seed whose runs the ROC and score figures show")
    ap.add_argument("--fig-dir", default=str(ROOT / "figures"))
    args = ap.parse_args()
    for p in plot_results(ROOT / "results" / args.profile / "metrics.csv", args.profile, Path(args.fig_dir), args.seed):
        print(p)
