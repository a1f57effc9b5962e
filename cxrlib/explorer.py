"""An interactive look at any method's decisions: pick a method, an image (by index, or among the worst
false positives / false negatives) and a threshold; see the image, its anomaly map, the score and the decision.

:func:`case_figure` draws one case as a static matplotlib figure (what GitHub and nbval show);
:func:`explorer` wraps it in ipywidgets controls when a live kernel has them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["MethodCases", "pick_cases", "case_figure", "explorer"]

KINDS = ("by index", "worst false positives", "worst false negatives")


@dataclass
class MethodCases:
    """One method's scored test images.

    Attributes:
        name: label shown in the menu. images: uint8 ``(N, S, S)``. labels: ``(N,)`` 0/1. scores: ``(N,)``.
        threshold: the validation threshold stored in the checkpoint.
        maps: optional ``(N, S, S)`` anomaly maps (computed lazily by ``map_fn`` when ``None``).
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    threshold: float
    maps: np.ndarray | None = None
    map_fn: object = None
    _cache: dict = field(default_factory=dict, repr=False)

    def map(self, i: int):
        if self.maps is not None:
            return self.maps[i]
        if self.map_fn is None:
            return None
        if i not in self._cache:
            self._cache[i] = np.asarray(self.map_fn(self.images[i:i + 1]))[0]
        return self._cache[i]


def pick_cases(labels, scores, threshold: float, kind: str, n: int = 8) -> np.ndarray:
    """Indices for ``kind``: ``"by index"`` (all, in order), ``"worst false positives"`` (normal images
    above the threshold, highest score first) or ``"worst false negatives"`` (abnormal images below it,
    lowest first); at most ``n`` for the last two."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    if kind == "by index":
        return np.arange(len(scores))
    if kind == "worst false positives":
        idx = np.flatnonzero((labels == 0) & (scores >= threshold))
        return idx[np.argsort(-scores[idx])][:n]
    if kind == "worst false negatives":
        idx = np.flatnonzero((labels == 1) & (scores < threshold))
        return idx[np.argsort(scores[idx])][:n]
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def case_figure(cases: MethodCases, i: int, threshold: float | None = None):
    """Image, anomaly map (when the method has one), score and decision of test image ``i``."""
    import matplotlib.pyplot as plt

    thr = cases.threshold if threshold is None else threshold
    heat = cases.map(i)
    fig, axes = plt.subplots(1, 2 if heat is not None else 1, figsize=(6.4 if heat is not None else 3.2, 3.4),
                             squeeze=False)
    axes = axes[0]
    axes[0].imshow(cases.images[i], cmap="gray", vmin=0, vmax=255)
    axes[0].axis("off")
    truth = "pneumonia" if cases.labels[i] == 1 else "normal"
    decision = "anomalous" if cases.scores[i] >= thr else "normal"
    ok = (decision == "anomalous") == (cases.labels[i] == 1)
    axes[0].set_title(f"#{i}: {truth}", fontsize=10)
    if heat is not None:
        axes[1].imshow(cases.images[i], cmap="gray", vmin=0, vmax=255)
        axes[1].imshow(heat, cmap="jet", alpha=0.45)
        axes[1].axis("off")
        axes[1].set_title("anomaly map", fontsize=10)
    fig.suptitle(f"{cases.name}: score {cases.scores[i]:.2f} vs threshold {thr:.2f} -> {decision} "
                 f"({'correct' if ok else 'wrong'})", fontsize=10)
    fig.tight_layout()
    return fig


def explorer(methods: dict[str, MethodCases]):
    """ipywidgets controls (method, case kind, position in the list, threshold) around :func:`case_figure`.

    Returns the widget, or ``None`` when ipywidgets is not installed (the caller shows static figures)."""
    try:
        import ipywidgets as W
    except ImportError:
        return None
    import matplotlib.pyplot as plt
    from IPython.display import display

    first = next(iter(methods.values()))
    method = W.Dropdown(options=list(methods), description="method")
    kind = W.Dropdown(options=KINDS, description="images")
    pos = W.IntSlider(0, 0, max(len(first.scores) - 1, 0), description="case")
    thr = W.FloatSlider(value=first.threshold, min=float(first.scores.min()), max=float(first.scores.max()),
                        step=0.01, description="threshold")
    out = W.Output()

    def redraw(*_):
        m = methods[method.value]
        idx = pick_cases(m.labels, m.scores, thr.value, kind.value)
        pos.max = max(len(idx) - 1, 0)
        with out:
            out.clear_output(wait=True)
            if len(idx) == 0:
                print(f"no {kind.value} at this threshold")
                return
            fig = case_figure(m, int(idx[min(pos.value, len(idx) - 1)]), thr.value)
            display(fig)
            plt.close(fig)

    def new_method(*_):
        m = methods[method.value]
        thr.min, thr.max = -1e9, 1e9  # widen first so the new range never clashes with the old value
        thr.min, thr.max, thr.value = float(m.scores.min()), float(m.scores.max()), m.threshold
        redraw()

    method.observe(new_method, "value")
    for w in (kind, pos, thr):
        w.observe(redraw, "value")
    redraw()
    return W.VBox([W.HBox([method, kind]), W.HBox([pos, thr]), out])
