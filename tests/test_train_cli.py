"""Training loop (exact resume, NaN guard, checkpoints) and the train/score command line."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlib import data as D
from cxrlib import metrics as M
from cxrlib.checkpoint import TrainingDivergedError
from cxrlib.cli import main
from cxrlib.methods import load_scorer
from cxrlib.methods.squid.config import squid_config
from cxrlib.methods.squid.scorer import finalize_squid
from cxrlib.methods.squid.train import WeightEMA, fit_squid, random_affine


def tiny_cfg(**kw):
    # 32 px leaves the discriminator a 1x1 last map, where per-image normalisation is undefined
    base = dict(image_size=32, base_width=4, mem_slots=10, decoder_memory_slots=10, batch_size=8, epochs=2,
                inpaint_heads=2, disc_eval_norm="running")
    base.update(kw)
    return squid_config("squid", "quick", **base)


@pytest.fixture(scope="module")
def tiny_data():
    ds = D.load("embedded", size=32)
    # keep it small: 40 normals to train, val/test from the split
    split = D.development_split(ds, seed=0)
    split.train = split.train[:40]
    return ds, split


def _script(name: str):
    """``scripts/<name>.py`` imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_data):
    """A finalised one-epoch SQUID run (``squid_s0``) on ``tiny_data``, and an ``.npz`` of that data beside it."""
    ds, split = tiny_data
    root = tmp_path_factory.mktemp("tiny_run")
    cfg = squid_config("squid", "quick", epochs=1, image_size=32, base_width=4, mem_slots=10,
                       decoder_memory_slots=10, disc_eval_norm="running")
    fit_squid(cfg, ds, split, root / "squid_s0", seed=0, show_progress=False, log=lambda *a: None)
    finalize_squid(root / "squid_s0", ds, split)
    np.savez(root / "d.npz", images=ds.images, labels=ds.labels, names=ds.names)
    return root / "squid_s0", root / "d.npz"


def _weights(path):
    return torch.load(path, weights_only=False)["gen"]


