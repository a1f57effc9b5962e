"""PatchCore: chunked nearest neighbours, coreset covering, scores and maps, CLI end to end."""
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import pairwise_distances

from cxrlib.methods.patchcore.patchcore import covering_radius, greedy_coreset, nn_distances, patch_maps


def test_nn_distances_match_brute_force_and_chunking_changes_nothing():
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(300, 16, generator=g), torch.randn(500, 16, generator=g)
    ref = pairwise_distances(q.numpy(), bank.numpy())
    d, i = nn_distances(q, bank, k=3)
    assert np.allclose(d.numpy(), np.sort(ref, 1)[:, :3], atol=1e-4)
    assert np.array_equal(i[:, 0].numpy(), ref.argmin(1))
    d2, i2 = nn_distances(q, bank, k=3, query_chunk=7, bank_chunk=33)
    assert torch.allclose(d, d2, atol=1e-5) and torch.equal(i, i2)
    d1 = nn_distances(q, bank, k=1, bank_chunk=1)[0]
    assert torch.allclose(d1[:, 0], d[:, 0], atol=1e-5)


def test_coreset_size_distinct_and_covers_better_than_random():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(12, 32, generator=g) * 5
    pts = centres[torch.randint(12, (600,), generator=g)] + 0.3 * torch.randn(600, 32, generator=g)
    for proj in (None, 8):
        idx = greedy_coreset(pts, ratio=0.05, projection_dim=proj, seed=0)
        assert len(idx) == 30 and len(set(idx.tolist())) == 30
        greedy_r = covering_radius(pts, idx)
        rng = np.random.default_rng(0)
        random_r = [covering_radius(pts, rng.choice(600, 30, replace=False)) for _ in range(5)]
        assert greedy_r <= min(random_r)
    # exact greedy (no projection) is the farthest-point rule: each pick is the farthest from those before
    idx = greedy_coreset(pts[:50], n_select=5, projection_dim=None, n_starts=0, seed=2).tolist()
    for j in range(1, 5):
        dmin = torch.cdist(pts[:50], pts[idx[:j]]).min(1).values
        assert int(dmin.argmax()) == idx[j]
    with pytest.raises(ValueError):
        greedy_coreset(pts, ratio=0.0)


def test_patch_maps_shape_and_max():
    scores = torch.zeros(2, 4, 4)
    scores[1, 0, 0] = 5.0
    maps = patch_maps(scores, 32)
    assert maps.shape == (2, 32, 32) and maps[0].max() == 0
    assert np.unravel_index(maps[1].argmax(), (32, 32))[0] < 8


def test_cli_patchcore_train_score_end_to_end(tmp_path, capsys):
    from cxrlib.cli import main
    from cxrlib.methods import load_scorer

    out = tmp_path / "pc"
    assert main(["train", "--method", "patchcore", "--weights", "random", "--layer", "layer1", "--image-size", "32",
                 "--max-normal", "40", "--out", str(out), "--no-progress"]) == 0
    ck = torch.load(out / "model.pt", weights_only=False)
    assert ck["method"] == "patchcore" and ck["weights"] == "random" and "not pretrained" in ck["backbone_label"]
    assert ck["split_seed"] == 0 and np.isfinite(ck["threshold"]) and ck["features_state"] is not None
    assert main(["score", "--checkpoint", str(out / "model.pt"), "--data", "embedded", "--split", "test",
                 "--out", str(tmp_path / "s.csv")]) == 0
    res = json.loads((tmp_path / "s.json").read_text())
    assert 0.5 < res["auroc"] <= 1.0
    scorer = load_scorer(out / "model.pt")
    from cxrlib import data as D
    ds = D.load("embedded", 128)
    maps = scorer.anomaly_maps(ds.images[:2])
    assert maps.shape == (2, 128, 128)
    assert np.allclose(scorer.score(ds.images[:2]), scorer.patch_scores(
        scorer.extractor.extract(ds.images[:2], show_progress=False)).amax((1, 2)).numpy())


def test_cli_offline_weights_error_is_one_line(tmp_path, capsys, monkeypatch):
    import urllib.error

    import torchvision.models._api as api
    from cxrlib.cli import main

    monkeypatch.setattr(api, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    rc = main(["train", "--method", "patchcore", "--backbone", "densenet121", "--out", str(tmp_path / "x"),
               "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "densenet121-a639ec97.pth" in err
