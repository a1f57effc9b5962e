"""Training of the SQUID-family generators (SQUID, SimSID, CRTSC), visible enough for a notebook to show.

One iteration (SQUID Sec. 3.4; SimSID's shared forward):

1. one generator forward on the batch (shared by both steps, as SimSID does: the official SQUID code runs a
   second forward for the D step, a quarter of an iteration's time);
2. **D step** every iteration: ``d_w · [BCE(D(x), 1) + BCE(D(G(x).detach()), 0)]``;
3. **G step** every ``n_critic`` iterations: ``recon_w·MSE + g_w·BCE(D(G(x)), 1) + t_w·MSE(teacher) +
   dist_w·distillation``, then the memory queues take the batch (FIFO).
   On the iterations without a G step the generator forward runs under ``no_grad`` (no wasted graph).

Every epoch: cosine learning-rate step, validation AUROC (model selection on validation only), and an
atomic checkpoint (``last.pt``) from which ``resume=True`` continues exactly. Each epoch re-seeds the global
torch generator from ``(seed, epoch)``, so an epoch is reproducible whether it runs after a resume or not.
A NaN or infinite loss stops training with :class:`TrainingDivergedError`, naming the epoch, iteration and
loss term; the last good checkpoint is kept.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cxrlib import distributed as dist
from cxrlib import metrics as M
from cxrlib import precision as P
from cxrlib.checkpoint import FORMAT_VERSION, CheckpointError, TrainingDivergedError, atomic_torch_save
from cxrlib.utils import get_device, progress, set_seed

from .discriminator import SquidDiscriminator
from .generator import SquidGenerator, from_model_range, to_model_range
from .losses import discriminator_loss, generator_loss

__all__ = ["keeps_epoch", "random_affine", "discriminator_logits", "train_step", "WeightEMA", "fit_squid"]


def keeps_epoch(val_auroc: float, kept_auroc: float, tolerance: float = 0.0) -> bool:
    """Checkpoint rule: keep this epoch when ``val_auroc > kept_auroc - tolerance``. ``tolerance = 0`` is strict
    arg-max; the official SQUID code uses 0.5 AUROC points (0.005 here) and then measures later epochs against
    the newly kept one."""
    return val_auroc > kept_auroc - tolerance


def random_affine(x: torch.Tensor, translate: float, scale: tuple, generator: torch.Generator | None = None):
    """Per-image random translation and scaling (torchvision ``RandomAffine(0, translate, scale)`` drawn
    independently for each image, bilinear, zero fill), vectorised with ``affine_grid``.

    Args:
        x: ``(B, C, H, W)``; translate: max shift as a fraction of the size; scale: ``(lo, hi)``.
    Returns:
        ``(B, C, H, W)``.
    """
    b = x.shape[0]
    u = torch.rand(b, 3, generator=generator).to(x.device)
    s = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    t = (u[:, 1:] * 2 - 1) * translate * 2  # normalised coordinates span [-1, 1]: a shift of f·W is 2f
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = 1 / s
    theta[:, 1, 1] = 1 / s
    theta[:, :, 2] = -t / s[:, None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _images_tensor(ds, idx, size: int) -> torch.Tensor:
    if ds.size != size:
        raise ValueError(f"{ds.source}: images are {ds.size} px but the model expects {size} px")
    return torch.from_numpy(ds.as_float(idx))


@torch.inference_mode()
def discriminator_logits(gen, disc, x01: torch.Tensor, cfg, batch_size: int = 64, device=None,
                         return_recon: bool = False, precision: str = "fp32"):
    """Raw SQUID test statistic ``D(G(x))`` (a logit: high = looks real), batched, eval mode.

    Args:
        x01: ``(N, 1, S, S)`` images in [0, 1].
        precision: the arithmetic of the generator's forward pass (:mod:`cxrlib.precision`): ``"fp32"``
            (default), or ``"bf16"``/``"fp16"`` autocast with channels-last inputs (the models must then be
            channels-last too, see :meth:`SquidScorer.set_precision`). The discriminator always runs in fp32: it
            is a small part of the cost, and a bf16 logit keeps about 3 significant digits, which ties images.
    Returns:
        logits ``(N,)`` (numpy), and the reconstructions ``(N, 1, S, S)`` in [0, 1] if ``return_recon``.
    """
    device = device or next(gen.parameters()).device
    device = torch.device(device)
    gen.eval()
    disc.eval()
    logits, recons = [], []
    for i in range(0, len(x01), batch_size):
        xb = to_model_range(x01[i:i + batch_size].to(device), cfg.normalize)
        if precision != "fp32":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with P.autocast(precision, device.type):
            out = gen(xb)
        logits.append(disc(out["recon"].float()).flatten().cpu())
        if return_recon:
            recons.append(from_model_range(out["recon"].float(), cfg.normalize).clamp(0, 1).contiguous().cpu())
    logits = torch.cat(logits).numpy()
    return (logits, torch.cat(recons)) if return_recon else logits


def _check_finite(terms: dict, where: str, ckpt: Path | None):
    for name, v in terms.items():
        v = float(v.detach()) if hasattr(v, "detach") else float(v)
        if not math.isfinite(v):
            kept = ckpt if ckpt is not None and ckpt.exists() else "(none yet)"
            raise TrainingDivergedError(
                f"{where}: loss term '{name}' is {v}; training stopped. The last good checkpoint is {kept}; "
                f"lower the learning rate or resume from it")


def _autocast(cfg, x: torch.Tensor):
    """The autocast context of a training forward pass (bf16 or fp16, :mod:`cxrlib.precision`); a no-op in fp32."""
    return P.autocast(cfg.precision, x.device.type)


def train_step(gen, disc, opt_g, opt_d, x, cfg, g_step: bool, where: str = "", ckpt: Path | None = None,
               scalers=None) -> dict:
    """One SQUID/SimSID iteration on a batch ``x`` (``(B, 1, S, S)``, already in the model's range).

    D step always; G step (and the memory-queue update) when ``g_step``. With ``cfg.shared_forward`` one
    generator forward serves both (SimSID); otherwise the D step runs its own forward without a graph and the
    G step a fresh one (official SQUID). CRTSC's terms (KL, TSCC) enter through ``cfg``. Returns the loss terms as floats. Raises
    :class:`TrainingDivergedError` on a non-finite term, before any optimiser step with it. ``scalers``: the
    ``(discriminator, generator)`` ``torch.amp.GradScaler`` pair that fp16 needs (:func:`cxrlib.precision.grad_scaler`).
    """
    if cfg.precision == "fp16" and scalers is None:
        raise ValueError("precision 'fp16' needs gradient scalers: pass scalers=(scaler_d, scaler_g)")
    scaler_d, scaler_g = scalers if scalers is not None else (None, None)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # on iterations without a G step no graph is kept through the generator (no wasted backward memory)
    with torch.set_grad_enabled(g_step and cfg.shared_forward), _autocast(cfg, x):
        out = gen(x)
    with _autocast(cfg, x):
        d_real = disc(x)
        d_fake = disc(out["recon"].detach())
    loss_d = discriminator_loss(d_real.float(), d_fake.float(), cfg.d_w)
    _check_finite({"discriminator": loss_d}, where, ckpt)
    opt_d.zero_grad(set_to_none=True)
    P.backward_step(loss_d, opt_d, scaler_d)
    terms = {"d": float(loss_d.detach())}
    if g_step:
        with _autocast(cfg, x):
            if not cfg.shared_forward:
                out = gen(x)
            d_fake_g = disc(out["recon"])
        if cfg.precision != "fp32":  # the losses in fp32
            out = {k: (v.float() if torch.is_tensor(v) else v) for k, v in out.items()}
        # CRTSC's KL term compares D(G(x)) with D(x); D(x) is this iteration's (before the D update),
        # detached, so the G step costs no extra discriminator forward
        loss_g, g_terms = generator_loss(out, x, d_fake_g.float(), cfg, d_real_logits=d_real.detach().float())
        _check_finite({"generator total": loss_g, **g_terms}, where, ckpt)
        opt_g.zero_grad(set_to_none=True)
        P.backward_step(loss_g, opt_g, scaler_g)
        dist.unwrap(gen).update_memory()
        terms.update({k: float(v.detach()) for k, v in g_terms.items()})
    return terms


class WeightEMA:
    """An exponential moving average of a network's weights, the copy that validates and scores
    (``cfg.ema_decay > 0``; Polyak averaging of GAN weights, Yazıcı et al., ICLR 2019).

    After each optimiser step of the trained network, ``update`` moves every parameter of the copy towards it:
    ``a <- d·a + (1 - d)·p`` with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the warm-up keeps the
    random initial weights from dominating the first epochs). Buffers (the in-painting memory queue and its write
    pointer, BatchNorm statistics) are *copied*, not averaged: a running mean of FIFO queue slots or of an integer
    pointer is meaningless, which is why ``torch.optim.swa_utils.AveragedModel`` (it averages buffers too or
    freezes them) is not used.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for a, p in zip(self.model.parameters(), model.parameters()):
            a.lerp_(p.detach(), 1.0 - d)
        for a, b in zip(self.model.buffers(), model.buffers()):
            a.copy_(b)


