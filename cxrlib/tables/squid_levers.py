"""Issue #23's lever study: which change makes the SQUID family learn in the ``cpu`` budget?

Each lever is a named set of :class:`~cxrlib.methods.squid.config.SquidConfig` overrides on top of a method's
``cpu`` profile (:data:`LEVERS`, the one definition of the levers). For every (method, lever, seed) the table trains
on development split ``--split-seed`` (patient-disjoint), keeps the checkpoint by the profile's rule, and records:

* one row in ``results/cpu/squid_levers.csv`` (:data:`ROW_COLUMNS`): kept epoch, its validation and
  development-test AUROC, the last epoch's validation and test AUROC, training minutes, threads, commit, split
  version, the overrides;
* one row per epoch in ``results/cpu/squid_levers_curves.csv`` (:data:`CURVE_COLUMNS`): validation AUROC of the
  score ``-D(G(x))`` and, as diagnostics (:func:`diagnostics`), of the reconstruction error ``|x - G(x)|`` and of
  the discriminator on the *real* image ``-D(x)``, with the epoch's mean loss terms, and the development-test
  AUROC of both scores per epoch (written for comparing checkpoint rules afterwards; never used to select).

Rows are upserted by :data:`KEY` (curve rows by :data:`CURVE_KEY`), so an interrupted study resumes at the next
missing row (a half-trained run resumes from its ``last.pt``).

    OMP_NUM_THREADS=1 python -m cxrlib benchmark --table squid-levers --data PATH/zhanglab128_train.npz --levers cpu bf16 --seeds 0 1 2

:func:`markdown` summarises the two CSVs for the results page and :func:`draw` plots the validation curves
(``figures/squid_levers_cpu.png``).
"""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np

from .. import benchmark as B
from ..utils import repo_root

__all__ = ["LEVERS", "ROW_COLUMNS", "CURVE_COLUMNS", "KEY", "CURVE_KEY", "PROFILE", "curves_path", "read_csv",
           "diagnostics", "run_lever", "add_arguments", "run", "summarize", "markdown", "draw", "RULES",
           "rule_epoch", "selection_rules", "selection_markdown", "lever_config", "is_current_profile",
           "arithmetic_base", "squid_counterparts", "run_curve"]

_CRTSC_CODE = dict(crm_place="first_conv", crm_reduction=8, tscc_w=1.0, gen_loss="bce", g_w=0.005)

