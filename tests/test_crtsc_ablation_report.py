"""The CRTSC ablation design (scripts/run_crtsc_ablation.sh): its rows, their split between workers, and the
report (summary statistics, paper numbers, the README block generated from the committed CSV)."""
import csv
import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run_crtsc_ablation.sh"


def _report():
    spec = importlib.util.spec_from_file_location("crtsc_ablation_report", ROOT / "scripts" / "crtsc_ablation_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dry_run(tmp_path, shard: str) -> list[tuple[str, str]]:
    """(row label, run folder) of every row the worker ``shard`` would run, with an empty CSV."""
    env = dict(os.environ, DRY_RUN="1", SHARD=shard, ABLATION_OUT=str(tmp_path / "out"))
    res = subprocess.run(["bash", str(SCRIPT), "zhanglab128_train.npz"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)
    rows = []
    for line in res.stdout.splitlines():
        label, cmd = line.split(": ", 1)
        rows.append((label, re.search(r"--out (\S+)", cmd).group(1)))
    return rows


def test_design_rows_and_their_split_between_workers(tmp_path):
    everything = _dry_run(tmp_path, "0/1")
    assert len(everything) == _report().DESIGN_ROWS == 24
    assert len({run for _, run in everything}) == 22  # Table 5's T=24 and Table 6's 0.03 are Table 3's CRTSC seed 0
    shards = [_dry_run(tmp_path, f"{i}/2") for i in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(everything)
    runs = [{run for _, run in s} for s in shards]
    assert not runs[0] & runs[1], "rows sharing a run folder must stay in one worker"
    assert abs(len(runs[0]) - len(runs[1])) <= 1
    assert not (tmp_path / "out").exists(), "a dry run writes nothing"


@pytest.mark.parametrize("shard", ["2/2", "x/2", "0/0"])
def test_bad_shard_is_refused(tmp_path, shard):
    env = dict(os.environ, DRY_RUN="1", SHARD=shard, ABLATION_OUT=str(tmp_path))
    res = subprocess.run(["bash", str(SCRIPT), "d.npz"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "SHARD must be i/n" in res.stderr


def test_summary_on_a_constructed_csv(tmp_path):
    mod = _report()
    path = tmp_path / "a.csv"
    cols = ["table", "row", "seed", "auroc", "ap", "acc", "f1", "val_auroc", "train_minutes", "command", "commit"]
    rows = [["table3", "baseline (SQUID)", s, a, 0.5, 0.6, 0.7, 0.8, m, f"c{s}", "abc"]
            for s, a, m in ((0, 0.70, 10.0), (1, 0.74, 12.0), (2, 0.78, 14.0))]
    rows.insert(0, ["table3", "+KL", 0, 0.6, 0.6, 0.6, 0.6, 0.6, 10.0, "k", "abc"])
    rows.append(["table5", "T=12", 0, 0.81, 0.82, 0.83, 0.84, 0.85, 11.0, "c", "def"])
    rows.append(["table5", "T=8", 0, 0.8, 0.8, 0.8, 0.8, 0.8, 11.0, "c8", "def"])
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([cols, *rows])
    s = mod.summarize(path)
    base = s[s["row"] == "baseline (SQUID)"].iloc[0]
    assert base["auroc_mean"] == pytest.approx(0.74) and base["auroc_std"] == pytest.approx(0.04)  # sample std
    assert base["seeds"] == "0, 1, 2" and base["train_minutes"] == pytest.approx(12.0)
    assert base["paper_auroc_pct"] == 87.6  # SQUID Tab. 1, from cxrlib.paper_numbers
    table = mod.summary_table(path)
    assert "| Table 3 (components) | baseline (SQUID) | 0, 1, 2 | 74.0 ± 4.0 | 50.0 ± 0.0 | 60.0 ± 0.0 | 70.0 ± 0.0 | 12 | 87.6 |" in table
    assert "| Table 5 (CRM reduction T) | T=12 | 0 | 81.0 | 82.0 | 83.0 | 84.0 | 11 |  |" in table  # one seed: no std
    assert list(s["row"]) == ["baseline (SQUID)", "+KL", "T=8", "T=12"]  # the design's order, not the CSV's
    assert mod.paper_auroc("+CRM") == 88.98 and mod.paper_auroc("+TSCC") == 87.93
    section = mod.readme_section(path)
    assert "6 of the design's 24 rows" in section and "commits abc, def" in section


def test_results_page_holds_the_ablation_table_of_the_committed_csv():
    mod = _report()
    page = (ROOT / "results" / "README.md").read_text()
    expected = mod.summary_table(ROOT / "results" / "crtsc_ablation" / "ablation.csv").rstrip("\n")
    assert expected in page, "results/README.md differs from the CSV: run python scripts/update_readme_results.py"


def test_a_row_of_an_already_finished_run_copies_its_numbers(tmp_path):
    """Table 5's T=24 and Table 6's 0.03 are Table 3's CRTSC seed 0 run: no training, the row is copied."""
    import sys

    design = _dry_run(tmp_path, "0/1")
    env = dict(os.environ, DRY_RUN="1", ABLATION_OUT=str(tmp_path / "out"))
    lines = subprocess.run(["bash", str(SCRIPT), "zhanglab128_train.npz"], cwd=ROOT, env=env, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    out = tmp_path / "out"
    out.mkdir()
    header = ["table", "row", "seed", "auroc", "ap", "acc", "f1", "val_auroc", "train_minutes", "command", "commit"]
    rows, seen = [], set()
    for i, line in enumerate(lines):
        label, cmd = line.split(": ", 1)
        table, row, seed = label.split(" / ")
        if design[i][1] in seen:
            continue  # the second row of a run: the script must fill it
        seen.add(design[i][1])
        rows.append([table, row, seed.removeprefix("seed "), 0.5 + i / 100, 0.4, 0.3, 0.2, 0.1, 9.0, cmd, "abc"])
    with open(out / "ablation.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    env = dict(os.environ, ABLATION_OUT=str(out), PY=sys.executable)
    res = subprocess.run(["bash", str(SCRIPT), "zhanglab128_train.npz"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("numbers copied") == 2
    got = list(csv.DictReader(open(out / "ablation.csv")))
    assert len(got) == 24
    crtsc_s0 = next(r for r in got if r["table"] == "table3" and r["row"] == "all (CRTSC)" and r["seed"] == "0")
    for table, row in (("table5", "T=24"), ("table6", "lambda_tscc=0.03")):
        copy = next(r for r in got if r["table"] == table and r["row"] == row)
        assert {k: copy[k] for k in header[3:]} == {k: crtsc_s0[k] for k in header[3:]}
    assert (out / "summary.csv").exists() and (out / "crtsc_ablation.png").exists()
