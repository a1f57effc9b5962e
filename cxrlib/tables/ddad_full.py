"""The DDAD full-recipe table: DDAD-ASR with the official recipe on the development split, through the command
line only.

For every configuration it runs ``python -m cxrlib train --method ddad ...`` (250 epochs per network, batch 64,
Adam 5e-4; ASR-Net 100 epochs; the ``cpu`` profile trains this recipe in bf16 mixed precision, ``--profile full``
in fp32), then, for every score kind, ``train ... --score KIND --resume`` (which only re-finalises the finished run:
same weights, that kind's validation threshold) and ``python -m cxrlib score ... --split test``, and appends one row
per score kind to ``results/ddad_full.csv``: development-test AUROC/AP, ACC/F1 at the validation threshold (and the
test-tuned ones, labelled), training and wall-clock minutes, the command (data shown as ``PATH/<file>``) and the git
commit. Only finished, scored runs become rows. Per-image scores go to ``results/ddad_full/`` (:func:`scores_path`)
(their JSON, which names this machine's paths, is not committed).

Resumable: finished (configuration, score) rows are skipped; an interrupted training run continues with
``--resume`` from its last network checkpoint. Logs go to ``runs/ddad_full/<tag>.log``.

Every row records the development-split and profile versions. Rows of an earlier definition (a CSV written before
those columns existed is the ``image-v1`` split, profile version 1) stay in the CSV as a record, marked stale: they
never count as done, a run folder trained under another split is refused rather than reused, and the tables and
figure are drawn from the current rows (from the stale ones only while no current row exists, :func:`table_rows`).

Configurations:

* semi-supervised (DDAD's protocol; pool of 700 at anomaly rate 0.6): AE seeds 0, 1, 2; MemAE seed 0; AE-U seed 0;
* ``--weak``: WSCXR Table I's comparison, DDAD given K = 2, 4, 8, 16 pneumonia images as the unlabelled set
  (``--n-unlabelled K --anomaly-rate 1``), AE, seed 0 (``--weak-seeds`` for more).

Usage::

    python -m cxrlib benchmark --table ddad-full --data PATH/zhanglab128_train.npz [--jobs 2] [--threads 1] [--weak]
    python -m cxrlib benchmark --table ddad-full --report-only   # the figure from the CSV
"""
from __future__ import annotations

import csv
import json
import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import benchmark as B
from ..paper_numbers import paper_rows
from ..utils import PROFILES, repo_root

__all__ = ["SCORES", "FIELDS", "KEY", "WEAK_K", "BACKBONE_NAMES", "configurations", "read_rows", "is_current",
           "table_rows", "done_rows", "describe_profile", "append_row", "scores_path",
           "ndm_donor", "run_configuration", "figure", "summary_table", "weak_table", "markdown", "add_arguments",
           "run"]

SCORES = ("rec", "intra", "inter", "asr")
FIELDS = ["protocol", "backbone", "score", "seed", "n_unlabelled", "anomaly_rate", "auroc", "ap", "acc_val_threshold",
          "f1_val_threshold", "acc_test_tuned", "f1_test_tuned", "val_auroc", "train_minutes", "wall_minutes",
          "threads", "command", "git_commit", "finished_at", "split_version", "profile_version"]
#: the columns that identify a row: a (configuration, score) with a current row is not run again
KEY = ("protocol", "backbone", "seed", "score", "split_version", "profile_version")
#: what a row written before a column existed had (the columns were added with the patient-disjoint split)
_LEGACY = {"split_version": "image-v1", "profile_version": "1"}
_NUMERIC = ("seed", "n_unlabelled", "anomaly_rate", "auroc", "ap", "acc_val_threshold", "f1_val_threshold",
            "acc_test_tuned", "f1_test_tuned", "val_auroc", "train_minutes", "wall_minutes")
LOCK = threading.Lock()
WEAK_K = (16, 2, 4, 8)  # the order they train in (WSCXR Table I's K values)
BACKBONE_NAMES = {"ae": "AE", "memae": "MemAE", "aeu": "AE-U"}


