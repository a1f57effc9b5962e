"""Semi-supervised DDAD-ASR (Cai et al., MICCAI 2022 "Dual-distribution discrepancy for anomaly detection in
chest X-rays"; MedIA 86:102794, 2023 "Dual-distribution discrepancy with self-supervised refinement").

Two ensembles of ``K = 3`` reconstruction networks (:mod:`cxrlib.methods.ddad.networks`: AE, MemAE or AE-U):

* the **normative distribution module** (NDM, official mode ``b``) is trained on the labelled normal images only;
* the **unknown distribution module** (UDM, official mode ``a``) on the normal images *plus* an unlabelled pool
  that holds anomalies at some rate (:func:`cxrlib.data.semi_supervised_protocol`).

On a normal region both modules agree; on an anomalous region the NDM has never seen anything like it and its
members disagree with each other and with the UDM, which has seen similar images in the pool. Per pixel
(official ``test.py``), with ``B_k`` the NDM and ``A_k`` the UDM reconstructions and ``mu`` their means:

* ``rec   = (x - mu_B)^2``                         (the ensemble's reconstruction error)
* ``intra = std_k(B_k)``                           (DDAD Eq. 4, intra-discrepancy, unbiased std)
* ``inter = |mu_A - mu_B|``                        (DDAD Eq. 3, inter-discrepancy)

For AE-U each is divided by the NDM's predicted variance ``var = mean_k exp(logvar_k)``
(``rec / var``, ``intra / sqrt(var)``, ``inter / sqrt(var)``). The image score is the mean of the map.

**ASR-Net** (DDAD-ASR Sec. 3.3) refines the maps: a small conv net takes ``[inter, intra]`` (``R_dual``) or
``[intra]`` (``R_intra``) and segments *synthetic* anomalies (:func:`synthetic_anomalies`: with p = 0.5 a square
of another normal image blended in with alpha ~ U(0, 1), as the official ``SelfAnomalyDataset``), trained with the
focal loss (:func:`focal_loss`). Its image score is the mean of the softmax anomaly channel.

Recipe (official ``cfgs/*.yaml``): 250 epochs per network, batch 64, Adam lr 5e-4, betas (0.5, 0.999); ASR-Net
100 epochs, batch 8, lr 1e-4, weight decay 1e-4. Model selection: none (the last epoch, as officially; the
official "best" ASR number is chosen on test, which this project does not do). The decision threshold of every
score is chosen on the validation split (max accuracy).

Training writes one checkpoint per network (``udm0.pt`` ... ``ndm2.pt``, ``refine.pt``) atomically, at most every
``SAVE_EVERY_S`` seconds and at the end of each network; ``resume=True`` continues exactly (every epoch's
randomness follows from ``(seed, network, epoch)``). ``model.pt`` holds all seven networks, the chosen score
kind and the validation thresholds of every kind.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrlib import data as D
from cxrlib import distributed as dist
from cxrlib import metrics as M
from cxrlib import precision as P
from cxrlib.precision import PRECISIONS
from cxrlib.checkpoint import (FORMAT_VERSION, CheckpointError, TrainingDivergedError, atomic_torch_save,
                               matching_model)
from cxrlib.data import DataError
from cxrlib.methods import load_scorer
from cxrlib.utils import get_device, progress, repo_root

from ...checkpoint import ConfigRecord
from .networks import BACKBONES, RefineNet, build_backbone, heteroscedastic_loss, memory_entropy

__all__ = ["DDADConfig", "DDADScorer", "SCORES", "ddad_config", "checkpoint_mismatch", "default_run_dir",
           "focal_loss", "synthetic_anomalies", "discrepancy_maps", "fit_ddad", "finalize_ddad", "train_or_load",
           "evaluate_kinds", "add_train_arguments", "train_from_args", "scorer_from_checkpoint", "network_names",
           "reuse_ndm", "ndm_finished"]

#: Score kinds: ensemble reconstruction error, intra-, inter-discrepancy, ASR-Net refined map.
SCORES = ("rec", "intra", "inter", "asr")
#: Checkpoint at most this often within a network (plus at its end), in seconds.
SAVE_EVERY_S = 60.0


@dataclass(frozen=True)
class DDADConfig(ConfigRecord):
    """Everything that defines a DDAD run. Defaults = the official recipe (``cfgs/RSNA_*.yaml``).

    ``n_unlabelled``: size of the unlabelled pool. The official RSNA setting pairs 3851 labelled normals with a
    pool of 4000 (about 1 : 1); here the pool's normal images come out of the 999 development-split training
    normals, so a pool of 700 at rate 0.6 (420 pneumonia + 280 normal) leaves 719 labelled normals: again
    about 1 : 1.
    """

    backbone: str = "ae"
    score: str = "asr"
    image_size: int = 64
    latent: int = 16
    width: float = 1.0
    hidden: int = 2048
    mem_dim: int = 25
    shrink_thres: float = 0.0
    entropy_weight: float = 2e-4
    ensemble: int = 3
    epochs: int = 250
    batch_size: int = 64
    lr: float = 5e-4
    betas: tuple = (0.5, 0.999)
    weight_decay: float = 0.0
    n_unlabelled: int = 700
    anomaly_rate: float = 0.6
    refine_input: str = "dual"
    refine_epochs: int = 100
    refine_batch_size: int = 8
    refine_lr: float = 1e-4
    refine_weight_decay: float = 1e-4
    refine_mid: int = 128
    anomaly_prob: float = 0.5
    focal_gamma: float = 2.0
    #: training arithmetic (:mod:`cxrlib.precision`): ``fp32`` (the official code), ``bf16`` (autocast mixed
    #: precision: weights, optimiser state and every loss stay fp32; convolutions and linear maps run in bfloat16)
    #: or ``fp16`` (autocast with a gradient scaler, for GPUs without fast bf16). Scoring is always fp32.
    precision: str = "fp32"
    #: train with NHWC tensors (oneDNN's preferred layout on CPU); the same network, a faster memory layout.
    channels_last: bool = False

    _TUPLE_FIELDS = ("betas",)

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; choose one of {', '.join(SCORES)}")
        if self.refine_input not in ("dual", "intra"):
            raise ValueError(f"refine_input={self.refine_input!r}: 'dual' ([inter, intra]) or 'intra'")
        if self.ensemble < 2:
            raise ValueError(f"ensemble={self.ensemble}: the intra-discrepancy needs at least 2 networks")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: one of {', '.join(PRECISIONS)}")


    def replace(self, **overrides) -> "DDADConfig":
        return dataclasses.replace(self, **overrides)

    def training_dict(self) -> dict[str, Any]:
        """The settings the trained weights depend on (all but the reported score kind)."""
        d = self.to_dict()
        d.pop("score")
        return d


def ddad_config(profile: str = "quick", **overrides) -> DDADConfig:
    """The :class:`DDADConfig` of a profile.

    - ``full``: the official recipe in fp32 (DDAD's 64-px networks are small enough for a CPU).
    - ``cpu``: the same recipe (epochs, batches, learning rates, networks) trained in bf16 mixed precision with
      channels-last tensors: 1.4-1.7x (backbones) and 1.9-2.3x (ASR-Net) more training images per second on this
      project's 2-core CPU (``benchmarks/results/ddad_speed.md``), about an hour per configuration per core.
    - ``quick``: the embedded sample for CI and a first look: the official backbones with a narrower hidden
      layer (512), 10 epochs per network at batch 16 and lr 1e-3 (more steps for the same time), a pool of 100
      (rate 0.6), and a 32-channel ASR-Net for 4 epochs.
    """
    if profile == "full":
        cfg = DDADConfig()
    elif profile == "cpu":
        cfg = DDADConfig(precision="bf16", channels_last=True)
    elif profile == "quick":
        cfg = DDADConfig(hidden=512, epochs=10, batch_size=16, lr=1e-3, n_unlabelled=100, refine_epochs=4,
                         refine_mid=32, refine_batch_size=16)
    else:
        raise ValueError(f"unknown profile {profile!r}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return cfg.replace(**overrides) if overrides else cfg


# ----------------------------------------------------------------------------------------- building blocks
def to_model_range(x01):
    """[0, 1] -> [-1, 1] (the official ``Normalize(0.5, 0.5)``)."""
    return x01 * 2 - 1


def _images_tensor(ds, idx, size: int):
    if ds.size != size:
        raise ValueError(f"{ds.source}: images are {ds.size} px but DDAD expects {size} px")
    return to_model_range(torch.from_numpy(ds.as_float(idx))).contiguous()


def focal_loss(logits, target, gamma: float = 2.0):
    """Focal loss (Lin et al., ICCV 2017, Eq. 5, alpha = 1) on the softmax of two-class logits, averaged over
    pixels: ``mean(-(1 - p_t)^gamma * log p_t)`` with ``p_t`` the probability of the true class.

    The official ASR-Net loss is the same apart from a 1e-5 label smoothing inside the log; here ``log p_t``
    comes from ``log_softmax`` (no smoothing needed for stability).

    Args:
        logits: ``(B, C, H, W)``; target: ``(B, H, W)`` integer class per pixel.
    Returns:
        scalar.
    """
    logp = torch.log_softmax(logits, dim=1).gather(1, target[:, None].long())[:, 0]
    return (-(1 - logp.exp()) ** gamma * logp).mean()


def synthetic_anomalies(x, pool, idx, generator, p: float = 0.5, core: float = 0.8, min_frac: float = 0.05,
                        max_frac: float = 0.2):
    """ASR-Net's self-supervised anomalies (official ``anomaly_data.SelfAnomalyDataset.generate_anomaly``).

    With probability ``p`` per image: a square of half-width ``w ~ U{round(min_frac S), ..., round(max_frac S) - 1}``
    centred at ``c ~ U{int(o), ..., int(o + core S) - 1}`` per axis (``o = (1 - core) S / 2``: the central 80 %),
    clipped to the image, is replaced by ``(1 - alpha) x + alpha src`` with ``alpha ~ U(0, 1)`` and ``src`` the same
    square of *another* image of ``pool``. The label mask is that square (``alpha > 0``).

    Args:
        x: ``(B, 1, S, S)`` images; pool: ``(N, 1, S, S)``, ``N >= 2``; idx: ``(B,)`` index of each ``x`` in
            ``pool`` (the source is never the image itself); generator: ``torch.Generator``.
    Returns:
        ``(x_synth (B, 1, S, S), mask (B, S, S) int64)``.
    """
    b, s = x.shape[0], x.shape[-1]
    n = len(pool)
    if n < 2:
        raise ValueError("synthetic anomalies need at least 2 images (the source is another image)")
    lo, hi = int((1 - core) * s / 2), int((1 - core) * s / 2 + core * s)
    w_lo, w_hi = int(np.round(min_frac * s)), int(np.round(max_frac * s))
    apply = torch.rand(b, generator=generator) < p
    centres = torch.randint(lo, hi, (b, 2), generator=generator)
    widths = torch.randint(w_lo, w_hi, (b,), generator=generator)
    alphas = torch.rand(b, generator=generator)
    src = torch.randint(0, n - 1, (b,), generator=generator)
    src = src + (src >= torch.as_tensor(idx)).long()  # uniform over the other n - 1 images
    blend = torch.zeros(b, 1, s, s, dtype=x.dtype)
    for i in torch.nonzero(apply).flatten().tolist():
        (c0, c1), w = centres[i].tolist(), int(widths[i])
        blend[i, :, max(c0 - w, 0):min(c0 + w, s), max(c1 - w, 0):min(c1 + w, s)] = alphas[i]
    blend = blend.to(x.device)
    x_synth = (1 - blend) * x + blend * pool[src.to(pool.device)].to(x.device)
    return x_synth, (blend[:, 0] > 0).long()


def discrepancy_maps(x, udm, ndm, ndm_var=None) -> dict:
    """DDAD's pixel maps from the two ensembles' reconstructions (official ``test.py evaluate``).

    Args:
        x: ``(B, 1, H, W)`` input; udm: ``(K_A, B, 1, H, W)`` UDM reconstructions; ndm: ``(K_B, B, 1, H, W)``
            NDM reconstructions; ndm_var: ``(B, 1, H, W)`` mean predicted variance of the NDM (AE-U) or None.
    Returns:
        ``{"rec", "intra", "inter"}``, each ``(B, 1, H, W)``.
    """
    mu_a, mu_b = udm.mean(0), ndm.mean(0)
    rec = (x - mu_b) ** 2
    intra = ndm.std(0)  # unbiased (K - 1), as torch.std in the official code
    inter = (mu_a - mu_b).abs()
    if ndm_var is not None:
        sigma = ndm_var.sqrt()
        rec, intra, inter = rec / ndm_var, intra / sigma, inter / sigma
    return {"rec": rec, "intra": intra, "inter": inter}


def refine_inputs(maps: dict, refine_input: str):
    """ASR-Net input ``(B, 2, H, W)`` = ``[inter, intra]`` (``dual``) or ``(B, 1, H, W)`` = ``[intra]``."""
    return torch.cat([maps["inter"], maps["intra"]] if refine_input == "dual" else [maps["intra"]], dim=1)


def _build(cfg: DDADConfig):
    return build_backbone(cfg.backbone, cfg.latent, cfg.width, cfg.hidden, cfg.image_size, cfg.mem_dim,
                          cfg.shrink_thres)


def _build_refine(cfg: DDADConfig):
    return RefineNet(2 if cfg.refine_input == "dual" else 1, cfg.refine_mid)


def _ensemble_outputs(udm_nets, ndm_nets, x, batch_size: int = 64):
    """Eval-mode reconstructions of both ensembles for ``x`` ``(N, 1, H, W)``, batched: ``(udm (K_A, N, 1, H, W),
    ndm (K_B, N, 1, H, W), ndm_var (N, 1, H, W) or None)``."""
    udm, ndm, var = [], [], []
    with torch.no_grad():
        for net in (*udm_nets, *ndm_nets):
            net.eval()
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            udm.append(torch.stack([net(xb)["recon"] for net in udm_nets]))
            outs = [net(xb) for net in ndm_nets]
            ndm.append(torch.stack([o["recon"] for o in outs]))
            if "logvar" in outs[0]:
                var.append(torch.stack([o["logvar"].exp() for o in outs]).mean(0))
    return torch.cat(udm, 1), torch.cat(ndm, 1), (torch.cat(var) if var else None)


def _train_context(cfg: DDADConfig, device):
    """The autocast context of a training forward pass (a no-op in fp32)."""
    return P.autocast(cfg.precision, torch.device(device).type)


def _layout(t, cfg: DDADConfig):
    """A network or a 4-d batch in the training memory layout of ``cfg``."""
    return t.to(memory_format=torch.channels_last) if cfg.channels_last else t


def _adam(params, lr, betas, weight_decay):
    try:  # the fused CPU kernel is ~10 % faster per iteration here (4.4M parameters per network)
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)


def _check_finite(terms: dict, where: str, ckpt: Path):
    for name, v in terms.items():
        v = float(v)
        if not math.isfinite(v):
            kept = ckpt if ckpt.exists() else "(none yet)"
            raise TrainingDivergedError(f"{where}: loss term '{name}' is {v}; training stopped. The last good "
                                        f"checkpoint is {kept}; lower the learning rate or resume from it")


# ---------------------------------------------------------------------------------------------- training

def network_names(k: int = 3) -> list[str]:
    """Network file stems in training order: the UDM (official mode a) x k, the NDM (mode b) x k, ASR-Net."""
    return [f"udm{i}" for i in range(k)] + [f"ndm{i}" for i in range(k)] + ["refine"]


def _describe(name: str, k: int) -> str:
    if name == "refine":
        return "ASR-Net"
    role = "UDM (normal + unlabelled)" if name.startswith("udm") else "NDM (normal only)"
    return f"{role} network {int(name[3:]) + 1}/{k}"


def _net_seed(seed: int, name: str) -> int:
    return seed * 1000 + {"udm": 0, "ndm": 100, "ref": 200}[name[:3]] + (int(name[3:]) if name[3:].isdigit() else 0)


class _Budget:
    """Stop after ``epochs`` epochs in this call, summed over networks (tests and staged runs)."""

    def __init__(self, epochs):
        self.left = math.inf if epochs is None else int(epochs)


#: Settings that only shape the unlabelled pool: the NDM, trained on the labelled normals alone, ignores them.
POOL_FIELDS = ("n_unlabelled", "anomaly_rate")


def _images_fingerprint(x) -> str:
    """SHA-1 of a training tensor's bytes: two runs' networks saw the same images in the same order iff equal."""
    return hashlib.sha1(x.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def _load_state(path: Path, cfg: DDADConfig, seed: int, device):
    state = torch.load(path, map_location=device, weights_only=False)
    if state.get("cfg") != cfg.training_dict() or state.get("seed") != seed:
        raise CheckpointError(f"{path}: was written by another run (configuration or seed differ); use a new "
                              f"--out folder or the same settings")
    return state


def _train_network(name, cfg, net, opt, x_train, path, seed, device, epochs, run_epoch, show_progress, log,
                   budget, log_every, on_finish=None):
    """The epoch loop every DDAD network shares: resume from ``path``, epoch ``e``'s randomness seeded by
    ``(seed, network, e)`` (so resuming is exact), atomic checkpoints at most every :data:`SAVE_EVERY_S` and at the
    end, the epoch budget, progress bar and log lines.

    ``run_epoch(epoch, generator) -> {term: mean over the epoch}`` trains one epoch; ``on_finish(state)`` runs after
    the last one (before its checkpoint). Returns the state; ``state["finished"]`` is False when the budget ran
    out first.
    """
    what = _describe(name, cfg.ensemble)
    fingerprint = _images_fingerprint(x_train)
    state = {"name": name, "cfg": cfg.training_dict(), "seed": seed, "epoch": 0, "history": [], "finished": False,
             "train_seconds": 0.0, "n_train": len(x_train), "images_sha1": fingerprint}
    if path.exists():
        state = _load_state(path, cfg, seed, device)
        if state.get("images_sha1", fingerprint) != fingerprint:  # older checkpoints have no fingerprint
            raise CheckpointError(f"{path}: was trained on other images than this run's ({what}); use a new "
                                  f"--out folder or the same data and split")
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        if state["finished"]:
            return state
        log(f"{what}: resumed at epoch {state['epoch']}")

    def save():
        atomic_torch_save({**state, "net": net.state_dict(), "opt": opt.state_dict()}, path)

    # the thread counts this network trained with: they change the float sums (a resumed run may differ)
    state["threads"] = sorted({*state.get("threads", []), torch.get_num_threads()})
    last_save = time.time()
    bar = progress(range(state["epoch"], epochs), enabled=show_progress, desc=what, initial=state["epoch"],
                   total=epochs)
    for epoch in bar:
        if budget.left <= 0:
            save()
            return state
        t0 = time.time()
        g = torch.Generator().manual_seed(_net_seed(seed, name) * 100_003 + epoch)
        torch.manual_seed(_net_seed(seed, name) * 100_003 + epoch)
        net.train()
        means = run_epoch(epoch, g)
        seconds = time.time() - t0
        state["history"].append({"epoch": epoch, "seconds": seconds, **means})
        state["epoch"], state["train_seconds"] = epoch + 1, state["train_seconds"] + seconds
        budget.left -= 1
        if show_progress:
            bar.set_postfix({k.split()[0]: f"{v:.4g}" for k, v in means.items()})
        if (epoch + 1) % log_every == 0 or epoch == 0 or epoch + 1 == epochs:
            log(f"{what} epoch {epoch + 1}/{epochs}  " + "  ".join(f"{k} {v:.4g}" for k, v in means.items())
                + f"  ({seconds:.2f} s/epoch)")
        state["finished"] = epoch + 1 == epochs
        if state["finished"] and on_finish is not None:
            on_finish(state)
        if state["finished"] or time.time() - last_save > SAVE_EVERY_S:
            save()
            last_save = time.time()
    return state


def _fit_backbone(name, cfg, x_train, path, seed, device, show_progress, log, budget, x_val=None, y_val=None):
    """Train (or resume) one reconstruction network on ``x_train`` ``(N, 1, S, S)`` in [-1, 1] (squared error;
    MemAE adds the entropy of its memory weights, AE-U is trained with the heteroscedastic loss). Returns
    ``(net, state)``; ``state["finished"]`` is False when the budget ran out first."""
    what = _describe(name, cfg.ensemble)
    torch.manual_seed(_net_seed(seed, name))
    net = _layout(_build(cfg).to(device), cfg)
    opt = _adam(net.parameters(), cfg.lr, cfg.betas, cfg.weight_decay)
    scaler = P.grad_scaler(cfg.precision, torch.device(device).type)  # fp16 only; its scale restarts on resume
    n_iter = len(x_train) // cfg.batch_size  # the official loader drops the last partial batch (BatchNorm)
    if n_iter == 0:
        raise ValueError(f"{what}: {len(x_train)} training images, fewer than one batch of {cfg.batch_size}")

    def run_epoch(epoch, g):
        order = torch.randperm(len(x_train), generator=g).to(x_train.device)
        sums: dict[str, float] = {}
        for it in range(n_iter):
            x = _layout(x_train[order[it * cfg.batch_size:(it + 1) * cfg.batch_size]], cfg)
            with _train_context(cfg, device):
                out = net(x)
            out = {k: v.float() for k, v in out.items()}  # losses in fp32 whatever the training precision
            if cfg.backbone == "aeu":
                loss, weighted, reg = heteroscedastic_loss(out["recon"], out["logvar"], x)
                terms = {"weighted squared error": weighted, "mean log-variance": reg}
            else:
                mse = ((out["recon"] - x) ** 2).mean()
                terms = {"squared error": mse}
                loss = mse
                if cfg.backbone == "memae":
                    ent = memory_entropy(out["att"])
                    terms["memory entropy"] = ent
                    loss = mse + cfg.entropy_weight * ent
            terms = {k: float(v.detach()) for k, v in terms.items()}
            _check_finite({**terms, "total": float(loss.detach())},
                          f"{what}, epoch {epoch + 1}, iteration {it}", path)
            opt.zero_grad(set_to_none=True)
            P.backward_step(loss, opt, scaler)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
        return {k: v / n_iter for k, v in sums.items()}

    def on_finish(state):
        if x_val is not None:
            state["val_auroc_rec"] = _single_net_val_auroc(net, cfg, x_val, y_val)
            log(f"{what}: finished in {state['train_seconds'] / 60:.1f} min; its own reconstruction-error "
                f"validation AUROC {state['val_auroc_rec']:.3f}")

    state = _train_network(name, cfg, net, opt, x_train, path, seed, device, cfg.epochs, run_epoch, show_progress,
                           log, budget, log_every=25, on_finish=on_finish)
    return net, state


def _single_net_val_auroc(net, cfg, x_val, y_val) -> float:
    net.eval()
    with torch.no_grad():
        s = []
        for i in range(0, len(x_val), 64):
            out = net(x_val[i:i + 64])
            err = (out["recon"] - x_val[i:i + 64]) ** 2
            if "logvar" in out:
                err = err * torch.exp(-out["logvar"])
            s.append(err.mean((1, 2, 3)).cpu())
    return M.auroc(y_val, torch.cat(s).numpy())


def _fit_refine(cfg, udm_nets, ndm_nets, x_train, path, seed, device, show_progress, log, budget):
    """Train (or resume) ASR-Net on synthetic anomalies of ``x_train`` (the labelled normals) with the focal loss."""
    name, what = "refine", _describe("refine", cfg.ensemble)
    torch.manual_seed(_net_seed(seed, name))
    net = _layout(_build_refine(cfg).to(device), cfg)
    opt = _adam(net.parameters(), cfg.refine_lr, cfg.betas, cfg.refine_weight_decay)
    scaler = P.grad_scaler(cfg.precision, torch.device(device).type)
    bs = cfg.refine_batch_size
    n_iter = len(x_train) // bs
    if n_iter == 0:
        raise ValueError(f"{what}: {len(x_train)} training images, fewer than one batch of {bs}")

    def run_epoch(epoch, g):
        order = torch.randperm(len(x_train), generator=g)
        # one epoch of synthetic images, and their discrepancy maps in large no-grad batches (cheap next to the
        # 128-channel ASR-Net, which dominates the time)
        x_syn, mask = synthetic_anomalies(x_train[order.to(x_train.device)], x_train, order, g, p=cfg.anomaly_prob)
        maps = discrepancy_maps(x_syn, *_ensemble_outputs(udm_nets, ndm_nets, x_syn))
        net_in = _layout(refine_inputs(maps, cfg.refine_input), cfg)
        mask = mask.to(device)
        net.train()  # _ensemble_outputs put the networks it ran in eval mode; ASR-Net trains
        total = 0.0
        for it in range(n_iter):
            sl = slice(it * bs, (it + 1) * bs)
            with _train_context(cfg, device):
                logits = net(net_in[sl])
            loss = focal_loss(logits.float(), mask[sl], cfg.focal_gamma)
            _check_finite({"focal": float(loss.detach())}, f"{what}, epoch {epoch + 1}, iteration {it}", path)
            opt.zero_grad(set_to_none=True)
            P.backward_step(loss, opt, scaler)
            total += float(loss.detach())
        return {"focal": total / n_iter}

    state = _train_network(name, cfg, net, opt, x_train, path, seed, device, cfg.refine_epochs, run_epoch,
                           show_progress, log, budget, log_every=10)
    return net, state


def reuse_ndm(src_dir, out_dir, cfg: DDADConfig, seed: int, x_normal, log=print) -> list[str]:
    """Copy the finished NDM networks of another run into ``out_dir`` instead of training them again.

    The NDM sees the labelled normals only, so two runs that differ in nothing but the unlabelled pool (WSCXR
    Table I's K = 2, 4, 8, 16 protocol: the pool is K anomalies, the normals stay the same) train bit-identical
    NDM networks. Each source network must be finished and have the same configuration apart from
    :data:`POOL_FIELDS`, the same seed and the same training images (SHA-1 of the tensor, in order); anything else
    is an error, never a silent retrain. The copy records ``reused_from`` and keeps its training time.

    Args:
        src_dir: the other run's folder (``ndm*.pt``); out_dir: this run's; x_normal: ``(N, 1, S, S)`` this
            run's NDM training images.
    Returns:
        the copied network names.
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    mine = {k: v for k, v in cfg.training_dict().items() if k not in POOL_FIELDS}
    fingerprint = _images_fingerprint(x_normal)
    copied = []
    for name in (n for n in network_names(cfg.ensemble) if n.startswith("ndm")):
        src = src_dir / f"{name}.pt"
        if not src.exists():
            raise CheckpointError(f"{src}: missing; --ndm-from needs a run whose NDM networks are trained")
        state = torch.load(src, map_location="cpu", weights_only=False)
        theirs = {k: v for k, v in state.get("cfg", {}).items() if k not in POOL_FIELDS}
        problem = ("its training is unfinished" if not state.get("finished") else
                   "its configuration differs (apart from the pool)" if theirs != mine else
                   f"its seed is {state.get('seed')}, this run's {seed}" if state.get("seed") != seed else
                   "it has no image fingerprint (trained by older code)" if "images_sha1" not in state else
                   "it was trained on other normal images" if state["images_sha1"] != fingerprint else None)
        if problem:
            raise CheckpointError(f"{src}: cannot reuse this NDM network: {problem}")
        atomic_torch_save({**state, "cfg": cfg.training_dict(), "reused_from": str(src)}, out_dir / f"{name}.pt")
        copied.append(name)
    log(f"NDM networks {', '.join(copied)} reused from {src_dir} (same normals, configuration and seed)")
    return copied


def fit_ddad(cfg: DDADConfig, ds, split, out_dir, seed: int = 0, resume: bool = False, device=None,
             show_progress: bool = True, log=print, max_epochs: int | None = None, ndm_from=None) -> dict:
    """Train the 2 x ``cfg.ensemble`` reconstruction networks and ASR-Net.

    Args:
        cfg: :class:`DDADConfig`; ds: :class:`~cxrlib.data.CXRDataset` at ``cfg.image_size``;
        split: a :func:`~cxrlib.data.semi_supervised_protocol` split (``train`` = labelled normals,
            ``unlabelled`` = the pool; the UDM trains on both).
        out_dir: network checkpoints ``udm*.pt``, ``ndm*.pt``, ``refine.pt`` go here.
        resume: continue from those files (finished networks are kept). Without it, existing network files
            are replaced.
        max_epochs: stop after this many epochs in this call, summed over the networks (tests, staged runs).
        ndm_from: a run folder whose finished NDM networks this run takes over (:func:`reuse_ndm`) rather than
            trains; networks already finished in ``out_dir`` are kept.

    Returns:
        ``{"finished", "train_seconds", "states": {name: state without weights}}``.
    """
    if len(split.unlabelled) == 0:
        raise DataError("DDAD needs an unlabelled pool: the split has none (use semi_supervised_protocol)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # under torchrun the reconstruction networks are spread over the processes (network i on rank i mod W), each
    # trained exactly as one process trains it; rank 0 then loads them all and trains ASR-Net
    ctx = dist.context()
    device = dist.local_device(get_device(device), ctx)
    P.check_cpu_bf16(cfg.precision, device, f"training ddad ({cfg.image_size} px)")
    if not ctx.is_main:
        log = (lambda rank: lambda m: print(f"[rank {rank}] {m}", flush=True))(ctx.rank)
        show_progress = False
    names = network_names(cfg.ensemble)
    if not resume and ctx.is_main:
        for n in names + ["model"]:
            (out_dir / f"{n}.pt").unlink(missing_ok=True)
    dist.barrier(ctx)
    x_normal = _images_tensor(ds, split.train, cfg.image_size).to(device)
    x_udm = _images_tensor(ds, np.concatenate([split.train, split.unlabelled]), cfg.image_size).to(device)
    x_val, y_val = _images_tensor(ds, split.val, cfg.image_size).to(device), ds.labels[split.val]
    if ndm_from is not None and ctx.is_main and not ndm_finished(out_dir, cfg.ensemble):
        reuse_ndm(ndm_from, out_dir, cfg, seed, x_normal, log)
    dist.barrier(ctx)
    budget = _Budget(max_epochs)
    nets, states = {}, {}
    backbones = names[:-1]

    def fit(name, show, budget):
        x = x_udm if name.startswith("udm") else x_normal
        nets[name], states[name] = _fit_backbone(name, cfg, x, out_dir / f"{name}.pt", seed, device, show, log,
                                                 budget, x_val, y_val)
        return states[name]["finished"]

    for name in backbones[ctx.rank::ctx.world]:
        if not fit(name, show_progress, budget):
            break
    if ctx.enabled:
        dist.barrier(ctx)  # every rank's networks are written (finished or stopped by the budget)
        if not ctx.is_main:
            return {"finished": all(s["finished"] for s in states.values()), "states": _strip(states),
                    "train_seconds": sum(s["train_seconds"] for s in states.values())}
        if not all(_network_finished(out_dir / f"{n}.pt") for n in backbones):
            return {"finished": False, "states": _strip(states)}
        for name in backbones:  # the other ranks' networks: finished, so this only loads them
            if name not in nets:
                fit(name, False, _Budget(None))
    if not all(s["finished"] for s in states.values()) or len(states) < len(backbones):
        return {"finished": False, "states": _strip(states)}
    udm = [nets[n] for n in names if n.startswith("udm")]
    ndm = [nets[n] for n in names if n.startswith("ndm")]
    for p in (p for n in (*udm, *ndm) for p in n.parameters()):
        p.requires_grad_(False)
    nets["refine"], states["refine"] = _fit_refine(cfg, udm, ndm, x_normal, out_dir / "refine.pt", seed, device,
                                                   show_progress, log, budget)
    return {"finished": states["refine"]["finished"], "states": _strip(states),
            "train_seconds": sum(s["train_seconds"] for s in states.values())}


def _network_finished(path: Path) -> bool:
    return path.exists() and bool(torch.load(path, map_location="cpu", weights_only=False).get("finished"))


def ndm_finished(run_dir, ensemble: int = 3) -> bool:
    """Whether ``run_dir`` holds all ``ensemble`` NDM network checkpoints, each trained to the end."""
    return all(_network_finished(Path(run_dir) / f"{n}.pt") for n in network_names(ensemble) if n.startswith("ndm"))


def _strip(states: dict) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk not in ("net", "opt")} for k, v in states.items()}


# ------------------------------------------------------------------------------------------------ scoring
class DDADScorer:
    """DDAD-ASR at test time: images in, one score per image (higher = more anomalous) and maps out.

    ``kind`` (one of :data:`SCORES`) is the score of :meth:`score` and ``threshold`` its validation threshold;
    :meth:`scores` and :meth:`maps` give every kind, :meth:`with_kind` switches kind and threshold together.
    """

    method = "ddad"

    def __init__(self, cfg: DDADConfig, udm_nets, ndm_nets, refine_net, kind: str | None = None,
                 thresholds: dict | None = None, meta: dict | None = None, device=None):
        self.cfg, self.udm, self.ndm, self.refine = cfg, list(udm_nets), list(ndm_nets), refine_net
        self.kind = kind or cfg.score
        if self.kind not in SCORES:
            raise ValueError(f"unknown score {self.kind!r}; choose one of {', '.join(SCORES)}")
        self.thresholds = dict(thresholds or {})
        self.meta = meta or {}
        self.device = device
        self.image_size = cfg.image_size
        for net in (*self.udm, *self.ndm, self.refine):
            net.eval()

    @property
    def threshold(self):
        return self.thresholds.get(self.kind)

    def with_kind(self, kind: str) -> "DDADScorer":
        """The same networks scoring ``kind`` with that kind's validation threshold."""
        return DDADScorer(self.cfg, self.udm, self.ndm, self.refine, kind, self.thresholds, self.meta, self.device)

    def _x(self, images):
        a = np.asarray(images)
        if a.ndim == 3:
            a = a[:, None]
        s = self.image_size
        if a.ndim != 4 or a.shape[1] != 1 or a.shape[2:] != (s, s):
            raise ValueError(f"expected images of shape (N, {s}, {s}), got {a.shape}")
        x = torch.from_numpy(a.astype(np.float32))
        x = x / 255.0 if a.dtype == np.uint8 else x
        return to_model_range(x).to(self.device or "cpu")

    def outputs(self, images, batch_size: int = 64) -> dict:
        """Everything for ``images`` (uint8 ``(N, S, S)`` or float ``(N, 1, S, S)`` in [0, 1]), as numpy:
        ``maps`` {kind: ``(N, S, S)``} (``asr``: the refined anomaly probability), ``udm_mean``, ``ndm_mean``
        ``(N, S, S)`` in [0, 1], ``ndm_sigma`` (AE-U: ``sqrt(var)`` in model units, else None)."""
        x_all = self._x(images)
        keep: dict[str, list] = {k: [] for k in (*SCORES, "udm_mean", "ndm_mean", "ndm_sigma")}
        with torch.no_grad():
            for i in range(0, len(x_all), batch_size):
                x = x_all[i:i + batch_size]
                udm, ndm, var = _ensemble_outputs(self.udm, self.ndm, x, batch_size)
                maps = discrepancy_maps(x, udm, ndm, var)
                maps["asr"] = torch.softmax(self.refine(refine_inputs(maps, self.cfg.refine_input)), 1)[:, 1:]
                for k in SCORES:
                    keep[k].append(maps[k][:, 0].cpu())
                keep["udm_mean"].append(((udm.mean(0)[:, 0] + 1) / 2).cpu())
                keep["ndm_mean"].append(((ndm.mean(0)[:, 0] + 1) / 2).cpu())
                if var is not None:
                    keep["ndm_sigma"].append(var[:, 0].sqrt().cpu())
        out = {"maps": {k: torch.cat(keep[k]).numpy() for k in SCORES}}
        for k in ("udm_mean", "ndm_mean"):
            out[k] = torch.cat(keep[k]).numpy()
        out["ndm_sigma"] = torch.cat(keep["ndm_sigma"]).numpy() if keep["ndm_sigma"] else None
        return out

    def maps(self, images, batch_size: int = 64) -> dict:
        """{kind: ``(N, S, S)``} pixel maps of every score kind."""
        return self.outputs(images, batch_size)["maps"]

    def scores(self, images, batch_size: int = 64) -> dict:
        """{kind: ``(N,)``}: the image score of every kind, the mean of its map."""
        return {k: v.mean(axis=(1, 2)).astype(np.float64) for k, v in self.maps(images, batch_size).items()}

    def score(self, images, batch_size: int = 64) -> np.ndarray:
        """Anomaly score per image of the scorer's kind, shape ``(N,)``; higher = more anomalous."""
        return self.scores(images, batch_size)[self.kind]

    def anomaly_maps(self, images, batch_size: int = 64) -> np.ndarray:
        """The scorer's kind of map, ``(N, S, S)``."""
        return self.maps(images, batch_size)[self.kind]


def evaluate_kinds(scorer: DDADScorer, ds, idx) -> dict:
    """:func:`cxrlib.metrics.evaluate` of every score kind on ``ds`` rows ``idx``, each at its validation threshold."""
    y = ds.labels[idx]
    s = scorer.scores(ds.images[idx])
    return {k: M.evaluate(y, s[k], val_threshold=scorer.thresholds.get(k)) for k in SCORES}


def _load_nets(cfg: DDADConfig, weights: dict, device):
    udm, ndm = [], []
    for name in network_names(cfg.ensemble)[:-1]:
        net = _build(cfg).to(device)
        net.load_state_dict(weights[name])
        (udm if name.startswith("udm") else ndm).append(net)
    refine = _build_refine(cfg).to(device)
    refine.load_state_dict(weights["refine"])
    return udm, ndm, refine


def finalize_ddad(out_dir, cfg: DDADConfig, ds, split, seed: int = 0, device=None, data_source: str = "",
                  threshold_rule: str = "max_acc") -> Path:
    """Turn finished network checkpoints in ``out_dir`` into ``out_dir/model.pt``: all seven networks, the
    validation threshold (``threshold_rule``) and validation metrics of every score kind, the chosen kind
    (``cfg.score``), per-network histories and times, and the split's description."""
    out_dir, device = Path(out_dir), get_device(device)
    weights, history, seconds, threads = {}, {}, {}, set()
    for name in network_names(cfg.ensemble):
        path = out_dir / f"{name}.pt"
        if not path.exists():
            raise CheckpointError(f"{path}: missing; train (or resume) the run first")
        state = _load_state(path, cfg, seed, device)
        if not state["finished"]:
            raise CheckpointError(f"{path}: training of this network is unfinished; resume it first")
        weights[name], history[name], seconds[name] = state["net"], state["history"], state["train_seconds"]
        threads.update(state.get("threads", []))
    udm, ndm, refine = _load_nets(cfg, weights, device)
    scorer = DDADScorer(cfg, udm, ndm, refine, device=device)
    y_val = ds.labels[split.val]
    s_val = scorer.scores(ds.images[split.val])
    thresholds = {k: M.choose_threshold(y_val, s_val[k], threshold_rule) for k in SCORES}
    val = {k: M.evaluate(y_val, s_val[k], val_threshold=thresholds[k]) for k in SCORES}
    path = out_dir / "model.pt"
    atomic_torch_save({
        "format": FORMAT_VERSION, "method": "ddad", "cfg": cfg.to_dict(), "seed": seed, "split_seed": split.seed,
        "split_version": D.SPLIT_VERSION,
        "backbone": cfg.backbone, "score": cfg.score, "threshold": thresholds[cfg.score], "thresholds": thresholds,
        "threshold_rule": f"{threshold_rule} on the validation split", "val_metrics": val,
        "weights": weights, "history": history, "seconds_per_network": seconds,
        "train_seconds": float(sum(seconds.values())), "train_threads": sorted(threads), "data": data_source,
        "protocol": split.protocol, "split_summary": split.summary(ds.labels),
    }, path)
    return path


# ------------------------------------------------------------------------------------------ command line
def add_train_arguments(group) -> None:
    """``python -m cxrlib train --method ddad`` options."""
    group.add_argument("--backbone", choices=BACKBONES, default="ae", help="reconstruction network (default ae)")
    group.add_argument("--score", choices=SCORES, default="asr",
                       help="score of model.pt: rec, intra, inter or asr (ASR-Net; default). Every kind's "
                            "validation threshold is stored; re-run with --resume and another --score to switch")
    group.add_argument("--n-unlabelled", type=int, default=None,
                       help="size of the unlabelled pool (default: 700 for cpu/full, 100 for quick)")
    group.add_argument("--anomaly-rate", type=float, default=None, help="anomaly rate of the pool (default 0.6)")
    group.add_argument("--refine-input", choices=("dual", "intra"), default=None,
                       help="ASR-Net input: [inter, intra] (dual, default) or [intra]")
    group.add_argument("--refine-epochs", type=int, default=None, help="override the ASR-Net epochs")
    group.add_argument("--batch-size", type=int, default=None,
                       help="override the reconstruction networks' batch (default 64; 16 in quick); small "
                            "training sets such as the phantoms need fewer than 64")
    group.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads (1 is fastest when other jobs share the CPU)")
    group.add_argument("--ndm-from", default=None, metavar="RUN_DIR",
                       help="take the finished NDM networks of another run that differs only in its unlabelled "
                            "pool (checked: configuration, seed, normal images) instead of training them")


def _config_from_args(args) -> DDADConfig:
    return ddad_config(args.profile, backbone=getattr(args, "backbone", None), score=getattr(args, "score", None),
                       n_unlabelled=getattr(args, "n_unlabelled", None),
                       anomaly_rate=getattr(args, "anomaly_rate", None),
                       refine_input=getattr(args, "refine_input", None),
                       refine_epochs=getattr(args, "refine_epochs", None),
                       batch_size=getattr(args, "batch_size", None), epochs=args.epochs,
                       precision=(P.resolve(args.precision, get_device(args.device))
                                  if getattr(args, "precision", None) else None))


def checkpoint_mismatch(ck: dict, args) -> str | None:
    """Why the finished ``model.pt`` dict ``ck`` is not the model that ``train`` with ``args`` trains with this code
    (the differing configuration fields, saved -> now, and seed, split seed or data file), or ``None`` when it is.
    The benchmark asks this before it reuses a run, so a model of an earlier profile definition, another score
    kind or another pool is never scored as the current one."""
    saved = DDADConfig.from_dict(ck["cfg"]).to_dict()
    now = _config_from_args(args).to_dict()
    diff = [f"{k} {v!r} -> {now[k]!r}" for k, v in saved.items() if now[k] != v]
    data = Path(str(D.resolve_data(args.profile, args.data))).name
    for what, was, want in (("seed", ck.get("seed"), args.seed), ("split seed", ck.get("split_seed"), args.split_seed),
                            ("data", Path(str(ck.get("data", ""))).name, data)):
        if was != want:
            diff.append(f"{what} {was!r} -> {want!r}")
    return f"trained with another configuration ({'; '.join(diff)})" if diff else None


def train_from_args(args) -> Path | None:
    """``python -m cxrlib train --method ddad``: see :mod:`cxrlib.methods` for the contract."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    cfg = _config_from_args(args)
    source = D.resolve_data(args.profile, args.data)
    ds = D.load(source, size=cfg.image_size)
    split = D.semi_supervised_protocol(ds, cfg.n_unlabelled, cfg.anomaly_rate, seed=args.split_seed)
    print(f"data {source}: {len(ds)} images at {cfg.image_size} px; {split.protocol}; split (normal, abnormal): "
          f"{ {k: v for k, v in split.summary(ds.labels).items() if sum(v)} }; backbone {cfg.backbone}, "
          f"{torch.get_num_threads()} threads")
    t0 = time.time()
    summary = fit_ddad(cfg, ds, split, args.out, seed=args.seed, resume=args.resume, device=args.device,
                       show_progress=not args.no_progress, ndm_from=getattr(args, "ndm_from", None))
    if not summary["finished"] or not dist.context().is_main:  # under torchrun rank 0 alone finalises
        return None
    print(f"all {len(summary['states'])} networks trained: {summary['train_seconds'] / 60:.1f} min of training "
          f"({(time.time() - t0) / 60:.1f} min in this call)")
    path = finalize_ddad(args.out, cfg, ds, split, seed=args.seed, device=args.device, data_source=str(source))
    ck = torch.load(path, map_location="cpu", weights_only=False)
    print("validation AUROC: " + "  ".join(f"{k} {ck['val_metrics'][k]['auroc']:.3f}" for k in SCORES)
          + f"  (model.pt scores '{cfg.score}')")
    return path


def scorer_from_checkpoint(ck: dict, path, device) -> DDADScorer:
    """The :class:`DDADScorer` of a loaded DDAD ``model.pt`` dict."""
    try:
        cfg = DDADConfig.from_dict(ck["cfg"])
        udm, ndm, refine = _load_nets(cfg, ck["weights"], device)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a complete DDAD checkpoint ({e.__class__.__name__}: {e})") from None
    meta = {k: ck[k] for k in ("seed", "split_seed", "val_metrics", "threshold_rule", "data", "train_seconds",
                               "protocol", "split_summary", "history", "seconds_per_network", "split_version",
                               "train_threads")
            if k in ck}
    return DDADScorer(cfg, udm, ndm, refine, ck["score"], ck["thresholds"], meta, device)


def default_run_dir(profile: str, backbone: str = "ae", seed: int = 0, overridden: bool = False) -> Path:
    """Where :func:`train_or_load` keeps a run: ``runs/<profile>/ddad_s<seed>`` for the profile's AE model, the
    folder of the benchmark table's DDAD row on split 0 (:func:`cxrlib.benchmark.run_dir`), so that notebook 08
    and the table (notebook 09, ``python -m cxrlib benchmark``) train it once; ``ddad_<backbone>_s<seed>``
    otherwise (another backbone, or settings overridden)."""
    name = f"ddad_s{seed}" if backbone == "ae" and not overridden else f"ddad_{backbone}_s{seed}"
    return Path(repo_root()) / "runs" / profile / name


def train_or_load(profile: str = "quick", backbone: str = "ae", data=None, out_dir=None, seed: int = 0,
                  show_progress: bool = True, log=print, **overrides):
    """The notebooks' entry point: train DDAD under ``profile`` on the semi-supervised development split of
    ``data`` (default: the profile's), or reuse the finished run in ``out_dir`` (default: :func:`default_run_dir`)
    if its settings match; an interrupted run is resumed, a finished one of other settings trained again.

    Returns:
        ``(scorer, ds, split)``.
    """
    cfg = ddad_config(profile, backbone=backbone, **overrides)
    source = D.resolve_data(profile, data)
    ds = D.load(source, size=cfg.image_size)
    split = D.semi_supervised_protocol(ds, cfg.n_unlabelled, cfg.anomaly_rate, seed=0)
    out_dir = Path(out_dir or default_run_dir(profile, backbone, seed,
                                                   overridden=any(v is not None for v in overrides.values())))
    model = out_dir / "model.pt"
    if matching_model(model, cfg.to_dict(), seed, source, log) is not None:
        return load_scorer(model), ds, split
    if model.exists():  # another configuration, seed, data or split: its networks cannot be resumed either
        for name in (*network_names(cfg.ensemble), "model"):
            (out_dir / f"{name}.pt").unlink(missing_ok=True)
    resume = False
    if (out_dir / "udm0.pt").exists():
        try:
            _load_state(out_dir / "udm0.pt", cfg, seed, "cpu")
            resume = True
        except CheckpointError:
            pass
    fit_ddad(cfg, ds, split, out_dir, seed=seed, resume=resume, show_progress=show_progress, log=log)
    finalize_ddad(out_dir, cfg, ds, split, seed=seed, data_source=str(source))
    return load_scorer(model), ds, split
