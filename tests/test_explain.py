"""Grad-CAM of the discriminator score: pytorch_grad_cam's maps equal the formula computed by hand."""
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from cxrlib.explain import ScoreModel, discriminator_cam_layer, discriminator_gradcam
from cxrlib.methods.squid.config import squid_config
from cxrlib.methods.squid.discriminator import SquidDiscriminator
from cxrlib.methods.squid.generator import SquidGenerator
from cxrlib.methods.squid.scorer import SquidScorer


def _scorer():
    torch.manual_seed(0)
    cfg = squid_config("squid", "quick")
    gen, disc = SquidGenerator(cfg).eval(), SquidDiscriminator(cfg.disc_channels, cfg.image_size).eval()
    return SquidScorer("squid", cfg, gen, disc)


def test_layer_choice_is_fine_enough():
    scorer = _scorer()
    layer = discriminator_cam_layer(scorer.disc)
    acts = [m for m in scorer.disc.features if isinstance(m, torch.nn.LeakyReLU)]
    assert layer is acts[2]  # 64 px: 32, 16, 8, 4, 2 -> the activation of the last block with side >= 8


def test_gradcam_matches_hand_formula():
    scorer = _scorer()
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    maps = discriminator_gradcam(scorer, x)
    assert maps.shape == (3, 64, 64)
    assert (maps.std(axis=(1, 2)) > 0.05).all()  # a map, not min-max-scaled rounding noise

    model, layer = ScoreModel(scorer), discriminator_cam_layer(scorer.disc)
    acts = {}
    h = layer.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    for j in range(3):
        acts.clear()
        out = model(x[j:j + 1])
        (grad,) = torch.autograd.grad(out[0, 0], acts["a"])
        weights = grad.mean((2, 3), keepdim=True)                         # Grad-CAM Eq. 1
        cam = F.relu((weights * acts["a"]).sum(1))[0].detach().numpy()  # Grad-CAM Eq. 2
        # pytorch_grad_cam's order: min-max, resize with OpenCV, min-max again (after averaging layers)
        cam = cv2.resize((cam - cam.min()) / (cam.max() - cam.min() + 1e-7), (64, 64))
        cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
        np.testing.assert_allclose(maps[j], cam, atol=1e-4)
    h.remove()
