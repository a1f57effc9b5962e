"""SQUID / SimSID generator: patch encoder, in-painting block, memory decoder and teacher decoder.

SQUID (Xiang et al., "SQUID: Deep Feature In-Painting for Unsupervised Anomaly Detection", CVPR 2023)
and SimSID (Xiang et al., "Exploiting Structural Consistency of Chest Anatomy for Unsupervised Anomaly
Detection in Radiography Images", TPAMI 2024) share this skeleton (paper Fig. 2 / Sec. 3):

1. the image is cut into an ``n x n`` grid of patches (Fig. 2), each encoded on its own;
2. at the bottleneck, the :class:`~cxrlib.methods.squid.inpaint.InpaintBlock` replaces every patch feature by a
   read from the space-aware memory queue (Sec. 3.2), refined from its neighbours (Sec. 3.3);
3. the student decoder upsamples, with learned space-aware memories after its first two levels
   (official code, ``MemoryMatrixBlock``), merges the patches into one map and outputs the reconstruction;
4. a teacher decoder of the same shape, without in-painting or memory, reconstructs from the plain
   encoder features and distils its per-level features into the student (Sec. 3.3, Fig. 2);
5. a discriminator judges the reconstruction (Sec. 3.4, :mod:`cxrlib.methods.squid.discriminator`).

Shapes below use the official ``squid`` preset (128 px, 2x2 patches, base width 32, 4 levels):
patches 1x64x64 -> encoder 32@64, 64@32, 128@16, 256@8 (skips), 512@4 (bottleneck, per patch)
-> in-paint 512@4 -> up0 256@8 + memory (4096-d cells) -> up1 128@16 + memory (8192-d cells)
-> merge patches 128@32 -> up2 64@64 -> up3 32@128 -> 1x1 conv -> 1@128, sigmoid (SimSID: tanh).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrlib.methods.crtsc.crm import ChannelRecalibration
from cxrlib.patching import patchify, unpatchify

from .config import SquidConfig, squid_filters
from .discriminator import SquidDiscriminator
from .inpaint import InpaintBlock
from .memory import MemoryQueue, SpaceAwareMemory

__all__ = [
    "to_model_range", "from_model_range", "DoubleConv", "SquidEncoder", "DecoderUp", "DecoderMemoryBlock",
    "SquidDecoder", "SquidGenerator", "build_models", "count_parameters", "parameter_report",
]


def to_model_range(x01: torch.Tensor, normalize: str = "zero_one") -> torch.Tensor:
    """Images in [0, 1] -> the model's input range: [0, 1], or [-1, 1] for ``"tanh"`` (SimSID's Normalize(0.5, 0.5))."""
    return x01 * 2.0 - 1.0 if normalize == "tanh" else x01


def from_model_range(y: torch.Tensor, normalize: str = "zero_one") -> torch.Tensor:
    """Inverse of :func:`to_model_range`: model outputs -> [0, 1]."""
    return (y + 1.0) * 0.5 if normalize == "tanh" else y


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
class DoubleConv(nn.Module):
    """SQUID's residual block (official ``double_conv``).

    ``a = ReLU(BN(conv3x3_s(x)))``; ``out = ReLU(a + BN(conv3x3(ReLU(BN(conv3x3(a))))))``.
    ``(N, in_ch, H, W) -> (N, out_ch, H/s, W/s)``. The convs keep their bias, as the official ones do,
    so parameter counts match.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.entry = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))
        self.body = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(x)
        return F.relu(self.body(x) + x)


