"""The results tables (cxrlib.tables): the registry, `python -m cxrlib benchmark --table NAME` dispatching to each
table's runner, and each table's own logic on constructed CSVs: the CRTSC ablation design (its rows, their split
between workers, rows copied from a finished run), the summaries of the CRTSC, DDAD and WSCXR tables, and the SQUID
lever study's options, resumable loop (its CSVs' format), Markdown, figure and script wrapper."""
import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlib import cli
from cxrlib.tables import TABLES
from cxrlib.tables import crtsc_ablation as C
from cxrlib.tables import ddad_full as DD
from cxrlib.tables import main_table
from cxrlib.tables import squid_levers as SL
from cxrlib.tables import wscxr as W

ROOT = Path(__file__).resolve().parents[1]


def test_the_registry_covers_every_table_with_its_csv_and_key():
    assert list(TABLES) == ["main", "localisation", "wscxr", "crtsc-ablation", "ddad-full", "squid-levers"]
    for name, t in TABLES.items():
        assert t.name == name and callable(t.run) and callable(t.add_arguments) and callable(t.markdown)
        assert t.key, name
    # every table with a committed CSV: the CSV has the key columns, and the table's Markdown is on the results page
    page = (ROOT / "results" / "README.md").read_text()
    for name in ("main", "wscxr", "crtsc-ablation", "ddad-full"):
        path = TABLES[name].csv_path(ROOT, "cpu")
        with open(path, newline="") as f:
            header = next(csv.reader(f))
        assert set(TABLES[name].key) <= set(header), name
        assert TABLES[name].markdown(path).rstrip("\n") in page, name
    assert TABLES["localisation"].csv == TABLES["main"].csv  # one CSV, told apart by the data column


@pytest.mark.parametrize("name", list(TABLES))
def test_benchmark_table_dispatches_to_the_tables_runner(name, monkeypatch, capsys):
    calls = []
    for other in TABLES:  # every runner replaced: nothing trains, and only the named one may be called
        monkeypatch.setitem(TABLES, other, TABLES[other].__class__(
            **{**TABLES[other].__dict__, "run": lambda args, other=other: calls.append((other, args)) or 0}))
    assert cli.main(["benchmark", "--table", name]) == 0
    assert [c[0] for c in calls] == [name]
    assert calls[0][1].table == name


def test_each_table_parses_its_own_options_and_the_old_spelling_still_works(monkeypatch):
    got = {}
    monkeypatch.setattr(main_table.B, "run_table", lambda *a, **k: got.setdefault("tables", a[6]) and [])
    monkeypatch.setattr(main_table.D, "resolve_data", lambda profile, data: "d.npz")
    assert cli.main(["benchmark", "--profile", "quick", "--tables", "image", "localisation"]) == 0
    assert got["tables"] == ["image", "localisation"]
    got.clear()
    assert cli.main(["benchmark", "--table", "localisation", "--profile", "quick"]) == 0
    assert got["tables"] == ["localisation"]
    args = cli.build_parser(table="wscxr").parse_args(["benchmark", "--table", "wscxr", "--weights", "imagenet"])
    assert args.profile == "cpu" and args.seeds == [0, 1, 2] and args.weights == "imagenet"
    args = cli.build_parser(table="ddad-full").parse_args(["benchmark", "--table", "ddad-full", "--weak", "--jobs", "2"])
    assert args.weak and args.jobs == 2 and args.out == "results/ddad_full.csv"
    with pytest.raises(SystemExit):  # another table's option
        cli.build_parser(table="main").parse_args(["benchmark", "--weak"])


def test_a_table_without_data_is_one_line_error(capsys):
    assert cli.main(["benchmark", "--table", "crtsc-ablation"]) == 2
    assert "--data" in capsys.readouterr().err


def _dry_run(tmp_path, shard: str, capsys) -> list[tuple[str, str]]:
    """(row label, run folder) of every row the worker ``shard`` would run, with no CSV yet."""
    capsys.readouterr()
    assert cli.main(["benchmark", "--table", "crtsc-ablation", "--data", "zhanglab128_train.npz", "--dry-run",
                     "--shard", shard, "--out", str(tmp_path / "out")]) == 0
    rows = []
    for line in capsys.readouterr().out.splitlines():
        label, cmd = line.split(": ", 1)
        rows.append((label, re.search(r"--out (\S+)", cmd).group(1)))
    return rows


