"""Grad-CAM of the SQUID-family score: where in the image the discriminator finds its evidence.

The score of SQUID / SimSID / CRTSC is ``-(D(G(x)) - mu) / sigma`` (:class:`cxrlib.methods.squid.scorer.SquidScorer`).
Grad-CAM (Selvaraju et al., ICCV 2017, Eq. 1–2) weights each channel ``k`` of a convolutional activation
``A^k`` of the discriminator by the spatial mean of the score's gradient, ``alpha_k = mean_ij dS/dA^k_ij``,
and keeps ``ReLU(sum_k alpha_k A^k)``, upsampled to the image. The computation is ``pytorch_grad_cam``'s;
the tests check it against that formula written out by hand.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .methods.squid.generator import to_model_range

__all__ = ["ScoreModel", "discriminator_cam_layer", "discriminator_gradcam"]


class ScoreModel(nn.Module):
    """``x01`` ``(B, 1, S, S)`` in [0, 1] -> the anomaly direction ``-D(G(x))`` ``(B, 1)`` (monotone in the score)."""

    def __init__(self, scorer):
        super().__init__()
        self.gen, self.disc, self.normalize = scorer.gen.eval(), scorer.disc.eval(), scorer.cfg.normalize

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return -self.disc(self.gen(to_model_range(x01, self.normalize), with_teacher=False)["recon"])


def discriminator_cam_layer(disc: nn.Module, min_side: int = 8) -> nn.Module:
    """The output (activation) of the last block of ``disc.features`` whose map is at least ``min_side`` pixels
    wide (the final 2×2 or 4×4 map is too coarse to localise anything).

    The block's activation, not its convolution: at scoring the discriminator's BatchNorm normalises each image
    by its own statistics (``eval_norm="per_image"``, the official behaviour), which makes the score blind to a
    constant added to a channel of the convolution's output, so the gradient there has zero spatial mean and
    Grad-CAM's channel weights (its Eq. 1) would all vanish."""
    layers, side, chosen, first = list(disc.features), disc.image_size, None, None
    for i, m in enumerate(layers):
        if isinstance(m, nn.Conv2d):
            side = (side - 1) // 2 + 1
            act = next(a for a in layers[i + 1:] if isinstance(a, nn.LeakyReLU))
            first = first or act
            if side >= min_side:
                chosen = act
    return chosen or first


def discriminator_gradcam(scorer, images, layer: nn.Module | None = None, batch_size: int = 16) -> np.ndarray:
    """Grad-CAM maps of the anomaly score, ``(N, S, S)`` in [0, 1] (per image min-max, as pytorch_grad_cam).

    Args:
        scorer: a SQUID-family scorer (``gen``, ``disc``, ``cfg``, ``_x01``).
        images: uint8 ``(N, S, S)`` or float ``(N, 1, S, S)`` in [0, 1].
        layer: the discriminator layer to explain (default :func:`discriminator_cam_layer`).
    """
    # lazy: grad-cam is an optional dependency (the ``notebooks`` extra), needed by this function only
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = ScoreModel(scorer)
    layer = layer if layer is not None else discriminator_cam_layer(scorer.disc)
    x = scorer._x01(images)
    device = next(model.parameters()).device
    maps = []
    with GradCAM(model=model, target_layers=[layer]) as cam:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            maps.append(cam(input_tensor=xb, targets=[ClassifierOutputTarget(0)] * len(xb)))
    return np.concatenate(maps)
