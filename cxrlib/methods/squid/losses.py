"""Training losses of SQUID / SimSID, all computed from logits (numerically stable BCE).

SQUID (Xiang et al., CVPR 2023, Sec. 3; the weights are the official ones from
``tiangexiang/SQUID configs/zhang_best.py``), unchanged in SimSID (Xiang et al., TPAMI 2024):

* generator: ``L_G = recon_w * MSE(recon, x) + g_w * BCE(D(recon), 1)
  + t_w * MSE(teacher_recon, x) + dist_w * dist_loss`` with ``10 / 0.005 / 0.01 / 0.001``;
* discriminator: ``L_D = d_w * [BCE(D(x), 1) + BCE(D(recon.detach()), 0)]`` with ``d_w = 0.005``.

The adversarial generator term is its own function so a variant can replace it. CRTSC (Xiong et al.,
Sensors 2025, Sec. 3.4) switches two terms on through the configuration (both off for SQUID/SimSID):

* ``cfg.gen_loss == "kl"``: :func:`kl_generator_loss` replaces the BCE adversarial term (term ``kl``
  instead of ``adv``, weight ``g_w``: 0.002 on ZhangLab in place of 0.005);
* ``cfg.tscc_w > 0``: ``tscc_w * L_TSCC(recon, x)`` (:func:`cxrlib.methods.crtsc.texture.tscc_loss`, on [0, 1] images).
  ``cfg.tscc_form == "code"`` gives the term the gradient of the official code's ``tsim`` instead:
  ``1/2 (1 - SSIM)`` with zero padding. Its LBP part goes through numpy (skimage) and passes no gradient, so
  it only shifts the loss by a constant, and leaving it out trains the generator exactly as that code does.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from cxrlib.methods.crtsc.texture import tscc_loss

from .generator import from_model_range

__all__ = ["adversarial_bce_generator_loss", "kl_generator_loss", "discriminator_loss", "generator_loss"]


def adversarial_bce_generator_loss(d_fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN generator term ``BCE(D(recon), 1)`` on logits, unweighted, mean over the batch."""
    return F.binary_cross_entropy_with_logits(d_fake_logits, torch.ones_like(d_fake_logits))


