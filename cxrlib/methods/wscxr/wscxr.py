"""WSCXR (Ni et al., arXiv 2311.09642): weakly supervised anomaly detection from normal images plus ``K``
labelled anomaly images.

1. **Normal bank** (as PatchCore): patch features of the training normals, greedy-coreset subsampled
   (ratio 0.5 in the official code).
2. **Anomaly-feature mining** (Eq. 4–5): every patch feature of the ``K`` anomaly images is scored by its
   nearest-neighbour L2 distance to the normal bank; only the ``⌊r·|M_a|⌋`` farthest (retention rate
   ``r = 0.2``) are kept as anomaly prototypes: most patches of a pneumonia image look normal.
3. **Linear mixing** (Eq. 6): synthetic anomaly features ``f̃ = (1 − α)·f_n + α·p`` mix a normal patch
   feature ``f_n`` with a random prototype ``p``, ``α ~ U[0.1, 1]`` per patch.
4. **Discriminator** (Eq. 7): an MLP (official: one bias-free linear layer) trained with the hinge loss
   ``mean(relu(m − D(f_n))) + mean(relu(m + D(f̃)))``, margin ``m = 0.5``.
5. **Score** (Eq. 8): the patch score is ``−D(f)`` on every patch (the anomaly map); the image score is its maximum.

Ablation switches: ``mining=False`` keeps every anomaly feature (``r = 1``); ``mixing=False`` uses the
prototypes themselves as the anomalous class. Unlike the official code (which keeps the meta-epoch with the
best **test** metrics), the discriminator is chosen on the **validation** AUROC; the threshold too.

Command line: ``python -m cxrlib train --method wscxr --k 16 --weights random ...``; the ``K`` anomalies are
drawn by :func:`cxrlib.data.weakly_supervised_protocol` (never from validation or test).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from cxrlib import data as D
from cxrlib import distributed
from cxrlib import metrics as M
from cxrlib.checkpoint import CheckpointError, TrainingDivergedError
from cxrlib.methods.patchcore.patchcore import (PatchScorer, checkpoint_meta, extract_features,
                                                extractor_from_checkpoint, finalize, greedy_coreset, load_data,
                                                make_extractor, nn_distances, normal_features, profile_settings)
from cxrlib.methods.patchcore.patchcore import add_train_arguments as feature_arguments
from cxrlib.utils import progress, set_seed

__all__ = ["WSCXR_PROFILES", "Discriminator", "mine_anomaly_features", "mix_features", "hinge_loss",
           "WscxrScorer", "fit_wscxr", "add_train_arguments", "train_from_args", "scorer_from_checkpoint"]

#: per-profile settings (``quick``: ResNet18 ``layer3``, see
#: :data:`cxrlib.methods.patchcore.patchcore.PATCHCORE_PROFILES`, and a
#: 10 % normal bank so that the notebook's ten trainings stay short); ``full`` is the official ZhangLab config (config/zhanglab.yaml): 256 px, 500 normals,
#: coreset 0.5, r 0.2, one linear layer, margin 0.5, Adam 2e-4 (wd 1e-5), batch 8 images, 100 meta-epochs.
WSCXR_PROFILES = {
    "quick": {"backbone": "resnet18", "layer": "layer3", "image_size": 128, "max_normal": None, "normal_ratio": 0.1, "retention": 0.2, "n_neighbors": 1,
              "meta_epochs": 20, "batch_size": 8, "lr": 2e-4, "weight_decay": 1e-5, "margin": 0.5,
              "dsc_layers": 1, "dsc_hidden": None, "k": 16},
    "cpu": {"backbone": "densenet121", "layer": "features.denseblock4", "image_size": 128, "max_normal": 500, "normal_ratio": 0.5, "retention": 0.2, "n_neighbors": 1,
            "meta_epochs": 100, "batch_size": 8, "lr": 2e-4, "weight_decay": 1e-5, "margin": 0.5,
            "dsc_layers": 1, "dsc_hidden": None, "k": 16},
    "full": {"backbone": "densenet121", "layer": "features.denseblock4", "image_size": 256, "max_normal": 500, "normal_ratio": 0.5, "retention": 0.2, "n_neighbors": 5,
             "meta_epochs": 100, "batch_size": 8, "lr": 2e-4, "weight_decay": 1e-5, "margin": 0.5,
             "dsc_layers": 1, "dsc_hidden": None, "k": 16},
}


class Discriminator(torch.nn.Module):
    """Patch discriminator ``D: R^D -> R`` (positive = normal). ``n_layers - 1`` hidden blocks
    (Linear, BatchNorm1d, LeakyReLU 0.2) then a bias-free linear output; xavier-normal initialisation.
    ``n_layers = 1`` (the official setting) is a single linear map."""

    def __init__(self, dim: int, n_layers: int = 1, hidden: int | None = None):
        super().__init__()
        blocks, d = [], dim
        for _ in range(n_layers - 1):
            h = hidden or int(d // 1.5)
            blocks.append(torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.BatchNorm1d(h), torch.nn.LeakyReLU(0.2)))
            d = h
        self.body = torch.nn.Sequential(*blocks)
        self.tail = torch.nn.Linear(d, 1, bias=False)
        for m in self.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.xavier_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, D)`` -> ``(n,)``."""
        return self.tail(self.body(x))[:, 0]


