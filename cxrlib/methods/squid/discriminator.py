"""The image discriminator of SQUID / SimSID.

SQUID (Xiang et al., CVPR 2023, Sec. 3.4 "Anomaly Discrimination") trains a small CNN critic on real
images vs. reconstructions; at test time its logit on the *reconstruction* is the anomaly score.
SimSID (Xiang et al., TPAMI 2024) widens the last layer to 256 channels.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["SquidDiscriminator", "discriminator_output_size"]


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
    """

    def __init__(self, channels=(1, 16, 32, 64, 128, 128), image_size: int = 128, negative_slope: float = 0.2):
        super().__init__()
        channels = tuple(channels)
        layers = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(nn.Conv2d(c_in, c_out, 5, stride=2, padding=2))
            if i > 0:  # the official first layer has no BN (it is commented out there)
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(negative_slope, inplace=True))
        self.features = nn.Sequential(*layers)
        self.final_size = discriminator_output_size(image_size, len(channels) - 1)
        self.classifier = nn.Linear(channels[-1] * self.final_size ** 2, 1)
        self.channels, self.image_size = channels, image_size

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """``img`` ``(B, C, H, W)`` with ``H = W = image_size`` -> logits ``(B, 1)`` (real = high)."""
        return self.classifier(self.features(img).flatten(1))