def test_design_rows_and_their_split_between_workers(tmp_path, capsys):
    everything = _dry_run(tmp_path, "0/1", capsys)
    assert len(everything) == C.DESIGN_ROWS == 24
    assert len({run for _, run in everything}) == 22  # Table 5's T=24 and Table 6's 0.03 are Table 3's CRTSC seed 0
    # the two ends of Table 3 are the main table's runs
    assert {run for label, run in everything if "baseline" in label} == {f"runs/cpu/squid_s{s}" for s in range(3)}
    assert {run for label, run in everything if "all (CRTSC)" in label} == {f"runs/cpu/crtsc_s{s}" for s in range(3)}
    shards = [_dry_run(tmp_path, f"{i}/2", capsys) for i in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(everything)
    runs = [{run for _, run in s} for s in shards]
    assert not runs[0] & runs[1], "rows sharing a run folder must stay in one worker"
    assert abs(len(runs[0]) - len(runs[1])) <= 1
    assert not (tmp_path / "out").exists(), "a dry run writes nothing"


def test_the_committed_ablation_rows_are_the_designs_commands():
    from cxrlib.benchmark import display_command

    design = {(r["table"], r["row"], str(r["seed"])): display_command(["train", *r["args"]]) +
              f" --data PATH/zhanglab128_train.npz --out {r['run']}" for r in C.design()}
    rows = C.read_rows(ROOT / "results" / "crtsc_ablation" / "ablation.csv")
    by_version: dict = {}
    for r in rows:
        by_version.setdefault((r["split_version"], r["profile_version"]), []).append(r)
        assert (r["table"], r["row"], r["seed"]) in design
        if C.is_current(r):  # the image-v1 record trained its baseline as crtsc with the components off
            assert r["command"] == design[(r["table"], r["row"], r["seed"])]
    for version, group in by_version.items():  # one row per design row and definition, at most
        assert len({(r["table"], r["row"], r["seed"]) for r in group}) == len(group) <= len(design), version


@pytest.mark.parametrize("shard", ["2/2", "x/2", "0/0"])
def test_bad_shard_is_refused(tmp_path, shard, capsys):
    assert cli.main(["benchmark", "--table", "crtsc-ablation", "--data", "d.npz", "--dry-run", "--shard", shard,
                     "--out", str(tmp_path)]) == 2
    assert "--shard must be i/n" in capsys.readouterr().err


def test_ablation_summary_on_a_constructed_csv(tmp_path):
    path = tmp_path / "a.csv"
    rows = [["table3", "baseline (SQUID)", s, a, 0.5, 0.6, 0.7, 0.8, m, f"c{s}", "abc"]
            for s, a, m in ((0, 0.70, 10.0), (1, 0.74, 12.0), (2, 0.78, 14.0))]
    rows.insert(0, ["table3", "+KL", 0, 0.6, 0.6, 0.6, 0.6, 0.6, 10.0, "k", "abc"])
    rows.append(["table5", "T=12", 0, 0.81, 0.82, 0.83, 0.84, 0.85, 11.0, "c", "def"])
    rows.append(["table5", "T=8", 0, 0.8, 0.8, 0.8, 0.8, 0.8, 11.0, "c8", "def"])
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([C.COLUMNS, *rows])
    s = C.summarize(path)
    base = s[s["row"] == "baseline (SQUID)"].iloc[0]
    assert base["auroc_mean"] == pytest.approx(0.74) and base["auroc_std"] == pytest.approx(0.04)  # sample std
    assert base["seeds"] == "0, 1, 2" and base["train_minutes"] == pytest.approx(12.0)
    assert base["paper_auroc_pct"] == 87.6  # SQUID Tab. 1, from cxrlib.paper_numbers
    table = C.summary_table(path)
    assert "| Table 3 (components) | baseline (SQUID) | 0, 1, 2 | 74.0 ± 4.0 | 50.0 ± 0.0 | 60.0 ± 0.0 | 70.0 ± 0.0 | 12 | 87.6 |" in table
    assert "| Table 5 (CRM reduction T) | T=12 | 0 | 81.0 | 82.0 | 83.0 | 84.0 | 11 |  |" in table  # one seed: no std
    assert list(s["row"]) == ["baseline (SQUID)", "+KL", "T=8", "T=12"]  # the design's order, not the CSV's
    assert C.paper_auroc("+CRM") == 88.98 and C.paper_auroc("+TSCC") == 87.93


def test_component_effects_pair_each_row_with_the_baseline_of_its_seed(tmp_path):
    path = tmp_path / "a.csv"
    cur = [*_current_versions(), "1"]
    rows = [["table3", "baseline (SQUID)", s, a, 0.5, 0.5, 0.5, 0.5, 0.5, 9.0, "b", "x", *cur]
            for s, a in ((0, 0.80), (1, 0.90))]
    rows += [["table3", "+KL", s, a, 0.5, 0.5, 0.5, 0.5, 0.5, 9.0, "k", "x", *cur] for s, a in ((0, 0.85), (1, 0.89))]
    rows += [["table3", "+CRM", 2, 0.7, 0.5, 0.5, 0.5, 0.5, 0.5, 9.0, "c", "x", *cur]]  # no baseline of seed 2
    rows += [["table3", "+TSCC", 1, 0.93, 0.5, 0.5, 0.5, 0.5, 0.5, 9.0, "t", "x", *cur]]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([C.COLUMNS, *rows])
    effects = {e["row"]: e for e in C.component_effects(path)}
    assert list(effects) == ["+KL", "+TSCC"]  # Table 3's order; +CRM shares no seed with the baseline
    assert effects["+KL"]["seeds"] == [0, 1] and effects["+KL"]["diffs"] == pytest.approx([5.0, -1.0])
    assert effects["+KL"]["mean"] == pytest.approx(2.0) and effects["+KL"]["std"] == pytest.approx(4.2426, abs=1e-3)
    assert effects["+TSCC"]["mean"] == pytest.approx(3.0) and effects["+TSCC"]["std"] != effects["+TSCC"]["std"]
    sentence = C.effects_sentence(path)
    assert "+KL +2.0 ± 4.2 (seeds 0, 1: +5.0, -1.0); +TSCC +3.0 (seeds 1: +3.0)." in sentence
    assert C.markdown(path) == C.summary_table(path) + "\n" + sentence + "\n"


def test_a_row_of_an_already_finished_run_copies_its_numbers(tmp_path, capsys):
    """Table 5's T=24 and Table 6's 0.03 are Table 3's CRTSC seed 0 run: no training, the row is copied."""
    design = _dry_run(tmp_path, "0/1", capsys)
    assert cli.main(["benchmark", "--table", "crtsc-ablation", "--data", "zhanglab128_train.npz", "--dry-run",
                     "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    out = tmp_path / "out"
    out.mkdir()
    rows, seen = [], set()
    for i, line in enumerate(lines):
        label, cmd = line.split(": ", 1)
        table, row, seed = label.split(" / ")
        if design[i][1] in seen:
            continue  # the second row of a run: the runner must fill it
        seen.add(design[i][1])
        rows.append([table, row, seed.removeprefix("seed "), 0.5 + i / 100, 0.4, 0.3, 0.2, 0.1, 9.0, cmd, "abc",
                     *_current_versions(), "1"])
    with open(out / "ablation.csv", "w", newline="") as f:
        csv.writer(f).writerows([C.COLUMNS, *rows])
    assert cli.main(["benchmark", "--table", "crtsc-ablation", "--data", "zhanglab128_train.npz",
                     "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("numbers copied") == 2
    got = list(csv.DictReader(open(out / "ablation.csv")))
    assert len(got) == 24
    crtsc_s0 = next(r for r in got if r["table"] == "table3" and r["row"] == "all (CRTSC)" and r["seed"] == "0")
    for table, row in (("table5", "T=24"), ("table6", "lambda_tscc=0.03")):
        copy = next(r for r in got if r["table"] == table and r["row"] == row)
        assert {k: copy[k] for k in C.COLUMNS[3:]} == {k: crtsc_s0[k] for k in C.COLUMNS[3:]}
    assert (out / "summary.csv").exists() and (out / "crtsc_ablation.png").exists()


def _current_versions(method: str = "crtsc") -> list[str]:
    from cxrlib.benchmark import current_profile_version
    from cxrlib.data import SPLIT_VERSION

    return [SPLIT_VERSION, current_profile_version(method, "cpu")]


def test_stale_ablation_rows_are_a_record_not_done_rows(tmp_path, capsys):
    """A CSV written before the version columns (the image-v1 split) is migrated, never counts as done, and is
    summarised as stale until a current row exists; from then on the summary holds the current rows only."""
    design = _dry_run(tmp_path, "0/1", capsys)
    out = tmp_path / "out"
    out.mkdir()
    legacy = C.COLUMNS[:11]  # the columns before the split and profile versions were recorded
    stale = [["table3", "+KL", s, 0.6, 0.6, 0.6, 0.6, 0.6, 10.0, "k", "old"] for s in (0, 1, 2)]
    with open(out / "ablation.csv", "w", newline="") as f:
        csv.writer(f).writerows([legacy, *stale])
    rows, is_stale = C.table_rows(out / "ablation.csv")
    assert is_stale and len(rows) == 3 and {r["split_version"] for r in rows} == {"image-v1"}
    assert C.summary_table(out / "ablation.csv").startswith("Stale: all 3 rows")
    assert cli.main(["benchmark", "--table", "crtsc-ablation", "--data", "zhanglab128_train.npz", "--dry-run",
                     "--out", str(out)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(design) == 24  # the stale rows are not done
    C._migrate(out / "ablation.csv")  # what a worker does before its first row: the legacy rows get their versions
    assert next(csv.reader(open(out / "ablation.csv", newline=""))) == C.COLUMNS
    assert C.read_rows(out / "ablation.csv") == rows
    with open(out / "ablation.csv", "a", newline="") as f:  # one current row beside the stale ones
        csv.writer(f).writerow(["table3", "+KL", 0, 0.8, 0.8, 0.8, 0.8, 0.8, 10.0, "k", "new", *_current_versions(), 1])
    rows, is_stale = C.table_rows(out / "ablation.csv")
    assert not is_stale and [r["commit"] for r in rows] == ["new"]
    assert C.summary_table(out / "ablation.csv").startswith("1 of the design's 24 rows on the current definition")
    assert C.summarize(out / "ablation.csv")["auroc_mean"].tolist() == [0.8]


def test_a_run_folder_of_another_split_is_refused_not_reused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(C, "repo_root", lambda: tmp_path)
    first = C.design()[0]["run"]
    (tmp_path / first).mkdir(parents=True)
    torch.save({"split_version": "image-v1"}, tmp_path / first / "model.pt")
    assert cli.main(["benchmark", "--table", "crtsc-ablation", "--data", "zhanglab128_train.npz",
                     "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "trained on development split 'image-v1'" in err and Path(first).name in err
    assert C.read_rows(tmp_path / "out" / "ablation.csv") == []  # nothing was written for it


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_ddad_summary_table_on_a_constructed_csv(tmp_path):
    rows = [dict(protocol="semi", backbone="ae", score="asr", seed=s, n_unlabelled=700, anomaly_rate=0.6,
                 auroc=a, ap=0.5, acc_val_threshold=0.7, f1_val_threshold=0.8, acc_test_tuned=0.7, f1_test_tuned=0.8,
                 val_auroc=0.9, train_minutes=m, wall_minutes=m, threads=1, command="c", git_commit="abc",
                 finished_at="t") for s, a, m in ((0, 0.90, 60.0), (1, 0.94, 70.0))]
    _write(tmp_path / "d.csv", rows)
    table = DD.summary_table(tmp_path / "d.csv")
    # mean 92.0, sample std of (90, 94) = 2.83
    assert "| semi (pool 700, rate 0.6) | AE | asr | 0, 1 | 92.0 ± 2.8 | 50.0 ± 0.0 | 70.0 ± 0.0 | 80.0 ± 0.0 | 65 | 65 |" in table
    # rows without the version columns are the image-v1 record: drawn, and said to be stale; no weak rows: no second
    assert DD.markdown(tmp_path / "d.csv") == "Stale: all 2 rows were made on an earlier definition (`image-v1` split, " \
        "`cpu` profile (bf16) version 1); no row of the current one yet.\n\n" + table
    assert DD.done_rows(tmp_path / "d.csv") == set()  # a stale row is not a finished one


def test_ddad_weak_table_sits_beside_the_paper_and_out_of_the_semi_table(tmp_path):
    base = dict(backbone="ae", seed=0, anomaly_rate=1.0, ap=0.5, acc_val_threshold=0.6, f1_val_threshold=0.7,
                acc_test_tuned=0.65, f1_test_tuned=0.75, val_auroc=0.9, train_minutes=50.0, wall_minutes=50.0,
                threads=1, command="c", git_commit="abc", finished_at="t",
                **dict(zip(("split_version", "profile_version"), _current_versions("ddad"))))
    rows = [dict(base, protocol=f"weak_k{k}", n_unlabelled=k, score=kind, auroc=a)
            for k in (2, 16) for kind, a in zip(DD.SCORES, (0.5, 0.6, 0.7, 0.8))]
    rows.append(dict(base, protocol="semi", n_unlabelled=700, anomaly_rate=0.6, score="asr", auroc=0.9))
    path = tmp_path / "d.csv"
    _write(path, rows)
    assert "weak" not in DD.summary_table(path)
    table = DD.weak_table(path)
    # K = 16's paper row: WSCXR Table I's DDAD, 75.9 / 70.0 / 74.4
    assert "| 16 | 0 | 50.0 / 60.0 / 70.0 / 80.0 | 60.0 / 70.0 | 65.0 / 75.0 | 75.9 / 70.0 / 74.4 | 50 |" in table
    assert table.index("| 2 |") < table.index("| 16 |")
    md = DD.markdown(path)
    assert md.startswith("9 rows on the current definition") and md.index(DD.summary_table(path)) < md.index(table)
    assert DD.done_rows(path) == {(r["protocol"], "ae", "0", r["score"]) for r in rows}


def test_a_ddad_row_appended_to_a_legacy_csv_migrates_it_and_alone_is_current(tmp_path):
    legacy = dict(protocol="semi", backbone="ae", score="asr", seed=0, n_unlabelled=700, anomaly_rate=0.6, auroc=0.9,
                  ap=0.5, acc_val_threshold=0.7, f1_val_threshold=0.8, acc_test_tuned=0.7, f1_test_tuned=0.8,
                  val_auroc=0.9, train_minutes=60.0, wall_minutes=60.0, threads=1, command="c --profile cpu",
                  git_commit="old", finished_at="t")
    path = tmp_path / "d.csv"
    _write(path, [legacy])
    DD.append_row(path, dict(legacy, auroc=0.8, git_commit="new",
                             **dict(zip(("split_version", "profile_version"), _current_versions("ddad")))))
    assert next(csv.reader(open(path, newline=""))) == DD.FIELDS
    rows = DD.read_rows(path)
    assert [(r["git_commit"], r["split_version"]) for r in rows] == [("old", "image-v1"), ("new", "patient-v2")]
    current, stale = DD.table_rows(path)
    assert not stale and [r["git_commit"] for r in current] == ["new"]
    assert "The CSV also keeps 1 row of earlier definitions, a record not drawn here." in DD.markdown(path)
    assert DD.done_rows(path) == {("semi", "ae", "0", "asr")}
    assert "| semi (pool 700, rate 0.6) | AE | asr | 0 | 80.0 ± 0.0 |" in DD.summary_table(path)


def test_ddad_rows_of_the_cpu_and_full_profiles_are_never_averaged_nor_stand_for_each_other(tmp_path):
    """The ``cpu`` profile trains the recipe in bf16, ``full`` in fp32: two measurements, kept apart."""
    base = dict(protocol="semi", backbone="ae", score="asr", n_unlabelled=700, anomaly_rate=0.6, ap=0.5,
                acc_val_threshold=0.7, f1_val_threshold=0.8, acc_test_tuned=0.7, f1_test_tuned=0.8, val_auroc=0.9,
                train_minutes=60.0, wall_minutes=60.0, threads=1, git_commit="abc", finished_at="t",
                **dict(zip(("split_version", "profile_version"), _current_versions("ddad"))))
    rows = [dict(base, seed=0, auroc=0.90, command="train --method ddad --profile cpu --seed 0"),
            dict(base, seed=0, auroc=0.80, command="train --method ddad --profile full --seed 0"),
            dict(base, seed=1, auroc=0.84, command="train --method ddad --profile full --seed 1")]
    path = tmp_path / "d.csv"
    _write(path, rows)
    assert DD.done_rows(path, "full") == {("semi", "ae", "0", "asr"), ("semi", "ae", "1", "asr")}
    assert DD.done_rows(path, "cpu") == {("semi", "ae", "0", "asr")}
    table = DD.summary_table(path)
    assert "| semi (pool 700, rate 0.6), `cpu` profile | AE | asr | 0 | 90.0 ± 0.0 |" in table
    assert "| semi (pool 700, rate 0.6), `full` profile | AE | asr | 0, 1 | 82.0 ± 2.8 |" in table
    assert "`cpu` profile (bf16) version" in DD.markdown(path) and "`full` profile (fp32) version" in DD.markdown(path)
    _write(path, rows[1:])  # one profile: the table as before, the profile named once, above it
    assert "| semi (pool 700, rate 0.6) | AE | asr | 0, 1 | 82.0 ± 2.8 |" in DD.summary_table(path)
    split = _current_versions("ddad")[0]
    assert DD.markdown(path).startswith(f"2 rows on the current definition (`{split}` split, `full` profile (fp32)")


def test_ddad_per_image_scores_of_a_new_definition_sit_beside_the_old_record():
    d = Path("results/ddad_full")
    assert DD.scores_path(d, "semi_ae_s0", "asr") == d / "semi_ae_s0_asr.csv"  # the image-v1 record, where it was
    assert DD.scores_path(d, "semi_ae_s0", "asr", "cpu", "patient-v2") == d / "patient-v2" / "semi_ae_s0_asr.csv"
    assert (DD.scores_path(d, "semi_ae_s0", "asr", "full", "patient-v2", "2")
            == d / "patient-v2" / "semi_ae_s0_asr_full_p2.csv")


def test_wscxr_summary_and_its_split_version_on_a_constructed_csv(tmp_path):
    from cxrlib.benchmark import write_rows
    from cxrlib.data import SPLIT_VERSION

    base = {c: "" for c in W.COLUMNS}
    rows = [dict(base, table="k_shot", method="wscxr", k=2, mining=True, mixing=True, seed=s, auroc=a,
                 split_version=SPLIT_VERSION) for s, a in ((0, 0.80), (1, 0.90))]
    rows.append(dict(base, table="k_shot", method="wscxr", k=2, mining=True, mixing=True, seed=0, auroc=0.5,
                     split_version=""))  # before the column existed: image-v1, not summarised with the others
    write_rows(tmp_path / "w.csv", rows, W.COLUMNS)
    assert [r["split_version"] for r in W.read_rows(tmp_path / "w.csv")] == [SPLIT_VERSION] * 2 + ["image-v1"]
    # mean 85.0, sample std of (80, 90) = 7.07
    assert "| k_shot | wscxr | 2 | True | True | 2 | 85.0 ± 7.1 |" in W.markdown(tmp_path / "w.csv")


def test_squid_levers_options_parse():
    p = cli.build_parser(table="squid-levers")
    args = p.parse_args(["benchmark", "--table", "squid-levers", "--data", "d.npz", "--methods", "squid", "simsid",
                         "--levers", "cpu", "bf16", "--seeds", "0", "1", "2", "--epochs", "12", "--split-seed", "1",
                         "--runs", "r", "--out", "o.csv"])
    assert (args.data, args.methods, args.levers, args.seeds, args.epochs, args.split_seed) == (
        "d.npz", ["squid", "simsid"], ["cpu", "bf16"], [0, 1, 2], 12, 1)
    assert args.runs == Path("r") and args.out == Path("o.csv")
    args = p.parse_args(["benchmark", "--table", "squid-levers"])
    assert (args.methods, args.levers, args.seeds, args.split_seed, args.epochs, args.runs, args.out) == (
        ["squid"], ["cpu"], [0], 0, None, None, None)
    with pytest.raises(SystemExit):  # a lever LEVERS does not define
        p.parse_args(["benchmark", "--table", "squid-levers", "--levers", "no_such_lever"])


def test_squid_levers_without_data_is_one_line_error(capsys):
    assert cli.main(["benchmark", "--table", "squid-levers"]) == 2
    assert "--data" in capsys.readouterr().err


def _fake_lever(calls):
    def run_lever(method, lever, seed, split_seed, data, epochs, out_root, log=print):
        calls.append((method, lever, seed, split_seed, epochs))
        row = {"method": method, "lever": lever, "seed": seed, "split_seed": split_seed, "epochs": epochs,
               "kept_epoch": 2, "val_auroc_kept": 0.6, "test_auroc_kept": 0.55 + seed / 100, "val_auroc_last": 0.5,
               "test_auroc_last": 0.123456, "train_minutes": 1.0, "threads": 1, "split_version": "patient-v2",
               "commit": "abc", "overrides": "{}"}
        curve = [{"method": method, "lever": lever, "seed": seed, "split_seed": split_seed, "epoch": e,
                  "val_auroc": 0.5, "val_auroc_recon_err": 0.4, "val_auroc_d_real": 0.3, "d": 0.1, "recon": 0.2,
                  "seconds": 9.87654} for e in range(1, epochs + 1)]
        return row, curve
    return run_lever


def test_squid_levers_loop_writes_the_studys_csvs_and_resumes(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(SL, "run_lever", _fake_lever(calls))
    out = tmp_path / "squid_levers.csv"
    argv = lambda *seeds: ["benchmark", "--table", "squid-levers", "--data", "d.npz", "--levers", "cpu", "bf16",  # noqa: E731
                           "--seeds", *seeds, "--epochs", "3", "--out", str(out)]
    assert cli.main(argv("0", "1")) == 0
    assert calls == [("squid", lever, seed, 0, 3) for lever in ("cpu", "bf16") for seed in (0, 1)]
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(SL.ROW_COLUMNS) and len(lines) == 5
    assert lines[1] == "squid,cpu,0,0,3,2,0.6000,0.5500,0.5000,0.1235,1.0000,1,patient-v2,abc,{}"
    curves = (tmp_path / "squid_levers_curves.csv").read_text().splitlines()
    assert curves[0] == ",".join(SL.CURVE_COLUMNS) and len(curves) == 1 + 4 * 3
    assert curves[1] == "squid,cpu,0,0,1,0.5000,0.4000,0.3000,0.1000,0.2000,9.8765,,"  # the fake writes no test columns
    calls.clear()  # a second run finds every row done; a new seed is the only one trained, and nothing is lost
    assert cli.main(argv("0", "1", "2")) == 0
    assert calls == [("squid", "cpu", 2, 0, 3), ("squid", "bf16", 2, 0, 3)]
    assert len(out.read_text().splitlines()) == 7 and lines[1] in out.read_text()


def _write_lever_csvs(tmp_path, split_version="patient-v2"):
    from cxrlib.benchmark import write_rows

    rows, curves = [], []
    # bf16 before cpu in the file: the table follows LEVERS' order (cpu first)
    for lever, kept, tk, tl, vl in (("bf16", (3, 1, 12), (0.70, 0.74, 0.78), (0.50, 0.60, 0.70), (0.4, 0.5, 0.6)),
                                    ("cpu", (5, 5, 6), (0.60, 0.60, 0.60), (0.45, 0.45, 0.45), (0.3, 0.3, 0.3))):
        for seed in (2, 0, 1):  # seeds out of order: kept epochs are listed by seed
            rows.append({"method": "squid", "lever": lever, "seed": seed, "split_seed": 0, "epochs": 12,
                         "kept_epoch": kept[seed], "val_auroc_kept": 0.6, "test_auroc_kept": tk[seed],
                         "val_auroc_last": vl[seed], "test_auroc_last": tl[seed], "train_minutes": 10.0 + seed,
                         "threads": 1, "split_version": split_version, "commit": "abc", "overrides": "{}"})
            for e in range(1, 13):
                curves.append({"method": "squid", "lever": lever, "seed": seed, "split_seed": 0, "epoch": e,
                               "val_auroc": 0.5 + 0.01 * e, "val_auroc_recon_err": 0.6 + 0.1 * seed if e == 12 else 0.0,
                               "val_auroc_d_real": 0.2 if e == 12 else 0.9, "d": 0.0, "recon": 0.0, "seconds": 1.0})
    path = tmp_path / "squid_levers.csv"
    write_rows(path, rows, SL.ROW_COLUMNS, float_format=".4f")
    write_rows(SL.curves_path(path), curves, SL.CURVE_COLUMNS, float_format=".4f")
    return path


def test_squid_levers_markdown_on_a_constructed_csv_pair(tmp_path):
    path = _write_lever_csvs(tmp_path)
    table = SL.markdown(path)
    lines = table.splitlines()
    assert len(lines) == 4 and "| cpu |" in lines[2] and "| bf16 |" in lines[3]
    # bf16: kept-checkpoint test AUROC mean 74.0, sample std 4.0; last epoch 60.0 ± 10.0; validation, last epoch
    # 50.0 ± 10.0; last epoch's recon-error AUROC mean of (0.6, 0.7, 0.8) = 70.0 and -D(x) 20.0 (the curves' epoch
    # 12, not the others); 11.0 training minutes on average
    assert lines[3] == ("| squid | bf16 | 0 | 12 | 0, 1, 2 | 3, 1, 12 | 74.0 ± 4.0 | 60.0 ± 10.0 | 50.0 ± 10.0 | "
                        "70.0 | 20.0 | 11.0 | 1 |")
    assert lines[2] == ("| squid | cpu | 0 | 12 | 0, 1, 2 | 5, 5, 6 | 60.0 ± 0.0 | 45.0 ± 0.0 | 30.0 ± 0.0 | "
                        "70.0 | 20.0 | 11.0 | 1 |")
    SL.curves_path(path).unlink()  # no curves: the diagnostic columns are blank, the rest stays
    assert "| 74.0 ± 4.0 | 60.0 ± 10.0 | 50.0 ± 10.0 | – | – | 11.0 | 1 |" in SL.markdown(path)


def test_squid_levers_run_curve_reads_one_run_in_epoch_order(tmp_path):
    path = _write_lever_csvs(tmp_path)
    c = SL.run_curve(path, "squid", "bf16", seed=1, epochs=12)
    assert list(c["epoch"]) == list(range(1, 13)) and c["val_auroc"][-1] == pytest.approx(0.62)
    assert c["val_auroc_recon_err"][-1] == pytest.approx(0.7) and c["val_auroc_d_real"][0] == pytest.approx(0.9)
    assert np.isnan(c["test_auroc"]).all()  # these curves carry no per-epoch test AUROC
    assert len(SL.run_curve(path, "squid", "bf16", seed=1, epochs=5)["epoch"]) == 5
    assert SL.run_curve(path, "crtsc", "bf16", seed=1)["epoch"].size == 0


def test_squid_levers_figure(tmp_path):
    path = _write_lever_csvs(tmp_path)
    [fig] = SL.draw(path, tmp_path / "figures", "cpu")
    assert fig == tmp_path / "figures" / "squid_levers_cpu.png" and fig.stat().st_size > 0
    assert SL.draw(tmp_path / "missing.csv", tmp_path / "figures", "cpu") == []


def test_the_squid_levers_script_is_a_wrapper_of_the_table(monkeypatch):
    import runpy
    import sys

    calls = []
    monkeypatch.setitem(TABLES, "squid-levers", TABLES["squid-levers"].__class__(
        **{**TABLES["squid-levers"].__dict__, "run": lambda args: calls.append(args) or 0}))
    script = ROOT / "scripts" / "squid_levers.py"
    assert len(script.read_text().splitlines()) <= 15
    monkeypatch.setattr(sys, "argv", [str(script), "--data", "d.npz", "--levers", "cpu", "bf16", "--seeds", "0", "1"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code == 0
    assert [(a.table, a.data, a.levers, a.seeds) for a in calls] == [("squid-levers", "d.npz", ["cpu", "bf16"], [0, 1])]
    assert runpy.run_path(str(script))["LEVERS"] is SL.LEVERS  # one definition of the levers


def test_squid_levers_diagnostics_report_validation_and_test_columns():
    from cxrlib import data as D
    from cxrlib.methods.squid.config import squid_config
    from cxrlib.methods.squid.generator import build_models

    ds = D.load("embedded", size=64)
    split = D.development_split(ds, seed=0)
    cfg = squid_config("squid", "quick", base_width=4, mem_slots=10, decoder_memory_slots=10, inpaint_heads=2)
    torch.manual_seed(0)
    gen, disc = build_models(cfg)
    out = SL.diagnostics(ds, split, cfg)(0, gen.eval(), disc.eval())
    assert set(out) == set(SL.CURVE_COLUMNS[6:8]) | set(SL.CURVE_COLUMNS[-2:])
    assert all(0.0 <= v <= 1.0 for v in out.values())


def test_squid_levers_checkpoint_rules():
    val = [0.5, 0.70, 0.60, 0.698, 0.65, 0.69]
    assert SL.rule_epoch(val, "arg-max") == 1
    assert SL.rule_epoch(val, "tolerance 0.005") == 3  # 0.698 > 0.70 - 0.005, then nothing within 0.005 of it
    assert SL.rule_epoch(val, "smoothed (3)") == 4  # (0.698 + 0.65 + 0.69) / 3 is the best window
    assert SL.rule_epoch(val, "last") == 5
    with pytest.raises(ValueError):
        SL.rule_epoch(val, "oracle")


def test_squid_levers_selection_rules_from_curves(tmp_path):
    out = tmp_path / "squid_levers.csv"
    rows = [{"method": "squid", "lever": "bf16", "seed": s, "split_seed": 0, "epochs": 3, "kept_epoch": 2,
             "val_auroc_kept": 0.7, "test_auroc_kept": 0.6, "val_auroc_last": 0.6, "test_auroc_last": 0.5,
             "train_minutes": 1.0, "threads": 1, "split_version": "patient-v2", "commit": "abc", "overrides": "{}"}
            for s in (0, 1)]
    curves = [{"method": "squid", "lever": "bf16", "seed": s, "split_seed": 0, "epoch": e + 1,
               "val_auroc": v, "test_auroc": t}
              for s in (0, 1) for e, (v, t) in enumerate(zip((0.5, 0.7, 0.6), (0.4, 0.8, 0.9)))]
    SL._upsert_file(out, SL.ROW_COLUMNS, rows, SL.KEY)
    SL._upsert_file(SL.curves_path(out), SL.CURVE_COLUMNS, curves, SL.CURVE_KEY)
    res = {r["rule"]: r for r in SL.selection_rules(out)}
    assert res["arg-max"]["kept_epochs"] == [2, 2] and list(res["arg-max"]["test_auroc"]) == [0.8, 0.8]
    assert res["last"]["kept_epochs"] == [3, 3] and list(res["last"]["test_auroc"]) == [0.9, 0.9]
    md = SL.selection_markdown(out)
    assert "| squid | bf16 | 3 | 0, 1 | arg-max | 2, 2 | 80.0, 80.0 | 80.0 ± 0.0 |" in md
    # a run whose curves lack the per-epoch test AUROC is left out, and so is a group with no such run
    SL._upsert_file(SL.curves_path(out), SL.CURVE_COLUMNS, [{**curves[0], "test_auroc": ""}], SL.CURVE_KEY)
    assert {r["rule"]: r["seeds"] for r in SL.selection_rules(out)}["last"] == [1]
    SL._upsert_file(SL.curves_path(out), SL.CURVE_COLUMNS, [{**curves[3], "test_auroc": ""}], SL.CURVE_KEY)
    assert SL.selection_rules(out) == [] and SL.selection_markdown(out) == ""