def test_exact_resume(tmp_path, tiny_data):
    ds, split = tiny_data
    cfg = tiny_cfg()
    fit_squid(cfg, ds, split, tmp_path / "a", seed=3, show_progress=False, log=lambda *_: None)
    fit_squid(cfg, ds, split, tmp_path / "b", seed=3, show_progress=False, log=lambda *_: None, max_epochs=1)
    out = fit_squid(cfg, ds, split, tmp_path / "b", seed=3, resume=True, show_progress=False, log=lambda *_: None)
    assert out["finished"] and len(out["history"]) == 2
    a, b = _weights(tmp_path / "a/last.pt"), _weights(tmp_path / "b/last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # the memory queue and its write pointer included


def test_weight_ema_averages_parameters_and_copies_buffers():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(net, decay=0.9)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()(torch.randn(8, 3))  # moves the BatchNorm statistics
    ema.update(net)
    d = min(0.9, 2 / 11)  # the warm-up decay of the first update
    for name, p in net.named_parameters():
        assert torch.allclose(ema.model.state_dict()[name], d * before[name] + (1 - d) * p.detach())
    for name, b in net.named_buffers():
        assert torch.equal(ema.model.state_dict()[name], b)
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_ema_run_validates_the_average_and_resumes_exactly(tmp_path, tiny_data):
    ds, split = tiny_data
    cfg = tiny_cfg(ema_decay=0.9)
    quiet = dict(show_progress=False, log=lambda *_: None)
    fit_squid(cfg, ds, split, tmp_path / "a", seed=3, **quiet)
    fit_squid(cfg, ds, split, tmp_path / "b", seed=3, max_epochs=1, **quiet)
    out = fit_squid(cfg, ds, split, tmp_path / "b", seed=3, resume=True, **quiet)
    assert out["finished"]
    a = torch.load(tmp_path / "a/last.pt", weights_only=False)
    b = torch.load(tmp_path / "b/last.pt", weights_only=False)
    for key in ("gen", "disc", "gen_train", "disc_train"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert a["ema_updates"] == b["ema_updates"]
    # the checkpoint's scoring weights are the average, not the trained weights
    name = next(k for k in a["gen"] if k.endswith("weight"))
    assert not torch.equal(a["gen"][name], a["gen_train"][name])
    # a scorer built from the run scores with the averaged weights
    finalize_squid(tmp_path / "a", ds, split)
    kept = torch.load(tmp_path / "a/best.pt", weights_only=False)
    model = torch.load(tmp_path / "a/model.pt", weights_only=False)
    assert all(torch.equal(model["gen"][k], kept["gen"][k]) for k in kept["gen"])
    if kept["epoch"] == 1:
        assert all(torch.equal(a["gen"][k], kept["gen"][k]) for k in kept["gen"])


def test_resume_refuses_another_run(tmp_path, tiny_data):
    ds, split = tiny_data
    fit_squid(tiny_cfg(epochs=1), ds, split, tmp_path, seed=0, show_progress=False, log=lambda *_: None)
    with pytest.raises(Exception, match="another run"):
        fit_squid(tiny_cfg(epochs=1), ds, split, tmp_path, seed=1, resume=True, show_progress=False)


def test_resume_reads_fields_missing_from_an_older_checkpoint_as_defaults(tmp_path, tiny_data):
    # a run started before the CRTSC switches existed stored no value for them; they default to "off"
    ds, split = tiny_data
    cfg = tiny_cfg(epochs=2)
    fit_squid(cfg, ds, split, tmp_path, seed=0, show_progress=False, log=lambda *_: None, max_epochs=1)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    for key in ("crm_place", "crm_reduction", "gen_loss", "tscc_w"):
        del state["cfg"][key]
    torch.save(state, tmp_path / "last.pt")
    out = fit_squid(cfg, ds, split, tmp_path, seed=0, resume=True, show_progress=False, log=lambda *_: None)
    assert out["finished"] and len(out["history"]) == 2
    # a changed field is still refused
    with pytest.raises(Exception, match="another run"):
        fit_squid(tiny_cfg(epochs=2, tscc_w=0.03), ds, split, tmp_path, seed=0, resume=True, show_progress=False)


def test_nan_guard_keeps_last_good_checkpoint(tmp_path, tiny_data, monkeypatch):
    ds, split = tiny_data
    cfg = tiny_cfg(epochs=2)
    fit_squid(cfg, ds, split, tmp_path, seed=0, show_progress=False, log=lambda *_: None, max_epochs=1)
    before = (tmp_path / "last.pt").read_bytes()
    import cxrlib.methods.squid.train as squid_train

    real = squid_train.generator_loss

    def nan_teacher(*a, **k):
        total, terms = real(*a, **k)
        terms["teacher"] = terms["teacher"] * float("nan")
        return total + terms["teacher"], terms

    monkeypatch.setattr(squid_train, "generator_loss", nan_teacher)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, iteration 0: loss term 'generator total' is nan"):
        fit_squid(cfg, ds, split, tmp_path, seed=0, resume=True, show_progress=False, log=lambda *_: None)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_random_affine_is_seeded_and_identity_at_zero():
    x = torch.rand(4, 1, 32, 32)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(random_affine(x, 0.05, (0.95, 1.05), g1), random_affine(x, 0.05, (0.95, 1.05), g2))
    assert torch.allclose(random_affine(x, 0.0, (1.0, 1.0)), x, atol=1e-5)


def test_scorer_threshold_comes_from_validation(tmp_path, tiny_data):
    ds, split = tiny_data
    fit_squid(tiny_cfg(epochs=1), ds, split, tmp_path, seed=0, show_progress=False, log=lambda *_: None)
    path = finalize_squid(tmp_path, ds, split)
    sc = load_scorer(path)
    s_val = sc.score(ds.images[split.val])
    from cxrlib.metrics import choose_threshold

    assert sc.threshold == pytest.approx(choose_threshold(ds.labels[split.val], s_val))
    # standardised with training statistics: training scores have mean ~0 and std ~1
    # standardised with the training statistics, sign flipped (higher = more anomalous)
    logits = sc.raw_logits(ds.images[split.train])
    assert sc.mu == pytest.approx(float(logits.mean()), rel=1e-5)
    assert sc.sigma == pytest.approx(float(logits.std()) + 1e-8, rel=1e-4)
    np.testing.assert_allclose(sc.score(ds.images[:5]), -(sc.raw_logits(ds.images[:5]) - sc.mu) / sc.sigma, rtol=1e-5)
    maps = sc.anomaly_maps(ds.images[:3])
    assert maps.shape == (3, 32, 32) and (maps >= 0).all()


def test_cli_train_then_score(tmp_path, capsys):
    npz = tmp_path / "d.npz"
    ds = D.load("embedded")
    np.savez(npz, images=ds.images, labels=ds.labels, names=ds.names)
    rc = main(["train", "--method", "squid", "--data", str(npz), "--profile", "quick", "--epochs", "1",
               "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0
    rc = main(["score", "--checkpoint", str(tmp_path / "run/model.pt"), "--data", str(npz), "--split", "test",
               "--out", str(tmp_path / "s.csv")])
    assert rc == 0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "name,score,label" and len(lines) == 1 + 86
    res = json.loads((tmp_path / "s.json").read_text())
    assert 0 <= res["auroc"] <= 1 and "val_threshold" in res and "test-tuned" in res["test_tuned"]["rule"]
    assert res["split_version"] == D.SPLIT_VERSION
    # a checkpoint of another split definition: its --split test would hold other images, so it is refused
    import torch

    ck = torch.load(tmp_path / "run/model.pt", weights_only=False)
    ck["split_version"] = "image-v1"
    torch.save(ck, tmp_path / "old.pt")
    capsys.readouterr()
    assert main(["score", "--checkpoint", str(tmp_path / "old.pt"), "--data", str(npz), "--split", "test",
                 "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "image-v1" in err and D.SPLIT_VERSION in err and len(err.strip().splitlines()) == 1
    # unlabelled archive: scores, no metrics
    np.savez(tmp_path / "u.npz", images=ds.images[:5])
    assert main(["score", "--checkpoint", str(tmp_path / "run/model.pt"), "--data", str(tmp_path / "u.npz"),
                 "--out", str(tmp_path / "u.csv")]) == 0
    assert (tmp_path / "u.csv").read_text().splitlines()[1].endswith(",")
    # scoring in bf16 is recorded in the JSON (what it does to the scores: the next test)
    assert main(["score", "--checkpoint", str(tmp_path / "run/model.pt"), "--data", str(npz), "--split", "test",
                 "--out", str(tmp_path / "b.csv"), "--precision", "bf16"]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["precision"] == "bf16" and res["precision"] == "fp32"


def test_scorer_precision_round_trip_and_the_script(tmp_path, tiny_data, tiny_run):
    """set_precision("bf16") changes the arithmetic, set_precision("fp32") restores the fp32 scores exactly;
    scripts/scoring_precision.py writes one row per run."""
    ds, split = tiny_data
    run, data = tiny_run
    sc = load_scorer(run / "model.pt")
    x = ds.images[split.test]
    fp32 = sc.score(x)
    low = sc.set_precision("bf16").score(x)
    # one epoch: the logits differ below bf16's resolution, so only "the arithmetic changed" is testable here
    # (trained models keep their ranking: results/cpu/diagnostics/scoring_precision.csv)
    assert sc.precision == "bf16" and low.dtype == fp32.dtype and not np.array_equal(low, fp32)
    assert sc.reconstruct(x[:2]).dtype == torch.float32
    np.testing.assert_array_equal(sc.set_precision("fp32").score(x), fp32)
    assert sc.set_precision("auto").precision == "fp32"  # auto on a CPU
    mod = _script("scoring_precision")
    out = tmp_path / "sp.csv"
    assert mod.main([str(run), "--data", str(data), "--out", str(out)]) == 0
    assert mod.main([str(run), "--data", str(data), "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(open(out)))  # upserted, not appended
    assert row["precision"] == "bf16" and int(row["n_test"]) == len(split.test)
    assert float(row["auroc_change"]) == pytest.approx(float(row["auroc_low"]) - float(row["auroc_fp32"]), abs=2e-4)
    assert mod.main([str(tmp_path / "nothing_here"), "--data", str(data), "--out", str(out)]) == 2


def test_lowpass_error_script_chooses_sigma_on_validation(tmp_path, tiny_data, tiny_run):
    """scripts/lowpass_error.py: one row per run, sigma from its grid, the plain error at sigma 0 and the
    low-pass AUROC on validation the best over the grid."""
    ds, split = tiny_data
    run, data = tiny_run
    mod = _script("lowpass_error")
    out = tmp_path / "lp.csv"
    for _ in range(2):
        assert mod.main([str(run), "--data", str(data), "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(open(out)))  # upserted, not appended
    assert float(row["sigma"]) in mod.SIGMAS
    assert float(row["val_auroc_lowpass"]) >= float(row["val_auroc_plain"])
    sc = load_scorer(run / "model.pt")
    x, y = ds.images[split.val], ds.labels[split.val]
    plain = M.auroc(y, ((sc.reconstruct(x).numpy()[:, 0] - x / 255.0) ** 2).mean(axis=(1, 2)))
    assert float(row["val_auroc_plain"]) == pytest.approx(plain, abs=1e-4)


@pytest.mark.parametrize("case", ["missing_checkpoint", "not_a_checkpoint", "training_state", "wrong_method",
                                  "missing_data", "wrong_shape", "empty", "feature_cache_on_squid"])
def test_cli_bad_input_one_line_error(tmp_path, capsys, case, tiny_data):
    ds, split = tiny_data
    ck = tmp_path / "model.pt"
    data = tmp_path / "x.npz"
    np.savez(data, images=ds.images[:4])
    if case == "not_a_checkpoint":
        ck.write_text("hello")
    elif case in ("training_state", "wrong_method", "wrong_shape", "empty", "feature_cache_on_squid"):
        fit_squid(tiny_cfg(epochs=1), ds, split, tmp_path, seed=0, show_progress=False, log=lambda *_: None)
        if case == "training_state":
            ck = tmp_path / "last.pt"
        else:
            finalize_squid(tmp_path, ds, split)
            if case == "wrong_method":
                state = torch.load(ck, weights_only=False)
                state["method"] = "wscxr"
                torch.save(state, ck)
            elif case == "wrong_shape":
                np.savez(data, images=np.zeros((2, 3, 32, 32, 2), np.uint8))
            elif case == "empty":
                np.savez(data, images=np.zeros((0, 32, 32), np.uint8))
    if case == "missing_data":
        data = tmp_path / "nope.npz"
        fit_squid(tiny_cfg(epochs=1), ds, split, tmp_path, seed=0, show_progress=False, log=lambda *_: None)
        finalize_squid(tmp_path, ds, split)
    extra = ["--feature-cache", str(tmp_path / "cache")] if case == "feature_cache_on_squid" else []
    rc = main(["score", "--checkpoint", str(ck), "--data", str(data), "--out", str(tmp_path / "o.csv"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    if extra:
        assert "--feature-cache applies to patch-feature methods" in err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0 and "--resume" in capsys.readouterr().out


def test_anomaly_maps_come_from_the_last_epochs_generator(tmp_path, tiny_data):
    """finalize_squid stores the last epoch's generator as the map generator when the kept epoch is another one:
    the score uses the kept generator, the map the last one; a checkpoint whose kept epoch is the last one, or one
    written before map_gen existed, maps with the kept generator."""
    ds, split = tiny_data
    cfg = squid_config("squid", "quick", epochs=1, image_size=32, base_width=4, mem_slots=10,
                       decoder_memory_slots=10, disc_eval_norm="running")
    run = tmp_path / "run"
    fit_squid(cfg, ds, split, run, seed=0, show_progress=False, log=lambda *a: None)
    finalize_squid(run, ds, split)
    x = ds.images[split.test[:4]]
    ck = torch.load(run / "model.pt", weights_only=False)
    assert ck["map_gen"] is None and ck["map_epoch"] == ck["best_epoch"] == 0  # one epoch: kept = last
    same = load_scorer(run / "model.pt")
    assert same.map_gen is None
    np.testing.assert_array_equal(same.reconstruct(x, generator="map").numpy(), same.reconstruct(x).numpy())
    # pretend an earlier epoch was kept, with other weights: the map keeps the last epoch's generator
    last = torch.load(run / "last.pt", weights_only=False)
    last["history"].append({**last["history"][-1], "epoch": 1})
    torch.save(last, run / "last.pt")
    best = torch.load(run / "best.pt", weights_only=False)
    best["gen"] = {k: v * 0.5 if v.is_floating_point() else v for k, v in best["gen"].items()}
    torch.save(best, run / "best.pt")
    finalize_squid(run, ds, split)
    sc = load_scorer(run / "model.pt")
    assert sc.meta["map_epoch"] == 1 and sc.meta["best_epoch"] == 0 and sc.map_gen is not None
    np.testing.assert_allclose(sc.reconstruct(x, generator="map").numpy(), same.reconstruct(x).numpy(), atol=1e-6)
    assert not np.allclose(sc.reconstruct(x).numpy(), same.reconstruct(x).numpy())
    np.testing.assert_allclose(sc.anomaly_maps(x), same.anomaly_maps(x), atol=1e-5)
    with pytest.raises(ValueError, match="'kept' or 'map'"):
        sc.reconstruct(x, generator="last")
    # a model.pt from before map_gen existed
    ck = torch.load(run / "model.pt", weights_only=False)
    del ck["map_gen"], ck["map_epoch"]
    torch.save(ck, tmp_path / "old.pt")
    old = load_scorer(tmp_path / "old.pt")
    assert old.map_gen is None
    np.testing.assert_array_equal(old.reconstruct(x, generator="map").numpy(), sc.reconstruct(x).numpy())
    np.testing.assert_allclose(sc.anomaly_maps(x, generator="kept"), old.anomaly_maps(x), atol=1e-6)


def test_map_generator_script_on_a_phantom_run(tmp_path):
    """scripts/map_generator.py: one row per localisation run, kept and map generators' pixel AUROC."""
    ds = D.load("phantoms", size=64)
    split = D.unsupervised_protocol(ds, seed=0)
    split.train = split.train[:32]
    cfg = squid_config("squid", "quick", epochs=1, base_width=4, mem_slots=10, decoder_memory_slots=10)
    fit_squid(cfg, ds, split, tmp_path / "squid_s0", seed=0, show_progress=False, log=lambda *a: None)
    finalize_squid(tmp_path / "squid_s0", ds, split)
    mod = _script("map_generator")
    out = tmp_path / "maps.csv"
    assert mod.main([str(tmp_path / "squid_s0"), "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(open(out)))
    # one epoch: the kept generator is the last one, so both maps are the same
    assert row["kept_epoch"] == row["map_epoch"] == "1" and row["pixel_auroc_kept"] == row["pixel_auroc_map"]
    assert mod.main([str(tmp_path / "missing"), "--out", str(out)]) == 2
