"""Image- and pixel-level evaluation shared by every method.

Rules (see the README's evaluation section):

- AUROC and AP are threshold-free and primary (scikit-learn's ``roc_auc_score`` and
  ``average_precision_score``);
- ACC, F1, sensitivity and specificity use a threshold **chosen on the validation split** and applied
  unchanged to test (:func:`choose_threshold`, then :func:`threshold_metrics`);
- the papers' own rule, the threshold of maximum accuracy over the *test* ROC (SQUID, SimSID, CRTSC), or
  Youden's J on test (WSCXR), is reported beside it and labelled ``test_tuned`` (:func:`evaluate`).

A score is "higher = more anomalous"; an image is called abnormal when ``score >= threshold``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["auroc", "average_precision", "threshold_metrics", "threshold_max_accuracy", "threshold_youden",
           "threshold_max_f1", "choose_threshold", "evaluate", "pixel_auroc", "best_dice"]


def _check(y, s):
    y, s = np.asarray(y).astype(int).ravel(), np.asarray(s, dtype=float).ravel()
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are NaN or infinite")
    if set(np.unique(y)) != {0, 1}:
        raise ValueError(f"need both classes (0 and 1) to evaluate, got labels {sorted(set(np.unique(y)))}")
    return y, s


def auroc(y, s) -> float:
    """Image-level AUROC. ``y``: ``(N,)`` in {0, 1}; ``s``: ``(N,)`` scores, higher = more anomalous."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(*_check(y, s)))


def average_precision(y, s) -> float:
    """Average precision with pneumonia (label 1) as the positive class."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(*_check(y, s)))


def threshold_metrics(y, s, threshold: float) -> dict:
    """ACC, F1, sensitivity (recall), specificity and precision when ``s >= threshold`` is called abnormal."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    y, s = _check(y, s)
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "threshold": float(threshold),
        "acc": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "sensitivity": float(tp / (tp + fn)),
        "specificity": float(tn / (tn + fp)),
        "precision": float(tp / (tp + fp)) if tp + fp else 0.0,
    }


def _candidates(s):
    # every distinct score is a cut (score >= t); +inf calls everything normal
    return np.concatenate([np.unique(s), [np.inf]])


def threshold_max_accuracy(y, s) -> float:
    """The threshold of maximum accuracy (ties: the lowest such threshold). SQUID/SimSID/CRTSC apply this
    to the **test** ROC; here it is meant for validation."""
    y, s = _check(y, s)
    cands = _candidates(s)
    acc = [((s >= t).astype(int) == y).mean() for t in cands]
    return float(cands[int(np.argmax(acc))])


def threshold_youden(y, s) -> float:
    """The threshold maximising Youden's J = TPR − FPR (WSCXR's rule, applied there to test)."""
    from sklearn.metrics import roc_curve

    y, s = _check(y, s)
    fpr, tpr, thr = roc_curve(y, s)
    return float(min(thr[int(np.argmax(tpr - fpr))], np.max(s)))


def threshold_max_f1(y, s) -> float:
    """The threshold of maximum F1 (anomalib's adaptive threshold)."""
    from sklearn.metrics import f1_score

    y, s = _check(y, s)
    cands = _candidates(s)
    f1 = [f1_score(y, (s >= t).astype(int), zero_division=0) for t in cands]
    return float(cands[int(np.argmax(f1))])


_RULES = {"max_acc": threshold_max_accuracy, "youden": threshold_youden, "max_f1": threshold_max_f1}


def choose_threshold(y_val, s_val, rule: str = "max_acc") -> float:
    """Choose the decision threshold on the **validation** split (both classes required).

    ``rule``: ``max_acc`` (the papers' rule, moved to validation), ``youden`` or ``max_f1``.
    """
    if rule not in _RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; choose one of {sorted(_RULES)}")
    return _RULES[rule](y_val, s_val)


def evaluate(y, s, val_threshold: float | None = None, test_rule: str = "max_acc") -> dict:
    """All image-level metrics of one scored set.

    Args:
        y: ``(N,)`` labels; s: ``(N,)`` scores.
        val_threshold: the threshold chosen on validation; ACC/F1/... at it go under ``"val_threshold"``.
        test_rule: the papers' rule, applied to *this* set's labels: reported under ``"test_tuned"``
            (an oracle: it looks at the labels it is evaluated on).

    Returns:
        ``{"n", "n_abnormal", "auroc", "ap", "val_threshold": {...}, "test_tuned": {..., "rule"}}``.
    """
    y, s = _check(y, s)
    out = {"n": int(len(y)), "n_abnormal": int(y.sum()), "auroc": auroc(y, s), "ap": average_precision(y, s)}
    if val_threshold is not None:
        out["val_threshold"] = threshold_metrics(y, s, val_threshold)
    tuned = threshold_metrics(y, s, choose_threshold(y, s, test_rule))
    tuned["rule"] = f"{test_rule} on these labels (test-tuned, as the papers report)"
    out["test_tuned"] = tuned
    return out


def pixel_auroc(masks, maps) -> float:
    """Pixel-level AUROC over all pixels of all images. ``masks``: bool ``(N, H, W)``; ``maps``: ``(N, H, W)``."""
    from sklearn.metrics import roc_auc_score

    m, a = np.asarray(masks).astype(int).ravel(), np.asarray(maps, dtype=float).ravel()
    return float(roc_auc_score(m, a))


def dice(masks, maps, threshold: float) -> float:
    """Dice of ``maps >= threshold`` against ``masks``, over all pixels of all images together."""
    m = np.asarray(masks).astype(bool).ravel()
    p = np.asarray(maps, dtype=float).ravel() >= threshold
    denom = p.sum() + m.sum()
    return float(2 * np.logical_and(p, m).sum() / denom) if denom else 0.0


def best_dice(masks, maps, n_thresholds: int = 100) -> tuple[float, float]:
    """Best Dice over a sweep of ``n_thresholds`` quantile thresholds of ``maps`` (MedIAnomaly's rule).

    An **oracle**: the threshold is chosen on the very masks it is scored against. Report it as such, beside
    :func:`dice` at a threshold chosen on validation masks.

    Returns:
        ``(dice, threshold)``; Dice is computed over all pixels of all images together.
    """
    m = np.asarray(masks).astype(bool).ravel()
    a = np.asarray(maps, dtype=float).ravel()
    best = (0.0, float("nan"))
    for t in np.unique(np.quantile(a, np.linspace(0, 1, n_thresholds, endpoint=False))):
        p = a >= t
        inter = np.logical_and(p, m).sum()
        dice = 2 * inter / (p.sum() + m.sum()) if p.sum() + m.sum() else 0.0
        if dice > best[0]:
            best = (float(dice), float(t))
    return best
