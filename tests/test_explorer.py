"""The explorer's case selection and its static figure."""
import numpy as np
import pytest

from cxrlib.explorer import MethodCases, case_figure, explorer, pick_cases


def test_pick_cases():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.9, 0.2, 0.6, 0.1, 0.8, 0.3])
    assert pick_cases(y, s, 0.5, "worst false positives").tolist() == [0, 2]
    assert pick_cases(y, s, 0.5, "worst false negatives").tolist() == [3, 5]
    assert pick_cases(y, s, 0.5, "by index").tolist() == list(range(6))
    with pytest.raises(ValueError, match="kind must be one of"):
        pick_cases(y, s, 0.5, "best")


def test_static_figure_and_widget():
    rng = np.random.default_rng(0)
    cases = MethodCases("toy", rng.integers(0, 255, (4, 16, 16), dtype=np.uint8), np.array([0, 1, 0, 1]),
                        np.array([0.1, 0.9, 0.7, 0.2]), 0.5, map_fn=lambda im: im.astype(float))
    fig = case_figure(cases, 2)
    assert "anomalous (wrong)" in fig._suptitle.get_text()
    assert len(fig.axes) == 2
    widget = explorer({"toy": cases})
    assert widget is not None  # ipywidgets is part of the notebooks extra
