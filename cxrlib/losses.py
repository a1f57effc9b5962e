"""Training losses of SQUID / SimSID, all computed from logits (numerically stable BCE).

SQUID (Xiang et al., CVPR 2023, Sec. 3; the weights are the official ones from
``tiangexiang/SQUID configs/zhang_best.py``), unchanged in SimSID (Xiang et al., TPAMI 2024):

* generator: ``L_G = recon_w * MSE(recon, x) + g_w * BCE(D(recon), 1)
  + t_w * MSE(teacher_recon, x) + dist_w * dist_loss`` with ``10 / 0.005 / 0.01 / 0.001``;
* discriminator: ``L_D = d_w * [BCE(D(x), 1) + BCE(D(recon.detach()), 0)]`` with ``d_w = 0.005``.

The adversarial generator term is its own function so a variant (e.g. CRTSC's KL term) can replace it.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

__all__ = ["adversarial_bce_generator_loss", "discriminator_loss", "generator_loss"]


def adversarial_bce_generator_loss(d_fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN generator term ``BCE(D(recon), 1)`` on logits, unweighted, mean over the batch."""
    return F.binary_cross_entropy_with_logits(d_fake_logits, torch.ones_like(d_fake_logits))


def discriminator_loss(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor, d_w: float) -> torch.Tensor:
    """``d_w * [BCE(D(x), 1) + BCE(D(recon), 0)]`` on logits (each BCE a batch mean); pass detached fakes."""
    real = F.binary_cross_entropy_with_logits(d_real_logits, torch.ones_like(d_real_logits))
    fake = F.binary_cross_entropy_with_logits(d_fake_logits, torch.zeros_like(d_fake_logits))
    return d_w * (real + fake)


def generator_loss(out: Mapping[str, torch.Tensor | None], x: torch.Tensor, d_fake_logits: torch.Tensor | None,
                   cfg, adversarial: Callable[[torch.Tensor], torch.Tensor] = adversarial_bce_generator_loss,
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted generator objective.

    Args:
        out: the generator's output dict: ``recon`` ``(B, C, H, W)``, optional ``teacher_recon`` (same
            shape) and ``dist_loss`` (scalar); a missing or ``None`` teacher output contributes 0.
        x: the input images in model range, ``(B, C, H, W)``.
        d_fake_logits: ``D(recon)`` ``(B, 1)`` (not detached, the gradient must reach the generator),
            or ``None`` to train without the adversarial term.
        cfg: anything with ``recon_w``, ``g_w``, ``t_w``, ``dist_w`` (a ``SquidConfig``).
        adversarial: the unweighted adversarial term as a function of ``d_fake_logits``.

    Returns:
        ``(total, terms)``: ``terms`` holds the *weighted* contributions ``recon``, ``adv``, ``teacher``,
        ``dist`` (scalars with graph), and ``total`` is their sum.
    """
    zero = x.new_zeros(())
    recon = cfg.recon_w * F.mse_loss(out["recon"], x)
    adv = cfg.g_w * adversarial(d_fake_logits) if d_fake_logits is not None else zero
    teacher_recon = out.get("teacher_recon")
    teacher = cfg.t_w * F.mse_loss(teacher_recon, x) if teacher_recon is not None else zero
    dist_loss = out.get("dist_loss")
    dist = cfg.dist_w * dist_loss if dist_loss is not None else zero
    terms = {"recon": recon, "adv": adv, "teacher": teacher, "dist": dist}
    return recon + adv + teacher + dist, terms
