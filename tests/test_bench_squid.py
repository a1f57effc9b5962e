"""Pure helpers of benchmarks/bench_squid.py: official-constructor scaling, medians, the Markdown table,
and the clear error when the official code is not available."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_squid", ROOT / "benchmarks" / "bench_squid.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_official_settings_at_128_px_width_32_are_zhang_best():
    s = bench.official_settings(128, 32, 200, 200)
    for key in ("memory_channel", "decoder_multipliers", "disc_size", "features_root", "num_slots"):
        assert s[key] == bench.ZHANG_BEST[key], key


def test_official_settings_scale_with_the_bottleneck():
    s = bench.official_settings(64, 16, 100, 100)
    # 16w/4 channels x (64/32)^2 positions; decoder maps a quarter of the 128 px areas; 2x2 last disc map
    assert s["memory_channel"] == 4 * 16 * 4
    assert s["decoder_multipliers"] == [None, None, 16, 4]
    assert s["disc_size"] == 2
    assert (s["num_slots"], s["mem_num_slots"], s["features_root"]) == (100, 100, 16)


def test_official_settings_reject_sizes_off_the_grid():
    with pytest.raises(ValueError, match="divisible by 32"):
        bench.official_settings(80, 16, 100, 100)
    s = bench.official_settings(96, 8, 50, 50)  # a 3x3 bottleneck per patch
    assert s["memory_channel"] == 4 * 8 * 9 and s["decoder_multipliers"] == [None, None, 36, 9] and s["disc_size"] == 3


def test_summarize_uses_the_median():
    r = bench.summarize([2.0, 1.0, 100.0], images_per_timing=32)
    assert r["median_s"] == 2.0
    assert r["images_per_s"] == pytest.approx(16.0)
    with pytest.raises(ValueError):
        bench.summarize([], 16)


def test_markdown_table_rows_and_missing_values():
    rows = [
        {"implementation": "ours", "config": "full", "params": 45_150_000, "train_images_per_s": 3.456,
         "train_s_d_g_iteration": 7.5, "infer_images_per_s_b16": 20.0, "infer_images_per_s_b1": 4.0,
         "peak_gib_train": 2.5, "peak_gib_infer": 1.25, "note": ""},
        {"implementation": "official", "config": "cpu", "params": None, "train_images_per_s": None,
         "train_s_d_g_iteration": None, "infer_images_per_s_b16": None, "infer_images_per_s_b1": None,
         "peak_gib_train": None, "peak_gib_infer": None, "note": "not constructible"},
    ]
    lines = bench.markdown_table(rows).strip().splitlines()
    assert len(lines) == 4
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 11
    assert lines[2] == "| ours | full | 45.15 | 3.46 | 7.50 | 20.00 | 4.00 | 2.50 | 1.25 |  |"
    assert lines[3].startswith("| official | cpu | – | – |") and lines[3].endswith("not constructible |")


def test_parameter_table_one_column_per_measured_row():
    parts = {k: 1_000_000 * (i + 1) for i, k in enumerate(bench.PARAMETER_PARTS)}
    rows = [{"implementation": "ours", "config": "quick", "param_parts": parts},
            {"implementation": "official", "config": "quick", "param_parts": None}]
    lines = bench.parameter_table(rows).strip().splitlines()
    assert lines[0] == "| module | ours quick |"
    assert len(lines) == 2 + len(bench.PARAMETER_PARTS)
    assert lines[2] == "| encoder | 1.000 |" and lines[-1] == f"| total | {len(bench.PARAMETER_PARTS):.3f} |"
    assert bench.parameter_table(rows[1:]) == ""


def test_official_parameter_report_splits_the_official_module_names():
    from torch import nn

    class Inpaint(nn.Module):  # the official InpaintBlock's parameter-holding parts, tiny
        def __init__(self):
            super().__init__()
            self.attention = nn.Linear(4, 4)
            self.ff = nn.Linear(4, 2)
            self.bottleneck_conv1 = nn.Conv2d(2, 1, 1)

    class FakeAE(nn.Module):
        def __init__(self, dist=True):
            super().__init__()
            self.dist = dist
            self.in_conv, self.down_blocks = nn.Conv2d(1, 2, 1), nn.ModuleList([nn.Conv2d(2, 2, 1)])
            self.inpaint_block = Inpaint()
            self.memory_blocks = nn.ModuleList([nn.Identity(), nn.Linear(3, 3)])
            self.up_blocks, self.out_conv = nn.ModuleList([nn.Conv2d(2, 2, 1)]), nn.Conv2d(2, 1, 1)
            if dist:
                self.teacher_ups, self.teacher_out = nn.ModuleList([nn.Conv2d(2, 2, 1)]), nn.Conv2d(2, 1, 1)

    disc = nn.Linear(5, 1)
    r = bench.official_parameter_report(FakeAE(), disc)
    assert r["encoder"] == 4 + 6 and r["inpaint_attention"] == 20 and r["inpaint_feedforward"] == 10
    assert r["inpaint_other"] == 3 and r["decoder_memories"] == 12 and r["discriminator"] == 6
    assert r["student_decoder"] == r["teacher_decoder"] == 6 + 3 and r["recalibration"] == 0
    assert r["total"] == sum(p.numel() for m in (FakeAE(), disc) for p in m.parameters())
    assert bench.official_parameter_report(FakeAE(dist=False), disc)["teacher_decoder"] == 0
    extra = FakeAE()
    extra.unaccounted = nn.Linear(2, 2)  # a part the breakdown does not know: the sum check catches it
    with pytest.raises(ValueError, match="update official_parameter_report"):
        bench.official_parameter_report(extra, disc)


def test_report_markdown_names_machine_commit_and_command():
    report = {"machine": {"cpu": "Test CPU", "logical_cpus": 2, "torch": "9.9", "threads": 2},
              "commit": "0123456789abcdef", "dirty": True, "official_commit": "1bb3b70fd6abc",
              "iterations": 3, "warmup": 1, "batch": 16, "command": "python benchmarks/bench_squid.py --x",
              "rows": []}
    md = bench.report_markdown(report)
    for text in ("Test CPU", "torch 9.9", "2 threads", "median of 3", "0123456789 (dirty)", "official 1bb3b70fd6",
                 "`python benchmarks/bench_squid.py --x`", "| implementation |"):
        assert text in md, text
    assert "Parameters per module" not in md


def test_help_runs_without_the_official_code(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--help"])
    assert exc.value.code == 0
    assert "--official-dir" in capsys.readouterr().out


def test_missing_official_source_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="--official-dir"):
        bench.prepare_official(None, tmp_path / "o")
    with pytest.raises(SystemExit, match="no such directory"):
        bench.prepare_official(str(tmp_path / "absent"), tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="neither a SQUID working tree"):
        bench.prepare_official(str(tmp_path / "empty"), tmp_path / "o")


def test_prepare_official_patches_the_single_cuda_call(tmp_path):
    clone = tmp_path / "SQUID"
    (clone / "models").mkdir(parents=True)
    (clone / "models" / "squid.py").write_text("class AE: pass\n")
    (clone / "models" / "inpaint.py").write_text("mask = torch.Tensor([1]).cuda().bool()\n")
    bench.prepare_official(str(clone), tmp_path / "copy")
    assert (tmp_path / "copy" / "models" / "inpaint.py").read_text() == "mask = torch.Tensor([1]).bool()\n"
    assert ".cuda()" in (clone / "models" / "inpaint.py").read_text()  # the user's clone is untouched


def test_cli_stops_with_one_line_and_status_2_without_official_code(tmp_path, capsys):
    assert bench.main(["--official-dir", str(tmp_path / "absent"), "--configs", "quick",
                       "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --official-dir") and "no such directory" in err[0]
    assert not (tmp_path / "out").exists()


def test_recorded_commands_name_no_folder_of_this_machine(tmp_path):
    from measure import shown_command

    root = Path(__file__).resolve().parents[1]
    cmd = shown_command("benchmarks/bench_squid.py", ["--official-dir", str(tmp_path / "SQUID"), "--out-dir",
                                                      str(root / "benchmarks" / "results"), "--threads", "2"], root)
    assert cmd == "python benchmarks/bench_squid.py --official-dir PATH/SQUID --out-dir benchmarks/results --threads 2"


def test_worker_records_the_warmup_timings_apart_from_the_median():
    spec = dict(implementation="ours", config="quick", mode="train", iterations=2, warmup=2, threads=1,
                official_dir=None, official_settings=None)
    train = bench.run_worker(spec)["train"]
    assert len(train["times_s"]) == 2 and len(train["warmup_times_s"]) == 2
    assert train["median_s"] == pytest.approx(sorted(train["times_s"])[0] / 2 + sorted(train["times_s"])[1] / 2)


def test_skip_names_pairs_that_exist(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--implementations", "ours", "--configs", "quick", "--skip", "ours-bf16/huge"])
    assert exc.value.code == 2
    assert "IMPLEMENTATION/CONFIG" in capsys.readouterr().err
