"""The README's results section is generated from the committed CSV, not typed by hand."""
import re
from pathlib import Path

from cxrlib import benchmark as B
from cxrlib import report as R

ROOT = Path(__file__).resolve().parents[1]


def test_results_page_matches_the_committed_csvs():
    page = (ROOT / R.PAGE).read_text()
    assert page == R.results_page(ROOT), "results/README.md differs from the CSVs: run python -m cxrlib report"


def test_readme_summary_block_matches_the_committed_csv():
    readme = (ROOT / "README.md").read_text()
    assert R.README_BLOCK_START in readme and R.README_BLOCK_END in readme
    expected = R.readme_block(ROOT / "results/cpu/metrics.csv", "results/cpu/metrics.csv")
    assert expected in readme, "README summary differs from the CSV: run python -m cxrlib report"


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
    end = page.index("## Issue #23") if "## Issue #23" in page else page.index("## What moved")
    main = page[page.index("## The main table"):end]
    rows = B.current_rows(B.image_rows(B.read_rows(ROOT / "results/cpu/metrics.csv")))
    assert B.summary_markdown(B.summarize(rows), B.paper_auroc_text()).rstrip("\n") in main
    assert "image-v1" not in main.split("| --- |")[-1]
    for heading in ("## What moved with the patient-disjoint split", "## The official test split is harder still",
                    "## CRTSC ablation", "## DDAD: the full recipe"):
        assert heading in page
    for fig in re.findall(r"\]\(\.\./(figures/[^)]+)\)", page):
        assert (ROOT / fig).exists(), fig


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
    split1 = tmp_path / "squid_s0_split1"
    split1.mkdir()
    torch.save({"method": "squid", "seed": 0, "split_seed": 1, "split_version": "patient-v2", "best_epoch": 0,
                "history": history[:2]}, split1 / "model.pt")
    assert [p.name for p in R.export_curves([run, other, split1], tmp_path / "curves")] == \
        ["squid_s0.csv", "squid_s0_split1.csv"]
    assert R.curve_splits(tmp_path / "curves") == [0, 1]
    curves = R.read_curves(tmp_path / "curves", split_seed=0)
    assert curves == {"squid_s0": ([1, 2, 3], [0.6, 0.4, 0.7], 3)}
    assert R.read_curves(tmp_path / "curves", split_seed=1) == {"squid_s0_split1": ([1, 2], [0.6, 0.4], 1)}
    assert len(R.read_curves(tmp_path / "curves")) == 2
    assert "kept epoch 3 of 3 (validation 0.70), last epoch 0.70, 1 of 3 epochs below chance" in R._curve_reading(curves)


def test_issue23_section_shows_what_exists(tmp_path):
    import csv as csv_

    from cxrlib.tables import TABLES

    assert R.issue23_section(tmp_path, "cpu") == []  # no CSV: no section
    diag = tmp_path / "results" / "cpu" / "diagnostics"
    diag.mkdir(parents=True)
    with open(diag / "sharpness_confound.csv", "w", newline="") as f:
        w = csv_.writer(f)
        w.writerow(["size", "split_seed", "part", "n_normal", "n_pneumonia", "auroc_laplacian_energy",
                    "auroc_blur_residual", "auroc_mean_intensity", "auroc_intensity_std", "split_version"])
        w.writerow([64, 0, "val", 201, 337, 0.091, 0.1389, 0.5458, 0.3144, "patient-v2"])
    section = "\n".join(R.issue23_section(tmp_path, "cpu"))
    assert section.startswith("## Issue #23: the SQUID family at the cpu budget")
    assert "| 64 | 0 | val | 201 | 337 | 9.1 | 13.9 | 54.6 | 31.4 |" in section
    assert "python scripts/sharpness_confound.py --data PATH/zhanglab128_train.npz" in section
    assert "lever" not in section and "score_vs_fidelity" not in section
    levers = TABLES["squid-levers"].csv_path(tmp_path, "cpu")
    levers.write_text("method,lever,seed,split_seed,epochs,kept_epoch,val_auroc_kept,test_auroc_kept,val_auroc_last,"
                      "test_auroc_last,train_minutes,threads,split_version,commit,overrides\n"
                      "squid,bf16,0,0,12,3,0.6,0.7,0.5,0.4,9.0,1,patient-v2,abc,{}\n")
    section = "\n".join(R.issue23_section(tmp_path, "cpu"))
    assert TABLES["squid-levers"].markdown(levers).rstrip("\n") in section
    assert "--table squid-levers" in section and "(cpu/squid_levers.csv)" in section
    assert "(cpu/squid_levers_curves.csv)" in section and "../figures/squid_levers_cpu.png" in section
    assert section.index("lever") < section.index("sharpness")