#: lever name -> SquidConfig overrides on top of the method's cpu profile
LEVERS: dict[str, dict] = {
    "cpu": {},
    "separate_forward": dict(shared_forward=False),
    "n_critic_1": dict(n_critic=1),
    "bottleneck_4x4": dict(levels=3, decoder_ops=("concat", "concat", "none"), merge_level=1),
    "size_128": dict(image_size=128),
    "bf16": dict(precision="bf16", channels_last=True),
    "size_128_bf16": dict(image_size=128, precision="bf16", channels_last=True),
    "lr_1e-3": dict(lr=1e-3, eta_min=1e-4),
    "d_lr_1e-5": dict(d_lr=1e-5),
    # a weaker critic / a stronger adversarial pull: keep reconstructions near D's decision boundary, where
    # its ordering of them is trained (a saturated D ranks samples deep in the "fake" region arbitrarily)
    "g_w_0.05": dict(g_w=0.05),
    "d_lr_1e-5_g_w_0.05": dict(d_lr=1e-5, g_w=0.05),
    # CRTSC's KL generator term at the weight of the BCE term it replaces (0.005, not the paper's 0.002): with a
    # saturated D (sigma(D(x)) ~ 1) the KL term is the BCE term, so the paper's weight is a weaker adversarial
    # pull, and the ablation's "+KL" row changes form and weight at once; this lever separates the two
    "bf16_g_w_0.005": dict(precision="bf16", channels_last=True, g_w=0.005),
    # the same in fp32, for CPUs that emulate bf16 (AVX2 without AVX512_BF16/AMX): there the pair
    # {cpu, g_w_0.005} at 50 epochs is the fp32 counterpart of {bf16, bf16_g_w_0.005}
    "g_w_0.005": dict(g_w=0.005),
    # every decoder level without the encoder skip: the image can only come back through the memories
    "no_skips": dict(decoder_ops=("none", "none", "none", "none")),
    "no_skips_no_shortcut": dict(decoder_ops=("none", "none", "none", "none"), inpaint_mask_ratio=1.0,
                                 decoder_memory_mask_ratio=1.0),
    # CRTSC's TSCC term at the weight its official code gives it (main.py, GAN path: 1.0 * tsim(recon, x)) instead
    # of the paper's 0.03, which is small beside 10 * MSE; the texture part stays this project's differentiable one
    "tscc_w_1.0": dict(tscc_w=1.0),
    # CRTSC as its official code configures it (WANG683s/CRTSC): CRM only in the encoder stem at reduction 8, TSCC
    # at weight 1.0, SQUID's BCE generator term at 0.005 (the code instantiates a KL loss and never uses it)
    "crtsc_code": _CRTSC_CODE,
    # the two above with TSCC's gradient as the official code computes it: its LBP term goes through numpy and
    # passes none, so only 1/2 (1 - SSIM), zero-padded, pulls on the generator (the rows above keep this project's
    # differentiable soft-LBP texture term at weight 1/2 inside TSCC)
    "tscc_w_1.0_no_lbp_grad": dict(tscc_w=1.0, tscc_form="code"),
    "crtsc_code_no_lbp_grad": {**_CRTSC_CODE, "tscc_form": "code"},
    # score with moving averages of G's and D's weights (horizon about 200 steps: 3 epochs of D, 6 of G)
    "ema": dict(ema_decay=0.995),
    "bf16_ema": dict(precision="bf16", channels_last=True, ema_decay=0.995),
}

ROW_COLUMNS = ["method", "lever", "seed", "split_seed", "epochs", "kept_epoch", "val_auroc_kept", "test_auroc_kept",
               "val_auroc_last", "test_auroc_last", "train_minutes", "threads", "split_version", "commit",
               "overrides"]
CURVE_COLUMNS = ["method", "lever", "seed", "split_seed", "epoch", "val_auroc", "val_auroc_recon_err",
                 "val_auroc_d_real", "d", "recon", "seconds", "test_auroc", "test_auroc_d_real"]
#: the columns that identify a row of the table's CSV (and of its curves CSV)
KEY = ("method", "lever", "seed", "split_seed", "epochs")
CURVE_KEY = ("method", "lever", "seed", "split_seed", "epoch")
#: the profile every lever starts from
PROFILE = "cpu"
#: the study's baseline, pinned: the ``cpu`` profile as it was when the study began (fp32, 25 epochs). The
#: study chose the ``bf16`` lever at 50 epochs as the new ``cpu`` profile; pinning keeps every lever row (and
#: the ``cpu`` lever itself) the configuration it was trained with.
BASELINE = dict(precision="fp32", channels_last=False, epochs=25)
#: how the CSVs write floats (as the study always has)
_FLOAT = ".4f"


def curves_path(csv_path) -> Path:
    """The curves CSV beside the table's CSV: ``squid_levers.csv`` -> ``squid_levers_curves.csv``."""
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem + "_curves.csv")


