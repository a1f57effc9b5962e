"""WSCXR's K-shot table (K = 2, 4, 8, 16) and its mining × mixing ablation (K = 16), plus the PatchCore baseline,
over 3 seeds on the development split, through the command line: every row is one ``train`` and one
``score --split test`` command, stored in the CSV with the git commit. Finished runs are reused, so the script
can be stopped and started again.

    python scripts/run_wscxr_tables.py --data PATH/zhanglab128_train.npz            # cpu profile, random weights
    python scripts/run_wscxr_tables.py --data ... --weights imagenet                  # with the ImageNet weights

Writes ``results/wscxr_<profile>.csv`` and ``figures/wscxr_<profile>.png``; both name the backbone and weights.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cxrlib.benchmark import display_command, git_commit as head_commit, run_command  # noqa: E402
from cxrlib.utils import atomic_write_bytes  # noqa: E402

COLUMNS = ["table", "method", "k", "mining", "mixing", "seed", "split_seed", "profile", "data", "backbone",
           "auroc", "ap", "acc", "f1", "acc_test_tuned", "f1_test_tuned", "val_auroc", "train_minutes",
           "peak_train_gib", "train_command", "score_command", "commit", "split_version"]

#: (table, method, K, mining, mixing); the K = 16 run with both switches on serves both tables
CONFIGS = [("baseline", "patchcore", 0, "", "")] + [("k_shot", "wscxr", k, True, True) for k in (2, 4, 8, 16)] + [
    ("ablation", "wscxr", 16, False, False), ("ablation", "wscxr", 16, True, False), ("ablation", "wscxr", 16, False, True)]


def git_commit() -> str:
    """HEAD's short hash, ``+dirty`` when the package or this script differ from it (untracked files included)."""
    import subprocess

    commit = head_commit(ROOT)
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--", "cxrlib", "scripts/run_wscxr_tables.py"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return commit
    return commit if not status or commit.endswith("+dirty") else commit + "+dirty"


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:  # rows written before the column existed were made on the image-level split
        r["split_version"] = r.get("split_version") or "image-v1"
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r.get(k, "")) for k in COLUMNS})
    atomic_write_bytes(path, buf.getvalue().encode())


def row_commit(run: Path, t: dict) -> str:
    """The commit a run was trained at (stored beside it), else the previous CSV's value, else HEAD now."""
    return t.get("commit") or PREVIOUS_COMMITS.get(str(run.name)) or git_commit()


PREVIOUS_COMMITS: dict[str, str] = {}


def run_one(cfg, seed: int, args) -> dict:
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
        seconds, peak = run_command(train, run / "train.log")
        t = {"train_minutes": seconds / 60, "peak_train_gib": peak, "commit": git_commit()}
        info.write_text(json.dumps(t))
    scores = run / "test_scores.csv"
    score = ["score", "--checkpoint", str(run / "model.pt"), "--data", args.data, "--split", "test", "--out", str(scores),
             "--feature-cache", args.feature_cache]  # the test images' backbone features are computed once
    if not scores.with_suffix(".json").exists():
        run_command(score, run / "score.log")
    res = json.loads(scores.with_suffix(".json").read_text())
    import torch

    ck = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    return {"table": table, "method": method, "k": k, "mining": mining, "mixing": mixing, "seed": seed,
            "split_seed": args.split_seed, "profile": args.profile, "data": Path(args.data).name,
            "backbone": ck["backbone_label"], "auroc": res["auroc"], "ap": res["ap"],
            "acc": res["val_threshold"]["acc"], "f1": res["val_threshold"]["f1"],
            "acc_test_tuned": res["test_tuned"]["acc"], "f1_test_tuned": res["test_tuned"]["f1"],
            "val_auroc": ck["val_metrics"]["auroc"], "train_minutes": t["train_minutes"],
            "peak_train_gib": t["peak_train_gib"], "train_command": display_command(train),
            "score_command": display_command(score), "commit": row_commit(run, t),
            "split_version": res.get("split_version", "image-v1")}


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from cxrlib.paper_numbers import paper_rows

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("CXR_DATA"), help="zhanglab128_train.npz (or $CXR_DATA)")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--weights", default="random", choices=("random", "imagenet"))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--runs", default=None, help="run folders (default runs/<profile>/wscxr_tables)")
    ap.add_argument("--feature-cache", default=None, help="default runs/<profile>/features")
    ap.add_argument("--out", default=None, help="default results/wscxr_<profile>.csv")
    ap.add_argument("--fig", default=None, help="default figures/wscxr_<profile>.png")
    args = ap.parse_args(argv)
    if not args.data:
        ap.error("pass --data PATH (or set CXR_DATA)")
    args.runs = args.runs or str(ROOT / "runs" / args.profile / "wscxr_tables")
    args.feature_cache = args.feature_cache or str(ROOT / "runs" / args.profile / "features")
    out = Path(args.out or ROOT / "results" / f"wscxr_{args.profile}.csv")
    fig = Path(args.fig or ROOT / "figures" / f"wscxr_{args.profile}.png")
    rows = read_rows(out)
    for r in rows:  # commits of runs listed before (their folders are named after the run, see run_one)
        folder = Path(r.get("train_command", "").split("--out ")[-1].split(" ")[0]).name
        if folder and r.get("commit"):
            PREVIOUS_COMMITS[folder] = r["commit"]
    for seed in args.seeds:
        for cfg in CONFIGS:
            row = run_one(cfg, seed, args)
            key = lambda r: (r["table"], r["method"], str(r["k"]), str(r["mining"]), str(r["mixing"]),  # noqa: E731
                             str(r["seed"]), str(r["split_seed"]), r["profile"], r["backbone"])
            rows = [r for r in rows if key(r) != key(row)] + [row]
            write_rows(out, rows)
            print(f"{cfg} seed {seed}: AUROC {row['auroc']:.3f} AP {row['ap']:.3f} ACC {row['acc']:.3f} "
                  f"F1 {row['f1']:.3f} (validation threshold); {row['train_minutes']:.1f} min", flush=True)
            figure(read_rows(out), fig)
    print(f"rows in {out}; figure {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
