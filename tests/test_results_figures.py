"""The results table's figures: what each plot draws is the summary's numbers, and the main table's figure function
(cxrlib.tables.main_table.plot_results, which writes the results page's figures) runs on a constructed CSV."""
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cxrlib import benchmark as B  # noqa: E402
from cxrlib import viz  # noqa: E402
from cxrlib.data import SPLIT_VERSION  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _row(method, seed, split_seed, auroc, minutes=2.0):
    r = {k: "" for k in B.METRICS_COLUMNS}
    r.update(method=method, variant="v", seed=seed, split_seed=split_seed, data="x.npz", profile="cpu",
             auroc=auroc, ap=0.5, acc=0.5, f1=0.5, train_minutes=minutes, train_command="t", score_command="s",
             commit="abc", split_version=SPLIT_VERSION)
    return r


ROWS = [_row("a", 0, 0, 0.70, 1.0), _row("a", 1, 0, 0.80, 3.0), _row("b", 0, 0, 0.90, 10.0),
        _row("b", 0, 1, 0.85, 12.0), _row("a", 0, 1, 0.60, 2.0)]


def test_auroc_bars_draw_the_means_and_the_paper_marks():
    fig = viz.plot_auroc_bars(B.summarize(ROWS), {"a": (87.6, 1.5)}, split_seed=0)
    ax = fig.axes[0]
    assert [p.get_width() for p in ax.patches] == pytest.approx([75.0, 90.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a [v]", "b [v]"]
    star = [ln for ln in ax.lines if ln.get_marker() == "*"][0]
    assert list(star.get_xdata()) == [87.6] and list(star.get_ydata()) == [0]
    assert ax.get_xlim() == (40.0, 100.0)
    plt.close(fig)
    low = [dict(s, auroc_mean=0.27, auroc_std=0.0) for s in B.summarize(ROWS)]
    fig = viz.plot_auroc_bars(low, split_seed=0)
    assert fig.axes[0].get_xlim()[0] <= 20, "a below-chance bar stays inside the axes"
    plt.close(fig)


def test_auroc_bars_keep_one_method_order_on_every_split():
    # on split 1, b was seen first; the panel still lists a first, as on split 0
    fig = viz.plot_auroc_bars(B.summarize(ROWS), split_seed=1)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a [v]", "b [v]"]
    assert [p.get_width() for p in fig.axes[0].patches] == pytest.approx([60.0, 85.0])
    plt.close(fig)
    with pytest.raises(ValueError, match="split 7"):
        viz.plot_auroc_bars(B.summarize(ROWS), split_seed=7)


def test_cost_quality_places_each_method_at_its_mean_minutes_and_auroc():
    fig = viz.plot_cost_quality(B.summarize(ROWS), ROWS, split_seed=0)
    ax = fig.axes[0]
    means = [ln for ln in ax.lines if ln.get_marker() == "o"]
    xy = np.array([(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in means])
    np.testing.assert_allclose(xy, [(2.0, 75.0), (10.0, 90.0)])
    from matplotlib.collections import PathCollection

    runs = np.vstack([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])
    np.testing.assert_allclose(sorted(map(tuple, runs)), [(1.0, 70.0), (3.0, 80.0), (10.0, 90.0)])
    plt.close(fig)


def test_ranking_lines_join_each_method_across_splits():
    fig = viz.plot_ranking_across_splits(B.summarize(ROWS))
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in fig.axes[0].lines}
    assert lines == {"a": pytest.approx([75.0, 60.0]), "b": pytest.approx([90.0, 85.0])}
    plt.close(fig)


def test_load_scores_reads_the_saved_scores_and_names_a_missing_file(tmp_path):
    r = ROWS[0]
    path = B.scores_path(tmp_path, r["method"], r["variant"], 0, 0, SPLIT_VERSION)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("name,score,label\nx.png,0.25,0\ny.png,0.75,1\n")
    y, s = B.load_scores(tmp_path, r)
    assert list(y) == [0, 1] and list(s) == [0.25, 0.75]
    with pytest.raises(FileNotFoundError, match=re.escape(B.scores_path(tmp_path, "b", "v", 0, 0, SPLIT_VERSION).name)):
        B.load_scores(tmp_path, ROWS[2])


def test_plot_results_writes_every_figure(tmp_path):
    from cxrlib.tables import TABLES, main_table

    results = tmp_path / "results" / "cpu"
    (results / "scores").mkdir(parents=True)
    B.write_rows(results / "metrics.csv", ROWS)
    rng = np.random.default_rng(0)
    for r in ROWS:
        lab = np.repeat([0, 1], 10)
        sc = rng.normal(size=20) + lab
        body = "".join(f"i{i}.png,{v},{l}\n" for i, (v, l) in enumerate(zip(sc, lab)))
        path = B.scores_path(results / "scores", r["method"], r["variant"], r["seed"], r["split_seed"], SPLIT_VERSION)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "name,score,label\n" + body)
    out = TABLES["main"].draw(results / "metrics.csv", tmp_path / "fig", "cpu")
    names = sorted(p.name for p in out)
    assert names == sorted(f"results_cpu_{k}.png" for k, _ in main_table.FIGURES)
    assert all(p.stat().st_size > 0 for p in out)
    with pytest.raises(ValueError, match="no rows"):
        main_table.plot_results(tmp_path / "none.csv", "cpu", tmp_path / "fig")


def test_results_page_shows_the_committed_results_figures():
    page = (ROOT / "results" / "README.md").read_text()
    shown = re.findall(r"\]\(\.\./(figures/results_cpu_[a-z_]+\.png)\)", page)
    expected = {f"figures/results_cpu_{k}.png" for k in ("roc", "scores", "auroc", "cost_quality", "ranking")}
    assert expected <= set(shown), "the results page shows the five figures of cxrlib.tables.main_table.plot_results"
    assert all((ROOT / p).exists() for p in shown)