def configurations(weak: bool, weak_seeds, n_unlabelled: int = 700) -> list[dict]:
    """The table's configurations (protocol, backbone, seed, pool), each with its ``tag`` (run folder name)."""
    runs = [dict(protocol="semi", backbone=b, seed=s, n_unlabelled=n_unlabelled, anomaly_rate=0.6)
            for b, s in (("ae", 0), ("ae", 1), ("ae", 2), ("memae", 0), ("aeu", 0))]
    if weak:
        runs += [dict(protocol=f"weak_k{k}", backbone="ae", seed=s, n_unlabelled=k, anomaly_rate=1.0)
                 for k in WEAK_K for s in weak_seeds]
    for r in runs:
        r["tag"] = f"{r['protocol']}_{r['backbone']}_s{r['seed']}"
    return runs


def read_rows(csv_path: Path) -> list[dict]:
    """Every row of the CSV as text, a column the file predates filled with its legacy value; ``[]`` without one."""
    return B.read_table_csv(csv_path, FIELDS, _LEGACY)


def _profile(r: dict) -> str:
    words = r["command"].split()
    return words[words.index("--profile") + 1] if "--profile" in words else "cpu"


def is_current(r: dict) -> bool:
    """Whether row ``r`` was made on this code's development split and its profile's current DDAD definition."""
    return B.is_current({**r, "method": "ddad", "profile": _profile(r)})


def table_rows(csv_path: Path) -> tuple[list[dict], bool]:
    """The rows the tables and figure are drawn from and whether they are stale: the current rows when there is
    one, else the stale record."""
    return B.current_or_record(read_rows(csv_path), is_current)


def _frame(csv_path: Path):
    """:func:`table_rows` as a DataFrame, numbers parsed."""
    import pandas as pd

    rows = table_rows(csv_path)[0]
    df = pd.DataFrame(rows, columns=FIELDS)
    for c in _NUMERIC:
        df[c] = pd.to_numeric(df[c])
    df["profile"] = [_profile(r) for r in rows]
    return df


def done_rows(csv_path: Path, profile: str | None = None) -> set:
    """The (protocol, backbone, seed, score) of every current row the CSV holds (as text), of ``profile`` only
    when given: a row trained in bf16 (``cpu``) does not stand for the fp32 one (``full``), nor the other way."""
    return {tuple(r[k] for k in KEY[:4]) for r in read_rows(csv_path)
            if is_current(r) and (profile is None or _profile(r) == profile)}


def describe_profile(profile: str) -> str:
    """``"`full` profile (fp32)"``: the profile a row was trained with and its training arithmetic."""
    from ..methods.ddad.ddad import ddad_config

    return f"`{profile}` profile ({ddad_config(profile).precision})"


def append_row(csv_path: Path, row: dict) -> None:
    """Append one row (the header first when the file is new; a CSV of the columns before the version columns
    is migrated first), one writer at a time."""
    with LOCK:
        new = not csv_path.exists()
        if not new:
            B.migrate_table_csv(csv_path, FIELDS, _LEGACY)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
            if new:
                w.writeheader()
            w.writerow(row)


def ndm_donor(r: dict, runs_dir: Path) -> Path | None:
    """A weak-protocol run's NDM is the same network for every K (the pool is all that changes): take it from
    the first run of the same seed whose NDM networks are finished, if any (``cxrlib train --ndm-from``)."""
    if not r["protocol"].startswith("weak"):
        return None
    from ..methods.ddad.ddad import ndm_finished

    for k in WEAK_K:
        other = runs_dir / f"weak_k{k}_{r['backbone']}_s{r['seed']}"
        if other.name != r["tag"] and ndm_finished(other):
            return other
    return None


def _run(argv: list[str], log: Path) -> None:
    with open(log, "a") as f:
        f.write(f"\n$ {B.display_command(argv)}\n")
    B.run_command(argv, log)


