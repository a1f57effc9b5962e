"""PatchCore (Roth et al., CVPR 2022), the normal-only baseline of WSCXR Table I, and the pieces WSCXR shares.

Training keeps a **memory bank** of patch features of normal images (:mod:`cxrlib.features`), reduced by
**greedy approximate coreset subsampling** (:func:`greedy_coreset`). A test patch's score is its L2 distance to
the nearest bank feature (:func:`nn_distances`, chunked so that memory stays bounded); the **image score is the
maximum over its patches**, and the **anomaly map** is the patch-score grid upsampled to the image and
Gaussian-smoothed (σ = 4 px, as PatchCore).

Command line: ``python -m cxrlib train --method patchcore --weights random ...`` (``--weights imagenet``, the
default, needs torchvision's ImageNet weights in the torch cache). ``model.pt`` holds the bank, the extractor's
settings (and its weights when they are random), the threshold chosen on validation and the backbone's label.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from cxrlib import data as D
from cxrlib import distributed as dist
from cxrlib import metrics as M
from cxrlib.checkpoint import FORMAT_VERSION, CheckpointError, atomic_torch_save
from cxrlib.features import DEFAULT_LAYERS, WEIGHTS, PatchFeatures
from cxrlib.utils import get_device, progress, set_seed

__all__ = ["PATCHCORE_PROFILES", "DATA_SIZE", "nn_distances", "greedy_coreset", "covering_radius", "patch_maps",
           "extract_features", "PatchScorer", "PatchCoreScorer", "profile_settings", "make_extractor", "finalize",
           "normal_features", "fit_patchcore", "add_train_arguments", "load_data", "train_from_args",
           "extractor_from_checkpoint", "checkpoint_meta", "scorer_from_checkpoint"]

#: per-profile settings. ``image_size`` is the backbone's input side (the data stay 128 px); the ``full``
#: profile feeds 256 px as WSCXR does on ZhangLab (8×8 grid at denseblock4; 128 px gives 4×4, WSCXR's CheXpert).
#: ``quick`` uses ResNet18 ``layer3`` (about 3x faster than DenseNet121 on a CPU, 8×8 grid of 256-d at 128 px)
#: so that a notebook runs in about a minute; ``cpu`` and ``full`` use WSCXR's DenseNet121 ``features.denseblock4``.
#: ``full`` averages the 5 nearest bank features per patch, as the official WSCXR config
#: (``anomaly_scorer_num_nn: 5``); ``quick`` and ``cpu`` keep 1 (PatchCore's own default).
PATCHCORE_PROFILES = {
    "quick": {"backbone": "resnet18", "layer": "layer3", "image_size": 128, "coreset_ratio": 0.1, "max_normal": None, "n_neighbors": 1},
    "cpu": {"backbone": "densenet121", "layer": "features.denseblock4", "image_size": 128, "coreset_ratio": 0.1, "max_normal": None, "n_neighbors": 1},
    "full": {"backbone": "densenet121", "layer": "features.denseblock4", "image_size": 256, "coreset_ratio": 0.1, "max_normal": None, "n_neighbors": 5},
}


# ------------------------------------------------------------------------------------- nearest neighbours
def nn_distances(query: torch.Tensor, bank: torch.Tensor, k: int = 1, query_chunk: int = 2048,
                 bank_chunk: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 distances of every query row to its ``k`` nearest bank rows, in chunks.

    Memory is bounded by one ``query_chunk × bank_chunk`` distance block (plus the running top-k), whatever
    the sizes of ``query`` and ``bank``. The bank may live on another device than the queries (e.g. a bank in CPU
    memory that does not fit the GPU): each chunk is copied to the queries' device when it is used.

    Args:
        query: ``(n, D)``; bank: ``(m, D)``.
    Returns:
        ``(dist, idx)``, each ``(n, k)``, nearest first.
    """
    if bank.ndim != 2 or query.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(f"query {tuple(query.shape)} and bank {tuple(bank.shape)} must be (n, D) and (m, D)")
    k = min(k, len(bank))
    out_d, out_i = [], []
    for q0 in range(0, len(query), query_chunk):
        q = query[q0:q0 + query_chunk]
        best_d = torch.full((len(q), 0), float("inf"), dtype=q.dtype, device=q.device)
        best_i = torch.zeros((len(q), 0), dtype=torch.long, device=q.device)
        for b0 in range(0, len(bank), bank_chunk):
            d = torch.cdist(q, bank[b0:b0 + bank_chunk].to(q.device, non_blocking=True))
            kk = min(k, d.shape[1])
            dv, di = torch.topk(d, kk, dim=1, largest=False)
            best_d, sel = torch.topk(torch.cat([best_d, dv], 1), min(k, best_d.shape[1] + kk), dim=1, largest=False)
            best_i = torch.gather(torch.cat([best_i, di + b0], 1), 1, sel)
        out_d.append(best_d)
        out_i.append(best_i)
    if not out_d:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(out_d), torch.cat(out_i)


