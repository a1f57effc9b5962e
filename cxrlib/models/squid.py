"""SQUID / SimSID generator: patch encoder, in-painting block, memory decoder and teacher decoder.

SQUID (Xiang et al., "SQUID: Deep Feature In-Painting for Unsupervised Anomaly Detection", CVPR 2023)
and SimSID (Xiang et al., "Exploiting Structural Consistency of Chest Anatomy for Unsupervised Anomaly
Detection in Radiography Images", TPAMI 2024) share this skeleton (paper Fig. 2 / Sec. 3):

1. the image is cut into an ``n x n`` grid of patches (Fig. 2), each encoded on its own;
2. at the bottleneck, the :class:`~cxrlib.inpaint.InpaintBlock` replaces every patch feature by a
   read from the space-aware memory queue (Sec. 3.2), refined from its neighbours (Sec. 3.3);
3. the student decoder upsamples, with learned space-aware memories after its first two levels
   (official code, ``MemoryMatrixBlock``), merges the patches into one map and outputs the reconstruction;
4. a teacher decoder of the same shape, without in-painting or memory, reconstructs from the plain
   encoder features and distils its per-level features into the student (Sec. 3.3, Fig. 2);
5. a discriminator judges the reconstruction (Sec. 3.4, :mod:`cxrlib.models.discriminator`).

Shapes below use the official ``squid`` preset (128 px, 2x2 patches, base width 32, 4 levels):
patches 1x64x64 -> encoder 32@64, 64@32, 128@16, 256@8 (skips), 512@4 (bottleneck, per patch)
-> in-paint 512@4 -> up0 256@8 + memory (4096-d cells) -> up1 128@16 + memory (8192-d cells)
-> merge patches 128@32 -> up2 64@64 -> up3 32@128 -> 1x1 conv -> 1@128, sigmoid (SimSID: tanh).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cxrlib.crm import ChannelRecalibration
from cxrlib.inpaint import InpaintBlock
from cxrlib.memory import MemoryQueue, SpaceAwareMemory
from cxrlib.models.discriminator import SquidDiscriminator
from cxrlib.patching import patchify, unpatchify

__all__ = [
    "SquidConfig", "PRESETS", "preset", "squid_filters", "to_model_range", "from_model_range",
    "DoubleConv", "SquidEncoder", "DecoderUp", "DecoderMemoryBlock", "SquidDecoder", "SquidGenerator",
    "build_models", "count_parameters", "parameter_report",
]

NORMALIZE_MODES = ("zero_one", "tanh")
CRM_PLACES = ("none", "paper", "first_conv")  # CRTSC channel recalibration: where it goes (see SquidGenerator)
GEN_LOSSES = ("bce", "kl")  # adversarial generator term (see cxrlib.losses)
DECODER_OPS = ("concat", "none")
MAX_LEVELS = 5  # the official filter list has 6 entries, enough for 5 downsamplings


def squid_filters(base_width: int) -> list[int]:
    """The official channel list ``[w, 2w, 4w, 8w, 16w, 16w]``."""
    w = base_width
    return [w, 2 * w, 4 * w, 8 * w, 16 * w, 16 * w]


@dataclass
class SquidConfig:
    """Every knob of a SQUID / SimSID run. Defaults are the official SQUID ZhangLab recipe
    (``tiangexiang/SQUID`` ``configs/zhang_best.py``); see :func:`preset` for SimSID.

    Tuple-valued fields accept lists (they are converted), so a config survives JSON.
    """

    name: str = "squid"
    # -- input ---------------------------------------------------------------------------------
    image_size: int = 128
    in_channels: int = 1
    normalize: str = "zero_one"  # "zero_one": x in [0,1], sigmoid output; "tanh": x in [-1,1], tanh output
    # -- architecture --------------------------------------------------------------------------
    num_patch: int = 2  # patches per side
    base_width: int = 32  # filters [w, 2w, 4w, 8w, 16w, 16w]
    levels: int = 4  # encoder downsamplings = decoder up-blocks
    decoder_ops: tuple[str, ...] = ("concat", "concat", "none", "none")  # per decoder level: concat the skip or not
    merge_level: int = 2  # the last merge_level decoder levels run on the merged image (official initial_combine)
    mem_slots: int = 200  # in-painting memory slots per position
    topk: int = 5  # slots kept per memory read (official shrink_thres; see cxrlib.memory.topk_address)
    inpaint_memory: str = "queue"  # "queue" (no gradient, FIFO) or "matrix" (learned)
    inpaint_mask_ratio: float = 0.95  # P(keep the in-painted feature) in training
    inpaint_heads: int = 8
    inpaint_dropout: float = 0.0
    decoder_memory_levels: tuple[int, ...] = (0, 1)  # decoder levels followed by a learned memory
    decoder_memory_slots: int = 200
    decoder_memory_mask_ratio: float = 0.95
    decoder_memory_grid: int | None = None  # cells per side of each decoder-memory map; None = num_patch (official)
    use_teacher: bool = True  # official dist=True
    teacher_stop_gradient: bool = True  # the teacher reads a detached bottleneck (both official repos do)
    disc_channels: tuple[int, ...] = (1, 16, 32, 64, 128, 128)
    # -- loss weights (official zhang_best) ----------------------------------------------------
    recon_w: float = 10.0
    g_w: float = 0.005
    t_w: float = 0.01
    dist_w: float = 0.001
    d_w: float = 0.005
    # -- CRTSC (Sensors 2025) parts; the defaults switch them off, so SQUID/SimSID are unchanged ---------
    crm_place: str = "none"  # "none" | "paper" (bottleneck, before in-painting and teacher) | "first_conv"
    crm_reduction: int = 8  # CRM reduction ratio T (hidden width max(1, C // T))
    tscc_w: float = 0.0  # weight of the texture-structural consistency loss (0 = off)
    gen_loss: str = "bce"  # adversarial generator term: "bce" (SQUID) or "kl" (CRTSC); weight g_w
    # -- optimisation --------------------------------------------------------------------------
    n_critic: int = 2  # a generator step every n_critic discriminator steps
    shared_forward: bool = False  # SimSID: one generator forward per iteration serves the D and G steps
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    eps: float = 1e-7
    weight_decay: float = 1e-5
    d_lr: float = 1e-4
    d_betas: tuple[float, float] = (0.5, 0.999)
    t_max: int = 300  # CosineAnnealingLR, stepped once per epoch, generator only
    eta_min: float = 1e-5
    epochs: int = 200
    batch_size: int = 16
    # -- checkpoint selection ------------------------------------------------------------------
    selection_tolerance: float = 0.0  # keep an epoch when val AUROC > kept - tolerance (0: strict arg-max;
    #                                   official SQUID/CRTSC: 0.005, their "best - 0.5" on a 0-100 scale)
    # -- augmentation (training only): RandomAffine(0, translate, scale) -----------------------
    aug_translate: float = 0.05
    aug_scale: tuple[float, float] = (0.95, 1.05)

    _TUPLE_FIELDS = ("decoder_ops", "decoder_memory_levels", "disc_channels", "betas", "d_betas", "aug_scale")

    def __post_init__(self):
        for name in self._TUPLE_FIELDS:
            setattr(self, name, tuple(getattr(self, name)))
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {self.normalize!r}")
        if self.inpaint_memory not in ("queue", "matrix"):
            raise ValueError(f"inpaint_memory must be 'queue' or 'matrix', got {self.inpaint_memory!r}")
        if not 1 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"levels must be in 1..{MAX_LEVELS}, got {self.levels}")
        if len(self.decoder_ops) != self.levels or any(op not in DECODER_OPS for op in self.decoder_ops):
            raise ValueError(f"decoder_ops needs {self.levels} entries from {DECODER_OPS}, got {self.decoder_ops}")
        if not 0 <= self.merge_level <= self.levels:
            raise ValueError(f"merge_level must be in 0..{self.levels}, got {self.merge_level}")
        if self.image_size % (self.num_patch * 2 ** self.levels):
            raise ValueError(f"image_size {self.image_size} is not divisible by num_patch * 2**levels "
                             f"= {self.num_patch * 2 ** self.levels}")
        if any(not 0 <= lvl < self.levels for lvl in self.decoder_memory_levels):
            raise ValueError(f"decoder_memory_levels must lie in 0..{self.levels - 1}")
        for name in ("inpaint_mask_ratio", "decoder_memory_mask_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.disc_channels[0] != self.in_channels:
            raise ValueError("disc_channels[0] must equal in_channels")
        if self.crm_place not in CRM_PLACES:
            raise ValueError(f"crm_place must be one of {CRM_PLACES}, got {self.crm_place!r}")
        if self.crm_reduction < 1:
            raise ValueError(f"crm_reduction must be >= 1, got {self.crm_reduction}")
        if not self.tscc_w >= 0.0:
            raise ValueError(f"tscc_w must be >= 0, got {self.tscc_w}")
        if self.gen_loss not in GEN_LOSSES:
            raise ValueError(f"gen_loss must be one of {GEN_LOSSES}, got {self.gen_loss!r}")

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def filters(self) -> list[int]:
        return squid_filters(self.base_width)

    @property
    def patch_size(self) -> int:
        return self.image_size // self.num_patch

    @property
    def bottleneck_size(self) -> int:
        """Per-patch side of the bottleneck map (4 in the official model)."""
        return self.patch_size // 2 ** self.levels

    @property
    def memory_grid(self) -> int:
        return self.num_patch if self.decoder_memory_grid is None else self.decoder_memory_grid

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (tuples as lists), safe for JSON and ``torch.load(weights_only=True)``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SquidConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a silently ignored knob is a wrong model)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SquidConfig keys: {unknown}")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **overrides) -> "SquidConfig":
        """See the module-level :func:`preset`."""
        return preset(name, **overrides)

    def replace(self, **overrides) -> "SquidConfig":
        return dataclasses.replace(self, **overrides)


#: Differences from the SQUID defaults, per preset.
PRESETS: dict[str, dict[str, Any]] = {
    # SQUID, ZhangLab (tiangexiang/SQUID configs/zhang_best.py): the dataclass defaults
    "squid": {},
    # SimSID, ZhangLab (MrGiovanni/SimSID configs/zhang_dev.py)
    "simsid": dict(
        normalize="tanh",
        inpaint_memory="queue",
        inpaint_mask_ratio=1.0,
        decoder_memory_mask_ratio=1.0,
        disc_channels=(1, 16, 32, 64, 128, 256),
        teacher_stop_gradient=True,
        shared_forward=True,
        epochs=1000,
    ),
    # CRTSC, ZhangLab (Xiong et al., Sensors 25(21):6722, 2025): SQUID + channel recalibration on the
    # bottleneck (the paper's figure), T = 24 (its choice together with TSCC), lambda_tscc = 0.03, and the
    # KL generator term with weight 0.002 in place of the BCE one (0.005)
    "crtsc": dict(
        crm_place="paper",
        crm_reduction=24,
        tscc_w=0.03,
        gen_loss="kl",
        g_w=0.002,
    ),
}


def preset(name: str, **overrides) -> SquidConfig:
    """A named configuration with optional field overrides.

    ``"squid"``: the official SQUID ZhangLab recipe. ``"simsid"``: SimSID's ZhangLab differences
    (inputs in [-1, 1] with a tanh output, memory queue without shortcut in the in-painting block,
    decoder memories without shortcut, a 256-channel last discriminator layer, 1000 epochs, one
    generator forward shared by the D and G steps). ``"crtsc"``: SQUID plus CRTSC's channel recalibration
    (``crm_place="paper"``, ``T = 24``), TSCC loss (``tscc_w = 0.03``) and KL generator term
    (``gen_loss="kl"``, ``g_w = 0.002``), the paper's ZhangLab values.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return SquidConfig(**{"name": name, **PRESETS[name], **overrides})


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
            SquidDiscriminator(cfg.disc_channels, image_size=cfg.image_size))


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