def mine_anomaly_features(abnormal: torch.Tensor, normal_bank: torch.Tensor, retention: float = 0.2,
                          n_neighbors: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Anomaly-feature mining (WSCXR Eq. 4–5): keep the ``⌊r·n⌋`` (at least 1) features of ``abnormal``
    ``(n, D)`` farthest from the normal bank (mean L2 distance to the ``n_neighbors`` nearest).

    Returns:
        ``(kept_idx, distances)``: int64 indices into ``abnormal`` (farthest first) and every feature's
        distance ``(n,)``.
    """
    if not 0 < retention <= 1:
        raise ValueError(f"retention rate {retention} is outside (0, 1]")
    dist = nn_distances(abnormal.float(), normal_bank.float(), k=n_neighbors)[0].mean(1)
    n_keep = max(1, int(np.floor(retention * len(abnormal))))
    return torch.topk(dist, n_keep).indices, dist


def mix_features(normal: torch.Tensor, prototypes: torch.Tensor, generator: torch.Generator | None = None,
                 alpha_range=(0.1, 1.0)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear mixing (WSCXR Eq. 6): ``f̃_i = (1 − α_i)·f_i + α_i·p_{j_i}``, ``α_i ~ U[a, b]``, ``j_i``
    uniform over the prototypes.

    Args:
        normal: ``(n, D)``; prototypes: ``(P, D)``.
    Returns:
        ``(mixed (n, D), alpha (n,), j (n,))``.
    """
    n = len(normal)
    j = torch.randint(len(prototypes), (n,), generator=generator)
    lo, hi = alpha_range
    alpha = lo + (hi - lo) * torch.rand(n, generator=generator)
    return (1 - alpha[:, None]) * normal + alpha[:, None] * prototypes[j], alpha, j


def hinge_loss(d_normal: torch.Tensor, d_fake: torch.Tensor, margin: float = 0.5) -> tuple[torch.Tensor, dict]:
    """WSCXR Eq. 7: ``mean(relu(m − D(f_n))) + mean(relu(m + D(f̃)))``; returns the loss and its two terms."""
    normal_term = torch.relu(margin - d_normal).mean()
    fake_term = torch.relu(margin + d_fake).mean()
    return normal_term + fake_term, {"normal": normal_term, "anomalous": fake_term}


class WscxrScorer(PatchScorer):
    """WSCXR Eq. 8: patch score ``−D(f)``, image score = its maximum over patches."""

    method = "wscxr"

    def __init__(self, extractor, discriminator: Discriminator, image_size: int, threshold=None, meta=None):
        super().__init__(extractor, image_size, threshold, meta)
        self.discriminator = discriminator.eval()

    @torch.no_grad()
    def patch_scores(self, feats):
        n, h, w, d = feats.shape
        return -self.discriminator(feats.reshape(-1, d).float()).reshape(n, h, w)


def fit_wscxr(ds, split, out_dir, settings: dict, seed: int = 0, mining: bool = True,
              mixing: bool = True, device=None, show_progress: bool = True, feature_cache=None,
              data_source: str = "", log=print) -> Path | None:
    """Train WSCXR on ``split.train`` (normals) and ``split.train_abnormal`` (the K anomalies), choose the
    meta-epoch and the threshold on ``split.val``, and write ``out_dir/model.pt``. Under ``torchrun`` the ranks
    extract the features together and rank 0 alone trains and writes (the others return ``None``)."""
    if len(split.train_abnormal) == 0:
        raise ValueError("WSCXR needs labelled anomaly images: use --k K with K >= 1")
    set_seed(seed)
    t0 = time.time()
    s = settings
    fx = make_extractor(s, device)
    log(f"features: {fx.label}; {s['image_size']} px input -> {fx.grid[0]}x{fx.grid[1]} grid of {fx.dim}-d")
    train, f_norm = normal_features(fx, ds, split, s.get("max_normal"), seed, feature_cache, show_progress)
    f_abn = extract_features(fx, ds.images[split.train_abnormal], None, show_progress, "features (anomalies)")
    f_val = extract_features(fx, ds.images[split.val], feature_cache, show_progress, "features (val)")
    if not distributed.context().is_main:  # under torchrun the ranks shared the feature extraction; rank 0 goes on alone
        return None
    flat_n, flat_a = f_norm.reshape(-1, fx.dim), f_abn.reshape(-1, fx.dim)
    bank = flat_n[greedy_coreset(flat_n, s["normal_ratio"], seed=seed, show_progress=show_progress)]
    if mining:
        kept, dist = mine_anomaly_features(flat_a, bank, s["retention"], s["n_neighbors"])
    else:
        kept, dist = torch.arange(len(flat_a)), None
    prototypes = flat_a[kept].clone()
    log(f"normal bank {len(bank)} of {len(flat_n)} features; anomaly prototypes {len(prototypes)} of {len(flat_a)} "
        f"({'mining r=' + str(s['retention']) if mining else 'no mining'}; {'mixing' if mixing else 'no mixing'})")

    torch.manual_seed(seed)
    disc = Discriminator(fx.dim, s["dsc_layers"], s["dsc_hidden"])
    opt = torch.optim.Adam(disc.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    g = torch.Generator().manual_seed(seed)
    y_val = ds.labels[split.val]
    scorer = WscxrScorer(fx, disc, ds.size)
    best = {"auroc": -1.0, "epoch": -1, "state": None}
    history = []
    for epoch in progress(range(s["meta_epochs"]), enabled=show_progress, desc="meta-epochs"):
        disc.train()
        order = torch.randperm(len(f_norm), generator=g)
        sums = {"loss": 0.0, "normal": 0.0, "anomalous": 0.0}
        n_steps = 0
        for b0 in range(0, len(order), s["batch_size"]):
            true = f_norm[order[b0:b0 + s["batch_size"]]].reshape(-1, fx.dim)
            if mixing:
                fake = mix_features(true, prototypes, g)[0]
            else:
                fake = prototypes[torch.randint(len(prototypes), (len(true),), generator=g)]
            scores = disc(torch.cat([true, fake]))
            loss, terms = hinge_loss(scores[:len(true)], scores[len(true):], s["margin"])
            for name, v in {"loss": loss, **terms}.items():
                if not torch.isfinite(v):
                    raise TrainingDivergedError(f"meta-epoch {epoch + 1}: hinge loss term '{name}' is {float(v)}")
                sums[name] += float(v.detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
            n_steps += 1
        disc.eval()
        val_auroc = M.auroc(y_val, scorer.score_features(f_val))
        history.append({"epoch": epoch, **{k: v / max(n_steps, 1) for k, v in sums.items()}, "val_auroc": val_auroc})
        if val_auroc > best["auroc"]:
            best = {"auroc": val_auroc, "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in disc.state_dict().items()}}
    disc.load_state_dict(best["state"])
    disc.eval()
    log(f"best meta-epoch {best['epoch'] + 1}/{s['meta_epochs']} (validation AUROC {best['auroc']:.3f})")
    record = {"discriminator": best["state"], "dsc_layers": s["dsc_layers"], "dsc_hidden": s["dsc_hidden"],
              "dim": fx.dim, "mining": mining, "mixing": mixing, "k": int(len(split.train_abnormal)),
              "train_abnormal": split.train_abnormal.tolist(), "n_prototypes": int(len(prototypes)),
              "n_bank": int(len(bank)), "best_epoch": best["epoch"], "history": history, "settings": s,
              "seed": seed, "data": data_source, "n_train_images": int(len(train)), "train_seconds": time.time() - t0}
    return finalize(scorer, ds, split, out_dir, record, val_scores=scorer.score_features(f_val))


def add_train_arguments(group) -> None:
    """``python -m cxrlib train --method wscxr`` options (``--epochs`` sets the meta-epochs)."""
    group.add_argument("--k", type=int, default=None, help="labelled anomaly images (default 16)")
    group.add_argument("--retention", type=float, default=None, help="mining retention rate r (default 0.2)")
    group.add_argument("--no-mining", action="store_true", help="ablation: keep every anomaly feature")
    group.add_argument("--no-mixing", action="store_true", help="ablation: prototypes themselves as anomalies")
    feature_arguments(group)


def train_from_args(args) -> Path:
    """``python -m cxrlib train --method wscxr --k K``: see :mod:`cxrlib.methods` for the contract.
    (Training takes minutes at most, so ``--resume`` simply trains again.)"""
    settings = profile_settings(args.profile, args, WSCXR_PROFILES)
    if args.epochs:
        settings["meta_epochs"] = args.epochs
    if getattr(args, "coreset_ratio", None) is not None:  # --coreset-ratio sets the normal bank's
        settings["normal_ratio"] = args.coreset_ratio
    source, ds = load_data(args)
    split = D.weakly_supervised_protocol(ds, settings["k"], seed=args.split_seed)
    print(f"data {source}: {len(ds)} images at {ds.size} px; {split.protocol}; split (normal, abnormal): "
          f"{ {k: v for k, v in split.summary(ds.labels).items() if sum(v)} }")
    path = fit_wscxr(ds, split, args.out, settings, seed=args.seed, mining=not args.no_mining,
                     mixing=not args.no_mixing, device=args.device, show_progress=not args.no_progress,
                     feature_cache=args.feature_cache, data_source=str(source))
    if path is None:  # a rank other than 0 under torchrun
        return None
    ck = torch.load(path, map_location="cpu", weights_only=False)
    print(f"validation AUROC {ck['val_metrics']['auroc']:.3f}; {ck['train_seconds'] / 60:.1f} min; {ck['backbone_label']}")
    return path


def scorer_from_checkpoint(ck: dict, path, device) -> WscxrScorer:
    """The :class:`WscxrScorer` of a loaded WSCXR ``model.pt`` dict."""
    if "discriminator" not in ck or "features" not in ck:
        raise CheckpointError(f"{path}: not a complete wscxr checkpoint (no discriminator)")
    fx = extractor_from_checkpoint(ck, path, device)
    disc = Discriminator(ck["dim"], ck["dsc_layers"], ck["dsc_hidden"])
    try:
        disc.load_state_dict(ck["discriminator"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: discriminator weights do not match ({e})") from None
    return WscxrScorer(fx, disc, ck["image_size"], ck["threshold"], checkpoint_meta(ck))