def read_csv(path) -> list[dict]:
    """The rows of one of the study's CSVs as text (``[]`` without the file)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _upsert_file(path: Path, columns: list[str], new: list[dict], key: tuple[str, ...]) -> None:
    """Replace the rows of ``path`` that share a key with ``new`` (appended in their order), floats to 4 decimals."""
    rows = read_csv(path)
    for r in new:
        rows = B.upsert(rows, r, key)
    B.write_rows(path, rows, columns, float_format=_FLOAT)


def diagnostics(ds, split, cfg):
    """The epoch callback: validation AUROC of the reconstruction error and of ``-D(x)`` on real images, and the
    development-test AUROC of the score ``-D(G(x))`` and of ``-D(x)``.

    The per-epoch test AUROCs are written to the curves CSV only, so that checkpoint *rules* (arg-max, tolerance,
    smoothed curve, last epoch) can be compared after the fact on the same run; training never reads them (the
    kept epoch is chosen on validation alone).
    """
    import torch

    from .. import metrics as M
    from ..methods.squid.generator import to_model_range

    parts = {name: (ds.labels[idx], to_model_range(torch.from_numpy(ds.as_float(idx)), cfg.normalize))
             for name, idx in (("val", split.val), ("test", split.test))}

    @torch.no_grad()
    def callback(epoch, gen, disc):
        gen.eval()
        disc.eval()
        out = {}
        for name, (y, x) in parts.items():
            err, d_real, d_fake = [], [], []
            for i in range(0, len(x), 64):
                xb = x[i:i + 64]
                recon = gen(xb)["recon"]
                err.append(((xb - recon) ** 2).mean((1, 2, 3)))
                d_real.append(disc(xb).flatten())
                if name == "test":  # on validation the score is fit_squid's own val_auroc
                    d_fake.append(disc(recon).flatten())
            out[f"{name}_auroc_d_real"] = M.auroc(y, -torch.cat(d_real).numpy())
            if name == "val":
                out["val_auroc_recon_err"] = M.auroc(y, torch.cat(err).numpy())
            else:
                out["test_auroc"] = M.auroc(y, -torch.cat(d_fake).numpy())
        return out
    return callback


def run_lever(method, lever, seed, split_seed, data, epochs, out_root: Path, log=print):
    """Train (or resume) one (method, lever, seed) on development split ``split_seed``; its CSV row and curve rows."""
    from .. import data as D
    from .. import metrics as M
    from ..methods import load_scorer
    from ..methods.squid.config import squid_config
    from ..methods.squid.scorer import finalize_squid, last_epoch_scorer
    from ..methods.squid.train import fit_squid

    cfg = lever_config(method, lever, epochs)
    ds = D.load(data, size=cfg.image_size)
    split = D.unsupervised_protocol(ds, seed=split_seed)
    out = Path(out_root) / f"{method}_{lever}_e{cfg.epochs}_s{seed}_split{split_seed}"
    resume = (out / "last.pt").exists()
    summary = fit_squid(cfg, ds, split, out, seed=seed, resume=resume, show_progress=False, method=method,
                        data_source=str(data), log=log, epoch_callback=diagnostics(ds, split, cfg))
    finalize_squid(out, ds, split, method=method)
    kept, last = load_scorer(out / "model.pt"), last_epoch_scorer(out, ds, split, method)
    y_test = ds.labels[split.test]
    hist = summary["history"]
    row = {"method": method, "lever": lever, "seed": seed, "split_seed": split_seed, "epochs": cfg.epochs,
           "kept_epoch": summary["best_epoch"] + 1, "val_auroc_kept": summary["best_val_auroc"],
           "test_auroc_kept": M.auroc(y_test, kept.score(ds.images[split.test])),
           "val_auroc_last": hist[-1]["val_auroc"],
           "test_auroc_last": M.auroc(y_test, last.score(ds.images[split.test])),
           "train_minutes": summary["train_minutes"], "threads": B.thread_count(),
           "split_version": D.SPLIT_VERSION, "commit": B.git_commit(repo_root()),
           "overrides": json.dumps(LEVERS[lever], sort_keys=True)}
    curve = [{"method": method, "lever": lever, "seed": seed, "split_seed": split_seed, "epoch": h["epoch"] + 1,
              **{k: h.get(k, "") for k in CURVE_COLUMNS[5:]}} for h in hist]
    return row, curve


def add_arguments(p) -> None:
    """This table's options of ``python -m cxrlib benchmark --table squid-levers``."""
    p.add_argument("--data", default=os.environ.get("CXR_DATA"), help="zhanglab128_train.npz (or $CXR_DATA)")
    p.add_argument("--methods", nargs="+", default=["squid"], help="SQUID-family methods (default squid)")
    p.add_argument("--levers", nargs="+", default=["cpu"], choices=list(LEVERS), help="default cpu (no override)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    p.add_argument("--runs", type=Path, default=None, help="run folders (default runs/levers)")
    p.add_argument("--out", type=Path, default=None, help="CSV (default results/cpu/squid_levers.csv; the curves "
                                                          "go beside it as squid_levers_curves.csv); rows are updated")


def run(args) -> int:
    """Every (method, lever, seed) not yet in the CSV, each row (and its curve) upserted as it finishes."""
    from ..methods.squid.config import squid_config

    if not args.data:
        raise ValueError("pass --data PATH (or set CXR_DATA)")
    root = repo_root()
    out = Path(args.out or root / "results" / PROFILE / "squid_levers.csv")
    runs = Path(args.runs or root / "runs" / "levers")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {tuple(r[k] for k in KEY) for r in read_csv(out)}
    for method in args.methods:
        for lever in args.levers:
            for seed in args.seeds:
                epochs = args.epochs or BASELINE["epochs"]
                if (method, lever, str(seed), str(args.split_seed), str(epochs)) in done:
                    continue
                t0 = time.time()
                print(f"== {method} / {lever} / seed {seed}", flush=True)
                row, curve = run_lever(method, lever, seed, args.split_seed, args.data, args.epochs, runs,
                                       log=lambda m: print(m, flush=True))
                _upsert_file(out, ROW_COLUMNS, [row], KEY)
                _upsert_file(curves_path(out), CURVE_COLUMNS, curve, CURVE_KEY)
                print(f"   kept epoch {row['kept_epoch']}: val {row['val_auroc_kept']:.3f} test "
                      f"{row['test_auroc_kept']:.3f}; last: val {row['val_auroc_last']:.3f} test "
                      f"{row['test_auroc_last']:.3f}; {row['train_minutes']:.1f} min ({time.time() - t0:.0f} s)",
                      flush=True)
    if out.exists():
        print(markdown(out), f"rows in {out}", sep="\n")
    return 0


def _current(rows: list[dict]) -> list[dict]:
    """The rows on this code's development split (all rows when none is)."""
    from ..data import SPLIT_VERSION

    return [r for r in rows if r.get("split_version") == SPLIT_VERSION] or rows


def lever_config(method: str, lever: str, epochs: int | None = None):
    """The :class:`~cxrlib.methods.squid.config.SquidConfig` a lever trains: the method's ``cpu`` profile, the pinned
    :data:`BASELINE`, the lever's overrides and, if given, ``epochs`` (what ``--epochs`` does)."""
    from ..methods.squid.config import squid_config

    return squid_config(method, PROFILE, **{**BASELINE, **LEVERS[lever], **({"epochs": int(epochs)} if epochs else {})})


def is_current_profile(method: str, lever: str, epochs: int) -> bool:
    """Whether ``lever`` at ``epochs`` trains exactly the method's current ``cpu`` profile (the configuration of the
    main table's rows), e.g. ``bf16`` at 50 epochs since version 2 of the profile."""
    from ..methods.squid.config import squid_config

    return lever in LEVERS and lever_config(method, lever, epochs) == squid_config(method, PROFILE)


#: the overrides that set a lever's arithmetic rather than what it trains
_ARITHMETIC = ("precision", "channels_last")


def arithmetic_base(lever: str) -> str | None:
    """The lever that trains with ``lever``'s arithmetic and nothing else changed: ``cpu`` for the fp32 levers,
    ``bf16`` for the bf16 ones (``None`` for an unknown lever). Setting a lever beside its arithmetic base isolates
    what the lever changes, e.g. ``g_w_0.005`` against ``cpu``."""
    if lever not in LEVERS:
        return None
    arithmetic = {k: v for k, v in LEVERS[lever].items() if k in _ARITHMETIC}
    return next((name for name, overrides in LEVERS.items() if overrides == arithmetic), None)


def squid_counterparts(method: str, lever: str, epochs: int, candidates) -> list[str]:
    """The levers among ``candidates`` that train SQUID the way ``lever`` trains ``method``'s SQUID part: the same
    :class:`~cxrlib.methods.squid.config.SquidConfig` when applied to SQUID's ``cpu`` profile. For CRTSC they are
    the SQUID rows its paper's claim (CRTSC above SQUID) is measured against; e.g. CRTSC's ``g_w_0.005`` and SQUID's
    ``cpu`` (SQUID's weight is already 0.005). Empty for SQUID itself and for unknown levers."""
    if method == "squid" or lever not in LEVERS:
        return []
    mine = lever_config("squid", lever, epochs)
    return [c for c in candidates if c in LEVERS and lever_config("squid", c, epochs) == mine]


def _lever_order(lever: str) -> int:
    return list(LEVERS).index(lever) if lever in LEVERS else len(LEVERS)


def summarize(csv_path) -> list[dict]:
    """One dict per (method, lever, split seed, epochs) of the CSV's current rows, in the order of the methods'
    first appearance and then of :data:`LEVERS`: the seeds, the kept epoch per seed, the rows' AUROCs and the last
    epoch's diagnostics per seed (``nan`` where the curves CSV has no such epoch), training minutes, threads."""
    rows = _current(read_csv(csv_path))
    curve = {tuple(r[k] for k in CURVE_KEY): r for r in read_csv(curves_path(csv_path))}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["lever"], r["split_seed"], r["epochs"]), []).append(r)
    first = {}
    for r in rows:
        first.setdefault(r["method"], len(first))
    out = []
    for (method, lever, split_seed, epochs), rs in groups.items():
        rs = sorted(rs, key=lambda r: int(r["seed"]))
        last = [curve.get((method, lever, r["seed"], split_seed, epochs), {}) for r in rs]
        num = lambda vals: np.array([float(v) if v not in ("", None) else np.nan for v in vals])  # noqa: E731
        out.append({"method": method, "lever": lever, "split_seed": int(split_seed), "epochs": int(epochs),
                    "seeds": [int(r["seed"]) for r in rs], "kept_epochs": [int(r["kept_epoch"]) for r in rs],
                    **{c: num(r[c] for r in rs) for c in ("test_auroc_kept", "test_auroc_last", "val_auroc_last",
                                                          "train_minutes")},
                    **{c: num(c_row.get(c, "") for c_row in last) for c in ("val_auroc_recon_err", "val_auroc_d_real")},
                    "threads": sorted({r["threads"] for r in rs}, key=lambda t: (len(t), t))})
    out.sort(key=lambda s: (first[s["method"]], _lever_order(s["lever"]), s["split_seed"], s["epochs"]))
    return out