def covering_radius(points: torch.Tensor, subset_idx) -> float:
    """``max_i min_j ||x_i − x_{subset_j}||``: how far the worst-covered point is from the subset."""
    return float(nn_distances(points, points[torch.as_tensor(subset_idx)], k=1)[0].max())


def greedy_coreset(features: torch.Tensor, ratio: float = 0.1, n_select: int | None = None,
                   projection_dim: int | None = 128, n_starts: int = 10, seed: int = 0,
                   show_progress: bool = False) -> torch.Tensor:
    """Greedy approximate coreset (PatchCore Alg. 1, k-centre greedy): repeatedly add the point farthest
    from the points chosen so far, so the subset covers the bank with a small covering radius.

    Approximations as PatchCore's: distances are computed in a random Gaussian projection to
    ``projection_dim`` dimensions (Johnson–Lindenstrauss; ``None`` = exact), and the distances are
    initialised by the mean distance to ``n_starts`` random points (``0``: start from one random point).

    Args:
        features: ``(n, D)``.
        ratio: fraction of points to keep (used when ``n_select`` is ``None``).
    Returns:
        int64 indices ``(m,)`` of the chosen rows, in order of choice.
    """
    n = len(features)
    m = n_select if n_select is not None else int(n * ratio)
    if not 0 < m <= n:
        raise ValueError(f"coreset of {m} points out of {n}: need 0 < m <= n (ratio {ratio})")
    g = torch.Generator().manual_seed(seed)
    x = features.float()
    if projection_dim and projection_dim < x.shape[1]:
        proj = torch.randn(x.shape[1], projection_dim, generator=g) / projection_dim ** 0.5
        x = x @ proj.to(x.device)
    starts = torch.randperm(n, generator=g)[:max(1, min(n_starts, n))].to(x.device)
    chosen = torch.empty(m, dtype=torch.long)
    if n_starts > 0:
        min_d, first = torch.cdist(x, x[starts]).mean(1), 0
    else:  # exact greedy: the first pick is one random point
        chosen[0] = int(starts[0])
        min_d, first = torch.linalg.vector_norm(x - x[starts[0]], dim=1), 1
    sq = (x * x).sum(1)
    for j in progress(range(first, m), enabled=show_progress, desc="coreset"):
        i = int(torch.argmax(min_d))
        chosen[j] = i
        # ||x - x_i||^2 = |x|^2 - 2 x.x_i + |x_i|^2: a matrix-vector product, no (n, D) temporary per step
        d_i = (sq - 2 * (x @ x[i]) + sq[i]).clamp_min_(0).sqrt_()
        min_d = torch.minimum(min_d, d_i)
    return chosen


