"""The results page: ``results/README.md`` and the README's summary table, generated from the committed CSVs.

One pipeline for every table of :data:`cxrlib.tables.TABLES` (each made by ``python -m cxrlib benchmark --table
NAME``): the main table and its localisation rows (``results/<profile>/metrics.csv``), the WSCXR K-shot and
ablation rows (``results/wscxr_<profile>.csv``), the CRTSC ablation (``results/crtsc_ablation/ablation.csv``),
the DDAD full recipe (``results/ddad_full.csv``), and, in the section on issue #23 (:func:`issue23_section`), the
SQUID-family lever study (``results/cpu/squid_levers.csv``) with the two diagnostics under
``results/cpu/diagnostics/``. Nothing here trains; every number on the page is computed from
those files by the tables' own Markdown functions, and ``tests/test_readme_results.py`` fails when the committed
page or README block differs from what they make of the committed CSVs.

    python -m cxrlib report            # writes results/README.md, the README block, the figures
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from . import benchmark as B
from .data import SPLIT_VERSION
from .tables import TABLES
from .tables import squid_levers as SL
from .tables import wscxr as W
from .tables.main_table import FIGURES
from .utils import repo_root

__all__ = ["export_curves", "read_curves", "curve_splits", "README_BLOCK_START", "README_BLOCK_END", "PAGE", "results_page", "readme_block",
           "official_test_markdown", "issue23_section", "sharpness_markdown", "fidelity_markdown", "fidelity_reading",
           "DIAGNOSTICS",
           "write_all"]

README_BLOCK_START, README_BLOCK_END = "<!-- summary:start -->", "<!-- summary:end -->"
#: the generated page, relative to the repository root
PAGE = "results/README.md"
#: the independent check on the official ZhangLab test split (data this repository does not have)
OFFICIAL_CHECK = "results/official_test_check.csv"

#: protocol in a word, for the README's summary table
PROTOCOL_WORD = {"squid": "one-class", "simsid": "one-class", "crtsc": "one-class", "patchcore": "one-class",
                 "wscxr": "K = 16 labelled", "ddad": "unlabelled pool"}


def _commits(rows, key: str = "commit") -> str:
    return ", ".join(sorted({str(r[key]) for r in rows}))


def _commit_column(rows) -> str:
    return "git_commit" if rows and "git_commit" in rows[0] else "commit"


#: per-epoch validation curves of the trained runs (``export_curves``), relative to ``results/<profile>/``
CURVES_DIR = "curves"


def export_curves(run_dirs, out_dir) -> list[Path]:
    """Write the per-epoch history that each run's ``model.pt`` holds (epoch, validation AUROC, losses) to
    ``out_dir/<run folder>.csv`` with the run's method, seed, split seed and split version, so the curves of the
    table's runs are committed beside its rows. Runs whose checkpoint has no per-epoch history (PatchCore, WSCXR,
    DDAD) are skipped."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run in map(Path, run_dirs):
        ck = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
        history = ck.get("history")
        if not isinstance(history, list) or not history or "val_auroc" not in history[0]:
            continue
        cols = list(history[0])
        lines = [",".join(["method", "seed", "split_seed", "split_version", "kept_epoch", *cols])]
        for h in history:
            lines.append(",".join([ck["method"], str(ck["seed"]), str(ck.get("split_seed", 0)),
                                   str(ck.get("split_version", "image-v1")),
                                   str(ck.get("best_epoch", "")), *(f"{h[c]:.6g}" if isinstance(h[c], float) else
                                                                    str(h[c]) for c in cols)]))
        path = out_dir / f"{run.name}.csv"
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    return written


def read_curves(folder, split_seed: int | None = None) -> dict:
    """``{run name: (epochs 1-based, val_auroc, kept epoch 1-based)}`` from :func:`export_curves`' files, those of
    development split ``split_seed`` only when given (a file written before the column existed is split 0)."""
    out = {}
    for path in sorted(Path(folder).glob("*.csv")):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if split_seed is not None and int(rows[0].get("split_seed", 0)) != split_seed:
            continue
        out[path.stem] = ([int(r["epoch"]) + 1 for r in rows], [float(r["val_auroc"]) for r in rows],
                          int(rows[0]["kept_epoch"]) + 1)
    return out


def _curve_reading(curves: dict) -> str:
    """Where each SQUID-family run's kept epoch sits and how its curve ends, from the committed curves."""
    parts = []
    for name, (epochs, auroc, kept) in curves.items():
        parts.append(f"{name}: kept epoch {kept} of {len(epochs)} (validation {auroc[kept - 1]:.2f}), last epoch "
                     f"{auroc[-1]:.2f}, {sum(a < 0.5 for a in auroc)} of {len(auroc)} epochs below chance")
    return "; ".join(parts) + "." if parts else ""


