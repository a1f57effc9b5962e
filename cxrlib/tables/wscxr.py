"""The WSCXR table: its K-shot table (K = 2, 4, 8, 16) and its mining × mixing ablation (K = 16), plus the PatchCore
baseline, over 3 seeds on the development split, through the command line: every row is one ``train`` and one
``score --split test`` command, stored in the CSV with the git commit. Finished runs are reused, so the table can be
stopped and started again.

    python -m cxrlib benchmark --table wscxr --data PATH/zhanglab128_train.npz          # cpu profile, random weights
    python -m cxrlib benchmark --table wscxr --data ... --weights imagenet                # with the ImageNet weights

Writes ``results/wscxr_<profile>.csv`` and ``figures/wscxr_<profile>.png``; both name the backbone and weights.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from .. import benchmark as B
from ..utils import PROFILES, repo_root

__all__ = ["COLUMNS", "KEY", "CONFIGS", "read_rows", "run_one", "run", "summary_table", "markdown", "figure",
           "add_arguments"]

COLUMNS = ["table", "method", "k", "mining", "mixing", "seed", "split_seed", "profile", "data", "backbone",
           "auroc", "ap", "acc", "f1", "acc_test_tuned", "f1_test_tuned", "val_auroc", "train_minutes",
           "peak_train_gib", "train_command", "score_command", "commit", "split_version"]
#: the columns that identify a row: a re-run replaces the row of the same key
KEY = ("table", "method", "k", "mining", "mixing", "seed", "split_seed", "profile", "backbone")

#: (table, method, K, mining, mixing); the K = 16 run with both switches on serves both tables
CONFIGS = [("baseline", "patchcore", 0, "", "")] + [("k_shot", "wscxr", k, True, True) for k in (2, 4, 8, 16)] + [
    ("ablation", "wscxr", 16, False, False), ("ablation", "wscxr", 16, True, False), ("ablation", "wscxr", 16, False, True)]


def read_rows(path) -> list[dict]:
    """The rows of a WSCXR table CSV as text (``[]`` without the file); rows written before the ``split_version``
    column existed were made on the image-level split (``image-v1``)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["split_version"] = r.get("split_version") or "image-v1"
    return rows


def _key(r: dict) -> tuple:
    return tuple(str(r[k]) for k in KEY)


def run_one(cfg, seed: int, args, previous_commits: dict | None = None) -> dict:
    """Train (or reuse) and score one configuration of :data:`CONFIGS`; return its CSV row. ``previous_commits``
    maps a run folder's name to the commit of its earlier row (a reused run keeps the commit it was trained at)."""
    table, method, k, mining, mixing = cfg
    tag = method if method == "patchcore" else f"wscxr_k{k}{'' if mining else '_nomine'}{'' if mixing else '_nomix'}"
    run = Path(args.runs) / f"{tag}_s{seed}_split{args.split_seed}"
    run.mkdir(parents=True, exist_ok=True)
    train = ["train", "--method", method, "--profile", args.profile, "--data", args.data, "--seed", str(seed),
             "--split-seed", str(args.split_seed), "--weights", args.weights, "--out", str(run), "--no-progress",
             "--feature-cache", args.feature_cache]
    if method == "wscxr":
        train += ["--k", str(k)] + ([] if mining else ["--no-mining"]) + ([] if mixing else ["--no-mixing"])
    info = run / "table_train.json"
    if (run / "model.pt").exists() and info.exists():
        t = json.loads(info.read_text())
    else:
        seconds, peak = B.run_command(train, run / "train.log")
        t = {"train_minutes": seconds / 60, "peak_train_gib": peak, "commit": B.git_commit()}
        info.write_text(json.dumps(t))
    scores = run / "test_scores.csv"
    score = ["score", "--checkpoint", str(run / "model.pt"), "--data", args.data, "--split", "test", "--out", str(scores),
             "--feature-cache", args.feature_cache]  # the test images' backbone features are computed once
    if not scores.with_suffix(".json").exists():
        B.run_command(score, run / "score.log")
    res = json.loads(scores.with_suffix(".json").read_text())
    import torch

    ck = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    # the commit a run was trained at (stored beside it), else the previous CSV's value, else HEAD now
    commit = t.get("commit") or (previous_commits or {}).get(run.name) or B.git_commit()
    return {"table": table, "method": method, "k": k, "mining": mining, "mixing": mixing, "seed": seed,
            "split_seed": args.split_seed, "profile": args.profile, "data": Path(args.data).name,
            "backbone": ck["backbone_label"], "auroc": res["auroc"], "ap": res["ap"],
            "acc": res["val_threshold"]["acc"], "f1": res["val_threshold"]["f1"],
            "acc_test_tuned": res["test_tuned"]["acc"], "f1_test_tuned": res["test_tuned"]["f1"],
            "val_auroc": ck["val_metrics"]["auroc"], "train_minutes": t["train_minutes"],
            "peak_train_gib": t["peak_train_gib"], "train_command": B.display_command(train),
            "score_command": B.display_command(score), "commit": commit,
            "split_version": res.get("split_version", "image-v1")}


