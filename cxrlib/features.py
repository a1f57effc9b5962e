"""Patch features from a frozen torchvision backbone, as PatchCore and WSCXR use them.

A grey X-ray ``(N, S, S)`` is resized to ``image_size``, replicated to three channels and normalised with the
ImageNet mean/std; one layer of the backbone (DenseNet121 ``features.denseblock4`` by default, as WSCXR) gives
a ``(C, h, w)`` map per image. Each location's feature is then averaged over its 5×5 neighbourhood
(WSCXR Eq. 1–3: unfold a ``p×p`` patch around every position, stride 1, zero padding ``p//2``, and
adaptive-average-pool the flattened ``C·p²`` vector back to ``C`` values: a per-channel local mean).

**Weights, honestly.** ``weights="imagenet"`` loads torchvision's ImageNet-1k weights through the normal API
(``weights=DenseNet121_Weights.IMAGENET1K_V1``); they are downloaded once into the torch hub cache. Offline the
download fails and :class:`PretrainedWeightsError` says which file to place where, or to choose
``weights="random"``: a seeded random initialisation (the weights travel in the checkpoint), which is never
"pretrained". :func:`describe_backbone` is the label every result carries.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .utils import get_device, progress

__all__ = ["DEFAULT_LAYERS", "WEIGHTS", "IMAGENET_MEAN", "IMAGENET_STD", "PretrainedWeightsError",
           "imagenet_weights_file", "build_backbone", "describe_backbone", "local_aggregate", "PatchFeatures"]

#: torchvision backbones tested here and their default feature layer (any other model/layer also works).
DEFAULT_LAYERS = {"densenet121": "features.denseblock4", "resnet18": "layer3", "wide_resnet50_2": "layer3"}
#: ``imagenet``: torchvision's ImageNet-1k weights (download); ``random``: seeded random initialisation.
WEIGHTS = ("imagenet", "random")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedWeightsError(ValueError):
    """Pretrained weights cannot be had (offline): the message says which file to place where."""


def _imagenet_enum(name: str):
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise ValueError(f"backbone {name!r} is not a torchvision model") from None
    if not hasattr(enum, "IMAGENET1K_V1"):
        raise ValueError(f"torchvision has no IMAGENET1K_V1 weights for {name!r}")
    return enum.IMAGENET1K_V1


def imagenet_weights_file(name: str = "densenet121") -> Path:
    """Where torchvision looks for the ImageNet weights of ``name`` (e.g.
    ``~/.cache/torch/hub/checkpoints/densenet121-a639ec97.pth``)."""
    url = _imagenet_enum(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def build_backbone(name: str = "densenet121", weights: str = "imagenet", init_seed: int = 0) -> torch.nn.Module:
    """The torchvision classifier ``name`` with ``weights`` (see :data:`WEIGHTS`), in eval mode.

    Raises:
        PretrainedWeightsError: ``imagenet`` weights that cannot be downloaded or read (offline).
        ValueError: unknown model or weights name.
    """
    import torchvision

    if weights == "imagenet":
        enum = _imagenet_enum(name)
        try:
            model = torchvision.models.get_model(name, weights=enum)
        except Exception as e:  # URLError, HTTPError, socket errors, a truncated file: all mean "no weights"
            path = imagenet_weights_file(name)
            why = "is corrupt or incomplete" if path.exists() else "is not in the cache and the download failed"
            raise PretrainedWeightsError(
                f"ImageNet weights for {name} ({enum.url.rsplit('/', 1)[-1]}) {why} ({e.__class__.__name__}): "
                f"download {enum.url} to {path} (or set TORCH_HOME), or choose the offline option "
                f"--weights random (random initialisation, not pretrained)") from None
    elif weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = torchvision.models.get_model(name, weights=None)
    else:
        raise ValueError(f"weights {weights!r} is not one of {WEIGHTS}")
    return model.eval()


def describe_backbone(name: str, layer: str, weights: str, init_seed: int = 0) -> str:
    """The label of a feature extractor, for every table and figure."""
    if weights == "imagenet":
        return f"{name} {layer}, ImageNet-1k weights (torchvision IMAGENET1K_V1)"
    return f"{name} {layer}, random initialisation (seed {init_seed}), not pretrained"


def local_aggregate(feat: torch.Tensor, patch_size: int = 5) -> torch.Tensor:
    """WSCXR Eq. 1–3: every position's feature averaged over its ``p×p`` neighbourhood.

    Unfolds ``p×p`` patches (stride 1, zero padding ``p//2``) and adaptive-average-pools each flattened
    ``C·p²`` patch vector to ``C`` values, as the official code does; that is a per-channel mean over the
    neighbourhood with the zero padding counted (``avg_pool2d(..., count_include_pad=True)``).

    Args:
        feat: ``(B, C, h, w)``.
    Returns:
        ``(B, h, w, C)``.
    """
    b, c, h, w = feat.shape
    if patch_size == 1:
        return feat.permute(0, 2, 3, 1)
    patches = F.unfold(feat, kernel_size=patch_size, padding=patch_size // 2, stride=1)  # (B, C*p*p, h*w)
    patches = patches.transpose(1, 2).reshape(b * h * w, 1, c * patch_size ** 2)  # channel-major: c0's p*p first
    pooled = F.adaptive_avg_pool1d(patches, c)  # (B*h*w, 1, C)
    return pooled.reshape(b, h, w, c)


class PatchFeatures:
    """A frozen backbone layer turned into locally aggregated patch features.

    Args:
        backbone: torchvision model name (default ``densenet121``).
        layer: node name for :func:`torchvision.models.feature_extraction.create_feature_extractor`
            (default from :data:`DEFAULT_LAYERS`).
        weights: ``imagenet`` or ``random`` (see :func:`build_backbone`).
        image_size: backbone input side; images are bilinearly resized to it.
        patch_size: neighbourhood of the local aggregation (5 in WSCXR).
        embed_dim: channels after adaptive average pooling over channels (``None``: keep the layer's).
        init_seed: seed of the ``random`` initialisation.
        state_dict: weights of the truncated extractor (restores a ``random`` backbone from a checkpoint).
    """

    def __init__(self, backbone: str = "densenet121", layer: str | None = None, weights: str = "imagenet",
                 image_size: int = 128, patch_size: int = 5, embed_dim: int | None = None, init_seed: int = 0,
                 device=None, state_dict: dict | None = None):
        from torchvision.models.feature_extraction import create_feature_extractor

        self.backbone, self.layer = backbone, layer or DEFAULT_LAYERS.get(backbone)
        if self.layer is None:
            raise ValueError(f"no default layer for backbone {backbone!r}; pass a layer")
        self.weights, self.image_size, self.patch_size = weights, int(image_size), int(patch_size)
        self.embed_dim, self.init_seed = embed_dim, int(init_seed)
        self.device = get_device(device)
        # a random backbone restored from a checkpoint does not need to be rebuilt from the RNG
        model = build_backbone(backbone, "random" if state_dict is not None else weights, init_seed)
        try:
            self.extractor = create_feature_extractor(model, return_nodes={self.layer: "feat"})
        except ValueError as e:
            raise ValueError(f"backbone {backbone!r} has no layer {self.layer!r} ({e})") from None
        if state_dict is not None:
            self.extractor.load_state_dict(state_dict)
        self.extractor.eval().requires_grad_(False).to(self.device)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        with torch.no_grad():
            probe = self.extractor(torch.zeros(1, 3, self.image_size, self.image_size, device=self.device))["feat"]
        self.layer_channels, self.grid = probe.shape[1], tuple(probe.shape[2:])
        self.dim = embed_dim or self.layer_channels

    @property
    def label(self) -> str:
        return describe_backbone(self.backbone, self.layer, self.weights, self.init_seed)

    def config(self) -> dict:
        """What a checkpoint needs to rebuild this extractor (with :meth:`state_dict_to_store`)."""
        return {"backbone": self.backbone, "layer": self.layer, "weights": self.weights,
                "image_size": self.image_size, "patch_size": self.patch_size, "embed_dim": self.embed_dim,
                "init_seed": self.init_seed}

    def state_dict_to_store(self) -> dict | None:
        """The extractor's weights when they cannot be re-obtained by name (``random``), else ``None``."""
        if self.weights == "imagenet":
            return None
        return {k: v.detach().cpu().clone() for k, v in self.extractor.state_dict().items()}

    def preprocess(self, x01: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S)`` in [0, 1] -> ``(B, 3, image_size, image_size)`` ImageNet-normalised."""
        if x01.shape[-1] != self.image_size or x01.shape[-2] != self.image_size:
            x01 = F.interpolate(x01, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return (x01.expand(-1, 3, -1, -1) - self.mean) / self.std

    @torch.no_grad()
    def embed(self, x01: torch.Tensor) -> torch.Tensor:
        """Patch features of a batch: ``(B, 1, S, S)`` in [0, 1] -> ``(B, h, w, D)``."""
        feat = self.extractor(self.preprocess(x01.to(self.device, torch.float32)))["feat"]
        out = local_aggregate(feat, self.patch_size)
        if self.embed_dim and self.embed_dim != out.shape[-1]:
            b, h, w, c = out.shape
            out = F.adaptive_avg_pool1d(out.reshape(b * h * w, 1, c), self.embed_dim).reshape(b, h, w, -1)
        return out

    def extract(self, images, batch_size: int = 32, show_progress: bool = True, desc: str = "features") -> torch.Tensor:
        """Patch features of many images.

        Args:
            images: uint8 ``(N, S, S)`` or float ``(N, 1, S, S)`` in [0, 1].
        Returns:
            float32 CPU tensor ``(N, h, w, D)``.
        """
        a = np.asarray(images)
        if a.ndim == 3:
            a = a[:, None]
        if a.ndim != 4 or a.shape[1] != 1:
            raise ValueError(f"expected grey images (N, S, S), got shape {np.asarray(images).shape}")
        scale = 255.0 if a.dtype == np.uint8 else 1.0
        out = []
        for i in progress(range(0, len(a), batch_size), enabled=show_progress, desc=desc):
            x = torch.from_numpy(a[i:i + batch_size].astype(np.float32) / scale)
            out.append(self.embed(x).cpu())
        if not out:
            return torch.empty(0, *self.grid, self.dim)
        return torch.cat(out)
