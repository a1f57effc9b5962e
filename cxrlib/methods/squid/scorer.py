"""The SQUID family's scorer and entry points: the method module of ``squid``, ``simsid`` and ``crtsc`` in
:data:`cxrlib.methods.METHOD_MODULES`.

Like every method's scorer, :class:`SquidScorer` takes images in and gives one anomaly score per image out
(higher = more anomalous), plus an anomaly map. A trained run ends with ``model.pt``, written by
:func:`finalize_squid`: the best-on-validation weights, the statistics that standardise the score, the decision
threshold chosen on the validation split, and the validation metrics; :func:`cxrlib.methods.load_scorer` reads
it back through :func:`scorer_from_checkpoint`. :func:`train_from_args` (with :func:`add_train_arguments`,
CRTSC's ablation switches) is ``python -m cxrlib train --method squid|simsid|crtsc``; :func:`train_or_load` is
the notebooks' entry point.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from cxrlib import data as D
from cxrlib import distributed as dist
from cxrlib import metrics as M
from cxrlib import precision as P
from cxrlib.checkpoint import FORMAT_VERSION, atomic_torch_save, matching_model
from cxrlib.methods import load_scorer
from cxrlib.utils import get_device, repo_root

from .config import CRM_PLACES, GEN_LOSSES, PROFILE_VERSIONS, TSCC_FORMS, SquidConfig, squid_config
from .discriminator import SquidDiscriminator
from .generator import SquidGenerator
from .train import discriminator_logits, fit_squid

__all__ = ["SquidScorer", "finalize_squid", "last_epoch_scorer", "SQUID_FAMILY", "CRTSC_SWITCHES", "add_train_arguments",
           "config_from_args", "checkpoint_mismatch", "train_from_args", "scorer_from_checkpoint", "train_or_load",
           "PROFILE_VERSIONS"]

SQUID_FAMILY = ("squid", "simsid", "crtsc")

# CRTSC ablation switches: command-line option -> SquidConfig field
CRTSC_SWITCHES = {"crm_place": "crm_place", "crm_reduction": "crm_reduction", "lambda_tscc": "tscc_w",
                  "tscc_form": "tscc_form", "gen_loss": "gen_loss", "lambda_gen": "g_w"}


class SquidScorer:
    """SQUID / SimSID test-time score (SQUID Sec. 3.5): the discriminator's logit on the reconstruction,
    standardised with the training-set mean ``mu`` and std ``sigma``, sign flipped so that higher is more
    anomalous: ``score = -(D(G(x)) - mu) / sigma``. (The official code reports ``1 - sigmoid(z)``, a
    monotone transform of the same number: identical AUROC and ranking.) The discriminator's BatchNorm uses each
    image's own statistics at scoring, as the official code's train-mode, batch-of-one discriminator does
    (:class:`~cxrlib.methods.squid.discriminator.SquidDiscriminator`, ``eval_norm``).
    """

    def __init__(self, method, cfg, gen, disc, mu=0.0, sigma=1.0, threshold=None, meta=None, device=None,
                 map_gen=None):
        self.method, self.cfg, self.gen, self.disc = method, cfg, gen, disc
        self.mu, self.sigma, self.threshold, self.meta = float(mu), float(sigma), threshold, meta or {}
        self.device = device
        self.image_size = cfg.image_size
        self.precision = "fp32"
        # the generator whose reconstruction error makes the anomaly map (see anomaly_maps); gen when None
        self.map_gen = map_gen

    def set_precision(self, precision: str) -> "SquidScorer":
        """Score in ``precision`` from now on: ``"fp32"`` (the default, what every table scores with),
        ``"bf16"``/``"fp16"`` (the generator under autocast, channels-last weights and inputs: about twice as
        fast on a CPU with bf16 units) or ``"auto"`` (:func:`cxrlib.precision.resolve`). The scores move a
        little (``scripts/scoring_precision.py`` measures by how much); a model whose scores differ by less than
        bf16's resolution, such as one trained for an epoch or two, loses its ranking. ``mu``, ``sigma`` and
        the threshold stay those computed in fp32. Returns the scorer."""
        device = torch.device(self.device or next(self.gen.parameters()).device)
        self.precision = P.resolve(precision, device)
        P.check_cpu_bf16(self.precision, device, "scoring in bf16")
        fmt = torch.contiguous_format if self.precision == "fp32" else torch.channels_last
        for m in (self.gen, self.disc, self.map_gen):
            if m is not None:
                m.to(memory_format=fmt)
        return self

    def _x01(self, images):
        a = np.asarray(images)
        if a.ndim == 3:
            a = a[:, None]
        if a.ndim != 4 or a.shape[1] != 1 or a.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images of shape (N, {self.image_size}, {self.image_size}), got {a.shape}")
        x = torch.from_numpy(a.astype(np.float32))
        return x / 255.0 if a.dtype == np.uint8 else x

    def raw_logits(self, images, batch_size: int = 64) -> np.ndarray:
        """``D(G(x))`` for uint8 ``(N, S, S)`` images (or float ``(N, 1, S, S)`` in [0, 1]); shape ``(N,)``."""
        return discriminator_logits(self.gen, self.disc, self._x01(images), self.cfg, batch_size, self.device,
                                    precision=self.precision)

    def score(self, images, batch_size: int = 64) -> np.ndarray:
        """Anomaly score per image, shape ``(N,)``; higher = more anomalous."""
        return -(self.raw_logits(images, batch_size) - self.mu) / self.sigma

    def reconstruct(self, images, batch_size: int = 64, generator: str = "kept"):
        """Reconstructions in [0, 1], shape ``(N, 1, S, S)`` (torch), by the kept generator (``generator="kept"``,
        the one that scores) or by the map generator (``"map"``, see :meth:`anomaly_maps`)."""
        if generator not in ("kept", "map"):
            raise ValueError(f"generator must be 'kept' or 'map', got {generator!r}")
        gen = self.map_gen if generator == "map" and self.map_gen is not None else self.gen
        return discriminator_logits(gen, self.disc, self._x01(images), self.cfg, batch_size, self.device,
                                    return_recon=True, precision=self.precision)[1]

    def anomaly_maps(self, images, batch_size: int = 64, sigma_px: float = 2.0, generator: str = "map") -> np.ndarray:
        """Anomaly map: absolute reconstruction error, Gaussian-smoothed; shape ``(N, S, S)``. (The score
        itself is the discriminator's; this map shows *where* the reconstruction disagrees.)

        The map's generator is the *last* epoch's (``map_gen``, stored by :func:`finalize_squid`), not the kept
        one. The kept epoch is chosen for the discriminator's image score and is often early, when the generator
        still returns a grey field whose error traces the body's edges rather than a lesion; a map needs a
        generator that has learnt to reconstruct the body (``scripts/map_generator.py`` compares the two on the
        phantoms: ``results/cpu/diagnostics/map_generator.csv``). Checkpoints written before ``map_gen`` existed
        map with the kept generator; ``generator="kept"`` asks for that one anyway."""
        x = self._x01(images)[:, 0].numpy()
        r = self.reconstruct(images, batch_size, generator=generator)[:, 0].numpy()
        return np.stack([gaussian_filter(np.abs(a - b), sigma_px) for a, b in zip(x, r)])


def _build_squid(cfg_dict, device):
    cfg = SquidConfig.from_saved(cfg_dict)
    gen = SquidGenerator(cfg).to(device)
    disc = SquidDiscriminator(cfg.disc_channels, cfg.image_size, eval_norm=cfg.disc_eval_norm).to(device)
    return cfg, gen, disc


def finalize_squid(out_dir, ds, split, method: str = "squid", threshold_rule: str = "max_acc",
                   n_stats: int = 512, device=None) -> Path:
    """Turn a finished run in ``out_dir`` into ``out_dir/model.pt``, the scoring checkpoint.

    Loads the best-on-validation weights, computes ``mu``/``sigma`` of ``D(G(x))`` on up to ``n_stats``
    training images (no augmentation), scores the validation split and chooses the decision threshold
    there (``threshold_rule``, default max accuracy: the papers' rule, moved from test to validation).
    """
    out_dir = Path(out_dir)
    device = get_device(device)
    last = torch.load(out_dir / "last.pt", map_location=device, weights_only=False)
    best = torch.load(out_dir / "best.pt", map_location=device, weights_only=False)
    cfg, gen, disc = _build_squid(last["cfg"], device)
    gen.load_state_dict(best["gen"])
    disc.load_state_dict(best["disc"])
    scorer = SquidScorer(method, cfg, gen, disc, device=device)
    train_logits = scorer.raw_logits(ds.images[split.train[:n_stats]])
    mu, sigma = float(train_logits.mean()), float(train_logits.std() + 1e-8)
    scorer.mu, scorer.sigma = mu, sigma
    y_val = ds.labels[split.val]
    s_val = scorer.score(ds.images[split.val])
    threshold = M.choose_threshold(y_val, s_val, threshold_rule)
    val = M.evaluate(y_val, s_val, val_threshold=threshold)
    path = out_dir / "model.pt"
    # the anomaly map's generator: the last epoch's (SquidScorer.anomaly_maps), stored only when it differs
    last_epoch = last["history"][-1]["epoch"] if last.get("history") else best["epoch"]
    map_gen = last["gen"] if last_epoch != best["epoch"] else None
    atomic_torch_save({
        "format": FORMAT_VERSION, "method": method, "cfg": last["cfg"], "seed": last["seed"],
        "gen": best["gen"], "disc": best["disc"], "best_epoch": best["epoch"], "mu": mu, "sigma": sigma,
        "map_gen": map_gen, "map_epoch": last_epoch,
        "threshold": threshold, "threshold_rule": f"{threshold_rule} on the validation split",
        "val_metrics": val, "history": last["history"], "train_seconds": last.get("train_seconds", 0.0),
        "data": last.get("data", ""), "split_seed": split.seed, "split_version": D.SPLIT_VERSION,
    }, path)
    return path


def last_epoch_scorer(run_dir, ds, split, method: str = "squid") -> "SquidScorer":
    """The scorer of a run's *last* epoch (``last.pt``) instead of its kept one, finalised exactly like
    ``model.pt`` (score statistics, validation threshold) in a temporary copy: the run folder is not touched.
    For diagnostics that compare the kept checkpoint with the end of training."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        copy.mkdir()
        shutil.copy(Path(run_dir) / "last.pt", copy / "last.pt")
        shutil.copy(copy / "last.pt", copy / "best.pt")  # last.pt holds gen, disc and epoch, as best.pt does
        finalize_squid(copy, ds, split, method=method)
        return load_scorer(copy / "model.pt")


def add_train_arguments(group) -> None:
    """CRTSC's ablation switches (``--method crtsc`` only; each defaults to the ``crtsc`` preset's value).

    Every row of the paper's ablations is one command, e.g. the SQUID baseline inside CRTSC's code path is
    ``--crm-place none --lambda-tscc 0 --gen-loss bce --lambda-gen 0.005``, and CRTSC as its official code trains it
    is ``--crm-place first_conv --crm-reduction 8 --lambda-tscc 1 --tscc-form code --gen-loss bce --lambda-gen 0.005``
    (the ``crtsc_code_no_lbp_grad`` lever of :mod:`cxrlib.tables.squid_levers`).
    """
    group.add_argument("--crm-place", choices=CRM_PLACES, default=None,
                       help="crtsc: channel recalibration at the bottleneck ('paper', default), after the "
                            "encoder's first block ('first_conv', the official code) or nowhere ('none')")
    group.add_argument("--crm-reduction", type=int, default=None, metavar="T",
                       help="crtsc: CRM reduction ratio T (default 24)")
    group.add_argument("--lambda-tscc", type=float, default=None, metavar="W",
                       help="crtsc: weight of the TSCC loss, 0 disables it (default 0.03)")
    group.add_argument("--tscc-form", choices=TSCC_FORMS, default=None,
                       help="crtsc: the TSCC term's gradient, 'soft_lbp' (default: SSIM and a differentiable "
                            "soft-LBP texture term) or 'code' (the official code's: SSIM only, zero-padded; its LBP "
                            "passes none)")
    group.add_argument("--gen-loss", choices=GEN_LOSSES, default=None,
                       help="crtsc: adversarial generator term, 'kl' (default) or SQUID's 'bce'")
    group.add_argument("--lambda-gen", type=float, default=None, metavar="W",
                       help="crtsc: weight of that term (default 0.002)")


def _crtsc_overrides(args) -> dict:
    """The SquidConfig overrides given by CRTSC's switches; a ``ValueError`` for another method."""
    given = {field: getattr(args, opt) for opt, field in CRTSC_SWITCHES.items()
             if getattr(args, opt, None) is not None}
    if given and args.method != "crtsc":
        names = ", ".join("--" + opt.replace("_", "-") for opt in CRTSC_SWITCHES if getattr(args, opt, None) is not None)
        raise ValueError(f"{names}: only for --method crtsc (method {args.method!r} has no such part)")
    return given


def config_from_args(args) -> SquidConfig:
    """The configuration ``python -m cxrlib train`` builds from its parsed arguments: the profile, then
    ``--epochs``, ``--precision`` and CRTSC's switches."""
    overrides = {"epochs": args.epochs} if args.epochs else {}
    if getattr(args, "precision", None):
        overrides["precision"] = P.resolve(args.precision, get_device(args.device))
    overrides.update(_crtsc_overrides(args))
    return squid_config(args.method, args.profile, **overrides)


def checkpoint_mismatch(ck: dict, args) -> str | None:
    """Why the finished ``model.pt`` dict ``ck`` is not the model that ``train`` with ``args`` trains with this
    code (the differing configuration fields, saved -> now), or ``None`` when it is. The benchmark asks this
    before it reuses a run, so a model of an earlier profile definition is never scored as the current one."""
    saved = SquidConfig.from_saved(ck["cfg"]).to_dict()
    now = config_from_args(args).to_dict()
    diff = [f"{k} {v!r} -> {now[k]!r}" for k, v in saved.items() if now[k] != v]
    return f"trained with another configuration ({'; '.join(diff)})" if diff else None


def train_from_args(args) -> Path:
    """``python -m cxrlib train --method squid|simsid|crtsc``: see :mod:`cxrlib.methods` for the contract."""
    cfg = config_from_args(args)
    source = D.resolve_data(args.profile, args.data)
    ds = D.load(source, size=cfg.image_size)
    split = D.unsupervised_protocol(ds, seed=args.split_seed)
    if dist.context().is_main:
        print(f"data {source}: {len(ds)} images at {cfg.image_size} px; split (normal, abnormal): "
              f"{ {k: v for k, v in split.summary(ds.labels).items() if sum(v)} }")
    summary = fit_squid(cfg, ds, split, args.out, seed=args.seed, resume=args.resume, device=args.device,
                        show_progress=not args.no_progress, method=args.method, data_source=str(source))
    if not summary["finished"] or not dist.context().is_main:  # under torchrun rank 0 alone finalises
        return None
    print(f"best epoch {summary['best_epoch'] + 1} (validation AUROC {summary['best_val_auroc']:.3f}); "
          f"{summary['train_minutes']:.1f} min of training")
    return finalize_squid(args.out, ds, split, method=args.method, device=args.device)


def scorer_from_checkpoint(ck: dict, path, device) -> SquidScorer:
    """The :class:`SquidScorer` of a loaded SQUID/SimSID/CRTSC ``model.pt`` dict."""
    cfg, gen, disc = _build_squid(ck["cfg"], device)
    gen.load_state_dict(ck["gen"])
    disc.load_state_dict(ck["disc"])
    meta = {k: ck[k] for k in ("seed", "best_epoch", "map_epoch", "val_metrics", "threshold_rule", "data",
                               "train_seconds", "split_seed", "split_version") if k in ck}
    map_gen = None
    if ck.get("map_gen") is not None:
        map_gen = SquidGenerator(cfg).to(device)
        map_gen.load_state_dict(ck["map_gen"])
    return SquidScorer(ck["method"], cfg, gen, disc, ck["mu"], ck["sigma"], ck["threshold"], meta, device,
                       map_gen=map_gen)


def train_or_load(method: str = "squid", profile: str = "quick", data=None, out_dir=None, seed: int = 0,
                  show_progress: bool = True, log=print):
    """The notebooks' entry point: train ``method`` under ``profile`` on the development split of ``data``
    (default: the profile's data), or reuse the finished run in ``out_dir`` if its configuration matches.
    An interrupted run is resumed.

    Returns:
        ``(scorer, ds, split, history)``: the :class:`SquidScorer`, the dataset at the model's
        size, the :class:`~cxrlib.data.Split` and the per-epoch history (list of dicts).
    """
    cfg = squid_config(method, profile)
    source = D.resolve_data(profile, data)
    ds = D.load(source, size=cfg.image_size)
    split = D.unsupervised_protocol(ds, seed=0)
    out_dir = Path(out_dir or repo_root() / "runs" / profile / f"{method}_s{seed}")
    model = out_dir / "model.pt"
    ck = matching_model(model, cfg.to_dict(), seed, source, log)
    if ck is not None:
        return load_scorer(model), ds, split, ck["history"]
    if model.exists():
        for f in ("model.pt", "last.pt", "best.pt"):
            (out_dir / f).unlink(missing_ok=True)
    resume = (out_dir / "last.pt").exists()
    fit_squid(cfg, ds, split, out_dir, seed=seed, resume=resume, show_progress=show_progress, method=method,
              data_source=str(source), log=log)
    finalize_squid(out_dir, ds, split, method=method)
    scorer = load_scorer(model)
    return scorer, ds, split, torch.load(model, map_location="cpu", weights_only=False)["history"]
