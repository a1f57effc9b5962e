"""Configuration of the SQUID family (SQUID, SimSID, CRTSC): every knob, the named presets and the run profiles.

:class:`SquidConfig` holds everything that defines a run (architecture, loss weights, optimisation, checkpoint
rule, augmentation); :data:`PRESETS` / :func:`preset` give the official recipes of SQUID (Xiang et al., CVPR
2023), SimSID (Xiang et al., TPAMI 2024) and CRTSC (Xiong et al., Sensors 2025: SQUID with CRTSC's parts
switched on); :func:`squid_config` reduces a preset to one of the run profiles (``quick``, ``cpu``, ``full``).
Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...checkpoint import ConfigRecord
from ...precision import PRECISIONS

__all__ = ["SquidConfig", "PRESETS", "preset", "squid_config", "PROFILE_VERSIONS", "squid_filters", "NORMALIZE_MODES", "CRM_PLACES",
           "GEN_LOSSES", "TSCC_FORMS", "DECODER_OPS", "PRECISIONS", "MAX_LEVELS"]

NORMALIZE_MODES = ("zero_one", "tanh")
CRM_PLACES = ("none", "paper", "first_conv")  # CRTSC channel recalibration: where it goes (see SquidGenerator)
GEN_LOSSES = ("bce", "kl")  # adversarial generator term (see cxrlib.methods.squid.losses)
TSCC_FORMS = ("soft_lbp", "code")  # how the TSCC term is computed (see cxrlib.methods.squid.losses)
DECODER_OPS = ("concat", "none")
MAX_LEVELS = 5  # the official filter list has 6 entries, enough for 5 downsamplings


def squid_filters(base_width: int) -> list[int]:
    """The official channel list ``[w, 2w, 4w, 8w, 16w, 16w]``."""
    w = base_width
    return [w, 2 * w, 4 * w, 8 * w, 16 * w, 16 * w]


@dataclass
class SquidConfig(ConfigRecord):
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
    topk: int = 5  # slots kept per memory read (official shrink_thres; see cxrlib.methods.squid.memory.topk_address)
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
    disc_eval_norm: str = "per_image"  # the discriminator's BatchNorm at scoring: each image's own statistics
    #                                    (official: D never in eval(), batch size 1) or "running" statistics
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
    tscc_form: str = "soft_lbp"  # "soft_lbp": SSIM plus this project's differentiable soft-LBP texture term;
    #                             "code": the gradient the official CRTSC code's tsim gives, 1/2 (1 - SSIM) with
    #                             zero padding (its skimage LBP term is a constant there, so it is left out)
    gen_loss: str = "bce"  # adversarial generator term: "bce" (SQUID) or "kl" (CRTSC); weight g_w
    # -- optimisation --------------------------------------------------------------------------
    n_critic: int = 2  # a generator step every n_critic discriminator steps
    shared_forward: bool = False  # SimSID: one generator forward per iteration serves the D and G steps
    precision: str = "fp32"  # training arithmetic (cxrlib.precision): "fp32" (official), "bf16" (autocast) or
    #                          "fp16" (autocast + gradient scaling); weights, optimiser state, memory queues and
    #                          losses stay fp32. Scoring is always fp32.
    channels_last: bool = False  # NHWC memory format for the training forward passes (faster convs on CPU)
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
    ema_decay: float = 0.0  # 0: off (official). Otherwise validation, checkpoints and scoring use an exponential
    #                         moving average of the generator's and the discriminator's weights, updated after each
    #                         of their optimiser steps with this decay (buffers, i.e. memory queues and BatchNorm
    #                         statistics, are copied from the trained networks)
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
        if self.disc_eval_norm not in ("per_image", "running"):
            raise ValueError(f"disc_eval_norm must be 'per_image' or 'running', got {self.disc_eval_norm!r}")
        if self.disc_eval_norm == "per_image" and self.image_size <= 2 ** (len(self.disc_channels) - 1):
            raise ValueError(f"disc_eval_norm='per_image' needs the discriminator's last map larger than 1x1; "
                             f"image_size {self.image_size} is too small for {len(self.disc_channels) - 1} stride-2 "
                             f"layers: use disc_eval_norm='running'")
        if self.disc_channels[0] != self.in_channels:
            raise ValueError("disc_channels[0] must equal in_channels")
        if self.crm_place not in CRM_PLACES:
            raise ValueError(f"crm_place must be one of {CRM_PLACES}, got {self.crm_place!r}")
        if self.crm_reduction < 1:
            raise ValueError(f"crm_reduction must be >= 1, got {self.crm_reduction}")
        if not self.tscc_w >= 0.0:
            raise ValueError(f"tscc_w must be >= 0, got {self.tscc_w}")
        if self.tscc_form not in TSCC_FORMS:
            raise ValueError(f"tscc_form must be one of {TSCC_FORMS}, got {self.tscc_form!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
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


    @classmethod
    def preset(cls, name: str, **overrides) -> "SquidConfig":
        """See the module-level :func:`preset`."""
        return preset(name, **overrides)

    def replace(self, **overrides) -> "SquidConfig":
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_saved(cls, d: dict) -> "SquidConfig":
        """The configuration a checkpoint stored (``ck["cfg"]``). A field added after the checkpoint was written
        takes its default, except ``disc_eval_norm``: checkpoints from before it existed were trained, selected
        and scored with the discriminator's running statistics, so its missing value means ``"running"``."""
        return cls.from_dict({"disc_eval_norm": "running", **d})


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


