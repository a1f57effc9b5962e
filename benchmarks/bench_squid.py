"""Speed and memory of this project's SQUID beside the official SQUID code, on this machine's CPU.

Measures, for each implementation and configuration, in a fresh subprocess per measurement:

- training throughput: images/s over whole training cycles at batch 16. One cycle is ``n_critic``
  iterations (``n_critic`` discriminator steps and one generator step with its memory-queue update), so
  the median over cycles is not skewed by which iterations happen to hold the generator step; the median
  seconds of one iteration holding both a D and a G step is reported beside it;
- inference throughput: generator + discriminator in ``eval()`` without gradients, batch 16 and 1 (ours: the
  scorer's own ``discriminator_logits``, fp32 or, for ``ours-bf16``, bf16 autocast with channels-last tensors;
  the official code: ``disc(gen(x))`` under ``torch.no_grad()``);
- peak resident memory of the subprocess (``ru_maxrss`` at its end), one process for training and one
  for inference;
- parameter counts per module (``cxrlib.methods.squid.generator.parameter_report`` for ours,
  :func:`official_parameter_report` for the official ``AE`` + ``SimpleDiscriminator``).

Ours: ``cxrlib.methods.squid.train.train_step`` (with the configuration's ``shared_forward``) on
``cxrlib.methods.squid.generator.build_models(cfg)`` with the Adam optimisers of
``cxrlib.methods.squid.train.fit_squid``.
Official: ``models.squid.AE`` and ``models.discriminator.SimpleDiscriminator`` of
https://github.com/tiangexiang/SQUID, driven by a copy of its ``main.py`` ``gan_train`` loop (``main.py``
itself cannot be imported: it parses arguments, opens the dataset and calls ``.cuda()`` at import). The
official code is never vendored: it is extracted into a temporary directory from ``--official-dir`` (a
clone or a bare mirror) and only its hard-coded ``.cuda()`` (``models/inpaint.py``, the in-painting
block's ``center_mask``) is removed there.

Run from the repository root (see benchmarks/README.md)::

    python benchmarks/bench_squid.py --official-dir PATH/TO/SQUID --iterations 10

Writes ``benchmarks/results/squid_speed.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_model, measure_in_subprocess, shown_command  # noqa: E402
OFFICIAL_URL = "https://github.com/tiangexiang/SQUID"
CONFIGS = ("full", "cpu", "quick")
#: "ours": fp32 training and scoring; "ours-bf16": bf16 autocast and channels-last tensors in training (the squid-levers
#: study's ``bf16`` lever, the cpu profile since issue #23) and in scoring (``score --precision bf16``)
IMPLEMENTATIONS = ("ours", "ours-bf16", "official", "ours-cl")
#: what ``--implementations`` runs unless told: ``ours-cl`` (fp32 with channels-last tensors, a candidate for CPUs
#: without bf16 hardware) only when asked
DEFAULT_IMPLEMENTATIONS = ("ours", "ours-bf16", "official")
BATCH = 16
#: repetitions before timing, timed and recorded (``warmup_times_s``) but not in the median. One was too few on the
#: 2-core AMD EPYC of ``results/amd_epyc_avx2``: the first training cycles of the full configuration are slower, for
#: ours and the official code alike, while the process still faults in fresh pages for its large activations
WARMUP = 3
KIB_PER_GIB = 1024 ** 2

# configs/zhang_best.py (+ configs/base.py for what it inherits) of the official repository, the
# settings its main.py passes to AE(...), build_disc(...) and the optimisers. The config module itself
# cannot be imported: it builds the ZhangLab data loaders from a hard-coded path at construction.
ZHANG_BEST = dict(
    features_root=32,  # main.py: AE(1, 32, ...)
    shrink_thres=5, num_slots=200, mem_num_slots=200, num_patch=2, level=4, mask_ratio=0.95,
    initial_combine=2, drop=0.0, dist=True, memory_channel=2048, img_size=128,
    ops=["concat", "concat", "none", "none"],
    decoder_multipliers=[None, None, 64, 16],  # base.py decoder_memory: MemoryMatrixBlock multipliers
    disc_size=4,  # SimpleDiscriminator(size=CONFIG.size): the 128 px image after five stride-2 convs
    lr=1e-4, gan_lr=1e-4, n_critic=2,
    t_w=0.01, recon_w=10.0, dist_w=0.001, g_w=0.005, d_w=0.005,
)


# ---------------------------------------------------------------------------------------------
# pure helpers (tested in tests/test_bench_squid.py)
# ---------------------------------------------------------------------------------------------

def official_settings(image_size: int, base_width: int, mem_slots: int, decoder_memory_slots: int) -> dict:
    """The official AE / discriminator arguments scaled to another image size and base width.

    Every size-dependent argument of the official constructors follows from the bottleneck: the
    in-painting memory's slot length is ``(16 w / 4) * (S / 32)^2`` (2048 at 128 px, w = 32), the decoder
    memories' multipliers are feature-map areas (64 and 16 at 128 px) and the discriminator's last map is
    ``S / 32`` per side. Raises ``ValueError`` when the size does not divide into the official grid.
    """
    if image_size % 32:
        raise ValueError(f"official SQUID at 2x2 patches needs an image size divisible by 32 (each patch is halved "
                         f"four times, the discriminator halves the image five times), got {image_size}")
    scale = (image_size / 128) ** 2
    s = dict(ZHANG_BEST)
    s.update(features_root=base_width, img_size=image_size, num_slots=mem_slots, mem_num_slots=decoder_memory_slots,
             memory_channel=int(4 * base_width * (image_size // 32) ** 2),
             decoder_multipliers=[None if m is None else int(m * scale) for m in ZHANG_BEST["decoder_multipliers"]],
             disc_size=image_size // 32)
    return s


def summarize(times_s: list[float], images_per_timing: int) -> dict:
    """Median images/s of a list of timings, each covering ``images_per_timing`` images."""
    if not times_s:
        raise ValueError("no timings")
    med = statistics.median(times_s)
    return {"images_per_s": images_per_timing / med, "median_s": med, "times_s": list(times_s)}


def _fmt(value, digits: int) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    """The results table in Markdown. Each row: implementation, config, params, train/infer numbers
    (``None`` where not measured) and an optional ``note``. ``s / D+G iter`` is the median seconds of one
    training iteration holding both a D and a G step (the unit of methods.md Sec. 10's 13.9 s)."""
    header = ("| implementation | config | params (M) | train img/s (b16) | s / D+G iter | infer img/s (b16) "
              "| infer img/s (b1) | peak GiB train | peak GiB infer | note |")
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        params = None if r.get("params") is None else r["params"] / 1e6
        lines.append("| " + " | ".join([
            r["implementation"], r["config"], _fmt(params, 2), _fmt(r.get("train_images_per_s"), 2),
            _fmt(r.get("train_s_d_g_iteration"), 2),
            _fmt(r.get("infer_images_per_s_b16"), 2), _fmt(r.get("infer_images_per_s_b1"), 2),
            _fmt(r.get("peak_gib_train"), 2), _fmt(r.get("peak_gib_infer"), 2), r.get("note", "") or "",
        ]) + " |")
    return "\n".join(lines) + "\n"


PARAMETER_PARTS = ("encoder", "recalibration", "inpaint_attention", "inpaint_feedforward", "inpaint_other",
                   "decoder_memories", "student_decoder", "teacher_decoder", "discriminator", "total")


def parameter_table(rows: list[dict]) -> str:
    """Parameters per module (millions), one column per implementation x config that has a
    ``param_parts`` dict (keys of :data:`PARAMETER_PARTS`); empty string when none has."""
    cols = [r for r in rows if r.get("param_parts")]
    if not cols:
        return ""
    lines = ["| module | " + " | ".join(f"{r['implementation']} {r['config']}" for r in cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for part in PARAMETER_PARTS:
        lines.append(f"| {part} | " + " | ".join(_fmt(r["param_parts"].get(part, 0) / 1e6, 3) for r in cols) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# the official code, in a temporary copy
# ---------------------------------------------------------------------------------------------

def _git(args: list[str], cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def prepare_official(source: str | None, dest: Path) -> str:
    """Copy the official code from ``source`` (a working-tree clone or a bare git mirror) into ``dest``
    and remove its hard-coded ``.cuda()`` in ``models/inpaint.py``. Returns the source's commit or
    ``"unknown"``. Raises ``SystemExit`` with one clear line when the source is missing or not SQUID."""
    if not source:
        raise SystemExit(f"error: the official SQUID code is needed and none was found (no --official-dir, no "
                         f"$SQUID_OFFICIAL): git clone {OFFICIAL_URL} "
                         "and pass --official-dir PATH, or run with --implementations ours")
    src = Path(source).expanduser()
    if not src.exists():
        raise SystemExit(f"error: --official-dir {src}: no such directory; clone {OFFICIAL_URL} there")
    commit = "unknown"
    if (src / "models" / "squid.py").is_file():
        shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", "data", "documents"))
        with contextlib.suppress(Exception):
            commit = _git(["-C", str(src), "rev-parse", "HEAD"])
    else:
        try:
            commit = _git(["-C", str(src), "rev-parse", "HEAD"])
            archive = subprocess.run(["git", "-C", str(src), "archive", "HEAD", "main.py", "models", "tools.py",
                                      "configs"], check=True, capture_output=True).stdout
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            raise SystemExit(f"error: --official-dir {src}: neither a SQUID working tree (no models/squid.py) "
                             f"nor a git repository holding it ({exc})") from None
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    inpaint = dest / "models" / "inpaint.py"
    if not inpaint.is_file():
        raise SystemExit(f"error: --official-dir {src}: models/inpaint.py not found; is this {OFFICIAL_URL}?")
    text = inpaint.read_text()
    if text.count(".cuda()") != 1:
        raise SystemExit(f"error: expected exactly one .cuda() in the official models/inpaint.py, found "
                         f"{text.count('.cuda()')}: the official code changed; update bench_squid.py")
    inpaint.write_text(text.replace(".cuda()", ""))
    return commit


# ---------------------------------------------------------------------------------------------
# worker: one measurement in this (fresh) process
# ---------------------------------------------------------------------------------------------

def _build_ours(config: str, bf16: bool, channels_last: bool):
    import torch

    from cxrlib.methods.squid.config import squid_config
    from cxrlib.methods.squid.generator import build_models, parameter_report

    cfg = squid_config("squid", config, precision="bf16" if bf16 else "fp32", channels_last=channels_last)
    gen, disc = build_models(cfg)
    # fit_squid's optimisers
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr, betas=cfg.d_betas)
    return cfg, gen, disc, opt_g, opt_d, parameter_report(gen, disc)


def official_settings_for(config: str) -> dict:
    """The official constructor arguments at one of our profiles (``zhang_best`` for ``full``).
    Raises ``ValueError`` when the profile has no equal official configuration."""
    from cxrlib.methods.squid.config import squid_config

    if config == "full":
        return dict(ZHANG_BEST)
    cfg = squid_config("squid", config)
    return official_settings(cfg.image_size, cfg.base_width, cfg.mem_slots, cfg.decoder_memory_slots)


def _build_official(s: dict, official_dir: str):
    import contextlib as _cl
    import io

    import torch

    sys.path.insert(0, official_dir)
    with _cl.redirect_stdout(io.StringIO()):  # the constructors print their settings
        from models.discriminator import SimpleDiscriminator
        from models.squid import AE

        decoder_memory = [None if m is None else
                          dict(type="MemoryMatrixBlock", multiplier=m, num_memory=s["num_patch"] ** 2)
                          for m in s["decoder_multipliers"]]
        # main.py: AE(1, 32, CONFIG.shrink_thres, ...)
        model = AE(1, s["features_root"], s["shrink_thres"], num_slots=s["num_slots"], num_patch=s["num_patch"],
                   level=s["level"], ratio=s["mask_ratio"], initial_combine=s["initial_combine"], drop=s["drop"],
                   dist=s["dist"], memory_channel=s["memory_channel"], mem_num_slots=s["mem_num_slots"],
                   ops=s["ops"], decoder_memory=decoder_memory)
        disc = SimpleDiscriminator(size=s["disc_size"])  # tools.build_disc, discriminator_type 'basic'
    # main.py's optimisers (CONFIG.opt = Adam)
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"], eps=1e-7, betas=(0.5, 0.999), weight_decay=0.00001)
    opt_d = torch.optim.Adam(disc.parameters(), betas=(0.5, 0.999), lr=s["gan_lr"])
    return s, model, disc, opt, opt_d, official_parameter_report(model, disc)


def _count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def official_parameter_report(model, disc) -> dict[str, int]:
    """Parameter counts of the official ``AE`` + discriminator under the keys of
    ``cxrlib.methods.squid.generator.parameter_report``: encoder = ``in_conv`` + ``down_blocks``; in-painting
    attention = ``inpaint_block.attention``, feed-forward = ``inpaint_block.ff``, other = the rest of
    ``inpaint_block`` (1x1 convs, BN, LayerNorms); decoder memories = ``memory_blocks``; student decoder =
    ``up_blocks`` + ``out_conv``; teacher decoder = ``teacher_ups`` + ``teacher_out`` (0 without ``dist``).
    Raises ``ValueError`` when the parts do not add up to the model's total (the official code changed)."""
    ib = model.inpaint_block
    report = {
        "encoder": _count(model.in_conv, model.down_blocks),
        "recalibration": 0,
        "inpaint_attention": _count(ib.attention),
        "inpaint_feedforward": _count(ib.ff),
        "inpaint_other": _count(ib) - _count(ib.attention, ib.ff),
        "decoder_memories": _count(model.memory_blocks),
        "student_decoder": _count(model.up_blocks, model.out_conv),
        "teacher_decoder": _count(model.teacher_ups, model.teacher_out) if getattr(model, "dist", False) else 0,
        "discriminator": _count(disc),
    }
    report["total"] = sum(report.values())
    if report["total"] != _count(model) + _count(disc):
        raise ValueError(f"official parameter breakdown sums to {report['total']}, the model has "
                         f"{_count(model) + _count(disc)}: update official_parameter_report")
    return report


def _official_iteration(model, disc, opt, opt_d, img, i: int, s: dict) -> None:
    """Iteration ``i`` of the official main.py ``gan_train``: ``train_discriminator(img)`` (its own
    generator forward), then on every ``n_critic``-th iteration a generator step with a fresh forward and
    the memory-queue update. Its ``tot_loss`` bookkeeping ``.item()`` calls are kept (one per loss term,
    as there): they are part of the official loop's cost. ``CONFIG.alert`` is None in zhang_best."""
    import torch
    from torch import nn

    from models.memory import MemoryQueue

    ce = nn.BCEWithLogitsLoss()
    recon_criterion = nn.MSELoss(reduction="mean")
    # train_discriminator(img)
    opt_d.zero_grad()
    out = model(img)
    real_validity = disc(img)
    fake_validity = disc(out["recon"].detach())
    d_loss = ce(real_validity, torch.ones_like(real_validity))
    d_loss += ce(fake_validity, torch.zeros_like(fake_validity))
    d_loss *= s["d_w"]
    d_loss.backward()
    opt_d.step()
    d_loss.item()
    if i % s["n_critic"] == 0:
        opt.zero_grad()
        out = model(img)
        recon_loss = s["recon_w"] * recon_criterion(out["recon"], img)
        recon_loss.item()
        loss_all = recon_loss
        fake_validity = disc(out["recon"])
        g_loss = s["g_w"] * ce(fake_validity, torch.ones_like(fake_validity))
        g_loss.item()
        loss_all = loss_all + g_loss
        if s["dist"] and "teacher_recon" in out and torch.is_tensor(out["teacher_recon"]):
            t_recon_loss = s["t_w"] * recon_criterion(out["teacher_recon"], img)
            t_recon_loss.item()
            loss_all = loss_all + t_recon_loss
        if s["dist"] and "dist_loss" in out and torch.is_tensor(out["dist_loss"]):
            dist_loss = s["dist_w"] * out["dist_loss"]
            dist_loss.item()
            loss_all = loss_all + dist_loss
        loss_all.item()
        loss_all.backward()
        opt.step()
        for module in model.modules():
            if isinstance(module, MemoryQueue):
                module.update()


def run_worker(spec: dict) -> dict:
    """One measurement (``spec``: implementation, config, mode train|infer, iterations, threads,
    official_dir) in this process; returns the numbers and this process's peak resident memory."""
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    impl, config, iterations = spec["implementation"], spec["config"], spec["iterations"]
    if impl.startswith("ours"):
        cfg, gen, disc, opt_g, opt_d, params = _build_ours(config, bf16=impl == "ours-bf16",
                                                           channels_last=impl in ("ours-bf16", "ours-cl"))
        size, n_critic = cfg.image_size, cfg.n_critic
    else:
        # settings come from the parent, so that this process imports nothing of cxrlib
        s, gen, disc, opt_g, opt_d, params = _build_official(spec["official_settings"], spec["official_dir"])
        size, n_critic = s["img_size"], s["n_critic"]
    # fixed-seed random inputs in [0, 1] (SQUID's model range)
    x = torch.rand(BATCH, 1, size, size, generator=torch.Generator().manual_seed(1))
    result = {"params": params}

    if spec["mode"] == "train":
        if impl.startswith("ours"):
            from cxrlib.methods.squid.train import train_step

        gen.train()
        disc.train()
        it = 0

        def cycle() -> list[float]:
            """n_critic iterations (the first with the G step); the seconds of each."""
            nonlocal it
            seconds = []
            for _ in range(n_critic):
                t0 = time.perf_counter()
                if impl.startswith("ours"):
                    train_step(gen, disc, opt_g, opt_d, x, cfg, g_step=it % cfg.n_critic == 0)
                else:
                    _official_iteration(gen, disc, opt_g, opt_d, x, it, s)
                seconds.append(time.perf_counter() - t0)
                it += 1
            return seconds

        # the warm-up cycles are timed too and kept: how long a process takes to settle is part of the record
        warm = [sum(cycle()) for _ in range(spec.get("warmup", WARMUP))]
        cycles = [cycle() for _ in range(iterations)]
        result["train"] = summarize([sum(c) for c in cycles], BATCH * n_critic)
        result["train"]["warmup_times_s"] = warm
        # per iteration, comparable with a single "D+G iteration" figure (methods.md Sec. 10)
        result["train"]["median_s_d_g_iteration"] = statistics.median(c[0] for c in cycles)
        result["train"]["median_s_d_iteration"] = (statistics.median(t for c in cycles for t in c[1:])
                                                   if n_critic > 1 else None)
        result["train"]["n_critic"] = n_critic
    else:
        gen.eval()
        disc.eval()
        if impl.startswith("ours"):
            # the scorer's own path (SquidScorer.raw_logits): ours in fp32, ours-bf16 as `score --precision bf16`
            from cxrlib.methods.squid.train import discriminator_logits

            precision = cfg.precision
            if cfg.channels_last:
                gen.to(memory_format=torch.channels_last)
                disc.to(memory_format=torch.channels_last)

            def forward(xb):
                # ours-cl: channels-last weights in fp32; a 1-channel input is the same in either layout, and the
                # convolutions' outputs follow the weights
                discriminator_logits(gen, disc, xb, cfg, len(xb), precision=precision)
        else:
            def forward(xb):
                with torch.no_grad():
                    disc(gen(xb)["recon"])

        def timed(xb) -> float:
            t0 = time.perf_counter()
            forward(xb)
            return time.perf_counter() - t0

        for batch in (BATCH, 1):
            xb = x[:batch]
            warm = [timed(xb) for _ in range(spec.get("warmup", WARMUP))]
            result[f"infer_b{batch}"] = summarize([timed(xb) for _ in range(iterations)], batch)
            result[f"infer_b{batch}"]["warmup_times_s"] = warm
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_GIB
    return result


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------

def _measure(spec: dict, timeout: float) -> dict:
    """Run one measurement in a fresh subprocess; its result or ``{"error": ...}``."""
    return measure_in_subprocess(__file__, spec, timeout, None)


def _row(impl: str, config: str, train: dict, infer: dict) -> dict:
    row = {"implementation": impl, "config": config, "params": None, "param_parts": None,
           "train_images_per_s": None, "train_s_d_g_iteration": None, "infer_images_per_s_b16": None,
           "infer_images_per_s_b1": None, "peak_gib_train": None, "peak_gib_infer": None, "note": ""}
    notes = []
    for name, res in (("train", train), ("infer", infer)):
        if "error" in res:
            notes.append(f"{name}: {res['error']}")
            continue
        row["params"] = res["params"]["total"]
        row["param_parts"] = res["params"]
        row[f"peak_gib_{name}"] = res["peak_rss_gib"]
        if name == "train":
            row["train_images_per_s"] = res["train"]["images_per_s"]
            row["train_s_d_g_iteration"] = res["train"]["median_s_d_g_iteration"]
        else:
            row["infer_images_per_s_b16"] = res["infer_b16"]["images_per_s"]
            row["infer_images_per_s_b1"] = res["infer_b1"]["images_per_s"]
    row["note"] = "; ".join(notes)
    return row


def plot(rows: list[dict], path: Path, title: str = "") -> None:
    """Grouped bar chart, one panel per quantity (training and inference images/s, peak memory), one
    group per configuration, one bar per implementation, each labelled with its value (linear axes, so
    bar heights compare directly; missing values are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = [("train_images_per_s", "training, images/s (b16)"),
               ("infer_images_per_s_b16", "inference, images/s (b16)"),
               ("infer_images_per_s_b1", "inference, images/s (b1)"),
               ("peak_gib_train", "peak memory, training (GiB)"),
               ("peak_gib_infer", "peak memory, inference (GiB)")]
    configs = list(dict.fromkeys(r["config"] for r in rows))
    impls = list(dict.fromkeys(r["implementation"] for r in rows))
    colors = {"ours": "tab:blue", "ours-bf16": "tab:cyan", "official": "tab:orange", "ours-cl": "tab:green"}
    width = 0.8 / max(len(impls), 1)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.4))
    for ax, (key, panel_title) in zip(axes, metrics):
        for j, impl in enumerate(impls):
            vals = [next((r[key] for r in rows if r["config"] == c and r["implementation"] == impl), None)
                    for c in configs]
            vals = [np.nan if v is None else v for v in vals]
            bars = ax.bar(np.arange(len(configs)) + (j - (len(impls) - 1) / 2) * width, vals, width,
                          label=impl, color=colors.get(impl))
            ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in vals], fontsize=7)
        ax.set_xticks(np.arange(len(configs)), configs)
        ax.set_title(panel_title, fontsize=9)
        ax.margins(y=0.15)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def default_official_source() -> str | None:
    """``$SQUID_OFFICIAL`` when set, else None (the official code is never looked for outside the
    paths the user gives)."""
    return os.environ.get("SQUID_OFFICIAL") or None


def _bf16_words(machine: dict) -> str:
    """``", AVX2, no bf16 hardware"``-style words for the header (empty for reports written before they existed)."""
    if "native_bf16" not in machine:
        return ""
    return f", {machine['cpu_capability']}, {'with' if machine['native_bf16'] else 'no'} bf16 hardware"


def report_markdown(report: dict) -> str:
    """``squid_speed.md``: header (machine, commits, command), the speed table, the parameter table."""
    m = report["machine"]
    official = report.get("official_commit") or "–"
    params = parameter_table(report["rows"])
    return (
        "# SQUID speed and memory: this project vs the official code\n\n"
        f"CPU: {m['cpu']} ({m['logical_cpus']} logical CPUs{_bf16_words(m)}), torch {m['torch']}, {m['threads']} threads; "
        f"batch {report['batch']}, {report['warmup']} warm-up + median of {report['iterations']}; "
        f"commit {report['commit'][:10]}{' (dirty)' if report['dirty'] else ''}; official {official[:10]}.\n"
        f"Command: `{report['command']}`\n\n"
        "train img/s: images per second over whole training cycles of n_critic = 2 iterations (two D steps, "
        "one G step + memory-queue update: what an epoch costs); s / D+G iter: one iteration holding a D and a "
        "G step; inference: generator + discriminator, eval mode, no gradients (ours-bf16: in bf16, as `score "
        "--precision bf16`); peak: ru_maxrss of a fresh process "
        "per measurement (including Python + torch).\n\n"
        + markdown_table(report["rows"])
        + ("\nParameters per module (M):\n\n" + params if params else "")
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-dir", "--official", dest="official", metavar="PATH",
                   default=default_official_source(),
                   help=f"a clone (working tree or bare git mirror) of {OFFICIAL_URL}; default $SQUID_OFFICIAL")
    p.add_argument("--iterations", type=int, default=5,
                   help="timed repetitions (training cycles / inference forwards); the median is reported (default 5)")
    p.add_argument("--warmup", type=int, default=WARMUP,
                   help=f"repetitions before timing, recorded in the JSON but not in the median (default {WARMUP})")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of full,cpu,quick")
    p.add_argument("--implementations", default=",".join(DEFAULT_IMPLEMENTATIONS),
                   help=f"comma-separated subset of {','.join(IMPLEMENTATIONS)} (default "
                        f"{','.join(DEFAULT_IMPLEMENTATIONS)})")
    p.add_argument("--skip", default="", metavar="IMPL/CONFIG,...",
                   help="implementation/configuration pairs not to measure, e.g. ours-bf16/full where bf16 is "
                        "emulated and one run would take hours")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--timeout", type=float, default=3600, help="seconds per measurement subprocess (default 3600)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        result = run_worker(json.loads(args.worker))
        Path(args.worker_out).write_text(json.dumps(result))
        return 0

    configs = [c for c in args.configs.split(",") if c]
    impls = [i for i in args.implementations.split(",") if i]
    for c in configs:
        if c not in CONFIGS:
            p.error(f"unknown config {c!r}; choose from {CONFIGS}")
    for i in impls:
        if i not in IMPLEMENTATIONS:
            p.error(f"unknown implementation {i!r}; choose from {IMPLEMENTATIONS}")
    skip = {pair for pair in args.skip.split(",") if pair}
    for pair in skip:
        impl, _, config = pair.partition("/")
        if impl not in IMPLEMENTATIONS or config not in CONFIGS:
            p.error(f"--skip {pair!r}: expected IMPLEMENTATION/CONFIG, e.g. ours-bf16/full")
    if args.iterations < 1 or args.warmup < 0:
        p.error("--iterations must be >= 1 and --warmup >= 0")

    import torch

    from cxrlib import precision as P
    from cxrlib.methods.squid.config import squid_config
    from cxrlib.utils import atomic_write_bytes, atomic_write_json

    # the benchmark measures bf16 on purpose, also where it is emulated (the table says so); the measurement
    # subprocesses inherit this
    os.environ[P.ALLOW_EMULATED_BF16] = "1"
    out_dir = Path(args.out_dir)
    rows, raw = [], {}
    with tempfile.TemporaryDirectory(prefix="squid_official_") as official_dir:
        try:
            official_commit = prepare_official(args.official, Path(official_dir)) if "official" in impls else None
        except SystemExit as exc:  # one clear line, exit status 2 like the cxrlib command line
            print(exc, file=sys.stderr)
            return 2
        for config in configs:
            cfg = squid_config("squid", config)
            for impl in impls:
                if f"{impl}/{config}" in skip:
                    continue
                st = None
                if impl.startswith("ours"):
                    note = ("one generator forward shared by the D and G steps" if cfg.shared_forward
                            else "official loop (separate D and G forwards)")
                    if impl == "ours-bf16":
                        note += "; bf16 autocast and channels-last in training and scoring"
                        if not P.native_cpu_bf16():
                            note += " (emulated: this CPU has no bf16 hardware)"
                    if impl == "ours-cl":
                        note += "; fp32 with channels-last tensors in training and scoring"
                else:
                    try:
                        st = official_settings_for(config)
                    except ValueError as exc:
                        rows.append({**_row(impl, config, {"error": ""}, {"error": ""}),
                                     "note": f"no equal official configuration: {exc}"})
                        continue
                    note = ("configs/zhang_best.py; main.py gan_train loop" if config == "full" else
                            f"AE(1, {st['features_root']}) at {st['img_size']} px, {st['num_slots']} slots, "
                            f"memory_channel {st['memory_channel']}, decoder multipliers "
                            f"{[m for m in st['decoder_multipliers'] if m]}, disc size {st['disc_size']}; "
                            "main.py gan_train loop")
                res = {}
                for mode in ("train", "infer"):
                    spec = dict(implementation=impl, config=config, mode=mode, iterations=args.iterations,
                                warmup=args.warmup, threads=args.threads, official_dir=official_dir,
                                official_settings=st)
                    print(f"[bench] {impl} {config} {mode} ...", flush=True)
                    t0 = time.perf_counter()
                    res[mode] = _measure(spec, args.timeout)
                    print(f"[bench]   {time.perf_counter() - t0:.0f} s "
                          f"{res[mode].get('error') or ''}", flush=True)
                raw[f"{impl}/{config}"] = res
                row = _row(impl, config, res["train"], res["infer"])
                row["note"] = "; ".join(n for n in (note, row["note"]) if n)
                rows.append(row)

    try:
        commit = _git(["rev-parse", "HEAD"], cwd=ROOT)
        dirty = bool(_git(["status", "--porcelain", "--untracked-files=no"], cwd=ROOT))
    except (subprocess.CalledProcessError, FileNotFoundError):
        commit, dirty = "unknown", False
    machine = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
               "python": platform.python_version(), "threads": args.threads,
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": P.native_cpu_bf16()}
    cli = list(sys.argv[1:] if argv is None else argv)
    report = {"machine": machine, "commit": commit, "dirty": dirty, "official_commit": official_commit,
              "iterations": args.iterations, "warmup": args.warmup, "batch": BATCH,
              "command": shown_command("benchmarks/bench_squid.py", cli, ROOT),
              "rows": rows, "raw": raw}
    md = report_markdown(report)
    atomic_write_json(report, out_dir / "squid_speed.json")
    atomic_write_bytes(out_dir / "squid_speed.md", md.encode())
    plot(rows, out_dir / "squid_speed.png",
         title=f"SQUID, batch 16: {machine['cpu']}, {args.threads} threads, torch {machine['torch']}, "
               f"commit {commit[:10]}{' (dirty)' if dirty else ''}")
    print(md)
    print(f"[bench] wrote {out_dir / 'squid_speed.json'}, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
