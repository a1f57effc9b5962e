"""WSCXR: mining keeps the farthest fraction r, mixing formula and range, hinge loss by hand, the K anomalies
stay out of val/test, CLI end to end with the ablation switches."""
import json

import numpy as np
import pytest
import torch

from cxrlib import data as D
from cxrlib.methods.wscxr.wscxr import Discriminator, hinge_loss, mine_anomaly_features, mix_features


def test_mining_keeps_floor_r_of_the_farthest():
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(200, 8, generator=g)
    abnormal = torch.cat([torch.randn(40, 8, generator=g), 6 + torch.randn(13, 8, generator=g)])
    kept, dist = mine_anomaly_features(abnormal, bank, retention=0.2)
    assert len(kept) == int(np.floor(0.2 * 53)) == 10
    ref = torch.cdist(abnormal, bank).min(1).values
    assert torch.allclose(dist, ref, atol=1e-4)
    assert set(kept.tolist()) == set(torch.argsort(ref, descending=True)[:10].tolist())
    assert all(int(i) >= 40 for i in kept)  # the shifted (truly anomalous) features are the far ones
    assert len(mine_anomaly_features(abnormal[:3], bank, 0.2)[0]) == 1  # at least one prototype
    with pytest.raises(ValueError):
        mine_anomaly_features(abnormal, bank, retention=0.0)


def test_mixing_formula_and_alpha_range():
    g = torch.Generator().manual_seed(1)
    normal, protos = torch.randn(5000, 4, generator=g), torch.randn(7, 4, generator=g)
    mixed, alpha, j = mix_features(normal, protos, torch.Generator().manual_seed(2))
    assert torch.allclose(mixed, (1 - alpha[:, None]) * normal + alpha[:, None] * protos[j])
    assert alpha.min() >= 0.1 and alpha.max() <= 1.0 and abs(float(alpha.mean()) - 0.55) < 0.02
    assert set(j.tolist()) == set(range(7))


def test_hinge_loss_hand_computed():
    d_normal, d_fake = torch.tensor([1.0, 0.2, -0.5]), torch.tensor([-1.0, 0.0])
    loss, terms = hinge_loss(d_normal, d_fake, margin=0.5)
    # normal: relu(0.5-1)=0, relu(0.5-0.2)=0.3, relu(0.5+0.5)=1.0 -> mean 1.3/3; fake: relu(0.5-1)=0, relu(0.5)=0.5 -> 0.25
    assert terms["normal"].item() == pytest.approx(1.3 / 3)
    assert terms["anomalous"].item() == pytest.approx(0.25)
    assert loss.item() == pytest.approx(1.3 / 3 + 0.25)


def test_discriminator_default_is_one_bias_free_linear_layer():
    d = Discriminator(16)
    assert [type(m).__name__ for m in d.modules() if not isinstance(m, torch.nn.Sequential)][1:] == ["Linear"]
    assert d.tail.bias is None and d(torch.randn(3, 16)).shape == (3,)
    assert Discriminator(16, n_layers=2)(torch.randn(4, 16)).shape == (4,)


def test_k_anomalies_never_in_val_or_test():
    ds = D.load("embedded", 128)
    for k in (2, 16):
        split = D.weakly_supervised_protocol(ds, k, seed=0)
        assert len(split.train_abnormal) == k and (ds.labels[split.train_abnormal] == 1).all()
        assert not set(split.train_abnormal) & (set(split.val) | set(split.test))
    assert np.array_equal(D.weakly_supervised_protocol(ds, 4, 0).val, D.development_split(ds, 0).val)


def test_cli_wscxr_train_score_end_to_end_and_ablation(tmp_path):
    from cxrlib.cli import main
    from cxrlib.methods import load_scorer

    common = ["--weights", "random", "--layer", "layer1", "--image-size", "32", "--max-normal", "40",
              "--coreset-ratio", "0.05", "--epochs", "3", "--no-progress", "--feature-cache", str(tmp_path / "cache")]
    out = tmp_path / "ws"
    assert main(["train", "--method", "wscxr", "--k", "4", "--out", str(out), *common]) == 0
    ck = torch.load(out / "model.pt", weights_only=False)
    ds = D.load("embedded", 128)
    split = D.weakly_supervised_protocol(ds, 4, seed=0)
    assert ck["method"] == "wscxr" and ck["k"] == 4 and ck["train_abnormal"] == split.train_abnormal.tolist()
    assert ck["n_prototypes"] == int(0.2 * 4 * 8 * 8) and ck["mining"] and ck["mixing"]
    assert len(ck["history"]) == 3 and 0 <= ck["best_epoch"] < 3 and "not pretrained" in ck["backbone_label"]
    assert main(["score", "--checkpoint", str(out / "model.pt"), "--data", "embedded", "--split", "test",
                 "--out", str(tmp_path / "s.csv")]) == 0
    first = json.loads((tmp_path / "s.json").read_text())
    assert 0 <= first["auroc"] <= 1 and first["images_per_second"] > 0
    # scoring from the feature cache: same scores (the cache is filled once, then read), no speed claimed
    for name in ("c1", "c2"):
        assert main(["score", "--checkpoint", str(out / "model.pt"), "--data", "embedded", "--split", "test",
                     "--out", str(tmp_path / f"{name}.csv"), "--feature-cache", str(tmp_path / "cache")]) == 0
        assert (tmp_path / f"{name}.csv").read_text() == (tmp_path / "s.csv").read_text()
        assert json.loads((tmp_path / f"{name}.json").read_text())["images_per_second"] == ""
    scorer = load_scorer(out / "model.pt")
    assert scorer.anomaly_maps(ds.images[:2]).shape == (2, 128, 128)
    # same seed -> identical model (CPU determinism); the ablation switches change the prototypes
    assert main(["train", "--method", "wscxr", "--k", "4", "--out", str(tmp_path / "again"), *common]) == 0
    again = torch.load(tmp_path / "again" / "model.pt", weights_only=False)
    assert torch.equal(again["discriminator"]["tail.weight"], ck["discriminator"]["tail.weight"])
    assert main(["train", "--method", "wscxr", "--k", "4", "--no-mining", "--no-mixing", "--out",
                 str(tmp_path / "abl"), *common]) == 0
    abl = torch.load(tmp_path / "abl" / "model.pt", weights_only=False)
    assert abl["n_prototypes"] == 4 * 8 * 8 and not abl["mining"] and not abl["mixing"]