def test_lever_reading_compares_with_the_main_table(tmp_path):
    from cxrlib import benchmark as B
    from cxrlib import report
    from cxrlib.tables import squid_levers as SL

    lev = tmp_path / "squid_levers.csv"
    rows = [{"method": "squid", "lever": "bf16", "seed": s, "split_seed": 0, "epochs": 50, "kept_epoch": 40,
             "val_auroc_kept": v, "test_auroc_kept": t, "val_auroc_last": 0.7, "test_auroc_last": 0.7,
             "train_minutes": 20.0, "threads": 1, "split_version": report.SPLIT_VERSION, "commit": "abc",
             "overrides": "{}"} for s, v, t in ((0, 0.86, 0.84), (1, 0.84, 0.86))]
    SL._upsert_file(lev, SL.ROW_COLUMNS, rows, SL.KEY)
    metrics = tmp_path / "metrics.csv"
    B.write_rows(metrics, [{**{c: "" for c in B.METRICS_COLUMNS}, "method": "squid", "variant": "official", "seed": s,
                            "split_seed": 0, "data": "zhanglab128_train.npz", "profile": "cpu", "auroc": a,
                            "split_version": report.SPLIT_VERSION} for s, a in ((0, 0.70), (1, 0.80))], B.METRICS_COLUMNS)
    text = report.lever_reading(lev, metrics)
    assert "**squid, bf16**, 50 epochs (2 seeds): 85.0 ± 1.4 at the kept epochs against 75.0 ± 7.1" in text
    assert "by +0.0 points" in text


def test_lever_reading_sets_a_lever_beside_the_current_profile_seed_by_seed(tmp_path):
    from cxrlib import report
    from cxrlib.tables import squid_levers as SL

    lev = tmp_path / "squid_levers.csv"
    rows = [{"method": "squid", "lever": lever, "seed": s, "split_seed": 0, "epochs": 50, "kept_epoch": 40,
             "val_auroc_kept": t, "test_auroc_kept": t, "val_auroc_last": 0.7, "test_auroc_last": 0.7,
             "train_minutes": 20.0, "threads": 1, "split_version": report.SPLIT_VERSION, "commit": "abc",
             "overrides": "{}"}
            for lever, seeds in (("bf16", ((0, 0.84), (1, 0.86), (2, 0.80))), ("cpu", ((0, 0.80), (2, 0.83))))
            for s, t in seeds]
    SL._upsert_file(lev, SL.ROW_COLUMNS, rows, SL.KEY)
    assert SL.is_current_profile("squid", "bf16", 50) and not SL.is_current_profile("squid", "cpu", 50)
    assert not SL.is_current_profile("crtsc", "bf16_g_w_0.005", 50)  # CRTSC's own KL weight is 0.002
    text = report.lever_reading(lev, tmp_path / "metrics.csv")
    assert ("**squid, cpu**, 50 epochs (2 seeds): 81.5 ± 2.1 at the kept epochs; the current `cpu` profile (lever "
            "bf16, 50 epochs) gives 82.0 ± 2.8 on the same seeds, a difference of -4.0, +3.0 points (seed 0, 2)") in text
    assert text.count("the current `cpu` profile") == 1  # the profile's own row is not set beside itself


