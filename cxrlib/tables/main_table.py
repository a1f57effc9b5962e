"""The main table and its localisation rows: ``results/<profile>/metrics.csv``, one row per (method, variant, seed,
split seed, data, profile, split version), made by :func:`cxrlib.benchmark.run_table`.

    python -m cxrlib benchmark --profile cpu --data PATH/zhanglab128_train.npz --seeds 0 1 2 --split-seeds 0 1
    python -m cxrlib benchmark --table localisation --profile cpu --seeds 0 1 2

and its figures (:func:`plot_results`), drawn from the CSV and the per-image scores saved beside it.
"""
from __future__ import annotations

from pathlib import Path

from .. import benchmark as B
from .. import data as D
from ..utils import PROFILES, repo_root

__all__ = ["KEY", "FIGURES", "add_arguments", "run_main", "run_localisation", "markdown", "localisation_markdown",
           "plot_results"]

#: the columns that identify a row (:func:`cxrlib.benchmark.upsert`)
KEY = ("method", "variant", "seed", "split_seed", "data", "profile", "split_version")
#: the figures :func:`plot_results` draws: (file suffix, what it shows)
FIGURES = [("auroc", "AUROC ± std per method and split, papers' numbers marked"),
           ("roc", "ROC curves, split 0, seed 0"), ("scores", "test scores per class, split 0, seed 0"),
           ("cost_quality", "training minutes against AUROC"), ("ranking", "the order of methods on both splits")]


def add_arguments(p) -> None:
    """The options of ``python -m cxrlib benchmark`` for the main and the localisation table."""
    p.add_argument("--profile", choices=PROFILES, default="quick")
    p.add_argument("--data", default=None, help="default: the profile's data")
    p.add_argument("--methods", nargs="*", default=None, help="default: every method the table knows")
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--split-seeds", nargs="*", type=int, default=[0])
    p.add_argument("--tables", nargs="+", choices=("image", "localisation"), default=None,
                   help="the older spelling: image = --table main, localisation = --table localisation; both at once "
                        "run both into the one CSV")
    p.add_argument("--out", default=None, help="CSV (default results/<profile>/metrics.csv); rows are updated")


def _run(args, parts) -> int:
    data = D.resolve_data(args.profile, args.data)
    out = Path(args.out or repo_root() / "results" / args.profile / "metrics.csv")
    rows = B.run_table(out, args.profile, data, args.methods, args.seeds, args.split_seeds, args.tables or parts)
    current = B.current_rows(rows)
    print(B.summary_markdown(B.summarize(B.image_rows(current))))
    if B.localisation_rows(current):
        print(B.localisation_markdown(current))
    print(f"rows in {out}")
    return 0


def run_main(args) -> int:
    """Train (or reuse) and score every method on every split seed of ``--data``."""
    return _run(args, ["image"])


def run_localisation(args) -> int:
    """Train (or reuse) every method with anomaly maps on the phantoms and score the maps against the masks."""
    return _run(args, ["localisation"])


def markdown(csv_path) -> str:
    """The main table of the CSV's current rows (:func:`cxrlib.benchmark.summary_markdown`, the papers' AUROC
    beside it)."""
    rows = B.current_rows(B.image_rows(B.read_rows(csv_path)))
    return B.summary_markdown(B.summarize(rows), B.paper_auroc_text())


def localisation_markdown(csv_path) -> str:
    """The localisation table of the CSV's current rows (:func:`cxrlib.benchmark.localisation_markdown`)."""
    return B.localisation_markdown(B.current_rows(B.read_rows(csv_path)))


def plot_results(csv_path, profile: str, fig_dir, seed: int = 0) -> list[Path]:
    """Draw the main table's figures from a metrics CSV and its saved per-image scores (``scores/`` beside it).

    Writes, under ``fig_dir``, results_<profile>_roc.png (ROC of every method, one seed, split 0),
    results_<profile>_scores.png (score distributions per class, the same runs), results_<profile>_auroc.png
    (AUROC ± std over seeds per split, the papers' numbers marked), results_<profile>_cost_quality.png (training
    minutes against AUROC) and results_<profile>_ranking.png (the order of methods on each split, with two or more
    splits). Nothing is trained.

    Raises:
        ValueError: the CSV has no current X-ray rows.
    """
    import matplotlib.pyplot as plt

    from .. import viz

    # the current split version only; the localisation rows (phantoms) have their own table
    rows = B.current_rows(B.image_rows(B.read_rows(csv_path)))
    if not rows:
        raise ValueError(f"{csv_path}: no rows; run `python -m cxrlib benchmark --profile {profile} ...` first")
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
