"""Patch features: shapes, the 5x5 aggregation against a direct computation, preprocessing, honest weights."""
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrlib.features import (IMAGENET_MEAN, PatchFeatures, PretrainedWeightsError, build_backbone,
                             describe_backbone, imagenet_weights_file, local_aggregate)


def test_local_aggregate_is_the_padded_neighbourhood_mean():
    feat = torch.randn(2, 3, 6, 5)
    out = local_aggregate(feat, 5)
    assert out.shape == (2, 6, 5, 3)
    ref = F.avg_pool2d(feat, 5, stride=1, padding=2, count_include_pad=True).permute(0, 2, 3, 1)
    assert torch.allclose(out, ref, atol=1e-6)
    # by hand at one border position: zero padding counts in the 25
    assert torch.allclose(out[1, 0, 0, 2], feat[1, 2, 0:3, 0:3].sum() / 25, atol=1e-6)
    assert torch.equal(local_aggregate(feat, 1), feat.permute(0, 2, 3, 1))


def test_patch_features_shapes_and_preprocessing():
    fx = PatchFeatures("resnet18", "layer1", "random", image_size=32)
    assert fx.grid == (8, 8) and fx.dim == 64
    images = np.random.default_rng(0).integers(0, 256, (3, 24, 24), dtype=np.uint8)
    feats = fx.extract(images, batch_size=2, show_progress=False)
    assert feats.shape == (3, 8, 8, 64) and feats.dtype == torch.float32
    x = fx.preprocess(torch.zeros(1, 1, 24, 24))
    assert x.shape == (1, 3, 32, 32)
    assert torch.allclose(x[0, :, 0, 0], -torch.tensor(IMAGENET_MEAN) / torch.tensor((0.229, 0.224, 0.225)))
    # embedding equals the direct computation: backbone layer, then the 5x5 local mean
    direct = local_aggregate(fx.extractor(fx.preprocess(torch.from_numpy(images[:1, None] / 255.0).float()))["feat"])
    assert torch.allclose(feats[:1], direct, atol=1e-5)
    pooled = PatchFeatures("resnet18", "layer1", "random", image_size=32, embed_dim=16)
    assert pooled.extract(images[:1], show_progress=False).shape == (1, 8, 8, 16)


def test_random_weights_are_seeded_and_restorable():
    a = PatchFeatures("resnet18", "layer1", "random", image_size=32, init_seed=3)
    b = PatchFeatures("resnet18", "layer1", "random", image_size=32, init_seed=3)
    c = PatchFeatures("resnet18", "layer1", "random", image_size=32, init_seed=4)
    x = torch.rand(1, 1, 32, 32)
    assert torch.equal(a.embed(x), b.embed(x)) and not torch.equal(a.embed(x), c.embed(x))
    restored = PatchFeatures(**c.config(), state_dict=c.state_dict_to_store())
    assert torch.equal(restored.embed(x), c.embed(x))
    assert "not pretrained" in a.label and "ImageNet" not in a.label


def test_offline_imagenet_weights_fail_with_one_clear_line(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsError) as e:
        build_backbone("densenet121", "imagenet")
    msg = str(e.value)
    assert "\n" not in msg and "densenet121-a639ec97.pth" in msg and "--weights random" in msg
    assert str(tmp_path / "hub" / "checkpoints" / "densenet121-a639ec97.pth") in msg
    assert imagenet_weights_file("densenet121").name == "densenet121-a639ec97.pth"
    assert "ImageNet" in describe_backbone("densenet121", "features.denseblock4", "imagenet")
    with pytest.raises(ValueError):
        build_backbone("densenet121", "pretrained-somehow")
