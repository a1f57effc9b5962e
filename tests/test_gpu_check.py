"""scripts/gpu_check.sh's Python part, in its CPU dry run (no GPU here): the pipeline runs and reports."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_dry_run_trains_scores_and_reports(tmp_path):
    rc = gpu_check.main(["--dry-run", "--methods", "simsid", "patchcore", "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["environment"]["dry_run"] and report["profile"] == "quick"
    for m in ("simsid", "patchcore"):
        r = report["methods"][m]
        assert r["train"]["ok"] and r["score"]["ok"] and r["score"]["images_per_s"] > 0
        assert (tmp_path / "runs" / m / "model.pt").exists()
    md = (tmp_path / "gpu_check.md").read_text()
    assert "no GPU was measured" in md and "| simsid | ok |" in md


def test_refuses_a_real_run_without_cuda(tmp_path, capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the refusal is for machines without one")
    assert gpu_check.main(["--data", "x.npz", "--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