def _pct(v: np.ndarray) -> str:
    """Mean ± sample std in % (std 0 for one seed), as the other tables print it."""
    return f"{100 * v.mean():.1f} ± {100 * (v.std(ddof=1) if len(v) > 1 else 0.0):.1f}"


def _pct_mean(v: np.ndarray) -> str:
    v = v[~np.isnan(v)]
    return f"{100 * v.mean():.1f}" if len(v) else "–"


def markdown(csv_path) -> str:
    """The lever table: one line per (method, lever, split, epochs) in the order of :data:`LEVERS`; AUROCs in %,
    mean ± std over seeds; the diagnostics (last epoch's validation AUROC of ``|x - G(x)|`` and of ``-D(x)``, from
    the curves CSV) and the training minutes as means over seeds."""
    lines = ["| method | lever | split | epochs | seeds | kept epoch per seed | test AUROC, kept | test AUROC, last "
             "epoch | val. AUROC, last epoch | val. AUROC of recon. error, last epoch | val. AUROC of -D(x), last "
             "epoch | train min | threads |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summarize(csv_path):
        lines.append(f"| {s['method']} | {s['lever']} | {s['split_seed']} | {s['epochs']} | "
                     f"{', '.join(map(str, s['seeds']))} | {', '.join(map(str, s['kept_epochs']))} | "
                     f"{_pct(s['test_auroc_kept'])} | {_pct(s['test_auroc_last'])} | {_pct(s['val_auroc_last'])} | "
                     f"{_pct_mean(s['val_auroc_recon_err'])} | {_pct_mean(s['val_auroc_d_real'])} | "
                     f"{s['train_minutes'].mean():.1f} | {', '.join(s['threads'])} |")
    return "\n".join(lines) + "\n"


#: checkpoint rules compared after the fact on the per-epoch curves (validation chooses, test only reports)
RULES = {
    "arg-max": "the epoch of the highest validation AUROC (strict arg-max, this profile's rule)",
    "tolerance 0.005": "the official SQUID rule: a later epoch within 0.5 AUROC points of the kept one replaces it",
    "smoothed (3)": "arg-max of the validation AUROC averaged over the epoch and its two neighbours",
    "last": "the last epoch",
}


def rule_epoch(val: list[float], rule: str) -> int:
    """The index of the epoch that ``rule`` (a key of :data:`RULES`) keeps, given the validation AUROC per epoch."""
    from ..methods.squid.train import keeps_epoch

    v = np.asarray(val, float)
    if rule == "arg-max":
        return int(np.argmax(v))  # the first maximum, as the strict '>' of training keeps it
    if rule == "tolerance 0.005":
        kept, best = 0, -1.0
        for e, a in enumerate(v):
            if keeps_epoch(a, best, 0.005):
                kept, best = e, a
        return kept
    if rule == "smoothed (3)":
        padded = np.concatenate([v[:1], v, v[-1:]])
        return int(np.argmax(np.convolve(padded, np.ones(3) / 3, mode="valid")))
    if rule == "last":
        return len(v) - 1
    raise ValueError(f"unknown rule {rule!r}; choose from {list(RULES)}")


def _run_curve(curves: list[dict], method, lever, seed, split_seed, epochs) -> list[dict]:
    """The curve rows of one run (``method, lever, seed, split_seed``), epochs 1..``epochs``, in epoch order."""
    rows = [c for c in curves if (c["method"], c["lever"], c["seed"], c["split_seed"]) ==
            (method, lever, str(seed), str(split_seed)) and int(c["epoch"]) <= int(epochs)]
    return sorted(rows, key=lambda c: int(c["epoch"]))


def run_curve(csv_path, method: str, lever: str, seed: int, split_seed: int = 0, epochs: int = 50) -> dict:
    """One run's per-epoch record from the curves CSV beside ``csv_path``, as float arrays: ``epoch``, the
    validation AUROC of the score ``D(G(x))`` (``val_auroc``), of the reconstruction error ``|x - G(x)|``
    (``val_auroc_recon_err``) and of ``-D(x)`` on the real image (``val_auroc_d_real``), and the development-test
    AUROC of the score (``test_auroc``, ``nan`` for runs from before it was recorded); empty arrays for a run that
    is not in the CSV."""
    pts = _run_curve(read_csv(curves_path(csv_path)), method, lever, seed, split_seed, epochs)
    cols = ("epoch", "val_auroc", "val_auroc_recon_err", "val_auroc_d_real", "test_auroc")
    return {c: np.array([float(p[c]) if p.get(c, "") not in ("", None) else np.nan for p in pts]) for c in cols}


def selection_rules(csv_path) -> list[dict]:
    """Per (method, lever, epochs) of the current rows, over the seeds whose curves carry a per-epoch test AUROC
    (runs from before that column existed are left out): for each rule of :data:`RULES`, the kept epoch per seed
    and the development-test AUROC there (means and stds over those seeds)."""
    rows = _current(read_csv(csv_path))
    curves = read_csv(curves_path(csv_path))
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["lever"], r["split_seed"], r["epochs"]), []).append(r)
    for (method, lever, split_seed, epochs), rs in groups.items():
        runs = []
        for r in sorted(rs, key=lambda r: int(r["seed"])):
            pts = _run_curve(curves, method, lever, r["seed"], split_seed, epochs)
            if len(pts) != int(epochs) or any(c.get("test_auroc", "") in ("", None) for c in pts):
                continue  # a run from before the curves recorded the test AUROC
            runs.append((int(r["seed"]), [float(c["val_auroc"]) for c in pts], [float(c["test_auroc"]) for c in pts]))
        if runs:
            for rule in RULES:
                kept = [rule_epoch(val, rule) for _, val, _ in runs]
                test = np.array([t[e] for (_, _, t), e in zip(runs, kept)])
                out.append({"method": method, "lever": lever, "split_seed": int(split_seed), "epochs": int(epochs),
                            "rule": rule, "seeds": [s for s, _, _ in runs], "kept_epochs": [e + 1 for e in kept],
                            "test_auroc": test})
    return out


