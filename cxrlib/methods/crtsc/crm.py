"""Channel-wise recalibration module (CRM) of CRTSC: a squeeze-and-excitation block.

CRTSC (Xiong, Wang, Cai et al., Sensors 25(21):6722, 2025, Sec. 3.1) re-weights the channels of
encoder feature maps with the squeeze-and-excitation (SE) block of Hu, Shen & Sun,
"Squeeze-and-Excitation Networks", CVPR 2018:

* squeeze (Hu et al., Eq. 2): ``z_c = mean over (h, w) of x_c``;
* excitation (Eq. 3): ``s = sigmoid(W2 relu(W1 z))`` with ``W1: C -> C // r`` and ``W2: C // r -> C``,
  both without bias;
* scale (Eq. 4): ``y_c = s_c x_c``.

As in the official code (``WANG683s/CRTSC``, ``models/basic_modules.py``, class ``CWA``) the output
is the pure rescaling ``x * s`` (SQUID's unused SE variant returned ``x * s + x``). The paper uses
the reduction ``r = 8`` on ZhangLab and ``r = 16`` on CheXpert when the CRM is used alone, and
``r = 24`` together with the TSCC loss (:mod:`cxrlib.methods.crtsc.texture`).

Initialisation (a choice of this project; the paper does not state one): the second linear map starts at
zero, so at initialisation every channel weight is ``sigmoid(0) = 1/2`` for every input and the block is
exactly ``x / 2``, a uniform rescale that changes no feature's direction or ranking until training moves
it (as zero-initialised residual branches do). The official code keeps PyTorch's default initialisation,
which gives input-dependent random weights around 1/2 from the first step: ``zero_init=False``.
Introduced in notebook ``02_channel_recalibration``.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ChannelRecalibration", "crm_hidden_channels", "crm_parameter_count"]


def crm_hidden_channels(channels: int, reduction: int = 8) -> int:
    """Width of the excitation bottleneck, ``max(1, channels // reduction)``.

    The floor at 1 keeps the block usable when ``channels < reduction`` (the official code would
    build a zero-width ``Linear`` there).
    """
    if channels < 1 or reduction < 1:
        raise ValueError(f"channels and reduction must be >= 1, got {channels} and {reduction}")
    return max(1, channels // reduction)


def crm_parameter_count(channels: int, reduction: int = 8) -> int:
    """Number of learnable parameters of :class:`ChannelRecalibration`: ``2 * C * max(1, C // r)``.

    Two bias-free linear maps, ``C x C//r`` and ``C//r x C``. E.g. 256 for ``C = 32, r = 8``.
    """
    return 2 * channels * crm_hidden_channels(channels, reduction)


class ChannelRecalibration(nn.Module):
    """Squeeze-and-excitation channel recalibration (Hu et al. 2018, Eqs. 2-4), CRTSC's CRM.

    Args:
        channels: ``C``, number of input (= output) channels.
        reduction: ``r``, bottleneck ratio; the hidden width is ``max(1, C // r)``.
        zero_init: start the second linear map at zero, so the block is exactly ``x / 2`` at initialisation
            (default); ``False``: PyTorch's default initialisation, as the official code.

    Shapes:
        input ``(B, C, H, W)`` -> output ``(B, C, H, W)``, ``output[:, c] = w[:, c] * input[:, c]``.

    Attributes:
        fc: ``Sequential(Linear(C, C//r, bias=False), ReLU, Linear(C//r, C, bias=False), Sigmoid)``.
        last_weights: the channel weights ``w`` of the latest forward pass, ``(B, C)`` in ``(0, 1)``,
            detached (for plotting); ``None`` before the first call.
    """

    def __init__(self, channels: int, reduction: int = 8, zero_init: bool = True):
        super().__init__()
        hidden = crm_hidden_channels(channels, reduction)
        self.channels = channels
        self.reduction = reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )
        if zero_init:
            nn.init.zeros_(self.fc[2].weight)
        self.last_weights: torch.Tensor | None = None

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Squeeze and excitation only: ``(B, C, H, W) -> (B, C)`` weights in ``(0, 1)``."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, H, W), got shape {tuple(x.shape)}")
        return self.fc(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.channel_weights(x)
        self.last_weights = w.detach()
        return x * w[:, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, hidden={self.fc[0].out_features}"