def readme_block(csv_path, display_path: str) -> str:
    """The README's one summary table: method, AUROC ± std on development split 0 (current split version),
    the paper's AUROC and the protocol in a word."""
    rows = B.current_rows(B.image_rows(B.read_rows(csv_path)))
    summary = [s for s in B.summarize(rows) if s["split_seed"] == 0]
    summary.sort(key=lambda s: -s["auroc_mean"])
    paper = B.paper_auroc_text()
    lines = [README_BLOCK_START, "| method | AUROC, dev. test (%) | seeds | paper AUROC (official test) | protocol |",
             "| --- | --- | --- | --- | --- |"]
    for s in summary:
        lines.append(f"| {s['method']} ({s['variant']}) | {100 * s['auroc_mean']:.1f} ± {100 * s['auroc_std']:.1f} | "
                     f"{s['n']} | {paper.get(s['method'], '–')} | {PROTOCOL_WORD.get(s['method'], '')} |")
    lines += ["", f"`cpu` profile, patient-disjoint development split 0 (`{SPLIT_VERSION}`) of the ZhangLab training "
              f"file, generated from [`{display_path}`]({display_path}); the official test split is harder still "
              f"(see [the results page]({PAGE}#the-official-test-split-is-harder-still)).", README_BLOCK_END]
    return "\n".join(lines)


def official_test_markdown(path) -> str:
    """The independent check's official-test AUROCs beside the development-test AUROCs it was given."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    lines = ["| method (cpu profile, seed 0) | development test (image-v1 split) | official test split |",
             "| --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['method']} | {float(r['dev_test_auroc']):.1f} | {float(r['official_test_auroc']):.1f} |")
    return "\n".join(lines) + "\n"


def _change_reading(rows) -> str:
    """One sentence per method on how its split-0 AUROC moved between the split definitions (profile version 1
    on both, as in :func:`cxrlib.benchmark.split_change_markdown`)."""
    by = {}
    for s in B.summarize(B.image_rows(rows)):
        if s["split_seed"] == 0 and s["profile_version"] == "1":
            by.setdefault(s["method"], {})[s["split_version"]] = s["auroc_mean"]
    moves = [f"{m} {100 * (v[SPLIT_VERSION] - v['image-v1']):+.1f}" for m, v in by.items()
             if SPLIT_VERSION in v and "image-v1" in v]
    return ("AUROC change on split 0, in points: " + ", ".join(moves) + ".") if moves else ""


def curve_splits(folder) -> list[int]:
    """The development split seeds that :func:`export_curves`' files in ``folder`` cover, ascending."""
    splits = set()
    for path in Path(folder).glob("*.csv"):
        with open(path, newline="") as f:
            splits.add(int(next(csv.DictReader(f)).get("split_seed", 0)))
    return sorted(splits)


def _curves_section(root: Path, profile: str) -> list[str]:
    folder = root / "results" / profile / CURVES_DIR
    splits = curve_splits(folder) if folder.is_dir() else []
    if not splits:
        return []
    readings = [f"Split {s}: {_curve_reading(read_curves(folder, s))}" for s in splits]
    return ["### The SQUID family's validation curves", "",
            f"Validation AUROC per epoch of every SQUID, SimSID and CRTSC run of the table, one panel per development "
            f"split (`results/{profile}/"
            f"{CURVES_DIR}/`, exported from each run's `model.pt`), with the kept checkpoint marked. The validation "
            f"split is large enough (AUROC standard error about 2 points) that its noise cannot explain swings of tens "
            f"of points. The runs score with the official per-image normalisation of the discriminator (issue #23, "
            f"below); with the running statistics used before, the same training gave curves that swung around "
            f"chance and kept epochs near the start.", "",
            *(x for r in readings for x in (r, "")), f"![validation curves](../figures/results_{profile}_val_curves.png)",
            ""]


#: issue #23's diagnostics, relative to ``results/<profile>/``: (file, the script that writes it)
DIAGNOSTICS = {"sharpness_confound": ("diagnostics/sharpness_confound.csv",
                                      "python scripts/sharpness_confound.py --data PATH/zhanglab128_train.npz"),
               "score_vs_fidelity": ("diagnostics/score_vs_fidelity.csv",
                                     "python scripts/score_vs_fidelity.py RUN_DIR --data PATH/zhanglab128_train.npz "
                                     "--last"),
               "scoring_precision": ("diagnostics/scoring_precision.csv",
                                     "python scripts/scoring_precision.py RUN_DIR ... --data PATH/zhanglab128_train.npz"),
               "map_generator": ("diagnostics/map_generator.csv",
                                 "python scripts/map_generator.py runs/cpu/localisation/RUN ..."),
               "lowpass_error": ("diagnostics/lowpass_error.csv",
                                 "python scripts/lowpass_error.py RUN_DIR ... --data PATH/zhanglab128_train.npz")}