def run_configuration(r: dict, args, csv_path: Path) -> None:
    """Train (or resume) one configuration and append a row per score kind not yet in the CSV."""
    done = done_rows(csv_path, args.profile)
    todo = [k for k in SCORES if (r["protocol"], r["backbone"], str(r["seed"]), k) not in done]
    if not todo:
        print(f"[{r['tag']}] all scores done, skipped", flush=True)
        return
    from ..data import SPLIT_VERSION

    commit = B.git_commit()  # the code the run trains with, even if the tree moves on while it trains
    root = repo_root()
    runs_dir = root / args.runs
    run_dir = runs_dir / r["tag"]
    log = runs_dir / f"{r['tag']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    train = ["train", "--method", "ddad", "--profile", args.profile, "--data", args.data,
             "--seed", str(r["seed"]), "--backbone", r["backbone"], "--n-unlabelled", str(r["n_unlabelled"]),
             "--anomaly-rate", str(r["anomaly_rate"]), "--out", str(run_dir.relative_to(root)), "--no-progress",
             "--threads", str(args.threads), *shlex.split(args.extra)]
    donor = ndm_donor(r, runs_dir)
    if donor is not None and not (run_dir / "model.pt").exists():
        train += ["--ndm-from", str(donor.relative_to(root))]
    wall_file = run_dir / "wall_seconds.json"
    if (run_dir / "model.pt").exists():  # never score a model of another split or configuration as this row
        import torch

        # every score kind is re-finalised below, so the kind model.pt holds now is not part of the check
        kind = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=False)["score"]
        B._check_reusable(run_dir / "model.pt", "ddad", train + ["--score", kind])
    else:
        resume = ["--resume"] if (run_dir / "udm0.pt").exists() else []
        print(f"[{r['tag']}] training{' (resumed)' if resume else ''}; log {log}", flush=True)
        t0 = time.time()
        try:
            _run(train + resume, log)
        finally:
            prev = json.loads(wall_file.read_text())["seconds"] if wall_file.exists() else 0.0
            run_dir.mkdir(parents=True, exist_ok=True)
            wall_file.write_text(json.dumps({"seconds": prev + time.time() - t0}))
        if not (run_dir / "model.pt").exists():
            raise RuntimeError(f"[{r['tag']}] training stopped before the end; see {log}")
    wall_minutes = json.loads(wall_file.read_text())["seconds"] / 60 if wall_file.exists() else float("nan")
    profile_version = B.current_profile_version("ddad", args.profile)
    for kind in todo:
        _run(train + ["--score", kind, "--resume"], log)  # re-finalise: same weights, this kind's threshold
        out_csv = scores_path(root / "results" / "ddad_full", r["tag"], kind, args.profile, SPLIT_VERSION,
                              profile_version)
        out_csv.parent.mkdir(parents=True, exist_ok=True)
        score = ["score", "--checkpoint", str((run_dir / "model.pt").relative_to(root)),
                 "--data", args.data, "--split", "test", "--out", str(out_csv.relative_to(root))]
        _run(score, log)
        res = json.loads(out_csv.with_suffix(".json").read_text())
        import torch

        ck = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=False)
        command = B.display_command(train + ["--score", kind]) + " && " + B.display_command(score)
        append_row(csv_path, {
            "protocol": r["protocol"], "backbone": r["backbone"], "score": kind, "seed": r["seed"],
            "n_unlabelled": r["n_unlabelled"], "anomaly_rate": r["anomaly_rate"],
            "auroc": f"{res['auroc']:.4f}", "ap": f"{res['ap']:.4f}",
            "acc_val_threshold": f"{res['val_threshold']['acc']:.4f}",
            "f1_val_threshold": f"{res['val_threshold']['f1']:.4f}",
            "acc_test_tuned": f"{res['test_tuned']['acc']:.4f}", "f1_test_tuned": f"{res['test_tuned']['f1']:.4f}",
            "val_auroc": f"{ck['val_metrics'][kind]['auroc']:.4f}",
            "train_minutes": f"{ck['train_seconds'] / 60:.1f}", "wall_minutes": f"{wall_minutes:.1f}",
            "threads": args.threads, "command": command, "git_commit": commit,
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), "split_version": SPLIT_VERSION,
            "profile_version": profile_version,
        })
        print(f"[{r['tag']}] {kind}: dev-test AUROC {res['auroc']:.4f} AP {res['ap']:.4f}", flush=True)


