"""Plots shared by the notebooks: image grids, heat-map overlays, ROC curves, score histograms, and the results
table's figures (AUROC bars against the papers, cost against quality, the ranking across splits).

Every function returns the matplotlib ``Figure`` so a notebook can save it with :func:`save_figure`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["set_style", "show_images", "overlay", "plot_roc", "plot_score_histograms", "plot_score_distributions",
           "plot_auroc_bars", "plot_cost_quality", "plot_ranking_across_splits", "plot_patch_grid",
           "plot_channel_weights", "plot_channel_activations", "save_figure"]


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


def plot_score_distributions(curves: dict, ncols: int = 3, title: str | None = None):
    """One :func:`plot_score_histograms` panel per entry of ``curves = {label: (y_true (N,), scores (N,))}``.

    Each method's scores live on their own scale, so every panel has its own x axis.
    """
    import matplotlib.pyplot as plt

    n = len(curves)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (label, (y, s)) in zip(axes.flat, curves.items()):
        plot_score_histograms(y, s, ax=ax, title=label)
        ax.title.set_fontsize(9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _one_split(summary: list[dict], split_seed: int) -> list[dict]:
    """The rows of one split, in the order their (method, variant) first appears in ``summary`` (so that the
    panels of two splits list the methods alike)."""
    order = list(dict.fromkeys((s["method"], s["variant"]) for s in summary))
    rows = [s for s in summary if int(s["split_seed"]) == split_seed]
    if not rows:
        raise ValueError(f"no summary rows on split {split_seed}")
    return sorted(rows, key=lambda s: order.index((s["method"], s["variant"])))


def plot_auroc_bars(summary: list[dict], paper: dict | None = None, split_seed: int = 0, ax=None,
                    title: str | None = None):
    """Horizontal bars of mean AUROC ± std over seeds (``summary`` from :func:`cxrlib.benchmark.summarize`,
    AUROC as a fraction) on one split, with a star at each method's paper AUROC (``paper = {method: (auroc %,
    std % or None)}``, e.g. :func:`cxrlib.benchmark.paper_auroc`)."""
    import matplotlib.pyplot as plt

    rows = _one_split(summary, split_seed)
    paper = paper or {}
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 0.45 * len(rows) + 1.2))
    names = [f"{s['method']} [{s['variant']}]" for s in rows]
    k = np.arange(len(rows))
    ax.barh(k, [100 * s["auroc_mean"] for s in rows], xerr=[100 * s["auroc_std"] for s in rows], color="C0",
            capsize=3, label="this repository (mean ± std over seeds)")
    marked = [(i, paper[s["method"]]) for i, s in enumerate(rows) if s["method"] in paper]
    if marked:
        ax.errorbar([p[0] for _, p in marked], [i for i, _ in marked],
                    xerr=[p[1] or 0 for _, p in marked], fmt="r*", ms=11, capsize=3,
                    label="paper (official test, other protocol)")
    ax.set_yticks(k, names)
    ax.invert_yaxis()
    ax.axvline(50, color="0.4", ls=":", lw=0.8)
    low = min([100 * (s["auroc_mean"] - s["auroc_std"]) for s in rows] + [45])  # a bar below chance stays visible
    ax.set(xlim=(10 * np.floor(low / 10 - 0.5), 100), xlabel="AUROC (%)",
           title=title or f"AUROC on development split {split_seed}")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    return ax.figure


def plot_cost_quality(summary: list[dict], rows: list[dict] | None = None, split_seed: int = 0, ax=None,
                      title: str | None = None):
    """Mean training minutes (log axis) against mean AUROC ± std, one point per (method, variant) on one split.

    ``rows`` (the CSV's rows) adds every run as a faint dot: wall-clock minutes on a shared machine vary with its
    load far more than AUROC varies with the seed, and the dots show by how much.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    summ = _one_split(summary, split_seed)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.4, 3.8))
    for i, s in enumerate(summ):
        color = f"C{i % 10}"
        runs = [r for r in rows or [] if r["method"] == s["method"] and r["variant"] == s["variant"]
                and int(r["split_seed"]) == split_seed and r.get("train_minutes", "") != ""]
        if runs:
            ax.scatter([float(r["train_minutes"]) for r in runs], [100 * float(r["auroc"]) for r in runs],
                       s=20, color=color, alpha=0.5, lw=0)
        ax.errorbar(s["train_minutes_mean"], 100 * s["auroc_mean"], yerr=100 * s["auroc_std"], fmt="o",
                    color=color, capsize=3)
        ax.annotate(s["method"], (s["train_minutes_mean"], 100 * s["auroc_mean"]), fontsize=9, xytext=(4, 3),
                    textcoords="offset points")
    ax.set(xscale="log", xlabel="training minutes per run (this machine; faint: each run)", ylabel="AUROC (%)",
           title=title or f"cost against quality, split {split_seed}")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())  # log minor labels (2×10¹, 3×10¹ ...) collide
    return ax.figure


