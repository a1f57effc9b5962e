"""One results table for every method: train and score each on the same development split, with the same
seeds and the same scorer, and collect one CSV row per (method, variant, seed, split seed).

Each row runs the command line twice in a fresh subprocess, exactly as a user would::

    python -m cxrlib train --method M --profile P --data D --seed S --split-seed K --out RUN [variant args]
    python -m cxrlib score --checkpoint RUN/model.pt --data D --split test --out RUN/test_scores.csv

so the CSV holds what the commands produce (the row stores both commands and the git commit), and the
child's own peak resident memory is read with ``os.wait4``. A finished run (``RUN/model.pt`` and its
``bench_train.json``) is reused, not retrained; rows already in the CSV with the same key and commit are kept.

Localisation (:func:`localisation_row`) trains a method on the normal phantoms of :func:`cxrlib.data.make_phantoms`
and scores its anomaly maps against the lesion masks: pixel AUROC and best Dice (threshold sweep). Its rows go to
the same CSV with ``data`` = ``phantoms``; :func:`image_rows` and :func:`localisation_rows` tell the two apart.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .methods import add_train_arguments, available_methods, method_module, profile_version
from .utils import atomic_write_bytes, atomic_write_json, repo_relative, repo_root

__all__ = ["CommandError", "METRICS_COLUMNS", "VARIANTS", "PAPER_VARIANT", "run_command", "run_row", "read_rows", "write_rows", "merge_row", "summarize",
           "summary_markdown", "ranking_comparison", "ranking_markdown", "localisation_row", "git_commit", "paper_auroc", "paper_auroc_text",
           "run_table", "current_profile_version", "is_current", "read_table_csv", "migrate_table_csv", "current_or_record", "current_rows", "stale_rows", "split_change_markdown",
           "profile_change_markdown", "thread_count", "upsert_csv", "diagnose_runs", "replace_readme_section",
           "load_scores", "versioned_file", "protocol_notes", "protocol_markdown", "LOCALISATION_DATA", "image_rows", "localisation_rows", "localisation_markdown"]

class CommandError(RuntimeError):
    """A ``python -m cxrlib`` child process failed."""


#: the schema of ``results/<profile>/metrics.csv``
METRICS_COLUMNS = [
    "method", "variant", "seed", "split_seed", "data", "profile", "auroc", "ap", "acc", "f1", "sensitivity",
    "specificity", "acc_test_tuned", "f1_test_tuned", "val_auroc", "train_minutes", "infer_images_per_s",
    "peak_train_gib", "peak_infer_gib", "pixel_auroc", "best_dice", "train_command", "score_command", "commit",
    "split_version", "threads", "dice", "profile_version",
]
#: columns a CSV written before they existed may lack, and the value such a row gets: ``image-v1`` is the
#: image-level development split that preceded :data:`cxrlib.data.SPLIT_VERSION` (rows are kept, never mixed)
#: rows from before profile versions were recorded ran version 1 of every profile
LEGACY_DEFAULTS = {"split_version": "image-v1", "threads": "", "dice": "", "profile_version": "1"}
_TEXT_COLUMNS = ("method", "variant", "data", "profile", "train_command", "score_command", "commit", "split_version",
                 "profile_version")

#: method -> {variant name: extra ``train`` arguments}; the variants the results table compares
VARIANTS: dict[str, dict[str, list[str]]] = {
    "squid": {"official": []},
    "simsid": {"official": []},
    "crtsc": {"CRM+TSCC+KL": []},
    # offline there are no ImageNet weights: the table's rows use (and name) a seeded random backbone
    "patchcore": {"random backbone": ["--weights", "random"]},
    "wscxr": {"K=16, random backbone": ["--k", "16", "--weights", "random"]},
    "ddad": {"AE, ASR": ["--backbone", "ae", "--score", "asr"]},
}

#: method -> the variant of :data:`cxrlib.paper_numbers.PAPER_RESULTS` trained like the table's row (printed beside
#: it). Absent methods get no paper number: CRTSC reports only partial ablations, and DDAD's only ZhangLab number
#: (WSCXR Table I) gives it K anomalies as its unlabelled set, not the semi-supervised pool of the table's row.
PAPER_VARIANT: dict[str, str] = {"squid": "", "patchcore": "", "wscxr": "K=16"}


def protocol_notes(profile: str) -> dict[str, str]:
    """method -> one sentence on how the table's row differs from the paper's (training data, threshold rule,
    image size, backbone weights), with this profile's sizes and epochs read from the method's own settings.

    Every row shares the rest: the development split of one file, the threshold that maximises accuracy on its
    validation images, and no pretrained weights (none can be fetched offline)."""
    from .methods.ddad.ddad import ddad_config
    from .methods.patchcore.patchcore import PATCHCORE_PROFILES
    from .methods.squid.config import squid_config
    from .methods.wscxr.wscxr import WSCXR_PROFILES

    def squid_like(m):
        c = squid_config(m, profile)
        return f"{c.image_size} px, {c.epochs} epochs"

    paper_full = {m: squid_config(m, "full") for m in ("squid", "simsid")}
    pc, ws, dd = PATCHCORE_PROFILES[profile], WSCXR_PROFILES[profile], ddad_config(profile)
    wargs = next(iter(VARIANTS["wscxr"].values()))
    k = wargs[wargs.index("--k") + 1]
    return {
        "squid": f"development-split normals only; {squid_like('squid')} (paper: {paper_full['squid'].image_size} px, "
                 f"{paper_full['squid'].epochs} epochs, test-tuned threshold on the official test split)",
        "simsid": f"as SQUID with SimSID's settings; {squid_like('simsid')} (paper: {paper_full['simsid'].epochs} epochs); "
                  f"no paper row: SimSID states its gain over the state of the art, not this table's AUROC",
        "crtsc": f"SQUID plus CRM, TSCC and the KL generator loss; {squid_like('crtsc')}; no paper row: CRTSC "
                 f"states AUROC for partial ablations only",
        "patchcore": f"development-split normals only; {pc['backbone']} {pc['layer']} at {pc['image_size']} px with "
                     f"seeded random weights (paper, WSCXR Table I: ImageNet weights, test-tuned threshold)",
        "wscxr": f"normals plus K = {k} labelled pneumonia images from outside validation "
                 f"and test; {ws['backbone']} {ws['layer']} at {ws['image_size']} px, seeded random weights (paper: "
                 f"256 px, ImageNet weights, Youden's threshold on the test set)",
        "ddad": f"normals plus an unlabelled pool of {dd.n_unlabelled} ({dd.anomaly_rate:.0%} pneumonia) from the same "
                f"file; {dd.image_size} px, {dd.epochs} epochs per network; no paper row: its only ZhangLab number "
                f"(WSCXR Table I) has K anomalies as the unlabelled set",
    }


def git_commit(root: Path | None = None) -> str:
    """Short hash of HEAD (``+dirty`` when tracked files differ), or ``unknown`` outside git."""
    root = root or repo_root()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "cxrlib"], cwd=root).returncode != 0
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_command(argv: list[str], log_path: Path | None = None) -> tuple[float, float]:
    """Run ``python -m cxrlib *argv`` in a fresh process; returns ``(seconds, peak_rss_gib)`` of that child.

    Raises:
        CommandError: the command failed; the message holds its last output lines.
    """
    cmd = [sys.executable, "-m", "cxrlib", *argv]
    out = open(log_path, "ab") if log_path else subprocess.PIPE
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=repo_root())
    captured = b""
    if out is subprocess.PIPE:
        captured = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.time() - t0
    if log_path:
        out.close()
        captured = Path(log_path).read_bytes()[-4000:]
    if proc.returncode != 0:
        tail = "\n".join(captured.decode(errors="replace").splitlines()[-8:])
        raise CommandError(f"`{shlex.join(cmd[1:])}` failed (exit {proc.returncode}):\n{tail}")
    # ru_maxrss is in KiB on Linux
    return seconds, usage.ru_maxrss / 2 ** 20


def _display(arg: str) -> str:
    """A command-line argument as the CSV shows it: paths inside the repository relative to it, paths
    outside it as ``PATH/<name>`` (a results file must not carry one machine's folders)."""
    p = Path(arg)
    if not p.is_absolute():
        if ".." not in p.parts or not p.exists():
            return arg
        p = p.resolve()  # a relative path that climbs out of the repository, e.g. ../shared/data/x.npz
    shown = repo_relative(p)
    return f"PATH/{p.name}" if shown.is_absolute() else shown.as_posix()


def display_command(argv: list[str]) -> str:
    """``python -m cxrlib ...`` with :func:`_display` applied to every argument."""
    return "python -m cxrlib " + shlex.join(_display(a) for a in argv)


def run_dir(out_root: Path, method: str, variant: str, seed: int, split_seed: int) -> Path:
    # the default variant on split 0 shares the folder of the notebooks' train_or_load (runs/<profile>/<method>_s<seed>:
    # cxrlib.methods.squid.scorer's, cxrlib.methods.ddad.ddad.default_run_dir), so a model trained by a notebook is
    # reused here and vice versa, after _check_reusable
    if variant == next(iter(VARIANTS[method])) and split_seed == 0:
        return out_root / f"{method}_s{seed}"
    tag = "".join(c if c.isalnum() else "_" for c in variant).strip("_") or "default"
    return out_root / f"{method}_{tag}_s{seed}_split{split_seed}"


def scores_path(scores_dir: Path, method: str, variant: str, seed: int, split_seed: int,
                split_version: str = "image-v1", profile_version: str = "1") -> Path:
    """Where :func:`run_row` copies a row's per-image test scores (``name,score,label``): in a sub-folder
    named after the split version (``image-v1`` rows, from before versions, directly in ``scores_dir``), with
    ``_p<version>`` after the name for a profile version other than 1 (so a re-defined profile's scores sit
    beside, not over, the record of the old one)."""
    tag = "".join(c if c.isalnum() else "_" for c in variant).strip("_") or "default"
    return versioned_file(scores_dir, f"{method}_{tag}_s{seed}_split{split_seed}", split_version, profile_version)


def versioned_file(folder: Path, stem: str, split_version: str = "image-v1", profile_version: str = "1") -> Path:
    """``<stem>.csv`` in a sub-folder of ``folder`` named after the split version (``image-v1``, from before
    versions, directly in ``folder``), with ``_p<version>`` after the stem for a profile version other than 1:
    the per-image scores of a new definition sit beside, never over, the record of an old one."""
    folder = Path(folder) if split_version == "image-v1" else Path(folder) / split_version
    suffix = "" if str(profile_version) == "1" else f"_p{profile_version}"
    return folder / f"{stem}{suffix}.csv"


def load_scores(scores_dir, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """The per-image test labels ``(N,)`` and scores ``(N,)`` that :func:`run_row` saved for ``row``."""
    if row.get("data") == LOCALISATION_DATA:
        scores_dir = Path(scores_dir) / LOCALISATION_DATA
    path = scores_path(scores_dir, row["method"], row["variant"], int(row["seed"]), int(row["split_seed"]),
                       _version(row, "split_version"), _version(row, "profile_version"))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no saved test scores for this row; re-run its commands "
                                f"(train_command, score_command in the CSV) or `python -m cxrlib benchmark`")
    with open(path, newline="") as f:
        recs = list(csv.DictReader(f))
    if not recs or not {"score", "label"} <= set(recs[0]):
        raise ValueError(f"{path}: expected columns name,score,label with at least one row")
    return np.array([int(r["label"]) for r in recs]), np.array([float(r["score"]) for r in recs])


def paper_auroc() -> dict[str, tuple[float, float | None]]:
    """method -> (AUROC %, std % or None) of the paper row named in :data:`PAPER_VARIANT` (another protocol)."""
    from .paper_numbers import paper_rows

    out: dict[str, tuple[float, float | None]] = {}
    for r in paper_rows():
        if PAPER_VARIANT.get(r["method"]) == r["variant"] and r["method"] not in out:
            out[r["method"]] = (r["auroc"], r["auroc_std"])
    return out


def paper_auroc_text() -> dict[str, str]:
    """method -> :func:`paper_auroc` as table text (``"87.6 ± 1.5"``, or ``"90.4"`` without a std)."""
    return {m: f"{a}" + (f" ± {sd}" if sd is not None else "") for m, (a, sd) in paper_auroc().items()}


def run_row(method: str, variant: str, profile: str, data: str, seed: int = 0, split_seed: int = 0,
            out_root: Path | None = None, scores_dir: Path | None = None, log=print,
            extra_args: list[str] | None = None) -> dict:
    """Train (or reuse) and score one configuration; return its CSV row (see :data:`METRICS_COLUMNS`).

    The per-image development-test scores are copied to ``scores_dir`` (see :func:`scores_path`) when given."""
    extra = [*VARIANTS[method][variant], *(extra_args or [])]
    out_root = Path(out_root or repo_root() / "runs" / profile)
    run = run_dir(out_root, method, variant, seed, split_seed)
    run.mkdir(parents=True, exist_ok=True)
    train_argv = ["train", "--method", method, "--profile", profile, "--data", str(data), "--seed", str(seed),
                  "--split-seed", str(split_seed), "--out", str(run), "--no-progress", *extra]
    command = display_command(train_argv)
    info_path = run / "bench_train.json"
    ck = _check_reusable(run / "model.pt", method, train_argv) if (run / "model.pt").exists() else None
    threads = thread_count()
    if ck is not None and info_path.exists():
        info = json.loads(info_path.read_text())
        log(f"{method} [{variant}] seed {seed}: reusing {_display(str(run))}")
    elif ck is not None:  # trained by a notebook: its checkpoint knows the training time
        info = {"train_minutes": float(ck.get("train_seconds", float("nan"))) / 60, "peak_train_gib": ""}
        if len(ck.get("train_threads", [])) == 1:  # the notebook's own thread count, where it recorded one
            threads = ck["train_threads"][0]
        log(f"{method} [{variant}] seed {seed}: reusing {_display(str(run))} (trained elsewhere; peak memory not measured)")
    else:
        log(f"{method} [{variant}] seed {seed}: training ({profile} profile) ...")
        resumed = (run / "last.pt").exists()
        if resumed:
            train_argv.append("--resume")
        seconds, peak = run_command(train_argv, run / "train.log")
        if resumed:  # this command trained only the last epochs; the checkpoint sums every epoch's time
            import torch

            ck = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
            seconds = float(ck.get("train_seconds", seconds))
        info = {"train_minutes": seconds / 60, "peak_train_gib": peak}
        atomic_write_json(info, info_path)
    scores_csv = run / "test_scores.csv"
    score_argv = ["score", "--checkpoint", str(run / "model.pt"), "--data", str(data), "--split", "test",
                  "--out", str(scores_csv)]
    _, peak_infer = run_command(score_argv, run / "score.log")
    res = json.loads(scores_csv.with_suffix(".json").read_text())
    version = res.get("split_version", LEGACY_DEFAULTS["split_version"])
    if scores_dir is not None:
        atomic_write_bytes(scores_path(scores_dir, method, variant, seed, split_seed, version,
                                       profile_version(method, profile)), scores_csv.read_bytes())
    v, t = res["val_threshold"], res["test_tuned"]
    return {
        "method": method, "variant": variant, "seed": seed, "split_seed": split_seed, "data": Path(str(data)).name,
        "profile": profile, "auroc": res["auroc"], "ap": res["ap"], "acc": v["acc"], "f1": v["f1"],
        "sensitivity": v["sensitivity"], "specificity": v["specificity"], "acc_test_tuned": t["acc"],
        "f1_test_tuned": t["f1"], "val_auroc": res.get("checkpoint_val_auroc", ""),
        "train_minutes": info["train_minutes"], "infer_images_per_s": res.get("images_per_second", ""),
        "peak_train_gib": info["peak_train_gib"], "peak_infer_gib": peak_infer, "pixel_auroc": "", "best_dice": "",
        "train_command": command,
        "score_command": display_command(score_argv), "commit": git_commit(), "split_version": version,
        "threads": threads, "dice": "", "profile_version": profile_version(method, profile),
    }


def thread_count() -> int:
    """The torch intra-op thread count a child ``python -m cxrlib`` process gets under this environment, recorded
    with every row: it changes the float sums.

    Asked of a child interpreter rather than read from ``OMP_NUM_THREADS``: torch gives ``MKL_NUM_THREADS``
    precedence where both are set (``OMP_NUM_THREADS=2 MKL_NUM_THREADS=1`` trains on one thread), and which
    variables count depends on the torch build. Cached per (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) pair.
    """
    return _child_thread_count(os.environ.get("OMP_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS"))


@functools.lru_cache(maxsize=None)
def _child_thread_count(omp: str | None, mkl: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update({k: v for k, v in (("OMP_NUM_THREADS", omp), ("MKL_NUM_THREADS", mkl)) if v is not None})
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def _check_reusable(model_path: Path, method: str, train_argv: list[str]) -> dict:
    """Refuse to reuse a run trained on another development-split definition than this code's, or (for a
    method that can tell, see :mod:`cxrlib.methods`) with another configuration than ``train_argv`` builds now.
    Returns the loaded checkpoint, so that the caller reads it once."""
    import argparse

    import torch

    from .data import SPLIT_VERSION

    ck = torch.load(model_path, map_location="cpu", weights_only=False)
    version = ck.get("split_version", LEGACY_DEFAULTS["split_version"])
    why = (f"trained on development split '{version}', this code's is '{SPLIT_VERSION}'"
           if version != SPLIT_VERSION else None)
    mismatch = getattr(method_module(method), "checkpoint_mismatch", None)
    if why is None and mismatch is not None:
        parser = argparse.ArgumentParser()
        add_train_arguments(parser, method)
        why = mismatch(ck, parser.parse_args(train_argv[1:]))  # train_argv[0] is the command, "train"
    if why:
        raise CommandError(f"{_display(str(model_path))}: {why}; delete {_display(str(model_path.parent))} to "
                           f"retrain it")
    return ck


def run_table(csv_path, profile: str, data: str, methods=None, seeds=(0,), split_seeds=(0,), tables=("image",),
              log=print) -> list[dict]:
    """The benchmark loop, the one the command line (``python -m cxrlib benchmark``) and notebook 09 share:
    train (or reuse) and score every (method, variant, seed) on every split seed, and, with ``"localisation"``
    in ``tables``, on the phantoms; merge each row into ``csv_path`` as it finishes (so a stopped run resumes
    where it was) and return all the CSV's rows. Per-image scores go to ``csv_path``'s ``scores/`` folder.

    Raises:
        ValueError: an unknown method.
    """
    from .methods import available_methods

    csv_path = Path(csv_path)
    rows = read_rows(csv_path)  # fail early on a CSV of the wrong schema
    methods = list(methods or [m for m in VARIANTS if m in available_methods()])
    for method in methods:
        if method not in VARIANTS or method not in available_methods():
            raise ValueError(f"unknown method {method!r}; the table knows {', '.join(VARIANTS)}")
    scores_dir = csv_path.parent / "scores"
    for method in methods if "localisation" in tables else []:
        for variant in VARIANTS[method]:
            for seed in seeds:
                try:
                    row = localisation_row(method, variant, profile, seed, scores_dir=scores_dir, log=log)
                except ValueError as e:  # a method without an anomaly map
                    log(f"{method}: {e}")
                    continue
                rows = merge_row(csv_path, row)
                log(f"  pixel AUROC {row['pixel_auroc']:.3f}  Dice (val thr.) {row['dice']:.3f}  best Dice (oracle) "
                    f"{row['best_dice']:.3f}  image AUROC {row['auroc']:.3f} (phantoms)  {row['train_minutes']:.1f} min")
    for method in methods if "image" in tables else []:
        for variant in VARIANTS[method]:
            for split_seed in split_seeds:
                for seed in seeds:
                    row = run_row(method, variant, profile, data, seed, split_seed, scores_dir=scores_dir, log=log)
                    rows = merge_row(csv_path, row)
                    log(f"  AUROC {row['auroc']:.3f}  AP {row['ap']:.3f}  ACC {row['acc']:.3f}  F1 {row['f1']:.3f} "
                        f"(validation threshold)  {row['train_minutes']:.1f} min")
    return rows


def read_rows(path) -> list[dict]:
    """Rows of a metrics CSV (numbers parsed; empty cells stay ``""``); ``[]`` when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        have = reader.fieldnames or []
        # a CSV written before a column existed lacks it; only the columns with a legacy default may be missing
        if have != [c for c in METRICS_COLUMNS if c in have] or not set(METRICS_COLUMNS) - set(have) <= set(LEGACY_DEFAULTS):
            raise ValueError(f"{path}: columns {reader.fieldnames} are not the metrics schema {METRICS_COLUMNS}")
        for r in reader:
            for k, default in LEGACY_DEFAULTS.items():
                if r.get(k) in (None, ""):
                    r[k] = default
            for k, val in r.items():
                if k in ("seed", "split_seed"):
                    r[k] = int(val)
                elif val != "" and k not in _TEXT_COLUMNS:
                    r[k] = float(val)
            rows.append(r)
    return rows


def write_rows(path, rows: list[dict], columns: list[str] = METRICS_COLUMNS, float_format: str = ".6g") -> None:
    """Write ``rows`` atomically with the ``columns`` header (default :data:`METRICS_COLUMNS`; the other tables
    of :mod:`cxrlib.tables` pass their own), floats as ``format(v, float_format)`` (default 6 significant
    digits); text cells (rows read back from a CSV) are written as they are."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (format(r[k], float_format) if isinstance(r.get(k), float) else r.get(k, "")) for k in columns})
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def read_table_csv(path, columns: list[str], legacy: dict[str, str]) -> list[dict]:
    """Rows of a side table's CSV (:mod:`cxrlib.tables`) as text, in ``columns``: a column the file predates gets
    its value from ``legacy`` (what rows had before it existed, e.g. the ``image-v1`` split), else ``""``;
    ``[]`` when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{c: r[c] if r.get(c) is not None else legacy.get(c, "") for c in columns} for r in rows]


def migrate_table_csv(path, columns: list[str], legacy: dict[str, str]) -> None:
    """Rewrite a side table's CSV written before some of ``columns`` existed with them (:func:`read_table_csv`'s
    values), atomically, so that rows appended from now on line up with the header. A no-op when the header is
    already ``columns``."""
    with open(path, newline="") as f:
        if next(csv.reader(f), []) == columns:
            return
    write_rows(path, read_table_csv(path, columns, legacy), columns)


def current_or_record(rows: list[dict], row_is_current) -> tuple[list[dict], bool]:
    """What a side table (:mod:`cxrlib.tables`) is drawn from, and whether it is stale: the rows for which
    ``row_is_current(row)`` holds when there is one, else all of ``rows`` (the stale record)."""
    current = [r for r in rows if row_is_current(r)]
    return (current, False) if current else (rows, True)


def _version(r: dict, column: str) -> str:
    """A row's ``split_version`` or ``profile_version``, the legacy default where the CSV predates the column."""
    return r.get(column) or LEGACY_DEFAULTS[column]


def _key(r: dict) -> tuple:
    return (r["method"], r["variant"], int(r["seed"]), int(r["split_seed"]), r["data"], r["profile"],
            _version(r, "split_version"), _version(r, "profile_version"))


def upsert(rows: list[dict], new: dict, key: tuple[str, ...] | None = None) -> list[dict]:
    """``rows`` with ``new`` appended in place of any row of the same key: by default (method, variant, seed,
    split seed, data, profile, split version, profile version), the metrics CSV's; with ``key``, those columns compared as text
    (so a row read back from a CSV matches the same row made in memory)."""
    if key is None:
        return [r for r in rows if _key(r) != _key(new)] + [new]
    same = tuple(str(new[k]) for k in key)
    return [r for r in rows if tuple(str(r[k]) for k in key) != same] + [new]


def upsert_csv(path, new: list[dict], columns: list[str], key: tuple[str, ...], float_format: str = ".4f") -> list[dict]:
    """Upsert ``new`` into a diagnostics CSV (not the metrics schema) at ``path`` by the ``key`` columns and write
    it atomically with ``columns``; returns all its rows. A missing file starts empty."""
    path = Path(path)
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    for r in new:
        rows = upsert(rows, r, key=key)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rows(path, rows, columns, float_format=float_format)
    return rows


def diagnose_runs(runs, row, line, out, columns: list[str], key: tuple[str, ...]) -> int:
    """The loop of the per-run diagnostic scripts (``scripts/scoring_precision.py``, ``scripts/lowpass_error.py``):
    ``row(run)`` for each run folder, ``line(row)`` printed, all rows upserted into ``out`` by ``key``. Returns the
    exit status: 2, with a one-line message, when a folder holds no ``model.pt`` (nothing is written then)."""
    new = []
    for run in map(Path, runs):
        if not (run / "model.pt").exists():
            print(f"{run}: no model.pt", file=sys.stderr)
            return 2
        new.append(row(run))
        print(line(new[-1]))
    upsert_csv(out, new, columns, key)
    print(f"-> {out}")
    return 0


def merge_row(path, new: dict) -> list[dict]:
    """Upsert ``new`` into the CSV at ``path`` under an exclusive lock and return all its rows.

    The file is re-read inside the lock, so two ``benchmark`` processes writing one CSV (say, SimSID on one
    core and DDAD on the other) keep each other's rows; reading once at start and writing back would drop them.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = upsert(read_rows(path), new)
        write_rows(path, rows)
    return rows


def summarize(rows: list[dict], metrics=("auroc", "ap", "acc", "f1", "train_minutes")) -> list[dict]:
    """Mean and sample std (``ddof=1``; 0 for a single seed) per (method, variant, split seed, data, profile,
    split version, profile version): rows of two split or profile definitions are never averaged together.

    Returns one dict per group with ``n`` and ``<metric>_mean`` / ``<metric>_std``, in first-seen order.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["variant"], int(r["split_seed"]), r["data"], r["profile"],
                           _version(r, "split_version"), _version(r, "profile_version")), []).append(r)
    out = []
    for (method, variant, split_seed, data, profile, version, pversion), rs in groups.items():
        s = {"method": method, "variant": variant, "split_seed": split_seed, "data": data, "profile": profile,
             "split_version": version, "profile_version": pversion, "n": len(rs),
             "seeds": " ".join(str(int(r["seed"])) for r in rs)}
        for m in metrics:
            vals = np.array([float(r[m]) for r in rs if r.get(m, "") != ""], dtype=float)
            s[f"{m}_mean"] = float(vals.mean()) if len(vals) else float("nan")
            s[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out.append(s)
    return out


def summary_markdown(summary: list[dict], paper: dict[str, str] | None = None) -> str:
    """A Markdown table of :func:`summarize` output (AUROC, AP, ACC, F1 in %, mean ± std over seeds).

    ``paper`` maps method -> the paper's number as text (shown in its own column). Rows are ordered by split
    seed, then by the method's first appearance in ``summary``."""
    paper = paper or {}
    # Rows are grouped by split, and within a split the methods keep the order they first appear in, so the
    # tables of the two splits read alike however the CSV's rows happened to land.
    rank = {}
    for s in summary:
        rank.setdefault(s["method"], len(rank))
    summary = sorted(summary, key=lambda s: (s["split_seed"], rank[s["method"]]))
    lines = ["| method | variant | split | seeds | AUROC | AP | ACC (val thr.) | F1 (val thr.) | train min | paper AUROC |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summary:
        cell = lambda m, scale=100: f"{scale * s[m + '_mean']:.1f} ± {scale * s[m + '_std']:.1f}"  # noqa: E731
        lines.append(f"| {s['method']} | {s['variant']} | {s['split_seed']} | {s['n']} | {cell('auroc')} | "
                     f"{cell('ap')} | {cell('acc')} | {cell('f1')} | {s['train_minutes_mean']:.1f} | "
                     f"{paper.get(s['method'], '')} |")
    return "\n".join(lines) + "\n"


#: the data of the localisation rows: seeded phantoms with lesion masks (:func:`cxrlib.data.make_phantoms`)
LOCALISATION_DATA = "phantoms"
#: the pixel grid on which every method's maps are scored against the masks
LOCALISATION_SIZE = 128


#: method -> extra ``train`` arguments of its localisation rows. The phantom set has 400 images (200 with lesions):
#: too few for DDAD's 700-image unlabelled pool of the cpu and full profiles, so its phantom runs use the quick
#: profile's pool of 100 (60 % anomalous: 60 of the 101 lesion phantoms outside validation and test), and its
#: networks train at the quick batch of 16 (94 labelled normal phantoms remain beside the pool).
LOCALISATION_EXTRA_ARGS: dict[str, list[str]] = {"ddad": ["--n-unlabelled", "100", "--batch-size", "16"]}


def current_profile_version(method: str, profile: str) -> str:
    """:func:`cxrlib.methods.profile_version`, and ``"1"`` for a method this installation does not implement
    (a row of it can still be read and summarised)."""
    return profile_version(method, profile) if method in available_methods() else "1"


def is_current(r: dict) -> bool:
    """Whether row ``r`` was made on this code's development split (:data:`cxrlib.data.SPLIT_VERSION`) with
    this code's definition of its method's profile (:func:`cxrlib.methods.profile_version`)."""
    from .data import SPLIT_VERSION

    return (_version(r, "split_version") == SPLIT_VERSION
            and _version(r, "profile_version") == current_profile_version(r["method"], r["profile"]))


def current_rows(rows: list[dict]) -> list[dict]:
    """The current rows (:func:`is_current`); every table and figure is drawn from these. Rows of an earlier
    split or profile definition stay in the CSV as a record, marked stale."""
    return [r for r in rows if is_current(r)]


def stale_rows(rows: list[dict]) -> list[dict]:
    """The rows of an earlier split or profile definition (see :func:`current_rows`)."""
    return [r for r in rows if not is_current(r)]


def _change_cells(old: dict | None, new: dict | None) -> tuple[str, str, str]:
    """The cells of a change table for two :func:`summarize` groups (either may be missing): AUROC mean ± std
    (seeds) of each in %, and the change in points (blank unless both exist)."""
    cell = lambda s: f"{100 * s['auroc_mean']:.1f} ± {100 * s['auroc_std']:.1f} ({s['n']})" if s else ""  # noqa: E731
    change = f"{100 * (new['auroc_mean'] - old['auroc_mean']):+.1f}" if old and new else ""
    return cell(old), cell(new), change


def split_change_markdown(rows: list[dict]) -> str:
    """Old against new development split, once: mean ± std AUROC (%) per method and split seed on the
    ``image-v1`` rows and on the current rows, and the change in points; rows present in only one are shown
    with a blank. The X-ray rows only."""
    from .data import SPLIT_VERSION

    groups: dict = {}
    # one recipe on both splits: profile version 1, the one the image-v1 rows ran
    same_recipe = [r for r in image_rows(rows) if _version(r, "profile_version") == "1"]
    for s in summarize(same_recipe):
        groups.setdefault((s["method"], s["variant"], s["split_seed"]), {})[s["split_version"]] = s
    lines = [f"| method | variant | split | AUROC, image-v1 (seeds) | AUROC, {SPLIT_VERSION} (seeds) | change |",
             "| --- | --- | --- | --- | --- | --- |"]
    for (method, variant, split_seed), by in groups.items():
        lines.append(f"| {method} | {variant} | {split_seed} | "
                     + " | ".join(_change_cells(by.get("image-v1"), by.get(SPLIT_VERSION))) + " |")
    return "\n".join(lines) + "\n"


def profile_change_markdown(rows: list[dict]) -> str:
    """Old against new profile definition, once, on this code's development split: mean ± std AUROC (%) per
    method and split seed under each profile version the CSV holds for a method whose profile changed
    (:func:`cxrlib.methods.profile_version` above 1), and the change in points. The X-ray rows only; ``""``
    when no method's profile changed."""
    from .data import SPLIT_VERSION

    groups: dict = {}
    for s in summarize(image_rows(rows)):
        now = current_profile_version(s["method"], s["profile"])
        if s["split_version"] == SPLIT_VERSION and now != "1":
            groups.setdefault((s["method"], s["variant"], s["profile"], s["split_seed"], now), {})[
                s["profile_version"]] = s
    if not groups:
        return ""
    lines = ["| method | variant | profile | split | AUROC, version 1 (seeds) | AUROC, current version (seeds) "
             "| change |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for (method, variant, profile, split_seed, now), by in groups.items():
        lines.append(f"| {method} | {variant} | {profile} {now} | {split_seed} | "
                     + " | ".join(_change_cells(by.get("1"), by.get(now))) + " |")
    return "\n".join(lines) + "\n"


def image_rows(rows: list[dict]) -> list[dict]:
    """The rows of the image-level table (the X-ray data), without the localisation rows on phantoms."""
    return [r for r in rows if r["data"] != LOCALISATION_DATA]


def localisation_rows(rows: list[dict]) -> list[dict]:
    """The localisation rows: trained and scored on phantoms, with ``pixel_auroc`` and ``best_dice``."""
    return [r for r in rows if r["data"] == LOCALISATION_DATA]


def localisation_row(method: str, variant: str, profile: str, seed: int = 0, out_root: Path | None = None,
                     scores_dir: Path | None = None, log=print) -> dict:
    """Train (or reuse) ``method`` on the normal phantoms of the development split of ``data.load("phantoms")``
    and score it like any row (:func:`run_row` with ``--data phantoms``), then score its anomaly maps on the
    development-test phantoms against their lesion masks: pixel AUROC over all pixels and best Dice over a
    threshold sweep (:func:`cxrlib.metrics.pixel_auroc`, :func:`cxrlib.metrics.best_dice`).

    Returns the CSV row (data ``"phantoms"``, ``pixel_auroc`` and ``best_dice`` filled, image-level metrics of
    the phantoms) plus, for display, ``dice_threshold`` and the arrays ``maps``, ``masks``, ``images`` and
    ``labels`` (``(N, S, S)``, ``(N, S, S)``, ``(N, S, S)``, ``(N,)``); methods without maps raise ``ValueError``.
    """
    from . import data as D
    from . import metrics as M
    from .methods import load_scorer

    out_root = Path(out_root or repo_root() / "runs" / profile / "localisation")
    # the phantoms' scores get their own folder: same method, seed and split as an X-ray row, other data
    row = run_row(method, variant, profile, LOCALISATION_DATA, seed, 0, out_root=out_root,
                  scores_dir=Path(scores_dir) / LOCALISATION_DATA if scores_dir is not None else None, log=log,
                  extra_args=LOCALISATION_EXTRA_ARGS.get(method))
    scorer = load_scorer(run_dir(out_root, method, variant, seed, 0) / "model.pt")
    if not hasattr(scorer, "anomaly_maps"):
        raise ValueError(f"{method} produces no anomaly map")
    ds = D.load(LOCALISATION_DATA, size=scorer.image_size)
    split = D.development_split(ds, seed=0)
    # every method is scored on the same pixel grid: its maps are resized to LOCALISATION_SIZE, where the
    # masks of the one phantom set (drawn once at the base size) live
    masks_ds = ds if ds.size == LOCALISATION_SIZE else D.load(LOCALISATION_DATA, size=LOCALISATION_SIZE)
    val_maps = _resize_maps(scorer.anomaly_maps(ds.images[split.val]), LOCALISATION_SIZE)
    maps = _resize_maps(scorer.anomaly_maps(ds.images[split.test]), LOCALISATION_SIZE)
    masks = masks_ds.masks[split.test]
    _, val_thr = M.best_dice(masks_ds.masks[split.val], val_maps)
    best, thr = M.best_dice(masks, maps)
    row.update(pixel_auroc=M.pixel_auroc(masks, maps), best_dice=best, dice=M.dice(masks, maps, val_thr))
    return {**row, "dice_threshold": thr, "val_dice_threshold": val_thr, "maps": maps, "masks": masks,
            "images": masks_ds.images[split.test], "labels": ds.labels[split.test]}


def _resize_maps(maps, size: int) -> np.ndarray:
    """Anomaly maps ``(N, s, s)`` -> ``(N, size, size)`` (bilinear)."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(maps, dtype=np.float32))[:, None]
    if t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t[:, 0].double().numpy()


def localisation_markdown(rows: list[dict]) -> str:
    """A Markdown table of the localisation rows: pixel AUROC, Dice at the threshold chosen on the validation
    phantoms, best Dice (an oracle: its threshold is chosen on the test masks) and image AUROC on the phantoms
    (%), mean ± std over seeds."""
    summ = summarize(localisation_rows(rows), metrics=("pixel_auroc", "dice", "best_dice", "auroc", "train_minutes"))
    lines = ["| method | variant | seeds | pixel AUROC | Dice (val thr.) | best Dice (oracle) | image AUROC (phantoms) "
             "| train min |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summ:
        cell = lambda m: "" if np.isnan(s[m + "_mean"]) else f"{100 * s[m + '_mean']:.1f} ± {100 * s[m + '_std']:.1f}"  # noqa: E731
        lines.append(f"| {s['method']} | {s['variant']} | {s['n']} | {cell('pixel_auroc')} | {cell('dice')} | "
                     f"{cell('best_dice')} | {cell('auroc')} | {s['train_minutes_mean']:.1f} |")
    return "\n".join(lines) + "\n"


def ranking_comparison(summary: list[dict]) -> dict:
    """Order of methods by mean AUROC on each split seed, and how well two splits agree.

    Returns ``{"order": {split_seed: [(method, variant, auroc_mean), ...] best first}, "common": [...],
    "tau": Kendall's tau-b between the first two splits' AUROCs over the (method, variant) pairs run on both
    (``nan`` with fewer than two such pairs or fewer than two splits)}``.
    """
    from scipy.stats import kendalltau

    order: dict[int, list] = {}
    for s in summary:
        order.setdefault(int(s["split_seed"]), []).append((s["method"], s["variant"], s["auroc_mean"]))
    for k in order:
        order[k].sort(key=lambda t: -t[2])
    splits = sorted(order)
    common, tau = [], float("nan")
    if len(splits) >= 2:
        a = {(m, v): x for m, v, x in order[splits[0]]}
        b = {(m, v): x for m, v, x in order[splits[1]]}
        common = [key for key in a if key in b]
        if len(common) >= 2:
            tau = float(kendalltau([a[c] for c in common], [b[c] for c in common]).statistic)
    return {"order": dict(sorted(order.items())), "common": common, "tau": tau}


def ranking_markdown(summary: list[dict]) -> str:
    """The ranking of :func:`ranking_comparison` as README lines."""
    rc = ranking_comparison(summary)
    lines = [f"Ranking by mean AUROC on split {k}: " + " > ".join(f"{m} ({100 * x:.1f})" for m, _, x in order) + "."
             for k, order in rc["order"].items()]
    if rc["common"]:
        same = [k for k in rc["order"]][:2]
        tau = "n/a" if np.isnan(rc["tau"]) else f"{rc['tau']:.2f}"
        lines.append(f"Kendall's τ between splits {same[0]} and {same[1]} over the {len(rc['common'])} rows run on "
                     f"both: {tau} (1: the same order).")
    return "\n".join(lines)


def protocol_markdown(rows: list[dict], profile: str) -> str:
    """A Markdown list: one sentence per method of ``rows`` (in the table's order) on how its protocol differs
    from the paper's (:func:`protocol_notes`)."""
    notes = protocol_notes(profile)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["How each row's protocol differs from its paper (all rows: the patient-disjoint development split of "
             "one file, the threshold of maximum accuracy on its validation images, no pretrained weights):", ""]
    return "\n".join(lines + [f"- **{m}**: {notes[m]}." for m in methods if m in notes])


def replace_readme_section(readme: str, section: str, start: str, end: str) -> str:
    """``readme`` with the text between the ``start`` and ``end`` markers replaced by ``section`` (which
    carries the markers itself)."""
    if start not in readme or end not in readme:
        raise ValueError(f"README has no {start} ... {end} block")
    a, b = readme.index(start), readme.index(end) + len(end)
    return readme[:a] + section + readme[b:]