class SquidEncoder(nn.Module):
    """Per-patch encoder: stem ``DoubleConv(in, w)`` then ``levels`` stride-2 ``DoubleConv`` (SQUID Fig. 2).

    Args:
        in_channels: image channels. base_width: ``w``. levels: number of downsamplings.
    """

    def __init__(self, in_channels: int = 1, base_width: int = 32, levels: int = 4):
        super().__init__()
        f = squid_filters(base_width)
        self.stem = DoubleConv(in_channels, f[0])
        self.downs = nn.ModuleList(DoubleConv(f[i], f[i + 1], stride=2) for i in range(levels))

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``patches`` ``(B*P, in, p, p)`` -> ``(bottleneck, skips)``.

        ``bottleneck``: ``(B*P, f[L], p/2^L, p/2^L)``; ``skips[i]``: the input of down-block ``i``,
        ``(B*P, f[i], p/2^i, p/2^i)`` (per patch; the decoder merges them when it needs them whole).
        """
        x = self.stem(patches)
        skips = []
        for down in self.downs:
            skips.append(x)
            x = down(x)
        return x, skips


class DecoderUp(nn.Module):
    """Official ``up``: bilinear resize to the skip's size, optional concat ``[skip, x]``, ``DoubleConv``."""

    def __init__(self, in_ch: int, out_ch: int, concat: bool):
        super().__init__()
        self.concat = concat
        self.conv = DoubleConv(in_ch, out_ch)

    def forward(self, x: torch.Tensor, size: tuple[int, int], skip: torch.Tensor | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if self.concat:
            x = torch.cat([skip, x], dim=1)
        return self.conv(x)


class DecoderMemoryBlock(nn.Module):
    """Learned space-aware memory on a decoder map (official SQUID ``MemoryMatrixBlock``, space-aware as Sec. 3.2).

    Each ``(C, H, W)`` map is split into a ``grid x grid`` sub-grid of cells; cell ``j`` (row-major) is
    flattened to a ``C*(H/grid)*(W/grid)`` vector and read from its own learned memory. In training a
    per-location Bernoulli(``mask_ratio``) mask keeps the memory read, else passes the input through.

    ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, channels: int, feature_size: int, grid: int, n_slots: int, k: int, mask_ratio: float):
        super().__init__()
        if feature_size % grid:
            raise ValueError(f"feature size {feature_size} is not divisible into a {grid}x{grid} grid")
        self.grid, self.mask_ratio = grid, float(mask_ratio)
        dim = channels * (feature_size // grid) ** 2
        self.memory = SpaceAwareMemory(grid * grid, n_slots, dim, k, kind="matrix")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.grid
        read = self.memory(patchify(x, g).flatten(1))
        out = unpatchify(read.view(n * g * g, c, h // g, w // g), g)
        if self.training and self.mask_ratio < 1.0:
            keep = torch.bernoulli(torch.full((n, 1, h, w), self.mask_ratio, device=x.device, dtype=x.dtype))
            out = keep * out + (1.0 - keep) * x
        return out

    def extra_repr(self) -> str:
        return f"grid={self.grid}, mask_ratio={self.mask_ratio}"


class SquidDecoder(nn.Module):
    """Decoder stack shared by the student (with memories) and the teacher (without).

    Level ``i`` maps ``f[L-i] (+ f[L-1-i] if concat) -> f[L-1-i]`` channels and doubles the side. Levels
    ``>= L - merge_level`` run on the merged full image; before that, on patches. A final 1x1 conv
    gives ``in_channels`` outputs (pre-activation).
    """

    def __init__(self, cfg: SquidConfig, with_memory: bool):
        super().__init__()
        f, L, n = cfg.filters, cfg.levels, cfg.num_patch
        self.num_patch, self.merge_at = n, L - cfg.merge_level
        self.ups = nn.ModuleList()
        for i, op in enumerate(cfg.decoder_ops):
            concat = op == "concat"
            self.ups.append(DecoderUp(f[L - i] + (f[L - 1 - i] if concat else 0), f[L - 1 - i], concat))
        self.memories = None
        if with_memory:
            self.memories = nn.ModuleList()
            for i in range(L):
                if i not in cfg.decoder_memory_levels:
                    self.memories.append(nn.Identity())
                    continue
                side = cfg.bottleneck_size * 2 ** (i + 1) * (n if i >= self.merge_at else 1)
                self.memories.append(DecoderMemoryBlock(f[L - 1 - i], side, cfg.memory_grid,
                                                        cfg.decoder_memory_slots, cfg.topk,
                                                        cfg.decoder_memory_mask_ratio))
        self.out_conv = nn.Conv2d(f[0], cfg.in_channels, 1)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x`` ``(B*P, f[L], b, b)`` per patch, ``skips`` from :class:`SquidEncoder`.

        Returns:
            ``(out, features)``: ``out`` ``(B, in_channels, H, W)`` before the output activation;
            ``features[i]`` the level-``i`` output (after its memory), for distillation.
        """
        n, merged, features = self.num_patch, False, []
        for i, up in enumerate(self.ups):
            if i == self.merge_at:
                x, merged = unpatchify(x, n), True
            skip = skips[len(skips) - 1 - i]
            scale = n if merged else 1
            size = (skip.shape[-2] * scale, skip.shape[-1] * scale)
            if up.concat:
                x = up(x, size, unpatchify(skip, n) if merged else skip)
            else:  # the official 'none' op uses the skip only for its size
                x = up(x, size)
            if self.memories is not None:
                x = self.memories[i](x)
            features.append(x)
        x = self.out_conv(x)
        return (x if merged else unpatchify(x, n)), features


# ---------------------------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------------------------
class SquidGenerator(nn.Module):
    """The SQUID / SimSID generator (SQUID Sec. 3, Fig. 2).

    Args:
        cfg: a :class:`SquidConfig` (default: the ``squid`` preset).
        recalibration: optional module applied to the per-patch encoder bottleneck
            ``(B*P, f[L], b, b) -> same`` before the in-painting block and the teacher (the place
            CRTSC's channel recalibration goes). By default it is built from the configuration:
            ``cfg.crm_place == "paper"`` gives ``ChannelRecalibration(f[L], cfg.crm_reduction)`` here
            (CRTSC's figure: encoder features before the in-painting block and the teacher);
            ``"first_conv"`` instead appends ``ChannelRecalibration(f[0], cfg.crm_reduction)`` to the
            encoder stem (the official code's only active CRM, in ``in_conv``; it sits inside that
            block before the residual add there, after the block here); ``"none"``: ``nn.Identity()``.

    ``forward(x)`` returns a dict:

    * ``recon``: ``(B, C, H, W)`` in model range (sigmoid or tanh);
    * ``teacher_recon``: same shape, or ``None`` when the teacher is skipped;
    * ``dist_loss``: scalar ``sum_i MSE(student_i, teacher_i)`` over the decoder levels, or ``None``.

    The teacher is a training-only device; it runs when ``with_teacher`` is true (default: in training
    mode only), so inference pays for the student alone.
    """

    def __init__(self, cfg: SquidConfig | None = None, recalibration: nn.Module | None = None):
        super().__init__()
        cfg = cfg if cfg is not None else SquidConfig()
        self.cfg = cfg
        f, L = cfg.filters, cfg.levels
        self.encoder = SquidEncoder(cfg.in_channels, cfg.base_width, L)
        if recalibration is None and cfg.crm_place == "paper":
            recalibration = ChannelRecalibration(f[L], cfg.crm_reduction)
        elif cfg.crm_place == "first_conv":
            self.encoder.stem = nn.Sequential(self.encoder.stem, ChannelRecalibration(f[0], cfg.crm_reduction))
        self.recalibration = recalibration if recalibration is not None else nn.Identity()
        self.inpaint = InpaintBlock(f[L], cfg.bottleneck_size, cfg.num_patch, n_slots=cfg.mem_slots, k=cfg.topk,
                                    memory_kind=cfg.inpaint_memory, mask_ratio=cfg.inpaint_mask_ratio,
                                    num_heads=cfg.inpaint_heads, dropout=cfg.inpaint_dropout)
        self.decoder = SquidDecoder(cfg, with_memory=True)
        self.teacher = SquidDecoder(cfg, with_memory=False) if cfg.use_teacher else None

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(y) if self.cfg.normalize == "tanh" else torch.sigmoid(y)

    def forward(self, x: torch.Tensor, with_teacher: bool | None = None) -> dict[str, torch.Tensor | None]:
        """``x`` ``(B, C, H, W)`` in model range (see :meth:`to_model_range`)."""
        n = self.cfg.num_patch
        bottleneck, skips = self.encoder(patchify(x, n))
        bottleneck = self.recalibration(bottleneck)
        student_out, student_features = self.decoder(self.inpaint(bottleneck), skips)
        out = {"recon": self._activate(student_out), "teacher_recon": None, "dist_loss": None}

        if with_teacher is None:
            with_teacher = self.training
        if with_teacher and self.teacher is not None:
            teacher_in = bottleneck.detach() if self.cfg.teacher_stop_gradient else bottleneck
            # the official teacher never sends gradient into the encoder through the skips
            teacher_out, teacher_features = self.teacher(teacher_in, [s.detach() for s in skips])
            out["teacher_recon"] = self._activate(teacher_out)
            out["dist_loss"] = torch.stack(
                [F.mse_loss(s, t) for s, t in zip(student_features, teacher_features)]).sum()
        return out

    @torch.no_grad()
    def trace(self, x01: torch.Tensor) -> dict:
        """The forward pass with its intermediates, for teaching and inspection (no gradient; call in eval mode
        so the memory queues and the masked shortcut are left alone). The one public way to look inside the
        generator: the notebooks use it instead of re-assembling the forward pass.

        Args:
            x01: ``(B, C, H, W)`` images in [0, 1].

        Returns a dict: ``bottleneck`` ``(B*P, f[L], b, b)`` (after the recalibration, in
        :func:`cxrlib.patching.patchify` order), ``skips`` (the encoder's skip features), ``inpaint`` (the
        in-painting block's trace, see :meth:`InpaintBlock.trace`), ``student`` and ``teacher``
        ``(B, C, H, W)`` reconstructions in [0, 1] (``teacher`` ``None`` without one), ``student_features``
        and ``teacher_features`` (per decoder level, the terms of the distillation loss).
        """
        n = self.cfg.num_patch
        bottleneck, skips = self.encoder(patchify(self.to_model_range(x01), n))
        bottleneck = self.recalibration(bottleneck)
        inpaint = self.inpaint.trace(bottleneck)
        student_out, student_features = self.decoder(inpaint["out"], skips)
        out = {"bottleneck": bottleneck, "skips": skips, "inpaint": inpaint,
               "student": self.from_model_range(self._activate(student_out)), "student_features": student_features,
               "teacher": None, "teacher_features": None}
        if self.teacher is not None:
            teacher_out, teacher_features = self.teacher(bottleneck, skips)
            out.update(teacher=self.from_model_range(self._activate(teacher_out)), teacher_features=teacher_features)
        return out

    @torch.no_grad()
    def update_memory(self) -> None:
        """Write the last training batch into every memory queue; call after each generator step."""
        for module in self.modules():
            if isinstance(module, MemoryQueue):
                module.update()

    def to_model_range(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> this model's input range."""
        return to_model_range(x01, self.cfg.normalize)

    def from_model_range(self, y: torch.Tensor) -> torch.Tensor:
        """This model's outputs -> [0, 1]."""
        return from_model_range(y, self.cfg.normalize)


def build_models(cfg: SquidConfig, recalibration: nn.Module | None = None) -> tuple[SquidGenerator, SquidDiscriminator]:
    """The generator and the discriminator of a configuration."""
    return (SquidGenerator(cfg, recalibration=recalibration),
            SquidDiscriminator(cfg.disc_channels, image_size=cfg.image_size, eval_norm=cfg.disc_eval_norm))


def count_parameters(module: nn.Module | None) -> int:
    """Number of parameters (buffers such as memory queues are not parameters and are not counted)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_report(gen: SquidGenerator, disc: nn.Module | None = None) -> dict[str, int]:
    """Parameter counts per part, matching the breakdown of methods.md Sec. 10.

    Keys: ``encoder`` (without any channel recalibration in it), ``recalibration`` (every CRM), ``inpaint_attention``, ``inpaint_feedforward``,
    ``inpaint_other`` (1x1 convs, BN, LayerNorms), ``decoder_memories``, ``student_decoder`` (without
    its memories), ``teacher_decoder``, ``discriminator`` and ``total`` (the sum of all the others).
    """
    memories = count_parameters(gen.decoder.memories)
    encoder_crm = sum(count_parameters(m) for m in gen.encoder.modules() if isinstance(m, ChannelRecalibration))
    attention = count_parameters(gen.inpaint.attention)
    feedforward = count_parameters(gen.inpaint.feedforward)
    report = {
        "encoder": count_parameters(gen.encoder) - encoder_crm,
        "recalibration": count_parameters(gen.recalibration) + encoder_crm,
        "inpaint_attention": attention,
        "inpaint_feedforward": feedforward,
        "inpaint_other": count_parameters(gen.inpaint) - attention - feedforward,
        "decoder_memories": memories,
        "student_decoder": count_parameters(gen.decoder) - memories,
        "teacher_decoder": count_parameters(gen.teacher),
        "discriminator": count_parameters(disc),
    }
    report["total"] = sum(report.values())
    return report