def selection_markdown(csv_path) -> str:
    """:func:`selection_rules` as a Markdown table (AUROC in %, mean ± std over seeds); '' when no run has a
    per-epoch test AUROC."""
    rules = selection_rules(csv_path)
    if not rules:
        return ""
    lines = ["| method | lever | epochs | seeds | rule | kept epoch per seed | test AUROC per seed | test AUROC |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rules:
        lines.append(f"| {r['method']} | {r['lever']} | {r['epochs']} | {', '.join(map(str, r['seeds']))} | {r['rule']} | "
                     f"{', '.join(map(str, r['kept_epochs']))} | "
                     f"{', '.join(f'{100 * t:.1f}' for t in r['test_auroc'])} | {_pct(r['test_auroc'])} |")
    return "\n".join(lines) + "\n"


def draw(csv_path, fig_dir, profile: str = PROFILE) -> list[Path]:
    """Validation AUROC per epoch, one panel per lever: each seed a thin line, their mean a thick one, one colour
    per (method, epochs), chance at 0.5. Saved as ``fig_dir/squid_levers_<profile>.png``; ``[]`` without the CSV."""
    rows = _current(read_csv(csv_path))
    if not rows:
        return []
    import matplotlib.pyplot as plt

    from .. import viz

    curves = read_csv(curves_path(csv_path))
    levers = sorted({r["lever"] for r in rows}, key=_lever_order)
    runs = sorted({(r["method"], r["epochs"]) for r in rows}, key=lambda m: (m[0], int(m[1])))
    ncols = min(3, len(levers))
    nrows = -(-len(levers) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), sharex=True, sharey=True,
                             squeeze=False)
    for ax, lever in zip(axes.flat, levers):
        for i, (method, epochs) in enumerate(runs):
            seeds = [r for r in rows if r["lever"] == lever and (r["method"], r["epochs"]) == (method, epochs)]
            per_seed = []
            for r in seeds:
                pts = [(int(c["epoch"]), float(c["val_auroc"]))
                       for c in _run_curve(curves, method, lever, r["seed"], r["split_seed"], epochs)]
                if pts:
                    ax.plot(*zip(*pts), "-", lw=0.7, alpha=0.5, color=f"C{i % 10}")
                    per_seed.append(dict(pts))
            if per_seed:
                epochs_all = sorted(set().union(*per_seed))
                mean = [np.mean([p[e] for p in per_seed if e in p]) for e in epochs_all]
                ax.plot(epochs_all, mean, "-", lw=2.2, color=f"C{i % 10}",
                        label=f"{method}, {epochs} epochs ({len(per_seed)} seeds)")
        ax.axhline(0.5, color="0.5", ls=":", lw=1)
        ax.set(title=lever, ylim=(0, 1))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes.flat[len(levers):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("validation AUROC")
    fig.suptitle(f"SQUID-family levers ({profile} profile): validation AUROC per epoch, seeds thin, mean thick",
                 fontsize=9)
    fig.tight_layout()
    path = viz.save_figure(fig, f"squid_levers_{profile}.png", fig_dir)
    plt.close(fig)
    return [path]
