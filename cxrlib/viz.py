"""Plots shared by the notebooks: image grids, heat-map overlays, ROC curves, score histograms.

Every function returns the matplotlib ``Figure`` so a notebook can save it with :func:`save_figure`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["set_style", "show_images", "overlay", "plot_roc", "plot_score_histograms", "save_figure"]


def set_style() -> None:
    """One look for every notebook: seaborn's white grid, readable sizes, modest DPI (small files)."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    mpl.rcParams.update({"figure.dpi": 80, "savefig.dpi": 90, "image.cmap": "gray", "axes.grid": False})


def _grey(img) -> np.ndarray:
    a = np.asarray(img.detach().cpu() if hasattr(img, "detach") else img, dtype=np.float32)
    return a.squeeze()


def show_images(images, titles=None, ncols: int = 8, size: float = 1.6, vmin=None, vmax=None, cmap="gray",
                suptitle: str | None = None):
    """A grid of images.

    Args:
        images: sequence or array of shape ``(N, H, W)`` or ``(N, 1, H, W)``, numpy or torch.
        titles: optional ``N`` strings.
    """
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_grey(images[i]), cmap=cmap, vmin=vmin, vmax=vmax)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def overlay(ax, image, heat, alpha: float = 0.45, cmap: str = "jet", contour=None):
    """Draw ``image`` (``(H, W)``) with a heat map (``(H, W)``, any range) on top; optional mask contour."""
    ax.imshow(_grey(image), cmap="gray")
    ax.imshow(_grey(heat), cmap=cmap, alpha=alpha)
    if contour is not None:
        ax.contour(_grey(contour), levels=[0.5], colors="white", linewidths=0.8)
    ax.axis("off")
    return ax


def plot_roc(curves: dict, ax=None, title: str = "ROC"):
    """ROC curves: ``curves = {label: (y_true (N,), scores (N,))}``; the legend gives each AUROC."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4))
    for label, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{label} (AUROC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=8, loc="lower right")
    return ax.figure


def plot_score_histograms(y, scores, threshold=None, ax=None, title: str = "scores per class",
                          class_names=("normal", "pneumonia")):
    """Histograms of ``scores`` (``(N,)``) per class of ``y`` (``(N,)``), with an optional threshold line."""
    import matplotlib.pyplot as plt

    y, scores = np.asarray(y), np.asarray(scores, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.8, 3.2))
    bins = np.histogram_bin_edges(scores, bins=30)
    for c, name in enumerate(class_names):
        ax.hist(scores[y == c], bins=bins, alpha=0.6, label=name, density=True)
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
    ax.set(xlabel="anomaly score", ylabel="density", title=title)
    ax.legend(fontsize=8)
    return ax.figure


def save_figure(fig, name: str, fig_dir="../figures") -> Path:
    """Save ``fig`` as ``fig_dir/name`` (PNG), creating the folder; returns the path."""
    path = Path(fig_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
