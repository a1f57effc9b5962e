"""The reconstruction backbones of DDAD / DDAD-ASR (Cai et al., MICCAI 2022; MedIA 86:102794, 2023) and the
ASR-Net that refines their discrepancy maps.

All backbones take grey ``(B, 1, 64, 64)`` images in [-1, 1] (the official ``Normalize(0.5, 0.5)``) and share
one encoder/decoder with the official widths (``width`` = the official multiplier ``mp``, 1 by default)::

    encoder: 4 x [conv 4x4 stride 2 pad 1 (no bias), BN, ReLU]   1 -> 16 -> 32 -> 64 -> 64 channels, 64 -> 4 px
             flatten (64*4*4 = 1024) -> Linear 2048, BN, ReLU -> Linear 16          (latent z, ``latent=16``)
    decoder: Linear 2048, BN, ReLU -> Linear 1024 -> (64, 4, 4)
             3 x [conv-transpose 4x4 stride 2 (no bias), BN, ReLU] 64 -> 64 -> 32 -> 16, then
             conv-transpose 4x4 stride 2 to ``out_channels`` with a linear output (no activation)

* :class:`ConvAE` (``ae``): the plain auto-encoder, trained with the pixel MSE.
* :class:`MemAE` (``memae``, Gong et al., ICCV 2019): the latent ``z`` is replaced by a convex combination of
  ``mem_dim = 25`` learned memory items, ``z_hat = w M`` with ``w = softmax(z M^T)`` (MemAE Eq. 4-5), optionally
  hard-shrunk (Eq. 7; ``shrink_thres = 0`` in DDAD's configs, i.e. off); the loss adds the entropy of ``w``
  (Eq. 9) with weight ``2e-4``.
* :class:`ConvAE` with ``out_channels=2`` (``aeu``, AE-U): the decoder predicts a mean and a log-variance per
  pixel, trained with the heteroscedastic loss of :func:`heteroscedastic_loss`.

Every backbone's ``forward`` returns a dict: ``recon`` ``(B, 1, H, W)``, ``logvar`` ``(B, 1, H, W)`` (AE-U only)
and ``att`` ``(B, mem_dim)`` (MemAE only). :class:`RefineNet` is ASR-Net (DDAD-ASR Sec. 3.3): three 3x3 convs
(``in -> 128 -> 128 -> 2``, BN + ReLU between) mapping discrepancy maps to a two-class segmentation logit.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BACKBONES", "ConvAE", "MemAE", "MemoryUnit", "RefineNet", "build_backbone", "hard_shrink_relu",
           "heteroscedastic_loss", "memory_entropy"]

BACKBONES = ("ae", "memae", "aeu")


def _encoder(width: float) -> nn.Sequential:
    c = [1, int(16 * width), int(32 * width), int(64 * width), int(64 * width)]
    layers = []
    for c_in, c_out in zip(c[:-1], c[1:]):
        layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
    return nn.Sequential(*layers)


def _decoder(width: float, out_channels: int) -> nn.Sequential:
    c = [int(64 * width), int(64 * width), int(32 * width), int(16 * width)]
    layers = []
    for c_in, c_out in zip(c[:-1], c[1:]):
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
    layers.append(nn.ConvTranspose2d(c[-1], out_channels, 4, 2, 1, bias=False))
    return nn.Sequential(*layers)


class ConvAE(nn.Module):
    """The DDAD auto-encoder (official ``models/autoencoder.py``); AE-U when ``out_channels=2``.

    Args:
        latent: size of the bottleneck ``z`` (official ``ls = 16``).
        width: channel multiplier (official ``mp = 1``: 16, 32, 64, 64 channels).
        hidden: width of the fully connected layers (official 2048).
        image_size: input side, a multiple of 16 (official 64).
        out_channels: 1 (AE) or 2 (AE-U: mean and log-variance).
    """

    def __init__(self, latent: int = 16, width: float = 1, hidden: int = 2048, image_size: int = 64,
                 out_channels: int = 1):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size={image_size} must be a multiple of 16 (four stride-2 convolutions)")
        if out_channels not in (1, 2):
            raise ValueError(f"out_channels={out_channels}: 1 (AE) or 2 (AE-U)")
        self.fm, self.c_top, self.out_channels = image_size // 16, int(64 * width), out_channels
        flat = self.c_top * self.fm * self.fm
        self.encoder = _encoder(width)
        self.linear_enc = nn.Sequential(nn.Linear(flat, hidden), nn.BatchNorm1d(hidden), nn.ReLU(True),
                                        nn.Linear(hidden, latent))
        self.linear_dec = nn.Sequential(nn.Linear(latent, hidden), nn.BatchNorm1d(hidden), nn.ReLU(True),
                                        nn.Linear(hidden, flat))
        self.decoder = _decoder(width, out_channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> latent ``(B, latent)``."""
        return self.linear_enc(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latent ``(B, latent)`` -> ``(B, out_channels, H, W)``."""
        return self.decoder(self.linear_dec(z).view(len(z), self.c_top, self.fm, self.fm))

    def forward(self, x: torch.Tensor) -> dict:
        out = self.decode(self.encode(x))
        if self.out_channels == 2:
            return {"recon": out[:, :1], "logvar": out[:, 1:]}
        return {"recon": out}


def hard_shrink_relu(w: torch.Tensor, lambd: float, eps: float = 1e-12) -> torch.Tensor:
    """MemAE Eq. 7: ``max(w - lambd, 0) * w / (|w - lambd| + eps)`` (keeps ``w`` above ``lambd``, else 0)."""
    return F.relu(w - lambd) * w / ((w - lambd).abs() + eps)


class MemoryUnit(nn.Module):
    """MemAE memory addressing (Gong et al. 2019, Eq. 4-7) on latent vectors.

    ``w = softmax(z M^T)`` over the ``mem_dim`` items of ``M`` ``(mem_dim, dim)``; with ``shrink_thres > 0`` the
    weights are hard-shrunk and re-normalised to sum 1; the output is ``z_hat = w M``.

    Returns:
        ``(z_hat (B, dim), w (B, mem_dim))``.
    """

    def __init__(self, mem_dim: int = 25, dim: int = 16, shrink_thres: float = 0.0):
        super().__init__()
        self.shrink_thres = float(shrink_thres)
        self.weight = nn.Parameter(torch.empty(mem_dim, dim))
        bound = 1.0 / math.sqrt(dim)  # the official uniform init
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, z: torch.Tensor):
        w = torch.softmax(z @ self.weight.t(), dim=1)
        if self.shrink_thres > 0:
            w = F.normalize(hard_shrink_relu(w, self.shrink_thres), p=1, dim=1)
        return w @ self.weight, w


def memory_entropy(w: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """MemAE Eq. 9: mean over rows of ``-sum_i w_i log(w_i + eps)``. ``w``: ``(B, mem_dim)`` -> scalar."""
    return -(w * torch.log(w + eps)).sum(dim=1).mean()


class MemAE(ConvAE):
    """:class:`ConvAE` with a :class:`MemoryUnit` on the latent (official ``models/memory_ae.py``:
    ``mem_dim = 25``, ``shrink_thres = 0``). ``forward`` also returns the addressing weights ``att``."""

    def __init__(self, latent: int = 16, width: float = 1, hidden: int = 2048, image_size: int = 64,
                 mem_dim: int = 25, shrink_thres: float = 0.0):
        super().__init__(latent, width, hidden, image_size, out_channels=1)
        self.memory = MemoryUnit(mem_dim, latent, shrink_thres)

    def forward(self, x: torch.Tensor) -> dict:
        z_hat, att = self.memory(self.encode(x))
        return {"recon": self.decode(z_hat), "att": att}


def heteroscedastic_loss(mean: torch.Tensor, logvar: torch.Tensor, x: torch.Tensor) -> tuple:
    """AE-U loss (DDAD Eq. 1; official ``trainer.py``): ``mean(exp(-logvar) * (mean - x)^2) + mean(logvar)``,
    the Gaussian negative log-likelihood up to a factor 2 and a constant.

    Args:
        mean, logvar, x: ``(B, 1, H, W)``.
    Returns:
        ``(loss, weighted_error, mean_logvar)``: the scalar loss and its two terms.
    """
    weighted = (torch.exp(-logvar) * (mean - x) ** 2).mean()
    reg = logvar.mean()
    return weighted + reg, weighted, reg


def build_backbone(name: str, latent: int = 16, width: float = 1, hidden: int = 2048, image_size: int = 64,
                   mem_dim: int = 25, shrink_thres: float = 0.0) -> ConvAE:
    """``ae`` | ``memae`` | ``aeu`` -> the network (see the module docstring)."""
    if name == "ae":
        return ConvAE(latent, width, hidden, image_size, out_channels=1)
    if name == "aeu":
        return ConvAE(latent, width, hidden, image_size, out_channels=2)
    if name == "memae":
        return MemAE(latent, width, hidden, image_size, mem_dim, shrink_thres)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


class RefineNet(nn.Module):
    """ASR-Net (official ``models/refine_net.py``): ``(B, in, H, W)`` discrepancy maps -> ``(B, 2, H, W)``
    logits of (normal, anomalous) per pixel. conv3x3 ``in -> mid``, BN, ReLU, conv3x3 ``mid -> mid``, BN, ReLU,
    conv3x3 ``mid -> 2`` (``mid = 128`` officially)."""

    def __init__(self, in_channels: int = 2, mid_channels: int = 128, out_channels: int = 2):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, 1, 1), nn.BatchNorm2d(mid_channels), nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 3, 1, 1), nn.BatchNorm2d(mid_channels), nn.ReLU(),
            nn.Conv2d(mid_channels, out_channels, 3, 1, 1))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.model(maps)