def scores_path(scores_dir: Path, tag: str, kind: str, profile: str = "cpu", split_version: str = "image-v1",
                profile_version: str = "1") -> Path:
    """Where a row's per-image development-test scores go: ``<tag>_<kind>.csv`` in a sub-folder named after the
    split version (``image-v1`` rows, from before versions, directly in ``scores_dir``), with ``_<profile>``
    after the name for a profile other than ``cpu`` and ``_p<version>`` for a profile version other than 1, so
    the files of a new definition sit beside, never over, the record of an old one (as
    :func:`cxrlib.benchmark.scores_path` does for the main table)."""
    stem = f"{tag}_{kind}" + ("" if profile == "cpu" else f"_{profile}")
    return B.versioned_file(scores_dir, stem, split_version, profile_version)


def figure(csv_path: Path, fig_path: Path) -> Path | None:
    """AUROC per score kind and backbone, the weak protocol beside the paper, and the wall-clock hours per run
    (``None`` without a CSV)."""
    import matplotlib.pyplot as plt

    if not Path(csv_path).exists():
        print("no results yet: no figure")
        return None
    df = _frame(csv_path)
    weak = df[df.protocol.str.startswith("weak")]
    semi = df[~df.protocol.str.startswith("weak")]
    ncol = 3 if len(weak) else 2
    fig, axes = plt.subplots(1, ncol, figsize=(5.5 * ncol, 4),
                             gridspec_kw={"width_ratios": [3, 2.5, 2] if ncol == 3 else [3, 2]})
    a, b = axes[0], axes[-1]
    groups = list(dict.fromkeys(zip(semi.protocol, semi.backbone, semi.profile)))
    several = semi.profile.nunique() > 1
    width = 0.8 / max(len(groups), 1)
    for gi, (prot, bb, prof) in enumerate(groups):
        d = semi[(semi.protocol == prot) & (semi.backbone == bb) & (semi.profile == prof)]
        stats = d.groupby("score").auroc.agg(["mean", "std", "count"]).reindex(SCORES)
        xs = [i + (gi - (len(groups) - 1) / 2) * width for i in range(len(SCORES))]
        a.bar(xs, stats["mean"], width, yerr=stats["std"].fillna(0), capsize=3,
              label=f"{bb} ({prot}{f', {prof}' if several else ''}, "
                    f"n={int(stats['count'].max()) if stats['count'].notna().any() else 0})")
    a.set_xticks(range(len(SCORES)), SCORES)
    a.set_ylim(0.4, 1.0)
    a.axhline(0.5, color="grey", lw=0.8, ls=":")
    a.set_ylabel("development-test AUROC")
    a.set_title("DDAD-ASR, full recipe on CPU: " + ", ".join(describe_profile(p).replace("`", "")
                                                          for p in sorted(set(semi.profile))))
    a.legend(fontsize=8)
    if len(weak):
        w = weak.assign(k=weak.n_unlabelled.astype(int))
        for kind in SCORES:
            d = w[w.score == kind].groupby("k").auroc.mean()
            axes[1].plot(d.index, 100 * d.values, "o-", label=f"{kind} (this project)")
        paper = {int(r["variant"][2:]): r["auroc"] for r in paper_rows("ddad")}
        axes[1].plot(list(paper), list(paper.values()), "k*--", ms=10, label="DDAD in WSCXR Table I")
        axes[1].set_xscale("log", base=2)
        axes[1].set_xticks(sorted(paper), [str(k) for k in sorted(paper)])
        axes[1].set_xlabel("K pneumonia images as the unlabelled set")
        axes[1].set_ylabel("AUROC (%)")
        axes[1].set_title("WSCXR Table I's protocol (AE)")
        axes[1].legend(fontsize=7)
    runs = df.drop_duplicates(["protocol", "backbone", "seed", "profile"])
    b.barh([f"{p} {bb} s{s}" for p, bb, s in zip(runs.protocol, runs.backbone, runs.seed)], runs.wall_minutes / 60)
    b.set_xlabel("wall-clock hours per run (7 networks)")
    b.invert_yaxis()
    fig.tight_layout()
    fig_path = Path(fig_path)
    fig_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_path, dpi=120)
    plt.close(fig)
    return fig_path