def _read_text_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sharpness_markdown(path) -> str:
    """``sharpness_confound.csv`` as a table: per image size, split and part, the class counts and the AUROC (%,
    pneumonia = positive) of each image statistic."""
    stats = ("laplacian_energy", "blur_residual", "mean_intensity", "intensity_std")
    lines = ["| size | split | part | normal | pneumonia | " + " | ".join(f"AUROC of {s}" for s in stats) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in stats) + " |"]
    for r in _read_text_rows(path):
        lines.append(f"| {r['size']} | {r['split_seed']} | {r['part']} | {r['n_normal']} | {r['n_pneumonia']} | "
                     + " | ".join(f"{100 * float(r['auroc_' + s]):.1f}" for s in stats) + " |")
    return "\n".join(lines) + "\n"


def scoring_precision_markdown(path) -> str:
    """``scoring_precision.csv`` as a table: per run, the development-test AUROC (%) scored in fp32 and in the
    lower precision, the change in points and Spearman's correlation of the two score vectors."""
    lines = ["| run | split | precision | test images | AUROC, fp32 | AUROC, low precision | change (points) | Spearman |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in _read_text_rows(path):
        lines.append(f"| {r['run']} | {r['split_seed']} | {r['precision']} | {r['n_test']} | "
                     f"{100 * float(r['auroc_fp32']):.1f} | {100 * float(r['auroc_low']):.1f} | "
                     f"{100 * float(r['auroc_change']):+.2f} | {float(r['spearman']):.4f} |")
    return "\n".join(lines) + "\n"


def map_generator_markdown(path) -> str:
    """``map_generator.csv`` as a table: per localisation run, the pixel AUROC (%) of maps drawn by the kept
    epoch's generator and by the last epoch's."""
    lines = ["| run | kept epoch | pixel AUROC, kept generator | map epoch | pixel AUROC, map generator |",
             "| --- | --- | --- | --- | --- |"]
    for r in _read_text_rows(path):
        lines.append(f"| {r['run']} | {r['kept_epoch']} | {100 * float(r['pixel_auroc_kept']):.1f} | {r['map_epoch']} | "
                     f"{100 * float(r['pixel_auroc_map']):.1f} |")
    return "\n".join(lines) + "\n"


def lowpass_markdown(path) -> str:
    """``lowpass_error.csv`` as a table: per run, the low-pass width chosen on validation and the AUROC (%) of the
    plain and the low-pass reconstruction error on validation and test, with the run's score."""
    lines = ["| run | split | low-pass sigma (px) | val: plain error | val: low-pass error | val: score | "
             "test: plain error | test: low-pass error | test: score |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in _read_text_rows(path):
        lines.append(f"| {r['run']} | {r['split_seed']} | {float(r['sigma']):g} | "
                     + " | ".join(f"{100 * float(r[c]):.1f}" for c in (
                         "val_auroc_plain", "val_auroc_lowpass", "val_auroc_score", "test_auroc_plain",
                         "test_auroc_lowpass", "test_auroc_score")) + " |")
    return "\n".join(lines) + "\n"


def lowpass_reading(path) -> str:
    """The low-pass table read in numbers: the test AUROC of the plain and of the low-pass error, mean over runs."""
    rows = _read_text_rows(path)
    if not rows:
        return ""
    mean = lambda c: 100 * float(np.mean([float(r[c]) for r in rows]))  # noqa: E731
    below = lambda c: sum(float(r[c]) <= 0.5 for r in rows) or "none"  # noqa: E731
    return (f"**Reading.** Over the {len(rows)} runs, the plain reconstruction error gives a mean development-test "
            f"AUROC of {mean('test_auroc_plain'):.1f} ({below('test_auroc_plain')} of them at or below chance); "
            f"taking out the fine detail lifts it to {mean('test_auroc_lowpass'):.1f} ({below('test_auroc_lowpass')} "
            f"at or below chance), against {mean('test_auroc_score'):.1f} for the discriminator's score. The plain "
            f"error hides much of what the generators learned about the broad anatomy under the sharpness confound "
            f"(\"Image sharpness and intensity against the label\", above).")


def _bf16_speedup_text(root: Path) -> str:
    """'; at batch 16 X times the fp32 throughput in the cpu configuration and Y in full (file)', from the committed
    SQUID speed benchmark; empty without it."""
    path = root / "benchmarks" / "results" / "squid_speed.json"
    if not path.exists():
        return ""
    rows = {(r["implementation"], r["config"]): r for r in json.loads(path.read_text())["rows"]}
    ratios = [(c, rows["ours-bf16", c]["infer_images_per_s_b16"] / rows["ours", c]["infer_images_per_s_b16"])
              for c in ("cpu", "full") if ("ours", c) in rows and ("ours-bf16", c) in rows]
    if not ratios:
        return ""
    said = [f"{x:.1f} times fp32's in the `{c}` configuration" if i == 0 else f"{x:.1f} times in `{c}`"
            for i, (c, x) in enumerate(ratios)]
    return f"; at batch 16 its throughput is {' and '.join(said)}, `benchmarks/results/squid_speed.md`"


def fidelity_markdown(path) -> str:
    """``score_vs_fidelity.csv`` as a table: per run and checkpoint, the mean reconstruction error per class, the
    AUROC (%) of that error and of the run's score, and Spearman's correlation of the two."""
    lines = ["| run | checkpoint | epoch | D normalisation at scoring | validation images | recon. error, normal | "
             "recon. error, pneumonia | AUROC of recon. error | AUROC of score | Spearman (score, error) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in _read_text_rows(path):
        lines.append(f"| {r['run']} | {r['checkpoint']} | {r['epoch']} | {r.get('disc_eval_norm') or 'running'} | "
                     f"{r['n_val']} | "
                     f"{float(r['recon_err_normal']):.4f} | {float(r['recon_err_pneumonia']):.4f} | "
                     f"{100 * float(r['auroc_recon_err']):.1f} | {100 * float(r['auroc_score']):.1f} | "
                     f"{float(r['spearman_score_vs_err']):.2f} |")
    return "\n".join(lines) + "\n"


def _split_versions(path) -> str:
    return ", ".join(f"`{v}`" for v in sorted({r.get("split_version", "") for r in _read_text_rows(path)} - {""}))


def _method_of_run(run: str) -> str:
    return run.rsplit("_s", 1)[0]


def fidelity_reading(path) -> str:
    """What the score-vs-fidelity rows say about the discriminator's normalisation at scoring: per method, the mean
    validation AUROC of the score on the same checkpoints with running and with per-image statistics."""
    by: dict = {}
    for r in _read_text_rows(path):
        norm = r.get("disc_eval_norm") or "running"
        by.setdefault((_method_of_run(r["run"]), r["checkpoint"].split()[0]), {}).setdefault(norm, []).append(
            float(r["auroc_score"]))
    parts, last_up, last_down = [], [], []
    for (method, which), v in sorted(by.items()):
        if {"running", "per_image"} <= set(v) and len(v["running"]) == len(v["per_image"]):
            run_mean, img_mean = 100 * np.mean(v["running"]), 100 * np.mean(v["per_image"])
            parts.append(f"{method}, {which} epoch ({len(v['running'])} runs): {run_mean:.1f} with running "
                         f"statistics, {img_mean:.1f} with per-image statistics")
            if which == "last":
                (last_up if img_mean > run_mean else last_down).append(method)
    if not parts:
        return ""
    verdict = []
    if last_up:
        verdict.append(f"at the last epoch, the best-trained generator, the official normalisation scores higher for "
                       f"{', '.join(last_up)}")
    if last_down:
        verdict.append(f"lower for {', '.join(last_down)}")
    return ("**Reading.** The same checkpoints, scored two ways, mean validation AUROC of the score in %: "
            + "; ".join(parts) + ". The official code never switches its discriminator to eval mode and scores one "
            "image at a time, so its BatchNorm normalises each image by that image's own feature statistics; this "
            "project had used the running statistics instead. " + ("; ".join(verdict).capitalize() + ". " if verdict
                                                                 else "")
            + "The kept epochs of these runs were selected with running statistics, which is why they are early "
            "ones. The reconstruction error stays a weak score: pneumonia images have less fine detail (the "
            "sharpness table above), so a blurring generator reconstructs them about as well as normal ones.\n")


def _seed_by_seed(s: dict, ref: dict, what: str) -> str:
    """``s`` beside ``ref`` (two :func:`cxrlib.tables.squid_levers.summarize` entries) on their shared seeds: the
    reference's mean ± std and the paired differences ``s - ref`` in points; ``""`` when they share no seed."""
    shared = [k for k in s["seeds"] if k in ref["seeds"]]
    if not shared:
        return ""
    mine = np.array([s["test_auroc_kept"][s["seeds"].index(k)] for k in shared])
    theirs = np.array([ref["test_auroc_kept"][ref["seeds"].index(k)] for k in shared])
    return (f"; {what} gives {SL._pct(theirs)} on the same seed{'s' * (len(shared) > 1)}, a difference of "
            + ", ".join(f"{100 * d:+.1f}" for d in mine - theirs) + " points (seed " + ", ".join(map(str, shared)) + ")")


def lever_reading(lever_csv, metrics_csv) -> str:
    """What the lever rows say against the study's baseline: for each (method, lever, epochs) on split 0, its
    development-test AUROC at the kept epoch beside the main table's rows of the same method and seeds made by
    version 1 of the profile (the one the study started from, :data:`cxrlib.tables.squid_levers.BASELINE`),
    and how far validation was from test at the kept epochs. Seed by seed, a lever is also set beside

    * the lever rows of the method's current profile (:func:`cxrlib.tables.squid_levers.is_current_profile`),
    * its arithmetic base (:func:`cxrlib.tables.squid_levers.arithmetic_base`), which isolates what the lever
      changes, when that is neither the lever itself nor the current profile,
    * for SimSID and CRTSC, SQUID trained the same way (:func:`cxrlib.tables.squid_levers.squid_counterparts`),
      the comparison CRTSC's paper claim (CRTSC above SQUID) is about."""
    main = [r for r in B.read_rows(metrics_csv) if r.get("data") != "phantoms" and str(r.get("split_seed")) == "0"
            and r["split_version"] == SPLIT_VERSION and r["profile_version"] == "1"]
    rows = SL._current(SL.read_csv(lever_csv))
    parts = []
    summaries = [s for s in SL.summarize(lever_csv) if s["split_seed"] == 0]
    by_lever = {(s["method"], s["lever"], s["epochs"]): s for s in summaries}
    current = {}
    for s in summaries:
        if SL.is_current_profile(s["method"], s["lever"], s["epochs"]):
            current.setdefault(s["method"], s)
    for s in summaries:
        base = {int(r["seed"]): float(r["auroc"]) for r in main if r["method"] == s["method"]}
        same = [base[k] for k in s["seeds"] if k in base]
        gap = [float(r["val_auroc_kept"]) - float(r["test_auroc_kept"]) for r in rows
               if (r["method"], r["lever"], r["epochs"]) == (s["method"], s["lever"], str(s["epochs"]))]
        text = (f"**{s['method']}, {s['lever']}**, {s['epochs']} epochs ({len(s['seeds'])} seed{'s' * (len(s['seeds']) > 1)}): "
                f"{SL._pct(s['test_auroc_kept'])} at the kept epochs")
        if len(same) == len(s["seeds"]):
            text += (f" against {SL._pct(np.array(same))} for the version-1 `{SL.PROFILE}` profile's {s['method']} "
                     f"rows of the same seeds in the main table")
        ref = current.get(s["method"])
        if ref is not None and ref is not s:
            text += _seed_by_seed(s, ref, f"the current `{SL.PROFILE}` profile (lever {ref['lever']}, "
                                          f"{ref['epochs']} epochs)")
        arith = by_lever.get((s["method"], SL.arithmetic_base(s["lever"]), s["epochs"]))
        if arith is not None and arith is not s and arith is not ref:
            text += _seed_by_seed(s, arith, f"its arithmetic without the change (lever {arith['lever']})")
        squid = [by_lever[("squid", c, s["epochs"])] for c in
                 SL.squid_counterparts(s["method"], s["lever"], s["epochs"],
                                       [k[1] for k in by_lever if k[0] == "squid" and k[2] == s["epochs"]])]
        if squid:
            text += _seed_by_seed(s, squid[0], f"SQUID trained the same way (lever {squid[0]['lever']})")
        text += (f"; the last epoch gives {SL._pct(s['test_auroc_last'])}; validation exceeded test at the kept "
                 f"epoch by {100 * np.mean(gap):+.1f} points on average; {s['train_minutes'].mean():.1f} training "
                 f"minutes per run (torch threads: {', '.join(s['threads'])})")
        parts.append(text)
    if not parts:
        return ""
    return "**Reading.** " + ". ".join(parts) + "."


def issue23_section(root, profile: str) -> list[str]:
    """The results page's section on issue #23 (the SQUID family at the ``cpu`` budget): the
    lever table (:mod:`cxrlib.tables.squid_levers`) and its figure, the sharpness check and the score-vs-fidelity
    check, each only when its CSV exists; no section when none does. Lines of Markdown."""
    root = Path(root)
    levers = TABLES["squid-levers"]
    lever_csv = levers.csv_path(root, profile)
    parts: list[str] = []
    if lever_csv.exists():
        rows = SL.read_csv(lever_csv)
        rel = lever_csv.relative_to(root / "results").as_posix()
        curves_rel = SL.curves_path(lever_csv).relative_to(root / "results").as_posix()
        epochs = sorted({r["epochs"] for r in rows}, key=int)
        seeds = sorted({r["seed"] for r in rows}, key=int)
        command = (f"python -m cxrlib benchmark --table squid-levers --data PATH/zhanglab128_train.npz --methods "
                   f"{' '.join(dict.fromkeys(r['method'] for r in rows))} --levers LEVER ... --seeds {' '.join(seeds)}"
                   + (f" --epochs {epochs[0]}" if len(epochs) == 1 else ""))
        parts += ["### The lever study", "",
                  f"Each lever is a set of overrides of the `{SL.PROFILE}` profile's SQUID-family configuration "
                  f"(`LEVERS` in `cxrlib/tables/squid_levers.py`), trained per seed on the development split; one line "
                  f"per method, lever, split and epochs, AUROCs in % (mean ± std over seeds; the two diagnostic columns "
                  f"are means over seeds, from the curves CSV). `{command}`. Rows: [`results/{rel}`]({rel}), "
                  f"curves: [`results/{curves_rel}`]({curves_rel}) (commits {_commits(rows)}).", "",
                  levers.markdown(lever_csv).rstrip("\n"), "",
                  *([reading, ""] if (reading := lever_reading(lever_csv, root / "results" / profile / "metrics.csv"))
                    else []),
                  f"![validation AUROC per epoch per lever](../figures/squid_levers_{profile}.png)", ""]
        rules = SL.selection_markdown(lever_csv)
        if rules:
            parts += ["### Checkpoint rules, compared on the same runs", "",
                      "For the runs whose curves record each epoch's development-test AUROC (a diagnostic: training "
                      "never reads it), the epoch each rule keeps from the validation curve and the test AUROC "
                      "there: " + "; ".join(f"**{k}**: {v}" for k, v in SL.RULES.items()) + ".", "",
                      rules.rstrip("\n"), ""]
    parts += _diagnostic(
        root, profile, "sharpness_confound", "Image sharpness and intensity against the label",
        lambda path: f"AUROC (pneumonia = positive) of four image statistics that use no model, on the validation and "
                     f"development-test images of each split and image size (split version {_split_versions(path)}).",
        sharpness_markdown)
    parts += _diagnostic(
        root, profile, "score_vs_fidelity", "Score against reconstruction fidelity",
        lambda path: f"Per SQUID-family run and checkpoint (kept and last epoch) of version 1 of the `cpu` profile (25 "
                     f"fp32 epochs: the runs that made the lever study necessary), on the validation images (split "
                     f"version {_split_versions(path)}): the mean reconstruction error per class, the AUROC of that "
                     f"error and of the run's score, and their Spearman correlation.",
        fidelity_markdown, fidelity_reading)
    parts += _diagnostic(
        root, profile, "map_generator", "Which generator draws the map",
        lambda path: "The localisation runs' maps on the development-test phantoms, drawn by the generator of the kept "
                     "epoch (chosen for the discriminator's image score on the validation phantoms) and by that of the "
                     "last epoch, which `model.pt` keeps as its map generator; pixel AUROC on the localisation table's "
                     "grid.",
        map_generator_markdown)
    parts += _diagnostic(
        root, profile, "scoring_precision", "Scoring in bf16",
        lambda path: "The same checkpoints scored on their development-test images in fp32 (every table's setting) and "
                     "with the generator under bf16 autocast (`python -m cxrlib score --precision bf16`"
                     + _bf16_speedup_text(root) + ").",
        scoring_precision_markdown)
    parts += _diagnostic(
        root, profile, "lowpass_error", "Reconstruction error without the fine detail",
        lambda path: "Per SQUID-family run (the kept generator, the one that scores), the AUROC of the reconstruction "
                     "error on the run's own validation and development-test images: plain, and after the same "
                     "Gaussian low-pass of image and reconstruction (`cxrlib.image_stats.lowpass_error`), its width "
                     "chosen on validation from a grid; the run's own score beside them.",
        lowpass_markdown, lowpass_reading)
    if not parts:
        return []
    return ["## Issue #23: the SQUID family at the cpu budget", "", *parts]


def _diagnostic(root: Path, profile: str, key: str, title: str, describe, table, reading=None) -> list[str]:
    """One diagnostic's subsection of the issue #23 section, or ``[]`` without its CSV (:data:`DIAGNOSTICS`
    ``[key]``): the title, ``describe(path)`` followed by the command and a link to the rows, ``table(path)`` and,
    when ``reading`` gives one, its reading."""
    path = root / "results" / profile / DIAGNOSTICS[key][0]
    if not path.exists():
        return []
    rel = path.relative_to(root / "results").as_posix()
    text = reading(path) if reading else ""
    return [f"### {title}", "", f"{describe(path)} `{DIAGNOSTICS[key][1]}`. Rows: [`results/{rel}`]({rel}).", "",
            table(path).rstrip("\n"), "", *([text, ""] if text else [])]


def _profile_change_section(all_rows: list[dict]) -> list[str]:
    """The results page's comparison of a changed profile definition with the one before (none: ``[]``)."""
    table = B.profile_change_markdown(all_rows)
    if not table:
        return []
    return ["## What moved with the SQUID family's new `cpu` profile", "",
            "Version 2 of the `cpu` profile of SQUID, SimSID and CRTSC trains 50 epochs with bf16 autocast and "
            "channels-last tensors where version 1 trained 25 in fp32 (the lever study above chose it). The "
            "version-1 rows stay in the CSV, marked by their `profile_version`, and appear only here; a blank cell "
            "is a configuration not (yet) run with that version.", "", table.rstrip("\n"), ""]


def results_page(root=None, profile: str = "cpu") -> str:
    """The whole of ``results/README.md``."""
    root = Path(root or repo_root())
    csv_rel = f"results/{profile}/metrics.csv"
    all_rows = B.read_rows(root / csv_rel)
    rows = B.current_rows(all_rows)
    img = B.image_rows(rows)
    summary = B.summarize(img)
    threads = sorted({str(int(r["threads"])) for r in rows if r.get("threads", "") != ""})
    out = [
        "# Results", "",
        "Generated by `python -m cxrlib report` from the committed CSVs; do not edit by hand "
        "(`tests/test_readme_results.py` checks it). Every number below is computed from a CSV named beside it, "
        "and every row of those CSVs carries the commands that made it and the commit.", "",
        "## The main table", "",
        f"Profile `{profile}`, development split `{SPLIT_VERSION}` of `zhanglab128_train.npz`: patients (not images) "
        f"are the unit drawn, so no child is in two of training, validation and development test; validation is "
        f"15 % of the normals plus pneumonia at the official test split's 390 : 234 ratio (AUROC standard error about "
        f"2 points), and so is the development test. AUROC/AP/ACC/F1 in %, mean ± std over seeds, ACC/F1 at the "
        f"threshold of maximum accuracy on validation. torch threads per run: {', '.join(threads) or '–'}; the "
        f"training minutes are wall-clock with up to three such runs sharing two cores, so they compare rows of this "
        f"table only (`benchmarks/` measures speed on a quiet machine). Paper "
        f"AUROC: the papers' official test split with test-tuned thresholds (`cxrlib/paper_numbers.py`), a different "
        f"protocol. Rows: [`{csv_rel}`]({profile}/metrics.csv) (commits {_commits(rows) or '–'}).", "",
        B.summary_markdown(summary, B.paper_auroc_text()).rstrip("\n"), "",
        B.ranking_markdown(summary), "", B.protocol_markdown(img, profile), "",
        *[f"![{what}](../figures/results_{profile}_{name}.png)\n" for name, what in FIGURES],
        *_curves_section(root, profile),
        *issue23_section(root, profile),
        *_profile_change_section(all_rows),
        "## What moved with the patient-disjoint split", "",
        "The first development split (`image-v1`) drew images, not patients: a child's other X-ray could sit in "
        "training while one of theirs was tested, validation held 101 + 101 images, and DDAD's unlabelled pool and "
        "WSCXR's K anomalies shared patients with the test images. Its rows stay in the CSV, marked by their "
        "`split_version`, and appear only in this comparison; a blank cell is a configuration not (yet) run on that "
        "split.", "",
        B.split_change_markdown(all_rows).rstrip("\n"), "", _change_reading(all_rows), "",
        "For SQUID, SimSID and CRTSC the new rows also score differently: their discriminator now normalises each "
        "image by its own statistics, as the official code does (issue #23), so their change mixes the split with "
        "the scoring; the score-vs-fidelity table below scores the same checkpoints both ways.", "",
        "## The official test split is harder still", "",
        "No split of the training file shows the official test split's other acquisition. An independent check "
        "scored this project's own `cpu` models (seed 0, `image-v1` split) on the official ZhangLab test split "
        f"(data this repository does not have; numbers as reported to the project, in [`{OFFICIAL_CHECK}`]"
        f"(official_test_check.csv)):", "",
        official_test_markdown(root / OFFICIAL_CHECK).rstrip("\n"), "",
        "Read every development-test number here as an upper estimate of what the method does on another "
        "acquisition.", "",
    ]
    loc = B.localisation_rows(rows)
    if loc:
        out += ["## Localisation on phantoms", "",
                f"One seeded phantom set (`data` = `{B.LOCALISATION_DATA}`), drawn once at 256 px and resized, so every "
                f"method sees the same lesions; each method is trained on the normal phantoms of split 0 and its maps "
                f"on the development-test phantoms are scored against the masks on one {B.LOCALISATION_SIZE} px grid: "
                f"pixel AUROC over all pixels, Dice at the threshold that maximises Dice on the validation phantoms, "
                f"and best Dice over a 100-quantile threshold sweep on the test masks themselves (an oracle, reported as "
                f"such; its sweep is coarse, so a validation threshold that falls between two of its steps can score a "
                f"little higher). The SQUID family's map is the reconstruction error of the generator of its *last* "
                f"epoch: its kept epoch is chosen for the discriminator's image score, often early, when the generator "
                f"still returns a grey field (`SquidScorer.anomaly_maps`).", "",
                B.localisation_markdown(rows).rstrip("\n"), ""]
    wscxr_csv = TABLES["wscxr"].csv_path(root, profile)
    if wscxr_csv.exists():
        w_all = W.read_rows(wscxr_csv)
        w_rows = [r for r in w_all if r["split_version"] == SPLIT_VERSION]
        stale = not w_rows
        w_rows = w_rows or w_all
        out += [f"## WSCXR: K-shot table and mining × mixing ablation{' (stale: `image-v1` split)' if stale else ''}", "",
                f"`python -m cxrlib benchmark --table wscxr --data PATH/zhanglab128_train.npz --profile {profile} "
                f"--weights random`; backbone: {w_rows[0]['backbone']}, so these rows measure the method's machinery on random "
                f"features, not the paper's ImageNet setting. Rows: [`results/wscxr_{profile}.csv`](wscxr_{profile}.csv) "
                f"(commits {_commits(w_rows)}{'; made on the `image-v1` split, not yet re-run' if stale else ''}).", "",
                W.summary_table(w_rows).rstrip("\n"), "", f"![WSCXR](../figures/wscxr_{profile}.png)", ""]
    from .tables import crtsc_ablation, ddad_full

    # the side tables that carry split and profile versions: (title, table, module, how it is run, design size)
    versioned = [
        ("CRTSC ablation", "crtsc-ablation", crtsc_ablation,
         "The paper's Tables 3, 5 and 6 in the `cpu` profile on development split 0: `python -m cxrlib benchmark "
         "--table crtsc-ablation --data PATH/zhanglab128_train.npz` (two workers: `--shard 0/2` and `--shard 1/2`, "
         "one thread each; a stopped worker resumes). Its \"all (CRTSC)\" and \"baseline (SQUID)\" rows are the main "
         "table's CRTSC and SQUID runs.",
         crtsc_ablation.DESIGN_ROWS),
        ("DDAD: the full recipe", "ddad-full", ddad_full,
         "Six reconstruction networks × 250 epochs and ASR-Net × 100 epochs per configuration (its train minutes "
         "are one thread's, with another configuration on the second core: a cost, not a speed measurement, which "
         "`benchmarks/` makes); `python -m cxrlib benchmark --table ddad-full --data "
         "PATH/zhanglab128_train.npz --weak` runs it (add `--profile full` for fp32, the official code's "
         "arithmetic), and a stopped run resumes.",
         len(ddad_full.configurations(True, [0])) * len(ddad_full.SCORES)),
    ]
    for title, name, module, how, design in versioned:
        path = TABLES[name].csv_path(root, profile)
        if not path.exists():
            continue
        t_rows, stale = module.table_rows(path)
        partial = not stale and design is not None and len(t_rows) < design
        rel = path.relative_to(root / "results").as_posix()
        out += [f"## {title}{' (stale: `image-v1` split)' if stale else ' (partial)' if partial else ''}", "",
                f"{how} Rows: [`results/{rel}`]({rel}) (commits {_commits(t_rows, _commit_column(t_rows))}).", "",
                TABLES[name].markdown(path).rstrip("\n"), ""]
    commands = sorted({r["train_command"] for r in rows})
    out += ["## Commands", "", f"<details><summary>the {len(commands)} training commands of the main table</summary>",
            "", "```bash", *commands, "```", "", "</details>", ""]
    return "\n".join(out)


def write_all(root=None, profile: str = "cpu", figures: bool = True) -> list[Path]:
    """Write ``results/README.md``, the README's summary block and (``figures``) the results figures."""
    root = Path(root or repo_root())
    written = []
    page = root / PAGE
    page.write_text(results_page(root, profile))
    written.append(page)
    readme = root / "README.md"
    csv_rel = f"results/{profile}/metrics.csv"
    readme.write_text(B.replace_readme_section(readme.read_text(), readme_block(root / csv_rel, csv_rel),
                                               README_BLOCK_START, README_BLOCK_END))
    written.append(readme)
    if figures:
        written += TABLES["main"].draw(root / csv_rel, root / "figures", profile)
        folder = root / "results" / profile / CURVES_DIR
        if folder.is_dir():
            import matplotlib.pyplot as plt

            from . import viz

            splits = curve_splits(folder)
            fig, axes = plt.subplots(1, len(splits), figsize=(6.4 * len(splits), 3.8), squeeze=False)
            for ax, split in zip(axes[0], splits):
                curves = read_curves(folder, split)
                viz.plot_validation_curves({k: v[:2] for k, v in curves.items()}, {k: v[2] for k, v in curves.items()},
                                           ax=ax, title=f"validation AUROC per epoch ({profile} profile, split {split})")
            fig.tight_layout()
            written.append(viz.save_figure(fig, f"results_{profile}_val_curves.png", root / "figures"))
            plt.close(fig)
        levers = TABLES["squid-levers"]
        written += levers.draw(levers.csv_path(root, profile), root / "figures", profile)
    return written