#: the definition of each profile, versioned: every benchmark row records its method's version
#: (:func:`cxrlib.methods.profile_version`), and rows of an earlier definition are kept as a record, never
#: averaged with the current ones. ``cpu`` 2 (issue #23): bf16 autocast, channels-last and 50 epochs, where
#: version 1 trained 25 epochs in fp32.
PROFILE_VERSIONS = {"quick": "1", "cpu": "2", "full": "1"}


def squid_config(method: str = "squid", profile: str = "quick", **overrides):
    """The :class:`SquidConfig` of ``method`` (``squid``/``simsid``/``crtsc``) under a profile.

    The profiles reduce every method the same way (CRTSC's CRM, TSCC and KL settings are kept). In every profile
    the discriminator scores with each image's own BatchNorm statistics (``disc_eval_norm="per_image"``), as the
    official code does by never calling ``discriminator.eval()`` and scoring one image at a time; the textbook
    eval mode (``"running"``) is kept as an option because it is what this project did before issue #23, where
    it made the validation curve oscillate around chance.

    - ``full``: the official recipe (128 px, 2×2 patches, base width 32; 200 epochs SQUID, 1000 SimSID). For
      SQUID and CRTSC it also matches two details of the official code: the in-painting/decoder memories
      keep 4 slots per read (the official ``shrink_thres = 5`` thresholds at the 5th weight with a strict
      hard-shrink, which zeroes that one too; see :func:`cxrlib.methods.squid.memory.topk_address`), and the checkpoint
      is kept by the official tolerance rule (a later epoch within 0.5 AUROC points of the kept one
      replaces it). SimSID keeps ``topk = 5`` and strict arg-max selection (its official selection is the
      best validation AUC; its memory shrink was not checked against its code).
    - ``cpu``: a reduced model for a 2-core CPU: 64 px images (2×2 patches of 32 px), base width 16, 100
      memory slots, one generator forward shared by the D and G steps (SimSID's loop), and, chosen by the
      lever study of issue #23 (``results/cpu/squid_levers.csv``), bf16 autocast with channels-last tensors
      for 50 epochs, twice the generator steps of the 25 fp32 epochs before (version 2 of
      :data:`PROFILE_VERSIONS`).
    - ``quick``: a tiny model for CI and a first look (64 px, base width 8, 12 epochs, shared forward).
    """
    if profile == "full":
        cfg = preset(method) if method == "simsid" else preset(method, topk=4, selection_tolerance=0.005)
    elif profile == "cpu":
        cfg = preset(method, image_size=64, base_width=16, mem_slots=100, decoder_memory_slots=100, epochs=50,
                     shared_forward=True, precision="bf16", channels_last=True)
    elif profile == "quick":
        cfg = preset(method, image_size=64, base_width=8, mem_slots=50, decoder_memory_slots=50, epochs=12,
                     shared_forward=True)
    else:
        raise ValueError(f"unknown profile {profile!r}")
    return cfg.replace(**overrides) if overrides else cfg
