"""The image discriminator of SQUID / SimSID.

SQUID (Xiang et al., CVPR 2023, Sec. 3.4 "Anomaly Discrimination") trains a small CNN critic on real
images vs. reconstructions; at test time its logit on the *reconstruction* is the anomaly score.
SimSID (Xiang et al., TPAMI 2024) widens the last layer to 256 channels.

Test-time normalisation. The official SQUID, SimSID and CRTSC code never switches its discriminator to
``eval()`` and scores one image at a time (``batch_size=1`` in validation, test and the score statistics), so
at test time every BatchNorm layer normalises with the statistics of *that one image's* feature maps, an
instance normalisation with the BN's affine weights. ``eval_norm="per_image"`` (the default) makes the
eval-mode forward do exactly that, for any batch size; ``"running"`` is the textbook eval mode (running
statistics), which ranks reconstructions very differently (issue #23: with it the SQUID family's validation
AUROC oscillates around chance; see the results page).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SquidDiscriminator", "discriminator_output_size", "EVAL_NORMS"]

EVAL_NORMS = ("per_image", "running")


def discriminator_output_size(image_size: int, n_layers: int) -> int:
    """Spatial side after ``n_layers`` convs of kernel 5, stride 2, padding 2 (each gives ``ceil(s / 2)``)."""
    size = image_size
    for _ in range(n_layers):
        size = (size - 1) // 2 + 1
    return size


class SquidDiscriminator(nn.Module):
    """``len(channels) - 1`` x [conv5x5 stride 2 pad 2, BN (not on the first), LeakyReLU(0.2)] -> Linear -> 1 logit.

    Args:
        channels: channel sequence including the input: SQUID ``(1, 16, 32, 64, 128, 128)``,
            SimSID ``(1, 16, 32, 64, 128, 256)``.
        image_size: input side; 128 gives a 4x4 final map, 64 gives 2x2.
        negative_slope: LeakyReLU slope.
        eval_norm: BatchNorm in eval mode: ``"per_image"`` (each image's own feature statistics, the
            official test-time behaviour, see the module docstring) or ``"running"`` (running statistics).
            Training mode always uses the batch statistics.
    """

    def __init__(self, channels=(1, 16, 32, 64, 128, 128), image_size: int = 128, negative_slope: float = 0.2,
                 eval_norm: str = "per_image"):
        super().__init__()
        if eval_norm not in EVAL_NORMS:
            raise ValueError(f"eval_norm must be one of {EVAL_NORMS}, got {eval_norm!r}")
        self.eval_norm = eval_norm
        channels = tuple(channels)
        layers = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(nn.Conv2d(c_in, c_out, 5, stride=2, padding=2))
            if i > 0:  # the official first layer has no BN (it is commented out there)
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(negative_slope, inplace=True))
        self.features = nn.Sequential(*layers)
        self.final_size = discriminator_output_size(image_size, len(channels) - 1)
        if eval_norm == "per_image" and self.final_size < 2 and len(channels) > 2:
            raise ValueError(f"eval_norm='per_image' needs the last BatchNorm's map to have more than one pixel; "
                             f"{image_size} px gives {self.final_size}x{self.final_size}: use a larger image_size "
                             f"or eval_norm='running'")
        self.classifier = nn.Linear(channels[-1] * self.final_size ** 2, 1)
        self.channels, self.image_size = channels, image_size

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """``img`` ``(B, C, H, W)`` with ``H = W = image_size`` -> logits ``(B, 1)`` (real = high)."""
        if self.training or self.eval_norm == "running":
            return self.classifier(self.features(img).flatten(1))
        h = img
        for layer in self.features:
            if isinstance(layer, nn.BatchNorm2d):  # what train-mode BN computes on a batch of one image
                h = F.instance_norm(h, weight=layer.weight, bias=layer.bias, eps=layer.eps)
            else:
                h = layer(h)
        return self.classifier(h.flatten(1))

    def extra_repr(self) -> str:
        return f"eval_norm={self.eval_norm!r}"
