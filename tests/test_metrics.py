"""Metrics against hand-computed cases, including the validation threshold applied unchanged to test."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from cxrlib import metrics as M


def test_auroc_ap_hand_case():
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    assert M.auroc(y, s) == pytest.approx(0.75)  # 3 of 4 (normal, abnormal) pairs ordered right
    # AP: ranks 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 -> precision 1 at recall .5, 2/3 at recall 1
    assert M.average_precision(y, s) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_threshold_metrics_hand_case():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.5, 0.9])
    m = M.threshold_metrics(y, s, 0.5)  # predicts 0,0,1,1,1
    assert m["acc"] == pytest.approx(4 / 5)
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(f1_score(y, [0, 0, 1, 1, 1]))
    assert m["precision"] == pytest.approx(2 / 3)


def test_max_accuracy_and_youden_thresholds():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.25, 0.7, 0.8])
    t = M.threshold_max_accuracy(y, s)
    assert t == pytest.approx(0.25)  # 0.25 and 0.7 both give 5/6: ties keep the lowest threshold
    assert M.threshold_metrics(y, s, t)["acc"] == pytest.approx(5 / 6)
    j = M.threshold_youden(y, s)
    assert M.threshold_metrics(y, s, j)["sensitivity"] - (1 - M.threshold_metrics(y, s, j)["specificity"]) == \
        pytest.approx(2 / 3)


def test_validation_threshold_is_applied_unchanged_to_test():
    rng = np.random.default_rng(0)
    y_val = np.r_[np.zeros(50), np.ones(50)].astype(int)
    s_val = np.r_[rng.normal(0, 1, 50), rng.normal(2, 1, 50)]
    y_test = np.r_[np.zeros(80), np.ones(80)].astype(int)
    s_test = np.r_[rng.normal(0.5, 1, 80), rng.normal(2.5, 1, 80)]  # shifted: the val threshold is not optimal
    t = M.choose_threshold(y_val, s_val)
    r = M.evaluate(y_test, s_test, val_threshold=t)
    assert r["val_threshold"]["threshold"] == t
    assert r["val_threshold"]["acc"] == pytest.approx(((s_test >= t) == y_test).mean())
    # the oracle threshold is at least as accurate on test, and labelled as test-tuned
    assert r["test_tuned"]["acc"] >= r["val_threshold"]["acc"]
    assert "test-tuned" in r["test_tuned"]["rule"]
    assert r["auroc"] == pytest.approx(roc_auc_score(y_test, s_test))


def test_errors():
    with pytest.raises(ValueError, match="both classes"):
        M.choose_threshold([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        M.auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="unknown threshold rule"):
        M.choose_threshold([0, 1], [0, 1], "median")


def test_pixel_auroc_and_best_dice():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = True
    maps = np.zeros((2, 4, 4))
    maps[0, :2, :2] = 1.0
    maps[1, 0, 0] = 0.5
    assert M.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    dice, t = M.best_dice(masks, maps)
    assert dice == pytest.approx(1.0) and t > 0.5


def test_best_dice_on_an_imperfect_map_matches_hand_count_and_f1():
    # mask: 4 lesion pixels; the map ranks 3 of them above one background pixel, the 4th below it
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 0, :4] = True
    maps = np.zeros((1, 4, 4))
    maps[0, 0, :3] = [0.9, 0.8, 0.7]
    maps[0, 1, 0] = 0.6  # false positive
    maps[0, 0, 3] = 0.5  # lesion pixel ranked below it
    dice, t = M.best_dice(masks, maps, n_thresholds=16)
    # keeping the top 3 gives TP 3, FN 1: 6/7; keeping all five non-zero pixels TP 4, FP 1: 8/9, the best
    assert dice == pytest.approx(8 / 9)
    assert 0 < t <= 0.5
    # Dice on binary pixels is their F1 score
    assert dice == pytest.approx(f1_score(masks.ravel(), maps.ravel() >= t))


def test_best_dice_is_the_best_f1_over_its_sweep_on_random_maps():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 8, 8)) < 0.2
    maps = masks * 0.5 + rng.random((3, 8, 8))
    dice, t = M.best_dice(masks, maps, n_thresholds=50)
    sweep = np.unique(np.quantile(maps.ravel(), np.linspace(0, 1, 50, endpoint=False)))
    f1s = [f1_score(masks.ravel(), maps.ravel() >= s) for s in sweep]
    assert dice == pytest.approx(max(f1s))
    assert dice == pytest.approx(f1_score(masks.ravel(), maps.ravel() >= t))