def patch_maps(patch_scores: torch.Tensor, size: int, sigma: float = 4.0) -> np.ndarray:
    """Patch-score grids ``(N, h, w)`` -> anomaly maps ``(N, size, size)``: bilinear upsampling, then a
    Gaussian filter of ``sigma`` px (PatchCore's display maps)."""
    up = F.interpolate(patch_scores[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return np.stack([gaussian_filter(m, sigma) for m in up.numpy()]) if len(up) else up.numpy()


# --------------------------------------------------------------------------------------- feature cache
def extract_features(fx: PatchFeatures, images, cache_dir=None, show_progress: bool = True,
                     desc: str = "features") -> torch.Tensor:
    """``fx.extract(images)``, cached under ``cache_dir`` (when given) by a hash of the extractor's settings,
    the torch version and the image bytes, so repeated runs on the same split skip the backbone."""
    if cache_dir is None:
        return _extract_sharded(fx, images, show_progress, desc)
    a = np.ascontiguousarray(np.asarray(images))
    h = hashlib.sha1(json.dumps(fx.config(), sort_keys=True).encode() + torch.__version__.encode())
    h.update(str(a.shape).encode() + a.dtype.str.encode())
    h.update(a.tobytes())
    path = Path(cache_dir) / f"{h.hexdigest()[:20]}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    feats = _extract_sharded(fx, a, show_progress, desc)
    if dist.context().is_main:
        atomic_torch_save(feats, path)
    return feats


def _extract_sharded(fx: PatchFeatures, images, show_progress: bool, desc: str) -> torch.Tensor:
    """``fx.extract(images)``; under ``torchrun`` each rank extracts a contiguous shard and every rank receives
    all the features in the original order (:func:`cxrlib.distributed.gather_shards`)."""
    ctx = dist.context()
    n = len(images)
    if not ctx.enabled or n < ctx.world:
        return fx.extract(images, show_progress=show_progress, desc=desc)
    bounds = dist.shard_bounds(n, ctx.world)
    mine = fx.extract(images[bounds[ctx.rank]:bounds[ctx.rank + 1]], show_progress=show_progress and ctx.is_main,
                      desc=desc)
    return dist.gather_shards(mine.to(fx.device), n).cpu()  # nccl gathers on the GPU


# ------------------------------------------------------------------------------------------------ scorers
class PatchScorer:
    """Shared scoring of patch-feature methods: ``score`` = max over the patch grid of
    :meth:`patch_scores`, ``anomaly_maps`` = that grid upsampled and smoothed."""

    method = "patch"

    def __init__(self, extractor: PatchFeatures, image_size: int, threshold=None, meta=None):
        self.extractor, self.image_size, self.threshold, self.meta = extractor, int(image_size), threshold, meta or {}
        self.feature_cache = None  # a folder: score() reuses cached backbone features (see extract_features)

    @property
    def backbone_label(self) -> str:
        return self.extractor.label

    def _check(self, images):
        a = np.asarray(images)
        if a.ndim != 3 or a.shape[1:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images of shape (N, {self.image_size}, {self.image_size}), got {a.shape}")
        return a

    def patch_scores(self, feats: torch.Tensor) -> torch.Tensor:
        """``(N, h, w, D)`` features -> ``(N, h, w)`` patch scores (higher = more anomalous)."""
        raise NotImplementedError

    def score_features(self, feats: torch.Tensor) -> np.ndarray:
        """Image scores ``(N,)`` from precomputed features: the max patch score."""
        return self.patch_scores(feats).amax(dim=(1, 2)).numpy() if len(feats) else np.zeros(0)

    def score(self, images, show_progress: bool = False) -> np.ndarray:
        """Anomaly score per image, shape ``(N,)``, for uint8 ``(N, S, S)`` images."""
        feats = extract_features(self.extractor, self._check(images), self.feature_cache, show_progress, "features")
        return self.score_features(feats)

    def anomaly_maps(self, images, sigma: float = 4.0) -> np.ndarray:
        """Anomaly maps ``(N, S, S)`` (patch scores upsampled and smoothed)."""
        feats = self.extractor.extract(self._check(images), show_progress=False)
        return patch_maps(self.patch_scores(feats), self.image_size, sigma)


class PatchCoreScorer(PatchScorer):
    """PatchCore: patch score = mean L2 distance to the ``n_neighbors`` nearest memory-bank features."""

    method = "patchcore"

    def __init__(self, extractor, bank: torch.Tensor, image_size: int, n_neighbors: int = 1, threshold=None,
                 meta=None):
        super().__init__(extractor, image_size, threshold, meta)
        self.bank, self.n_neighbors = bank.float(), int(n_neighbors)

    def patch_scores(self, feats):
        n, h, w, d = feats.shape
        dist = nn_distances(feats.reshape(-1, d).float(), self.bank, k=self.n_neighbors)[0]
        return dist.mean(1).reshape(n, h, w)


# ----------------------------------------------------------------------------------------------- training
def profile_settings(profile: str, args=None, table: dict | None = None) -> dict:
    """The settings dict of ``profile`` in ``table`` (default :data:`PATCHCORE_PROFILES`; WSCXR passes its own),
    with ``weights = "imagenet"``, overridden by the command line's non-``None`` values in ``args``; a
    ``--backbone`` without ``--layer`` takes that backbone's default layer."""
    table = table or PATCHCORE_PROFILES
    if profile not in table:
        raise ValueError(f"unknown profile {profile!r}")
    s = {**table[profile], "weights": "imagenet"}
    for key in s:
        v = getattr(args, key, None) if args is not None else None
        if v is not None:
            s[key] = v
    if getattr(args, "backbone", None) and not getattr(args, "layer", None):  # another model: its own layer
        s["layer"] = DEFAULT_LAYERS.get(s["backbone"])
    return s


def make_extractor(settings: dict, device=None) -> PatchFeatures:
    """The :class:`PatchFeatures` of a settings dict (``backbone``, ``layer``, ``weights``, ``image_size``)."""
    return PatchFeatures(backbone=settings["backbone"], layer=settings["layer"], weights=settings["weights"],
                         image_size=settings["image_size"], device=dist.local_device(get_device(device), dist.context()))


def finalize(scorer: PatchScorer, ds, split, out_dir, record: dict, threshold_rule: str = "max_acc",
             val_scores: np.ndarray | None = None) -> Path:
    """Choose the threshold on the validation split, then write ``out_dir/model.pt`` atomically."""
    y_val = ds.labels[split.val]
    s_val = scorer.score(ds.images[split.val]) if val_scores is None else val_scores
    threshold = M.choose_threshold(y_val, s_val, threshold_rule)
    fx = scorer.extractor
    ck = {"format": FORMAT_VERSION, "method": scorer.method, "threshold": threshold,
          "threshold_rule": f"{threshold_rule} on the validation split", "val_metrics": M.evaluate(y_val, s_val, threshold),
          "split_seed": split.seed, "split_version": D.SPLIT_VERSION, "protocol": split.protocol, "split_summary": split.summary(ds.labels),
          "image_size": scorer.image_size, "features": fx.config(), "features_state": fx.state_dict_to_store(),
          "backbone": fx.backbone, "layer": fx.layer, "weights": fx.weights, "backbone_label": fx.label, **record}
    path = Path(out_dir) / "model.pt"
    atomic_torch_save(ck, path)
    return path


def normal_features(fx, ds, split, max_normal, seed, feature_cache, show_progress):
    """``(rows, features)`` of the training normals, at most ``max_normal`` of them (a seeded subset). With a
    cache, the features of all training normals are cached once and the subset is taken from them."""
    train = split.train
    pick = None
    if max_normal and len(train) > max_normal:
        pick = np.sort(np.random.default_rng(seed).choice(len(train), max_normal, replace=False))
    if feature_cache is None:
        train = train if pick is None else train[pick]
        return train, extract_features(fx, ds.images[train], None, show_progress, "features (train)")
    feats = extract_features(fx, ds.images[train], feature_cache, show_progress, "features (train)")
    return (train, feats) if pick is None else (train[pick], feats[torch.as_tensor(pick)])


def fit_patchcore(ds, split, out_dir, settings: dict, seed: int = 0, device=None,
                  show_progress: bool = True, feature_cache=None, data_source: str = "", log=print) -> Path | None:
    """Build the memory bank from ``split.train`` and write ``out_dir/model.pt``. Under ``torchrun`` the ranks
    extract the features together and rank 0 alone builds the bank and writes (the others return ``None``)."""
    set_seed(seed)
    t0 = time.time()
    fx = make_extractor(settings, device)
    log(f"features: {fx.label}; {settings['image_size']} px input -> {fx.grid[0]}x{fx.grid[1]} grid of {fx.dim}-d")
    train, feats = normal_features(fx, ds, split, settings.get("max_normal"), seed, feature_cache, show_progress)
    val_feats = extract_features(fx, ds.images[split.val], feature_cache, show_progress, "features (val)")
    if not dist.context().is_main:  # under torchrun the ranks shared the feature extraction; rank 0 goes on alone
        return None
    flat = feats.reshape(-1, fx.dim)
    idx = greedy_coreset(flat, settings["coreset_ratio"], seed=seed, show_progress=show_progress)
    bank = flat[idx].clone()
    log(f"memory bank: {len(bank)} of {len(flat)} patch features (coreset ratio {settings['coreset_ratio']})")
    scorer = PatchCoreScorer(fx, bank, ds.size, settings["n_neighbors"])
    record = {"bank": bank, "n_neighbors": settings["n_neighbors"], "settings": settings, "seed": seed,
              "data": data_source, "n_train_images": int(len(train)), "train_seconds": time.time() - t0}
    return finalize(scorer, ds, split, out_dir, record, val_scores=scorer.score_features(val_feats))


def add_train_arguments(group) -> None:
    """``python -m cxrlib train --method patchcore`` options (also used by ``--method wscxr``)."""
    group.add_argument("--backbone", default=None,
                       help="torchvision model (default: resnet18 for --profile quick, densenet121 otherwise)")
    group.add_argument("--layer", default=None,
                       help="feature layer (default: layer3 for resnet18, features.denseblock4 for densenet121)")
    group.add_argument("--weights", choices=WEIGHTS, default="imagenet",
                       help="imagenet: torchvision's ImageNet-1k weights (download; offline: place the file in the "
                            "torch hub cache); random: seeded random initialisation, not pretrained")
    group.add_argument("--image-size", type=int, default=None, help="backbone input side (default: the profile's)")
    group.add_argument("--coreset-ratio", type=float, default=None, help="memory-bank coreset fraction")
    group.add_argument("--max-normal", type=int, default=None, help="at most this many training normals")
    group.add_argument("--n-neighbors", type=int, default=None, help="nearest neighbours averaged per patch")
    group.add_argument("--feature-cache", default=None,
                       help="folder caching backbone features of the training/validation images between runs")


#: images are loaded at this side (the data's 128 px); the backbone input side is ``image_size``
DATA_SIZE = 128


def load_data(args):
    """``(source, dataset)``: the data of ``args.data`` (default: ``args.profile``'s), loaded at :data:`DATA_SIZE`."""
    source = D.resolve_data(args.profile, args.data)
    return source, D.load(source, size=DATA_SIZE)


def train_from_args(args) -> Path:
    """``python -m cxrlib train --method patchcore``: see :mod:`cxrlib.methods` for the contract.
    (Building a bank takes minutes, so ``--resume`` simply builds it again.)"""
    settings = profile_settings(args.profile, args)
    source, ds = load_data(args)
    split = D.unsupervised_protocol(ds, seed=args.split_seed)
    print(f"data {source}: {len(ds)} images at {ds.size} px; split (normal, abnormal): "
          f"{ {k: v for k, v in split.summary(ds.labels).items() if sum(v)} }")
    path = fit_patchcore(ds, split, args.out, settings, seed=args.seed, device=args.device,
                         show_progress=not args.no_progress, feature_cache=args.feature_cache, data_source=str(source))
    if path is None:  # a rank other than 0 under torchrun
        return None
    ck = torch.load(path, map_location="cpu", weights_only=False)
    print(f"validation AUROC {ck['val_metrics']['auroc']:.3f}; {ck['train_seconds'] / 60:.1f} min; {ck['backbone_label']}")
    return path


def extractor_from_checkpoint(ck: dict, path, device) -> PatchFeatures:
    """The :class:`~cxrlib.features.PatchFeatures` stored in a loaded PatchCore or WSCXR ``model.pt`` dict (with
    its weights when they were random); a :class:`~cxrlib.checkpoint.CheckpointError` when it is incomplete."""
    try:
        cfg = dict(ck["features"])
        return PatchFeatures(**cfg, device=device, state_dict=ck.get("features_state"))
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a complete {ck.get('method')} checkpoint ({e.__class__.__name__}: {e})") from None


def checkpoint_meta(ck: dict) -> dict:
    """The scorer's ``meta`` of a loaded PatchCore or WSCXR ``model.pt`` dict: its seeds, split, validation
    metrics, threshold rule, data, training time, settings and history (the keys it has)."""
    return {k: ck[k] for k in ("seed", "split_seed", "val_metrics", "threshold_rule", "data", "train_seconds",
                               "protocol", "split_summary", "backbone_label", "settings", "history", "k",
                               "best_epoch", "split_version") if k in ck}


def scorer_from_checkpoint(ck: dict, path, device) -> PatchCoreScorer:
    """The :class:`PatchCoreScorer` of a loaded PatchCore ``model.pt`` dict."""
    if "bank" not in ck or "features" not in ck:
        raise CheckpointError(f"{path}: not a complete patchcore checkpoint (no memory bank)")
    fx = extractor_from_checkpoint(ck, path, device)
    return PatchCoreScorer(fx, ck["bank"], ck["image_size"], ck.get("n_neighbors", 1), ck["threshold"],
                           checkpoint_meta(ck))
