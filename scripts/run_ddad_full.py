"""DDAD-ASR with the full official recipe on the development split, through the command line only.

For every configuration it runs ``python -m cxrlib train --method ddad ...`` (250 epochs per network, batch 64,
Adam 5e-4; ASR-Net 100 epochs; the ``cpu`` profile trains this recipe in bf16 mixed precision, ``--profile full``
in fp32), then, for every score kind, ``train ... --score KIND --resume`` (which only
re-finalises the finished run: same weights, that kind's validation threshold) and
``python -m cxrlib score ... --split test``, and appends one row per score kind to ``results/ddad_full.csv``:
development-test AUROC/AP, ACC/F1 at the validation threshold (and the test-tuned ones, labelled), training and
wall-clock minutes, the command (data shown as ``PATH/<file>``) and the git commit. Only finished, scored runs
become rows. Per-image scores go to ``results/ddad_full/<tag>_<kind>.csv`` (their JSON, which names this machine's
paths, is not committed).

Resumable: finished (configuration, score) rows are skipped; an interrupted training run continues with
``--resume`` from its last network checkpoint. Logs go to ``runs/ddad_full/<tag>.log``.

Configurations:

* semi-supervised (DDAD's protocol; pool of 700 at anomaly rate 0.6): AE seeds 0, 1, 2; MemAE seed 0; AE-U seed 0;
* ``--weak``: WSCXR Table I's comparison, DDAD given K = 2, 4, 8, 16 pneumonia images as the unlabelled set
  (``--n-unlabelled K --anomaly-rate 1``), AE, seed 0 (``--weak-seeds`` for more).

Usage::

    python scripts/run_ddad_full.py --data PATH/zhanglab128_train.npz [--jobs 2] [--threads 1] [--weak]
    python scripts/run_ddad_full.py --report   # figure and README block from the CSV
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cxrlib.paper_numbers import paper_rows

ROOT = Path(__file__).resolve().parent.parent
SCORES = ("rec", "intra", "inter", "asr")
FIELDS = ["protocol", "backbone", "score", "seed", "n_unlabelled", "anomaly_rate", "auroc", "ap", "acc_val_threshold",
          "f1_val_threshold", "acc_test_tuned", "f1_test_tuned", "val_auroc", "train_minutes", "wall_minutes",
          "threads", "command", "git_commit", "finished_at"]
LOCK = threading.Lock()
WEAK_K = (16, 2, 4, 8)  # the order they train in (WSCXR Table I's K values)


def configurations(weak: bool, weak_seeds, n_unlabelled: int = 700) -> list[dict]:
    runs = [dict(protocol="semi", backbone=b, seed=s, n_unlabelled=n_unlabelled, anomaly_rate=0.6)
            for b, s in (("ae", 0), ("ae", 1), ("ae", 2), ("memae", 0), ("aeu", 0))]
    if weak:
        runs += [dict(protocol=f"weak_k{k}", backbone="ae", seed=s, n_unlabelled=k, anomaly_rate=1.0)
                 for k in WEAK_K for s in weak_seeds]
    for r in runs:
        r["tag"] = f"{r['protocol']}_{r['backbone']}_s{r['seed']}"
    return runs


def public_path(data: str) -> str:
    """The data argument as the CSV shows it: never a path of this machine (``PATH/<file name>``)."""
    p = Path(data)
    if not p.is_absolute() and not data.startswith(".."):
        try:
            (ROOT / p).resolve().relative_to(ROOT)
            return data
        except ValueError:
            pass
    return f"PATH/{p.name}"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "cxrlib"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def done_rows(csv_path: Path) -> set:
    if not csv_path.exists():
        return set()
    with open(csv_path, newline="") as f:
        return {(r["protocol"], r["backbone"], r["seed"], r["score"]) for r in csv.DictReader(f)}


def append_row(csv_path: Path, row: dict) -> None:
    with LOCK:
        new = not csv_path.exists()
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)


def run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"command failed ({rc}), see {log}: {shlex.join(cmd)}")


def ndm_donor(r: dict, args) -> Path | None:
    """A weak-protocol run's NDM is the same network for every K (the pool is all that changes): take it from
    the first run of the same seed whose NDM networks are finished, if any (``cxrlib train --ndm-from``)."""
    if not r["protocol"].startswith("weak"):
        return None
    from cxrlib.methods.ddad.ddad import ndm_finished

    for k in WEAK_K:
        other = ROOT / args.runs_dir / f"weak_k{k}_{r['backbone']}_s{r['seed']}"
        if other.name != r["tag"] and ndm_finished(other):
            return other
    return None


def run_configuration(r: dict, args, csv_path: Path) -> None:
    finished = done_rows(csv_path)
    todo = [k for k in SCORES if (r["protocol"], r["backbone"], str(r["seed"]), k) not in finished]
    if not todo:
        print(f"[{r['tag']}] all scores done, skipped", flush=True)
        return
    commit = git_commit()  # the code the run trains with, even if the tree moves on while it trains
    run_dir = ROOT / args.runs_dir / r["tag"]
    log = ROOT / args.runs_dir / f"{r['tag']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    train = [py, "-m", "cxrlib", "train", "--method", "ddad", "--profile", args.profile, "--data", args.data,
             "--seed", str(r["seed"]), "--backbone", r["backbone"], "--n-unlabelled", str(r["n_unlabelled"]),
             "--anomaly-rate", str(r["anomaly_rate"]), "--out", str(run_dir.relative_to(ROOT)), "--no-progress",
             "--threads", str(args.threads), *shlex.split(args.extra)]
    donor = ndm_donor(r, args)
    if donor is not None and not (run_dir / "model.pt").exists():
        train += ["--ndm-from", str(donor.relative_to(ROOT))]
    wall_file = run_dir / "wall_seconds.json"
    if not (run_dir / "model.pt").exists():
        resume = ["--resume"] if (run_dir / "udm0.pt").exists() else []
        print(f"[{r['tag']}] training{' (resumed)' if resume else ''}; log {log}", flush=True)
        t0 = time.time()
        try:
            run(train + resume, log)
        finally:
            prev = json.loads(wall_file.read_text())["seconds"] if wall_file.exists() else 0.0
            run_dir.mkdir(parents=True, exist_ok=True)
            wall_file.write_text(json.dumps({"seconds": prev + time.time() - t0}))
        if not (run_dir / "model.pt").exists():
            raise RuntimeError(f"[{r['tag']}] training stopped before the end; see {log}")
    wall_minutes = json.loads(wall_file.read_text())["seconds"] / 60 if wall_file.exists() else float("nan")
    out_dir = ROOT / "results" / "ddad_full"
    for kind in todo:
        run(train + ["--score", kind, "--resume"], log)  # re-finalise: same weights, this kind's threshold
        out_csv = out_dir / f"{r['tag']}_{kind}.csv"
        score = [py, "-m", "cxrlib", "score", "--checkpoint", str((run_dir / "model.pt").relative_to(ROOT)),
                 "--data", args.data, "--split", "test", "--out", str(out_csv.relative_to(ROOT))]
        run(score, log)
        res = json.loads(out_csv.with_suffix(".json").read_text())
        import torch

        ck = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=False)
        shown = lambda cmd: shlex.join(["python"] + [public_path(a) if a == args.data else a for a in cmd[1:]])  # noqa: E731
        command = shown(train + ["--score", kind]) + " && " + shown(score)
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
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        })
        print(f"[{r['tag']}] {kind}: dev-test AUROC {res['auroc']:.4f} AP {res['ap']:.4f}", flush=True)


def figure(csv_path: Path, fig_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    if not csv_path.exists():
        print("no results yet: no figure")
        return
    df = pd.read_csv(csv_path)
    weak = df[df.protocol.str.startswith("weak")]
    semi = df[~df.protocol.str.startswith("weak")]
    ncol = 3 if len(weak) else 2
    fig, axes = plt.subplots(1, ncol, figsize=(5.5 * ncol, 4),
                             gridspec_kw={"width_ratios": [3, 2.5, 2] if ncol == 3 else [3, 2]})
    a, b = axes[0], axes[-1]
    groups = list(dict.fromkeys(zip(semi.protocol, semi.backbone)))
    width = 0.8 / max(len(groups), 1)
    for gi, (prot, bb) in enumerate(groups):
        d = semi[(semi.protocol == prot) & (semi.backbone == bb)]
        stats = d.groupby("score").auroc.agg(["mean", "std", "count"]).reindex(SCORES)
        xs = [i + (gi - (len(groups) - 1) / 2) * width for i in range(len(SCORES))]
        a.bar(xs, stats["mean"], width, yerr=stats["std"].fillna(0), capsize=3,
              label=f"{bb} ({prot}, n={int(stats['count'].max()) if stats['count'].notna().any() else 0})")
    a.set_xticks(range(len(SCORES)), SCORES)
    a.set_ylim(0.4, 1.0)
    a.axhline(0.5, color="grey", lw=0.8, ls=":")
    a.set_ylabel("development-test AUROC")
    a.set_title("DDAD-ASR, full recipe on CPU")
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
    runs = df.drop_duplicates(["protocol", "backbone", "seed"])
    b.barh([f"{p} {bb} s{s}" for p, bb, s in zip(runs.protocol, runs.backbone, runs.seed)], runs.wall_minutes / 60)
    b.set_xlabel("wall-clock hours per run (7 networks)")
    b.invert_yaxis()
    fig.tight_layout()
    fig_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_path, dpi=120)
    plt.close(fig)
    print(f"figure -> {fig_path}")


README_START, README_END = "<!-- ddad:start -->", "<!-- ddad:end -->"
BACKBONE_NAMES = {"ae": "AE", "memae": "MemAE", "aeu": "AE-U"}


def summary_table(csv_path: Path) -> str:
    """Markdown: one line per (protocol, backbone, score), mean ± std over the seeds in ``csv_path``
    (AUROC/AP, ACC/F1 at the validation threshold, in %; training and wall-clock minutes per run)."""
    import pandas as pd

    df = pd.read_csv(csv_path)
    df = df[~df.protocol.str.startswith("weak")]  # those go in weak_table, beside the paper
    lines = ["| protocol | backbone | score | seeds | AUROC | AP | ACC (val thr.) | F1 (val thr.) | train min | wall min |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {k: i for i, k in enumerate(SCORES)}
    groups = df.groupby(["protocol", "backbone", "score"], sort=False)
    keys = sorted(groups.groups, key=lambda g: (g[0] != "semi", g[0], list(BACKBONE_NAMES).index(g[1])
                                                if g[1] in BACKBONE_NAMES else 9, order.get(g[2], 9)))
    for key in keys:
        d = groups.get_group(key)
        cell = lambda c: f"{100 * d[c].mean():.1f} ± {100 * (d[c].std(ddof=1) if len(d) > 1 else 0.0):.1f}"  # noqa: E731
        prot = f"{key[0]} (pool {int(d.n_unlabelled.iloc[0])}, rate {float(d.anomaly_rate.iloc[0]):g})"
        lines.append(f"| {prot} | {BACKBONE_NAMES.get(key[1], key[1])} | {key[2]} | "
                     f"{', '.join(str(s) for s in sorted(d.seed))} | {cell('auroc')} | {cell('ap')} | "
                     f"{cell('acc_val_threshold')} | {cell('f1_val_threshold')} | {d.train_minutes.mean():.0f} | "
                     f"{d.wall_minutes.mean():.0f} |")
    return "\n".join(lines) + "\n"


def weak_table(csv_path: Path) -> str:
    """Markdown: WSCXR Table I's protocol, one line per K, beside the paper's DDAD row (or "" without such rows).

    AUROC of every score kind; ACC/F1 of the ASR score at the validation threshold and at the test-tuned one
    (the paper's rule), in %, mean over the seeds run."""
    import pandas as pd

    df = pd.read_csv(csv_path)
    df = df[df.protocol.str.startswith("weak")]
    if not len(df):
        return ""
    paper = {r["variant"]: r for r in paper_rows("ddad")}
    lines = ["| K | seeds | AUROC rec / intra / inter / asr | ASR: ACC / F1 (val thr.) | ASR: ACC / F1 (test-tuned) "
             "| paper DDAD: AUROC / ACC / F1 (test-tuned) | train min |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for k, d in sorted(df.groupby(df.n_unlabelled.astype(int)), key=lambda kv: kv[0]):
        pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
        auc = " / ".join(pct(d[d.score == kind].auroc.mean()) if (d.score == kind).any() else "–" for kind in SCORES)
        asr = d[d.score == "asr"]
        two = lambda a, b: f"{pct(asr[a].mean())} / {pct(asr[b].mean())}" if len(asr) else "–"  # noqa: E731
        p = paper.get(f"K={k}")
        ref = f"{p['auroc']:.1f} / {p['acc']:.1f} / {p['f1']:.1f}" if p else "–"
        lines.append(f"| {k} | {', '.join(str(s) for s in sorted(set(d.seed)))} | {auc} | "
                     f"{two('acc_val_threshold', 'f1_val_threshold')} | {two('acc_test_tuned', 'f1_test_tuned')} | "
                     f"{ref} | {d.train_minutes.mean():.0f} |")
    return "\n".join(lines) + "\n"


def readme_section(csv_path: Path, display_path: str = "results/ddad_full.csv") -> str:
    """The README's DDAD full-recipe block, generated from ``csv_path`` (never typed by hand)."""
    import pandas as pd

    df = pd.read_csv(csv_path)
    commits = ", ".join(sorted(set(df.git_commit.astype(str))))
    threads = ", ".join(str(t) for t in sorted(set(df.threads)))
    return "\n".join([
        README_START,
        f"Development-test split 0 of `zhanglab128_train.npz`, the official recipe in the `cpu` profile (bf16 "
        f"autocast, fp32 weights and scores), {threads} torch thread(s) per run; AUROC/AP/ACC/F1 in %, mean ± std "
        f"over seeds, ACC/F1 at the validation threshold. Generated from [`{display_path}`]({display_path}) by "
        f"`python scripts/run_ddad_full.py --report`; every row's commands are in the CSV (commits {commits}).",
        "", summary_table(csv_path).rstrip("\n"), "", *weak_block(csv_path), README_END])


def weak_block(csv_path: Path) -> list[str]:
    table = weak_table(csv_path)
    if not table:
        return []
    return ["WSCXR Table I's protocol: DDAD given K pneumonia images (no normals) as its unlabelled set "
            "(`--n-unlabelled K --anomaly-rate 1`), the same development split, AE backbone; the NDM, trained on "
            "the normals alone, is shared by the four K (`--ndm-from`). The paper gives one DDAD number per K and "
            "does not say which score; its ACC/F1 use a test-tuned threshold and the official test split.",
            "", table.rstrip("\n"), ""]


def write_report(csv_path: Path, fig_path: Path) -> None:
    """The figure, and the results page (results/README.md), whose DDAD tables come from the CSV."""
    figure(csv_path, fig_path)
    if csv_path.exists():
        from cxrlib.report import write_all

        write_all(ROOT, figures=False)
        print(f"results/README.md regenerated (its DDAD tables from {csv_path})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="zhanglab128_train.npz (or any source the data layer reads)")
    ap.add_argument("--csv", default="results/ddad_full.csv")
    ap.add_argument("--figure", default="figures/ddad_full.png")
    ap.add_argument("--runs-dir", default="runs/ddad_full")
    ap.add_argument("--jobs", type=int, default=1, help="configurations trained at once (2 on a free 2-core CPU)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    ap.add_argument("--weak", action="store_true", help="also WSCXR Table I's K = 2, 4, 8, 16 protocol")
    ap.add_argument("--weak-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--only", nargs="*", help="tags to run, e.g. semi_ae_s0")
    ap.add_argument("--profile", default="cpu",
                    help="cpu (default): the official recipe in bf16 mixed precision; full: the same in fp32; "
                         "quick only for a smoke test")
    ap.add_argument("--n-unlabelled", type=int, default=700, help="pool size of the semi-supervised runs")
    ap.add_argument("--extra", default="", help="more train options (smoke tests only, e.g. '--epochs 1')")
    ap.add_argument("--report", "--figure-only", action="store_true", dest="report",
                    help="only redraw the figure and regenerate the README's DDAD block from the CSV")
    args = ap.parse_args()
    csv_path, fig_path = ROOT / args.csv, ROOT / args.figure
    if args.report:
        write_report(csv_path, fig_path)
        return 0
    if not args.data:
        ap.error("--data is required")
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


if __name__ == "__main__":
    sys.exit(main())