def kl_generator_loss(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor) -> torch.Tensor:
    r"""CRTSC's "KL scatter" generator term: the discriminator should judge each reconstruction as it
    judges the image it reconstructs.

    The paper (Sec. 3.4) names a KL divergence used with the adversarial loss but gives no formula, and the
    official code instantiates ``nn.KLDivLoss`` without using it. This project's definition, per image
    :math:`i` with :math:`p_i = \sigma(D(x_i))` (the real image's "real" probability, a fixed target) and
    :math:`q_i = \sigma(D(G(x_i)))`:

    .. math::
        L_{KL} = \frac{1}{B} \sum_i \mathrm{KL}\bigl(\mathrm{Bern}(p_i) \,\|\, \mathrm{Bern}(q_i)\bigr)
               = \frac{1}{B} \sum_i \Bigl[p_i \log\frac{p_i}{q_i} + (1 - p_i)\log\frac{1 - p_i}{1 - q_i}\Bigr]
               = \mathrm{BCE}(D(G(x)), p) - H(p).

    It is the adversarial BCE term with the target 1 replaced by :math:`p_i` (the entropy :math:`H(p)`
    carries no gradient): as :math:`p_i \to 1` it becomes :func:`adversarial_bce_generator_loss`, so
    it is "used together with" the adversarial game, but it stops pushing once the reconstruction looks
    exactly as real as its input. ``d_real_logits`` is detached here: only the generator learns from it.

    Args:
        d_real_logits: ``D(x)`` ``(B, 1)``; d_fake_logits: ``D(G(x))`` ``(B, 1)``, same order.
    Returns:
        scalar, ``>= 0``, zero when the logits agree.
    """
    if d_real_logits.shape != d_fake_logits.shape:
        raise ValueError(f"real and fake logits differ in shape: {tuple(d_real_logits.shape)} vs "
                         f"{tuple(d_fake_logits.shape)}")
    p = torch.sigmoid(d_real_logits.detach())
    cross_entropy = F.binary_cross_entropy_with_logits(d_fake_logits, p, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(d_real_logits.detach(), p, reduction="none")
    return (cross_entropy - entropy).mean()


def discriminator_loss(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor, d_w: float) -> torch.Tensor:
    """``d_w * [BCE(D(x), 1) + BCE(D(recon), 0)]`` on logits (each BCE a batch mean); pass detached fakes."""
    real = F.binary_cross_entropy_with_logits(d_real_logits, torch.ones_like(d_real_logits))
    fake = F.binary_cross_entropy_with_logits(d_fake_logits, torch.zeros_like(d_fake_logits))
    return d_w * (real + fake)


def generator_loss(out: Mapping[str, torch.Tensor | None], x: torch.Tensor, d_fake_logits: torch.Tensor | None,
                   cfg, adversarial: Callable[[torch.Tensor], torch.Tensor] = adversarial_bce_generator_loss,
                   d_real_logits: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted generator objective.

    Args:
        out: the generator's output dict: ``recon`` ``(B, C, H, W)``, optional ``teacher_recon`` (same
            shape) and ``dist_loss`` (scalar); a missing or ``None`` teacher output contributes 0.
        x: the input images in model range, ``(B, C, H, W)``.
        d_fake_logits: ``D(recon)`` ``(B, 1)`` (not detached, the gradient must reach the generator),
            or ``None`` to train without the adversarial term.
        cfg: a ``SquidConfig`` (``recon_w``, ``g_w``, ``t_w``, ``dist_w``; ``gen_loss``, ``tscc_w`` and
            ``normalize`` for CRTSC; objects without the CRTSC fields get SQUID's loss).
        adversarial: the unweighted adversarial term as a function of ``d_fake_logits`` (``gen_loss="bce"``).
        d_real_logits: ``D(x)`` ``(B, 1)``, needed when ``cfg.gen_loss == "kl"``.

    Returns:
        ``(total, terms)``: ``terms`` holds the *weighted* contributions ``recon``, ``adv`` (BCE) or ``kl``
        (KL), ``teacher``, ``dist`` and, when ``tscc_w > 0``, ``tscc`` (scalars with graph); ``total`` is
        their sum.
    """
    zero = x.new_zeros(())
    recon = cfg.recon_w * F.mse_loss(out["recon"], x)
    terms = {"recon": recon}
    if getattr(cfg, "gen_loss", "bce") == "kl":
        if d_fake_logits is not None and d_real_logits is None:
            raise ValueError("gen_loss='kl' needs the discriminator's logits on the real images (d_real_logits)")
        terms["kl"] = cfg.g_w * kl_generator_loss(d_real_logits, d_fake_logits) if d_fake_logits is not None else zero
    else:
        terms["adv"] = cfg.g_w * adversarial(d_fake_logits) if d_fake_logits is not None else zero
    teacher_recon = out.get("teacher_recon")
    terms["teacher"] = cfg.t_w * F.mse_loss(teacher_recon, x) if teacher_recon is not None else zero
    dist_loss = out.get("dist_loss")
    terms["dist"] = cfg.dist_w * dist_loss if dist_loss is not None else zero
    tscc_w = getattr(cfg, "tscc_w", 0.0)
    if tscc_w > 0:
        normalize = getattr(cfg, "normalize", "zero_one")
        # "code": the official tsim's gradient (SSIM only, zero-padded); otherwise tscc_loss's own defaults
        form = dict(texture_weight=0.0, padding="zeros") if getattr(cfg, "tscc_form", "soft_lbp") == "code" else {}
        terms["tscc"] = tscc_w * tscc_loss(from_model_range(out["recon"], normalize),
                                           from_model_range(x, normalize), **form)
    return sum(terms.values()), terms
