"""The README's results section is generated from the committed CSV, not typed by hand."""
import re
from pathlib import Path

from cxrlib import benchmark as B
from cxrlib import report as R

ROOT = Path(__file__).resolve().parents[1]


def test_results_page_matches_the_committed_csvs():
    page = (ROOT / R.PAGE).read_text()
    assert page == R.results_page(ROOT), "results/README.md differs from the CSVs: run python scripts/update_readme_results.py"


def test_readme_summary_block_matches_the_committed_csv():
    readme = (ROOT / "README.md").read_text()
    assert R.README_BLOCK_START in readme and R.README_BLOCK_END in readme
    expected = R.readme_block(ROOT / "results/cpu/metrics.csv", "results/cpu/metrics.csv")
    assert expected in readme, "README summary differs from the CSV: run python scripts/update_readme_results.py"


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:25])
    assert len(readme.splitlines()) <= 150
    assert "bash scripts/reproduce.sh" in first_screen and "bash scripts/test.sh" in first_screen
    assert re.search(r"!\[[^\]]*\]\(figures/[^)]+\.png\)", first_screen), "a figure on the first screen"
    for link in re.findall(r"\]\(((?:results|docs|data|benchmarks|notebooks)/[^)#]+)", readme):
        assert (ROOT / link).exists(), link


def test_results_page_shows_every_table_and_only_the_current_split_in_the_main_table():
    page = (ROOT / R.PAGE).read_text()
    main = page[page.index("## The main table"):page.index("## What moved")]
    rows = B.current_rows(B.image_rows(B.read_rows(ROOT / "results/cpu/metrics.csv")))
    assert B.summary_markdown(B.summarize(rows), B.paper_auroc_text()).rstrip("\n") in main
    assert "image-v1" not in main.split("| --- |")[-1]
    for heading in ("## What moved with the patient-disjoint split", "## The official test split is harder still",
                    "## CRTSC ablation", "## DDAD: the full recipe"):
        assert heading in page
    for fig in re.findall(r"\]\(\.\./(figures/[^)]+)\)", page):
        assert (ROOT / fig).exists(), fig


def _ddad_report_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_ddad_full", ROOT / "scripts" / "run_ddad_full.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ddad_summary_table_on_a_constructed_csv(tmp_path):
    mod = _ddad_report_module()
    rows = [dict(protocol="semi", backbone="ae", score="asr", seed=s, n_unlabelled=700, anomaly_rate=0.6,
                 auroc=a, ap=0.5, acc_val_threshold=0.7, f1_val_threshold=0.8, acc_test_tuned=0.7, f1_test_tuned=0.8,
                 val_auroc=0.9, train_minutes=m, wall_minutes=m, threads=1, command="c", git_commit="abc",
                 finished_at="t") for s, a, m in ((0, 0.90, 60.0), (1, 0.94, 70.0))]
    import csv

    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table = mod.summary_table(path)
    # mean 92.0, sample std of (90, 94) = 2.83
    assert "| semi (pool 700, rate 0.6) | AE | asr | 0, 1 | 92.0 ± 2.8 | 50.0 ± 0.0 | 70.0 ± 0.0 | 80.0 ± 0.0 | 65 | 65 |" in table


def test_ddad_weak_table_sits_beside_the_paper_and_out_of_the_semi_table(tmp_path):
    import csv

    mod = _ddad_report_module()
    base = dict(backbone="ae", seed=0, anomaly_rate=1.0, ap=0.5, acc_val_threshold=0.6, f1_val_threshold=0.7,
                acc_test_tuned=0.65, f1_test_tuned=0.75, val_auroc=0.9, train_minutes=50.0, wall_minutes=50.0,
                threads=1, command="c", git_commit="abc", finished_at="t")
    rows = [dict(base, protocol=f"weak_k{k}", n_unlabelled=k, score=kind, auroc=a)
            for k in (2, 16) for kind, a in zip(mod.SCORES, (0.5, 0.6, 0.7, 0.8))]
    rows.append(dict(base, protocol="semi", n_unlabelled=700, anomaly_rate=0.6, score="asr", auroc=0.9))
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert "weak" not in mod.summary_table(path)
    table = mod.weak_table(path)
    # K = 16's paper row: WSCXR Table I's DDAD, 75.9 / 70.0 / 74.4
    assert "| 16 | 0 | 50.0 / 60.0 / 70.0 / 80.0 | 60.0 / 70.0 | 65.0 / 75.0 | 75.9 / 70.0 / 74.4 | 50 |" in table
    assert table.index("| 2 |") < table.index("| 16 |")
    assert "WSCXR Table I's protocol" in mod.readme_section(path)


def test_validation_curves_round_trip(tmp_path):
    import torch

    run = tmp_path / "squid_s0"
    run.mkdir()
    history = [{"epoch": e, "val_auroc": a, "d": 0.1} for e, a in enumerate((0.6, 0.4, 0.7))]
    torch.save({"method": "squid", "seed": 0, "split_version": "patient-v2", "best_epoch": 2, "history": history},
               run / "model.pt")
    other = tmp_path / "patchcore_s0"  # no per-epoch history: skipped
    other.mkdir()
    torch.save({"method": "patchcore", "seed": 0, "history": {"bank": 1}}, other / "model.pt")
    assert [p.name for p in R.export_curves([run, other], tmp_path / "curves")] == ["squid_s0.csv"]
    curves = R.read_curves(tmp_path / "curves")
    assert curves == {"squid_s0": ([1, 2, 3], [0.6, 0.4, 0.7], 3)}
    assert "kept epoch 3 of 3 (validation 0.70), last epoch 0.70, 1 of 3 epochs below chance" in R._curve_reading(curves)