def summary_table(csv_path: Path) -> str:
    """Markdown: one line per (protocol, backbone, score), mean ± std over the seeds in ``csv_path``
    (AUROC/AP, ACC/F1 at the validation threshold, in %; training and wall-clock minutes per run)."""
    df = _frame(csv_path)
    df = df[~df.protocol.str.startswith("weak")]  # those go in weak_table, beside the paper
    lines = ["| protocol | backbone | score | seeds | AUROC | AP | ACC (val thr.) | F1 (val thr.) | train min | wall min |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {k: i for i, k in enumerate(SCORES)}
    groups = df.groupby(["protocol", "backbone", "score", "profile"], sort=False)  # bf16 and fp32 never averaged
    several = df.profile.nunique() > 1
    keys = sorted(groups.groups, key=lambda g: (g[3], g[0] != "semi", g[0], list(BACKBONE_NAMES).index(g[1])
                                                if g[1] in BACKBONE_NAMES else 9, order.get(g[2], 9)))
    for key in keys:
        d = groups.get_group(key)
        cell = lambda c: f"{100 * d[c].mean():.1f} ± {100 * (d[c].std(ddof=1) if len(d) > 1 else 0.0):.1f}"  # noqa: E731
        prot = f"{key[0]} (pool {int(d.n_unlabelled.iloc[0])}, rate {float(d.anomaly_rate.iloc[0]):g})"
        prot += f", `{key[3]}` profile" if several else ""
        lines.append(f"| {prot} | {BACKBONE_NAMES.get(key[1], key[1])} | {key[2]} | "
                     f"{', '.join(str(s) for s in sorted(d.seed))} | {cell('auroc')} | {cell('ap')} | "
                     f"{cell('acc_val_threshold')} | {cell('f1_val_threshold')} | {d.train_minutes.mean():.0f} | "
                     f"{d.wall_minutes.mean():.0f} |")
    return "\n".join(lines) + "\n"


def weak_table(csv_path: Path) -> str:
    """Markdown: WSCXR Table I's protocol, one line per K, beside the paper's DDAD row (or "" without such rows).

    AUROC of every score kind; ACC/F1 of the ASR score at the validation threshold and at the test-tuned one
    (the paper's rule), in %, mean over the seeds run."""
    df = _frame(csv_path)
    df = df[df.protocol.str.startswith("weak")]
    if not len(df):
        return ""
    paper = {r["variant"]: r for r in paper_rows("ddad")}
    lines = ["| K | seeds | AUROC rec / intra / inter / asr | ASR: ACC / F1 (val thr.) | ASR: ACC / F1 (test-tuned) "
             "| paper DDAD: AUROC / ACC / F1 (test-tuned) | train min |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    several = df.profile.nunique() > 1
    for (prof, k), d in sorted(df.groupby([df.profile, df.n_unlabelled.astype(int)]), key=lambda kv: kv[0]):
        pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
        auc = " / ".join(pct(d[d.score == kind].auroc.mean()) if (d.score == kind).any() else "–" for kind in SCORES)
        asr = d[d.score == "asr"]
        two = lambda a, b: f"{pct(asr[a].mean())} / {pct(asr[b].mean())}" if len(asr) else "–"  # noqa: E731
        p = paper.get(f"K={k}")
        ref = f"{p['auroc']:.1f} / {p['acc']:.1f} / {p['f1']:.1f}" if p else "–"
        label = f"{k} (`{prof}` profile)" if several else f"{k}"
        lines.append(f"| {label} | {', '.join(str(s) for s in sorted(set(d.seed)))} | {auc} | "
                     f"{two('acc_val_threshold', 'f1_val_threshold')} | {two('acc_test_tuned', 'f1_test_tuned')} | "
                     f"{ref} | {d.train_minutes.mean():.0f} |")
    return "\n".join(lines) + "\n"


def markdown(csv_path) -> str:
    """What the rows are (current or the stale record), the semi-supervised :func:`summary_table`, then (when the
    CSV has such rows) the :func:`weak_table`."""
    rows, stale = table_rows(csv_path)
    what = ", ".join(f"`{sv}` split, {describe_profile(p)} version {pv}"
                     for sv, p, pv in sorted({(r["split_version"], _profile(r), r["profile_version"]) for r in rows}))
    record = len(read_rows(csv_path)) - len(rows)
    head = (f"Stale: all {len(rows)} rows were made on an earlier definition ({what}); no row of the current one yet."
            if stale else f"{len(rows)} rows on the current definition ({what})."
            + (f" The CSV also keeps {record} row{'s' if record != 1 else ''} of earlier definitions, a record not "
               f"drawn here." if record else ""))
    return "\n".join(t for t in (head + "\n", summary_table(csv_path), weak_table(csv_path)) if t)


def add_arguments(p) -> None:
    """This table's options of ``python -m cxrlib benchmark --table ddad-full``."""
    p.add_argument("--data", help="zhanglab128_train.npz (or any source the data layer reads)")
    p.add_argument("--out", default="results/ddad_full.csv", help="CSV, relative to the repository root")
    p.add_argument("--fig", default="figures/ddad_full.png")
    p.add_argument("--runs", default="runs/ddad_full", help="run folders, relative to the repository root")
    p.add_argument("--jobs", type=int, default=1, help="configurations trained at once (2 on a free 2-core CPU)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    p.add_argument("--weak", action="store_true", help="also WSCXR Table I's K = 2, 4, 8, 16 protocol")
    p.add_argument("--weak-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--only", nargs="*", help="tags to run, e.g. semi_ae_s0")
    p.add_argument("--profile", choices=PROFILES, default="cpu",
                   help="cpu (default): the official recipe in bf16 mixed precision; full: the same in fp32; "
                        "quick only for a smoke test")
    p.add_argument("--n-unlabelled", type=int, default=700, help="pool size of the semi-supervised runs")
    p.add_argument("--extra", default="", help="more train options (smoke tests only, e.g. '--epochs 1')")
    p.add_argument("--report-only", action="store_true", help="only redraw the figure from the CSV")


def run(args) -> int:
    """Every configuration (``--jobs`` at a time); a failed one does not stop the others (exit status 1)."""
    root = repo_root()
    csv_path, fig_path = root / args.out, root / args.fig
    if args.report_only:
        print(f"figure -> {figure(csv_path, fig_path)}")
        return 0
    if not args.data:
        raise ValueError("pass --data PATH")
    runs = [r for r in configurations(args.weak, args.weak_seeds, args.n_unlabelled) if not args.only or r["tag"] in args.only]
    print(f"{len(runs)} configurations, {args.jobs} at a time, {args.threads} thread(s) each; rows -> {csv_path}",
          flush=True)
    failures = []

    def one(r):
        try:
            run_configuration(r, args, csv_path)
            figure(csv_path, fig_path)
        except Exception as e:  # keep the other configurations going; report at the end
            failures.append(f"{r['tag']}: {e}")
            print(f"[{r['tag']}] FAILED: {e}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, runs))
    for f in failures:
        print("failed:", f)
    return 1 if failures else 0