def test_scoring_precision_table(tmp_path):
    from cxrlib import report as R

    path = tmp_path / "scoring_precision.csv"
    path.write_text("run,method,seed,split_seed,split_version,precision,n_test,auroc_fp32,auroc_low,auroc_change,"
                    "spearman,max_abs_score_diff,threads\n"
                    "squid_s0,squid,0,0,patient-v2,bf16,644,0.8544,0.8561,0.0017,0.9956,0.6,1\n")
    table = R.scoring_precision_markdown(path)
    assert "| squid_s0 | 0 | bf16 | 644 | 85.4 | 85.6 | +0.17 | 0.9956 |" in table


def test_map_generator_table(tmp_path):
    from cxrlib import report as R

    path = tmp_path / "map_generator.csv"
    path.write_text("run,method,seed,split_version,kept_epoch,map_epoch,pixel_auroc_kept,pixel_auroc_map\n"
                    "squid_s0,squid,0,patient-v2,8,50,0.4390,0.9520\n")
    assert "| squid_s0 | 8 | 43.9 | 50 | 95.2 |" in R.map_generator_markdown(path)


def test_lever_reading_sets_crtsc_beside_its_arithmetic_base_and_squid_trained_the_same_way(tmp_path):
    from cxrlib import report
    from cxrlib.tables import squid_levers as SL

    assert SL.arithmetic_base("g_w_0.005") == "cpu" and SL.arithmetic_base("bf16_g_w_0.005") == "bf16"
    assert SL.arithmetic_base("size_128_bf16") == "bf16" and SL.arithmetic_base("no such lever") is None
    # SQUID's own generator weight is 0.005, so CRTSC's g_w_0.005 and cpu levers both leave SQUID at its cpu lever
    assert SL.squid_counterparts("crtsc", "g_w_0.005", 50, ["bf16", "cpu", "ema"]) == ["cpu"]
    assert SL.squid_counterparts("crtsc", "bf16_g_w_0.005", 50, ["bf16", "cpu"]) == ["bf16"]
    assert SL.squid_counterparts("squid", "cpu", 50, ["cpu"]) == []

    lev = tmp_path / "squid_levers.csv"
    table = (("squid", "cpu", ((0, 0.86), (1, 0.84), (2, 0.85))), ("crtsc", "cpu", ((0, 0.80), (1, 0.82))),
             ("crtsc", "g_w_0.005", ((0, 0.88), (1, 0.83), (2, 0.86))))
    rows = [{"method": m, "lever": lever, "seed": s, "split_seed": 0, "epochs": 50, "kept_epoch": 40,
             "val_auroc_kept": t, "test_auroc_kept": t, "val_auroc_last": 0.7, "test_auroc_last": 0.7,
             "train_minutes": 30.0, "threads": 2, "split_version": report.SPLIT_VERSION, "commit": "abc",
             "overrides": "{}"} for m, lever, seeds in table for s, t in seeds]
    SL._upsert_file(lev, SL.ROW_COLUMNS, rows, SL.KEY)
    text = report.lever_reading(lev, tmp_path / "metrics.csv")
    assert ("**crtsc, g_w_0.005**, 50 epochs (3 seeds): 85.7 ± 2.5 at the kept epochs; its arithmetic without the "
            "change (lever cpu) gives 81.0 ± 1.4 on the same seeds, a difference of +8.0, +1.0 points (seed 0, 1); "
            "SQUID trained the same way (lever cpu) gives 85.0 ± 1.0 on the same seeds, a difference of +2.0, -1.0, "
            "+1.0 points (seed 0, 1, 2)") in text
    # the arithmetic base is not set beside itself, and SQUID is not set beside SQUID
    assert "**crtsc, cpu**, 50 epochs (2 seeds): 81.0 ± 1.4 at the kept epochs; SQUID trained the same way" in text
    assert "**squid, cpu**, 50 epochs (3 seeds): 85.0 ± 1.0 at the kept epochs; the last epoch" in text