def fit_squid(cfg, ds, split, out_dir, seed: int = 0, resume: bool = False, device=None, show_progress=True,
              method: str = "squid", data_source: str = "", log=print, max_epochs: int | None = None,
              epoch_callback=None) -> dict:
    """Train a SQUID/SimSID generator and discriminator on ``split.train`` of ``ds``.

    Args:
        cfg: :class:`~cxrlib.methods.squid.config.SquidConfig` (``squid_config`` gives the profiles).
        ds: :class:`~cxrlib.data.CXRDataset` at ``cfg.image_size``; split: :class:`~cxrlib.data.Split`.
        out_dir: checkpoints go here: ``last.pt`` (every epoch, full state), ``best.pt`` (best validation
            AUROC), ``model.pt`` (the final scorer: best weights + score statistics + validation threshold).
            With ``cfg.ema_decay > 0`` the weights that validate and that the checkpoints hold under ``gen`` and
            ``disc`` are the moving averages (:class:`WeightEMA`); ``last.pt`` keeps the trained weights for
            resuming under ``gen_train`` and ``disc_train``.
        resume: continue from ``out_dir/last.pt`` exactly where it stopped.
        max_epochs: stop after this many epochs in total in this call (for tests and staged runs);
            ``cfg.epochs`` still sets the schedule.
        epoch_callback: ``f(epoch, gen, disc) -> dict`` called after each epoch's validation (models in eval
            mode); its numbers join that epoch's history entry (diagnostics such as other validation scores).

    Returns:
        summary dict (best epoch, validation AUROC, history, paths, minutes).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = dist.context()
    device = dist.local_device(get_device(device), ctx)
    log = log if ctx.is_main else (lambda *_: None)
    P.check_cpu_bf16(cfg.precision, device, f"training {method} ({cfg.epochs} epochs, {cfg.image_size} px)")
    show_progress = show_progress and ctx.is_main
    set_seed(seed)
    gen = SquidGenerator(cfg).to(device)
    disc = SquidDiscriminator(cfg.disc_channels, cfg.image_size, eval_norm=cfg.disc_eval_norm).to(device)
    # the networks that train: DistributedDataParallel wrappers under torchrun, the networks themselves otherwise
    gen_t, disc_t = dist.wrap_ddp(gen, ctx, device), dist.wrap_ddp(disc, ctx, device)
    part = dist.rank_slice(cfg.batch_size, ctx)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr, betas=cfg.d_betas)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, T_max=cfg.t_max, eta_min=cfg.eta_min)
    scalers = (P.grad_scaler(cfg.precision, device.type), P.grad_scaler(cfg.precision, device.type))
    ema_g = WeightEMA(gen, cfg.ema_decay) if cfg.ema_decay > 0 else None
    ema_d = WeightEMA(disc, cfg.ema_decay) if cfg.ema_decay > 0 else None
    # the networks that validate, are kept and score: the averages when there are any
    val_gen, val_disc = (ema_g.model, ema_d.model) if ema_g is not None else (gen, disc)

    x_train = _images_tensor(ds, split.train, cfg.image_size)
    if device.type == "cuda":  # a development split fits in GPU memory (1k images at 128 px: 64 MB): no copies
        x_train = x_train.to(device)
    x_val = _images_tensor(ds, split.val, cfg.image_size)
    y_val = ds.labels[split.val]
    if len(x_train) < cfg.batch_size:
        raise ValueError(f"{ds.source}: {len(x_train)} training images, fewer than one batch of {cfg.batch_size}")
    last, best_path = out_dir / "last.pt", out_dir / "best.pt"
    start_epoch, best, history, train_seconds = 0, {"auroc": -1.0, "epoch": -1}, [], 0.0

    if resume:
        if not last.exists():
            raise CheckpointError(f"{last}: nothing to resume from")
        state = torch.load(last, map_location=device, weights_only=False)
        try:
            stored_cfg = type(cfg).from_saved(state["cfg"]).to_dict()
        except (KeyError, TypeError, ValueError):
            stored_cfg = None
        if state.get("method") != method or stored_cfg != cfg.to_dict() or state.get("seed") != seed:
            raise CheckpointError(f"{last}: was written by another run (method/config/seed differ); "
                                  f"use a new --out folder or the same settings")
        gen.load_state_dict(state.get("gen_train", state["gen"]))
        disc.load_state_dict(state.get("disc_train", state["disc"]))
        if ema_g is not None:
            ema_g.model.load_state_dict(state["gen"])
            ema_d.model.load_state_dict(state["disc"])
            ema_g.updates, ema_d.updates = state["ema_updates"]
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        sched.load_state_dict(state["sched"])
        for scaler, saved in zip(scalers, state.get("scalers", ())):
            scaler.load_state_dict(saved)
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        train_seconds = state.get("train_seconds", 0.0)
        log(f"resumed from {last} at epoch {start_epoch}")

    end_epoch = cfg.epochs if max_epochs is None else min(cfg.epochs, max_epochs)
    n_iter = len(x_train) // cfg.batch_size  # drop the last partial batch (BatchNorm, as the official loader)
    for epoch in range(start_epoch, end_epoch):
        t0 = time.time()
        # all randomness of this epoch follows from (seed, epoch): the global order and augmentation (g) are the
        # same in every process; the model's own draws (in-painting masks) also depend on the rank
        torch.manual_seed(seed * 100_003 + epoch + 1_000_003 * ctx.rank)
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(x_train), generator=g)
        gen.train()
        disc.train()
        sums: dict[str, float] = {}
        bar = progress(range(n_iter), enabled=show_progress, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for it in bar:
            x01 = x_train[order[it * cfg.batch_size:(it + 1) * cfg.batch_size]]
            x01 = x01.to(device)
            x01 = random_affine(x01, cfg.aug_translate, cfg.aug_scale, g)[part]
            x = to_model_range(x01, cfg.normalize)
            g_step = it % cfg.n_critic == 0
            terms = train_step(gen_t, disc_t, opt_g, opt_d, x, cfg, g_step=g_step,
                               where=f"epoch {epoch + 1}, iteration {it}", ckpt=last, scalers=scalers)
            if ema_d is not None:  # D stepped this iteration, G when it was a G iteration
                ema_d.update(disc)
                if g_step:
                    ema_g.update(gen)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            if show_progress and it % 5 == 0:
                bar.set_postfix({k: f"{v:.3g}" for k, v in terms.items()})
        sched.step()
        n_g = math.ceil(n_iter / cfg.n_critic)
        means = {k: v / (n_iter if k == "d" else n_g) for k, v in sums.items()}
        if not ctx.is_main:  # rank 0 validates and writes; the others wait for last.pt
            dist.barrier(ctx)
            continue
        val_auroc = M.auroc(y_val, -discriminator_logits(val_gen, val_disc, x_val, cfg, device=device))
        seconds = time.time() - t0  # training and validation; diagnostics below are not counted
        train_seconds += seconds
        extra = epoch_callback(epoch, val_gen, val_disc) if epoch_callback is not None else {}
        history.append({"epoch": epoch, "val_auroc": val_auroc, "lr": opt_g.param_groups[0]["lr"],
                        "seconds": seconds, **means, **extra})
        # strict arg-max, or the official SQUID/CRTSC tolerance rule: a later epoch within the tolerance of
        # the kept one replaces it (and becomes the reference), so late, stabler epochs win near-ties
        improved = keeps_epoch(val_auroc, best["auroc"], cfg.selection_tolerance)
        if improved:
            best = {"auroc": val_auroc, "epoch": epoch}
            atomic_torch_save({"gen": val_gen.state_dict(), "disc": val_disc.state_dict(), "epoch": epoch},
                              best_path)
        trained = ({} if ema_g is None else
                   {"gen_train": gen.state_dict(), "disc_train": disc.state_dict(),
                    "ema_updates": (ema_g.updates, ema_d.updates)})
        atomic_torch_save({
            "format": FORMAT_VERSION, "method": method, "cfg": cfg.to_dict(), "seed": seed, "epoch": epoch,
            "gen": val_gen.state_dict(), "disc": val_disc.state_dict(), "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(), "sched": sched.state_dict(), "best": best, "history": history,
            "train_seconds": train_seconds, "data": data_source, **trained,
            **({"scalers": [sc.state_dict() for sc in scalers]} if cfg.precision == "fp16" else {}),
        }, last)
        log(f"epoch {epoch + 1}/{cfg.epochs}  " + "  ".join(f"{k} {v:.4g}" for k, v in means.items())
            + f"  val AUROC {val_auroc:.3f}{' *' if improved else ''}  ({seconds:.0f} s)")
        dist.barrier(ctx)

    return {"best_epoch": best["epoch"], "best_val_auroc": best["auroc"], "history": history,
            "last": str(last), "best": str(best_path), "train_minutes": train_seconds / 60,
            "finished": end_epoch >= cfg.epochs}