def summary_table(rows: list[dict]) -> str:
    """The K-shot and mining × mixing rows (and the PatchCore baseline): AUROC (%) mean ± std over seeds."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["table"], r["method"], r["k"], r["mining"], r["mixing"]), []).append(float(r["auroc"]))
    lines = ["| table | method | K | mining | mixing | seeds | AUROC |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for (table, method, k, mining, mixing), v in groups.items():
        v = 100 * np.array(v)
        sd = v.std(ddof=1) if len(v) > 1 else 0.0
        lines.append(f"| {table} | {method} | {k} | {mining} | {mixing} | {len(v)} | {v.mean():.1f} ± {sd:.1f} |")
    return "\n".join(lines) + "\n"


def markdown(csv_path) -> str:
    """:func:`summary_table` of the CSV's rows on this code's development split (all rows when it has none)."""
    from ..data import SPLIT_VERSION

    rows = read_rows(csv_path)
    return summary_table([r for r in rows if r["split_version"] == SPLIT_VERSION] or rows)


def figure(rows: list[dict], path) -> Path:
    """The K-shot curve beside the paper's Table I and the ablation bars beside its Table II."""
    import matplotlib.pyplot as plt

    from ..paper_numbers import paper_rows

    paper = {r["variant"]: r["auroc"] for r in paper_rows("wscxr")}
    def stats(sel):
        v = np.array([100 * float(r["auroc"]) for r in rows if sel(r)])
        return (v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0, len(v)) if len(v) else (np.nan, 0.0, 0)
    is_both = lambda r: str(r["mining"]) == "True" and str(r["mixing"]) == "True"  # noqa: E731
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ks = [2, 4, 8, 16]
    st = [stats(lambda r, k=k: r["method"] == "wscxr" and int(r["k"]) == k and is_both(r)) for k in ks]
    axes[0].errorbar(ks, [s[0] for s in st], [s[1] for s in st], fmt="o-", capsize=3, label="WSCXR, ours (dev-test)")
    pc = stats(lambda r: r["method"] == "patchcore")
    axes[0].axhline(pc[0], color="0.5", ls=":", label=f"PatchCore, ours ({pc[0]:.1f})")
    axes[0].plot(ks, [paper[f"K={k}"] for k in ks], "s--", label="paper Table I (official test, ImageNet)")
    axes[0].set_xscale("log", base=2); axes[0].set_xticks(ks, [str(k) for k in ks])
    axes[0].set_xlabel("K labelled anomalies"); axes[0].set_ylabel("AUROC %"); axes[0].legend(fontsize=7)
    combos = [(False, False, "K=16, no mining, no mixing"), (True, False, "K=16, mining only"),
              (False, True, "K=16, mixing only"), (True, True, "K=16")]
    st = [stats(lambda r, a=a, b=b: r["method"] == "wscxr" and int(r["k"]) == 16 and str(r["mining"]) == str(a)
                and str(r["mixing"]) == str(b)) for a, b, _ in combos]
    xs = np.arange(4)
    axes[1].bar(xs - 0.2, [s[0] for s in st], 0.4, yerr=[s[1] for s in st], capsize=3, label="ours")
    axes[1].bar(xs + 0.2, [paper[n] for *_, n in combos], 0.4, label="paper Table II")
    axes[1].set_xticks(xs, ["-/-", "mine/-", "-/mix", "mine/mix"]); axes[1].set_ylim(50, 100)
    axes[1].set_title("ablation (mining / mixing), K = 16"); axes[1].legend(fontsize=7)
    seeds = sorted({r["seed"] for r in rows})
    fig.suptitle(f"{rows[0]['profile']} profile, seeds {', '.join(map(str, seeds))}, mean ± std; "
                 f"{rows[0]['backbone']}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def add_arguments(p) -> None:
    """This table's options of ``python -m cxrlib benchmark --table wscxr``."""
    p.add_argument("--data", default=os.environ.get("CXR_DATA"), help="zhanglab128_train.npz (or $CXR_DATA)")
    p.add_argument("--profile", choices=PROFILES, default="cpu")
    p.add_argument("--weights", default="random", choices=("random", "imagenet"))
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--runs", default=None, help="run folders (default runs/<profile>/wscxr_tables)")
    p.add_argument("--feature-cache", default=None, help="default runs/<profile>/features")
    p.add_argument("--out", default=None, help="CSV (default results/wscxr_<profile>.csv); rows are updated")
    p.add_argument("--fig", default=None, help="default figures/wscxr_<profile>.png")
    p.add_argument("--report-only", action="store_true", help="only redraw the figure from the CSV")


def run(args) -> int:
    """Every configuration of :data:`CONFIGS` for every seed, each row upserted into the CSV (by :data:`KEY`) and
    the figure redrawn as it finishes."""
    root = repo_root()
    out = Path(args.out or root / "results" / f"wscxr_{args.profile}.csv")
    fig = Path(args.fig or root / "figures" / f"wscxr_{args.profile}.png")
    if args.report_only:
        print(markdown(out), f"figure {figure(read_rows(out), fig)}", sep="\n")
        return 0
    if not args.data:
        raise ValueError("pass --data PATH (or set CXR_DATA)")
    args.runs = args.runs or str(root / "runs" / args.profile / "wscxr_tables")
    args.feature_cache = args.feature_cache or str(root / "runs" / args.profile / "features")
    rows = read_rows(out)
    previous = {}
    for r in rows:  # commits of runs listed before (their folders are named after the run, see run_one)
        folder = Path(r.get("train_command", "").split("--out ")[-1].split(" ")[0]).name
        if folder and r.get("commit"):
            previous[folder] = r["commit"]
    for seed in args.seeds:
        for cfg in CONFIGS:
            row = run_one(cfg, seed, args, previous)
            rows = [r for r in rows if _key(r) != _key(row)] + [row]
            B.write_rows(out, rows, COLUMNS)
            print(f"{cfg} seed {seed}: AUROC {row['auroc']:.3f} AP {row['ap']:.3f} ACC {row['acc']:.3f} "
                  f"F1 {row['f1']:.3f} (validation threshold); {row['train_minutes']:.1f} min", flush=True)
            figure(read_rows(out), fig)
    print(markdown(out), f"rows in {out}; figure {fig}", sep="\n")
    return 0