def plot_validation_curves(curves: dict, kept: dict | None = None, ax=None,
                           title: str = "validation AUROC per epoch"):
    """One line per run: ``curves`` maps a label to ``(epochs, val_auroc)`` (1-based epochs); ``kept`` maps a
    label to the epoch whose checkpoint was kept (marked). Chance (0.5) is drawn as a dotted line."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, (epochs, auroc) in curves.items():
        (line,) = ax.plot(epochs, auroc, "-", lw=1.2, label=label)
        if kept and label in kept:
            e = kept[label]
            ax.plot([e], [auroc[list(epochs).index(e)]], "o", color=line.get_color())
    ax.axhline(0.5, color="0.5", ls=":", lw=1)
    ax.set(xlabel="epoch", ylabel="validation AUROC", ylim=(0, 1), title=title)
    ax.legend(fontsize=7, ncol=2)
    return ax.figure


def plot_ranking_across_splits(summary: list[dict], ax=None, title: str = "ranking across development splits"):
    """Mean AUROC of each (method, variant) on every split it was run on, one line each: crossing lines are
    pairs of methods the splits order differently."""
    import matplotlib.pyplot as plt

    splits = sorted({int(s["split_seed"]) for s in summary})
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6))
    by_key: dict[tuple, dict[int, float]] = {}
    for s in summary:
        by_key.setdefault((s["method"], s["variant"]), {})[int(s["split_seed"])] = 100 * s["auroc_mean"]
    for i, ((m, _), vals) in enumerate(by_key.items()):
        xs = [k for k, sp in enumerate(splits) if sp in vals]
        ax.plot(xs, [vals[splits[x]] for x in xs], marker="o", color=f"C{i % 10}", label=m)
    ax.set_xticks(range(len(splits)), [f"split {sp}" for sp in splits])
    ax.set_xlim(-0.3, len(splits) - 0.7)
    ax.set(ylabel="AUROC (%)", title=title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax.figure


def plot_patch_grid(image, num_patch: int, finer: int = 4):
    """Notebook 01's picture of :func:`cxrlib.patching.patchify`: the image with its ``num_patch × num_patch`` grid
    and the patch order, the patches side by side as the batch ``patchify`` makes, and a ``finer × finer`` grid.

    Args:
        image: ``(1, 1, S, S)`` tensor in [0, 1].
    """
    import matplotlib.pyplot as plt
    import torch

    from .patching import patch_positions, patchify

    size = image.shape[-1]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    axes[0].imshow(_grey(image[0, 0]), cmap="gray")
    for k in range(1, num_patch):
        axes[0].axhline(k * size / num_patch - 0.5, color="yellow")
        axes[0].axvline(k * size / num_patch - 0.5, color="yellow")
    for p, (r, c) in enumerate(patch_positions(num_patch)):
        axes[0].text((c + 0.5) * size / num_patch, (r + 0.5) * size / num_patch, str(p), color="yellow",
                     ha="center", fontsize=14)
    axes[0].set_title(f"{num_patch}x{num_patch} grid, patch order")
    patches = patchify(image, num_patch)
    axes[1].imshow(torch.cat(list(patches[:, 0]), dim=1), cmap="gray")
    axes[1].set_title("the patches as a batch")
    fine = patchify(image, finer)
    axes[2].imshow(torch.cat([torch.cat(list(fine[r * finer:(r + 1) * finer, 0]), 1) for r in range(finer)], 0),
                   cmap="gray")
    axes[2].set_title(f"{finer}x{finer} grid")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_channel_weights(weights, labels, order=None):
    """Notebook 02's view of the learned channel recalibration (CRM) weights: left, ``weight - 1/2`` per test image
    (normal rows above the white line, pneumonia below) and channel; right, its mean per class.

    Args:
        weights: ``(N, C)`` CRM weights per image; labels: ``(N,)`` 0 normal / 1 pneumonia; order: the channel
            order (default: by mean weight).
    """
    import matplotlib.pyplot as plt

    weights, labels = np.asarray(weights), np.asarray(labels)
    order = np.argsort(weights.mean(0)) if order is None else order
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    rows = np.concatenate([np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)])
    dev = weights - 0.5  # what training has changed: the block starts at sigmoid(0) = 1/2
    lim = np.abs(dev).max() + 1e-12
    im = axes[0].imshow(dev[rows][:, order], aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[0].axhline((labels == 0).sum() - 0.5, color="w", lw=1)
    axes[0].set(xlabel="channel (sorted by mean weight)", ylabel="test image (normal above the line, pneumonia below)",
                title="CRM weight - 1/2, per image and channel")
    fig.colorbar(im, ax=axes[0])
    axes[1].plot(dev[labels == 0].mean(0)[order], label="normal", lw=1)
    axes[1].plot(dev[labels == 1].mean(0)[order], label="pneumonia", lw=1)
    axes[1].axhline(0, color="0.5", ls=":", label="initialisation")
    axes[1].set(xlabel="channel (same order)", ylabel="mean weight - 1/2", title="mean weight by class")
    axes[1].legend()
    fig.tight_layout()
    return fig


def plot_channel_activations(before, after, image: int, weights, order, num_patch: int, n_show: int = 3,
                             title: str = "one image: channel energy"):
    """Notebook 02's features before and after the CRM for one image: the mean ``|activation|`` per channel
    (in ``order``), then the ``n_show`` most amplified and most damped channels' bottleneck maps, the patches put
    back on the image grid, before and after (one colour scale per channel, the "before" map's).

    Args:
        before, after: ``(N * P, C, h, h)`` bottlenecks in :func:`cxrlib.patching.patchify` order
            (``P = num_patch ** 2`` rows per image); image: which image; weights: ``(C,)`` its CRM weights.
    """
    import matplotlib.pyplot as plt

    P, h = num_patch ** 2, before.shape[-1]

    def on_grid(t, ch):
        maps = t[image * P:(image + 1) * P, ch].reshape(num_patch, num_patch, h, h)
        return maps.permute(0, 2, 1, 3).reshape(num_patch * h, num_patch * h).numpy()

    weights = np.asarray(weights)
    strong, weak = np.argsort(-weights)[:n_show], np.argsort(weights)[:n_show]
    fig = plt.figure(figsize=(12, 5.5))
    ax = fig.add_subplot(2, 1, 1)
    for t, colour, alpha, label in ((before, "0.7", 1.0, "before CRM"), (after, "C1", 0.8, "after CRM")):
        energy = t[image * P:(image + 1) * P].abs().mean((0, 2, 3)).numpy()
        ax.bar(np.arange(len(energy)), energy[order], color=colour, alpha=alpha, label=label)
    ax.set(xlabel="channel (sorted by mean weight)", ylabel="mean |activation|", title=title)
    ax.legend()
    cols = 4 * n_show
    for k, ch in enumerate(list(strong) + list(weak)):
        lim = np.abs(on_grid(before, ch)).max() + 1e-8
        for j, (t, tag) in enumerate(((before, "before"), (after, "after"))):
            axk = fig.add_subplot(2, cols, cols + 1 + 2 * k + j)
            axk.imshow(on_grid(t, ch), cmap="RdBu_r", vmin=-lim, vmax=lim)
            axk.set_title(f"ch {ch} {tag}\nw={weights[ch]:.2f}", fontsize=7)
            axk.axis("off")
    fig.tight_layout()
    return fig


def save_figure(fig, name: str, fig_dir="../figures") -> Path:
    """Save ``fig`` as ``fig_dir/name`` (PNG; ``.png`` is added to a name without a suffix), creating the
    folder; returns the path of the file written."""
    path = Path(fig_dir) / name
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
