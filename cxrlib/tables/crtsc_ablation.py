"""The CRTSC ablation table (issue 5) in the ``cpu`` profile on the development split (seed 0), one ``train`` +
``score`` per run:

* ``table3``: components, 5 rows × 3 seeds: SQUID baseline, +KL, +TSCC, +CRM (T = 8, the paper's value alone), all
  (the crtsc preset). The two ends are the main table's runs, shared with ``python -m cxrlib benchmark``: "all" is
  ``--method crtsc`` (``runs/cpu/crtsc_s<seed>``) and the baseline is ``--method squid`` (``runs/cpu/squid_s<seed>``),
  whose configuration is CRTSC's with the three components off;
* ``table5``: CRM reduction T in {8, 12, 16, 20, 24}, full CRTSC otherwise, seed 0;
* ``table6``: lambda_tscc in {0.01, 0.02, 0.03, 0.05}, full CRTSC otherwise, seed 0 (the paper's chosen value is
  0.03; its exact sweep values are not in methods.md, these bracket it).

Runs with identical settings share one run folder and one command (e.g. table5 T=24 = table3 "all" seed 0), so 22
trainings for 24 rows; a row whose command already has a current row in the CSV copies that row's numbers (same
run). Each finished run appends one row (metrics at the validation threshold, its command, the commit, the
development-split and ``cpu``-profile versions and the thread count) to ``results/crtsc_ablation/ablation.csv``;
re-running skips finished rows and resumes an interrupted one (``--resume``).

Rows of an earlier split or profile definition (:func:`is_current` false; a CSV written before those columns
existed is the ``image-v1`` split and profile version 1) stay in the CSV as a record, marked stale: they never count
as done, and a run folder whose model was trained under another definition is refused rather than reused. The
summary (``summary.csv``: mean ± sample std over seeds per table row, the paper's AUROC beside it), the Markdown
and the figure are drawn from the current rows, also a partial set of them; from the stale ones only while no
current row exists (:func:`table_rows`).

    python -m cxrlib benchmark --table crtsc-ablation --data PATH/zhanglab128_train.npz     (--dry-run: commands only)

On a 2-core machine two workers, one thread each, finish sooner than one with two threads::

    OMP_NUM_THREADS=1 python -m cxrlib benchmark --table crtsc-ablation --data D --shard 0/2 &
    OMP_NUM_THREADS=1 python -m cxrlib benchmark --table crtsc-ablation --data D --shard 1/2

Worker i of n takes every n-th distinct run folder (rows sharing a folder stay in one worker).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .. import benchmark as B
from ..utils import atomic_write_bytes, repo_root

__all__ = ["COLUMNS", "KEY", "DESIGN_ROWS", "read_rows", "is_current", "table_rows", "METRICS", "TABLE3_ORDER", "TABLE_NAMES", "PAPER_ROW", "design",
           "parse_shard", "plan", "paper_auroc", "summarize", "summary_table", "component_effects", "effects_sentence",
           "markdown", "figure", "write_summary",
           "add_arguments", "run"]

COLUMNS = ["table", "row", "seed", "auroc", "ap", "acc", "f1", "val_auroc", "train_minutes", "command", "commit",
           "split_version", "profile_version", "threads"]
#: the columns that identify a row: a current row of the same key is not run again
KEY = ("table", "row", "seed", "split_version", "profile_version")
#: what a row written before a column existed had (the columns were added with the patient-disjoint split)
_LEGACY = {"split_version": "image-v1", "profile_version": "1", "threads": ""}
#: rows of the design (:func:`design`): Table 3 5 rows x 3 seeds, Table 5 5 values, Table 6 4 values
DESIGN_ROWS = 5 * 3 + 5 + 4
METRICS = ["auroc", "ap", "acc", "f1"]
#: Table 3's rows in the paper's order; Tables 5 and 6 are sorted by their value (T, lambda_tscc)
TABLE3_ORDER = ["baseline (SQUID)", "+KL", "+TSCC", "+CRM", "all (CRTSC)"]
TABLE_NAMES = {"table3": "Table 3 (components)", "table5": "Table 5 (CRM reduction T)", "table6": "Table 6 (λ_TSCC)"}
#: ablation row label -> (method, variant) of cxrlib.paper_numbers.PAPER_RESULTS trained like it (official test
#: split, test-tuned threshold); the paper states no number for the other rows in our reference notes
PAPER_ROW = {"baseline (SQUID)": ("squid", ""), "+CRM": ("crtsc", "+CRM (T=8)"), "+TSCC": ("crtsc", "+TSCC")}
#: (crm place, T, lambda_tscc, generator loss, lambda_gen) of the crtsc preset
_PRESET = ("paper", "24", "0.03", "kl", "0.002")


def design() -> list[dict]:
    """Every row of the design in run order (the full CRTSC rows first: they are also the method's 3-seed result):
    ``table``, ``row``, ``seed``, ``method``, ``args`` (the ``train`` options) and ``run`` (its run folder)."""
    entries = [("table3", "all (CRTSC)", s, _PRESET) for s in (0, 1, 2)]
    for s in (0, 1, 2):
        entries += [("table3", "baseline (SQUID)", s, ("none", "8", "0", "bce", "0.005")),
                    ("table3", "+KL", s, ("none", "8", "0", "kl", "0.002")),
                    ("table3", "+TSCC", s, ("none", "8", "0.03", "bce", "0.005")),
                    ("table3", "+CRM", s, ("paper", "8", "0", "bce", "0.005"))]
    entries += [("table5", f"T={t}", 0, ("paper", str(t), "0.03", "kl", "0.002")) for t in (8, 12, 16, 20, 24)]
    entries += [("table6", f"lambda_tscc={lam}", 0, ("paper", "24", lam, "kl", "0.002"))
                for lam in ("0.01", "0.02", "0.03", "0.05")]
    rows = []
    for table, label, seed, (place, t, lam, gen, g) in entries:
        # the crtsc preset and the baseline: the same run folders as `python -m cxrlib benchmark` (trained once,
        # used by both tables)
        if label == "baseline (SQUID)":
            rows.append({"table": table, "row": label, "seed": seed, "method": "squid", "run": f"runs/cpu/squid_s{seed}",
                         "args": ["--method", "squid", "--profile", "cpu", "--seed", str(seed)]})
            continue
        run = f"runs/cpu/crtsc_s{seed}" if (place, t, lam, gen, g) == _PRESET else \
            f"runs/crtsc_ablation/{place}_T{t}_tscc{lam}_{gen}{g}_s{seed}"
        args = ["--method", "crtsc", "--profile", "cpu", "--seed", str(seed), "--crm-place", place, "--crm-reduction", t,
                "--lambda-tscc", lam, "--gen-loss", gen, "--lambda-gen", g]
        rows.append({"table": table, "row": label, "seed": seed, "method": "crtsc", "args": args, "run": run})
    return rows


def parse_shard(shard: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``.

    Raises:
        ValueError: anything else.
    """
    i, _, n = shard.partition("/")
    if not (i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise ValueError(f"--shard must be i/n with 0 <= i < n, got '{shard}'")
    return int(i), int(n)


def plan(shard: str = "0/1") -> list[dict]:
    """The rows of :func:`design` that worker ``shard`` (``i/n``) runs: those of every n-th distinct run folder."""
    i, n = parse_shard(shard)
    index: dict[str, int] = {}
    for r in design():
        index.setdefault(r["run"], len(index))
    return [r for r in design() if index[r["run"]] % n == i]


def paper_auroc(row: str) -> float:
    """The paper's ZhangLab AUROC (%) of an ablation row (:data:`PAPER_ROW`), NaN when it states none."""
    from ..paper_numbers import PAPER_RESULTS

    if row not in PAPER_ROW:
        return float("nan")
    method, variant = PAPER_ROW[row]
    hits = [r["auroc"] for r in PAPER_RESULTS
            if r["method"] == method and r["variant"] == variant and r["dataset"] == "zhanglab"]
    return hits[0] if hits else float("nan")


def read_rows(csv_path: Path) -> list[dict]:
    """Every row of the CSV as text, a column the file predates filled with its legacy value; ``[]`` without a file."""
    return B.read_table_csv(csv_path, COLUMNS, _LEGACY)


def is_current(r: dict) -> bool:
    """Whether row ``r`` was made on this code's development split and ``cpu``-profile definition of its method
    (SQUID for the baseline rows, CRTSC for the others)."""
    method = "squid" if "--method squid" in r["command"] else "crtsc"
    return B.is_current({**r, "method": method, "profile": "cpu"})


def table_rows(csv_path: Path) -> tuple[list[dict], bool]:
    """The rows the summary is drawn from and whether they are stale: the current rows when there is one, else
    the stale record."""
    return B.current_or_record(read_rows(csv_path), is_current)


def summarize(csv_path: Path):
    """One line per (table, row) of :func:`table_rows` in the design's order (Table 3 as the paper lists it, then T
    and lambda ascending): ``<metric>_mean``/``_std`` (sample std, NaN for one seed), ``seeds``, ``train_minutes``
    (mean per run) and ``paper_auroc_pct``."""
    import pandas as pd

    df = pd.DataFrame(table_rows(csv_path)[0], columns=COLUMNS)
    for c in ("seed", *METRICS, "val_auroc", "train_minutes"):
        df[c] = pd.to_numeric(df[c])
    g = df.groupby(["table", "row"], sort=False)
    out = g[METRICS].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["seeds"] = g["seed"].apply(lambda s: ", ".join(str(v) for v in sorted(s)))
    out["train_minutes"] = g["train_minutes"].mean()
    out["paper_auroc_pct"] = [paper_auroc(row) for _, row in out.index]
    out = out.reset_index()
    return out.iloc[sorted(range(len(out)), key=lambda i: _design_position(out["table"][i], out["row"][i]))]\
        .reset_index(drop=True)


def _design_position(table: str, row: str) -> tuple:
    if row in TABLE3_ORDER:
        return table, TABLE3_ORDER.index(row), 0.0
    value = row.rpartition("=")[2]
    try:
        return table, len(TABLE3_ORDER), float(value)
    except ValueError:
        return table, len(TABLE3_ORDER) + 1, 0.0


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.1f}" if std != std else f"{100 * mean:.1f} ± {100 * std:.1f}"


def summary_table(csv_path: Path) -> str:
    """Markdown table of :func:`summarize` (metrics in %), preceded by what its rows are: current (how many of the
    design's) or the stale record."""
    rows, stale = table_rows(csv_path)
    versions = sorted({(r["split_version"], r["profile_version"]) for r in rows})
    what = ", ".join(f"`{sv}` split, `cpu` profile version {pv}" for sv, pv in versions)
    head = (f"Stale: all {len(rows)} rows were made on an earlier definition ({what}); no row of the current one yet."
            if stale else f"{len(rows)} of the design's {DESIGN_ROWS} rows on the current definition ({what})"
            + (", the rest still to run; the stale record stays in the CSV." if len(rows) < DESIGN_ROWS else "."))
    s = summarize(csv_path)
    lines = [head, "","| table | row | seeds | AUROC | AP | ACC (val thr.) | F1 (val thr.) | train min | paper AUROC (official test) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in s.itertuples():
        paper = "" if r.paper_auroc_pct != r.paper_auroc_pct else f"{r.paper_auroc_pct:g}"
        lines.append(f"| {TABLE_NAMES.get(r.table, r.table)} | {r.row} | {r.seeds} | " + " | ".join(
            _pct(getattr(r, f"{m}_mean"), getattr(r, f"{m}_std")) for m in METRICS)
            + f" | {r.train_minutes:.0f} | {paper} |")
    return "\n".join(lines) + "\n"


def component_effects(csv_path: Path) -> list[dict]:
    """Table 3 read in pairs: for every row other than the baseline, its development-test AUROC minus the
    baseline's *on the same seed* (the seeds both have), over :func:`table_rows`. Seeds move every row together
    (same initialisation and batch order), so the paired difference is the sharper comparison of the two.

    Returns one dict per row in :data:`TABLE3_ORDER`: ``row``, ``seeds`` (list), ``diffs`` (points, per seed),
    ``mean`` and ``std`` (sample std, NaN for one seed) of the diffs in points; rows sharing no seed with the
    baseline are left out."""
    import statistics

    rows = [r for r in table_rows(csv_path)[0] if r["table"] == "table3"]
    base = {r["seed"]: float(r["auroc"]) for r in rows if r["row"] == "baseline (SQUID)"}
    out = []
    for label in TABLE3_ORDER[1:]:
        mine = {r["seed"]: float(r["auroc"]) for r in rows if r["row"] == label and r["seed"] in base}
        if not mine:
            continue
        seeds = sorted(mine, key=int)
        diffs = [100 * (mine[s] - base[s]) for s in seeds]
        out.append({"row": label, "seeds": [int(s) for s in seeds], "diffs": diffs, "mean": statistics.mean(diffs),
                    "std": statistics.stdev(diffs) if len(diffs) > 1 else float("nan")})
    return out


def effects_sentence(csv_path: Path) -> str:
    """:func:`component_effects` as one sentence for the results page ("" without a pair)."""
    parts = []
    for e in component_effects(csv_path):
        per_seed = ", ".join(f"{d:+.1f}" for d in e["diffs"])
        spread = "" if e["std"] != e["std"] else f" ± {e['std']:.1f}"
        parts.append(f"{e['row']} {e['mean']:+.1f}{spread} (seeds {', '.join(map(str, e['seeds']))}: {per_seed})")
    if not parts:
        return ""
    return ("Against the baseline on the same seed, in AUROC points (mean ± std of the per-seed differences): "
            + "; ".join(parts) + ".")


def markdown(csv_path: Path) -> str:
    """The table's Markdown on the results page: :func:`summary_table`, then :func:`effects_sentence`."""
    effects = effects_sentence(csv_path)
    return summary_table(csv_path) + (f"\n{effects}\n" if effects else "")


def figure(csv_path: Path, out_path: Path) -> Path:
    """Development-test AUROC per ablation table, the paper's numbers marked."""
    import matplotlib.pyplot as plt

    from .. import viz

    s = summarize(csv_path)
    viz.set_style()
    tables = list(dict.fromkeys(s["table"]))
    fig, axes = plt.subplots(1, len(tables), figsize=(4.5 * len(tables), 3.6), squeeze=False)
    for ax, table in zip(axes[0], tables):
        t = s[s["table"] == table]
        x = range(len(t))
        ax.bar(x, t["auroc_mean"], yerr=t["auroc_std"].fillna(0.0), capsize=3, color="tab:blue")
        ax.set_xticks(list(x), t["row"], rotation=30, ha="right")
        ax.set_ylim(max(0.0, (t["auroc_mean"] - t["auroc_std"].fillna(0.0)).min() - 0.1), 1.0)
        marks = [(i, p / 100) for i, p in zip(x, t["paper_auroc_pct"]) if p == p]
        if marks:
            ax.plot(*zip(*marks), "k_", ms=18, mew=2, label="paper (official test)")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_title(f"{TABLE_NAMES.get(table, table)}\ndevelopment-test AUROC", fontsize=9)
    fig.tight_layout()
    path = viz.save_figure(fig, Path(out_path).name, Path(out_path).parent)
    plt.close(fig)
    return path


def write_summary(csv_path: Path) -> Path:
    """``summary.csv`` beside the CSV: :func:`summarize` with 4 decimals."""
    buf = io.StringIO()
    summarize(csv_path).to_csv(buf, index=False, float_format="%.4f")
    path = Path(csv_path).parent / "summary.csv"
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def add_arguments(p) -> None:
    """This table's options of ``python -m cxrlib benchmark --table crtsc-ablation``."""
    p.add_argument("--data", help="zhanglab128_train.npz")
    p.add_argument("--out", default=None, help="folder of ablation.csv and summary.csv (default results/crtsc_ablation)")
    p.add_argument("--fig", default=None, help="default figures/crtsc_ablation.png (OUT/crtsc_ablation.png with --out)")
    p.add_argument("--shard", default="0/1", help="i/n: this worker runs every n-th distinct run folder")
    p.add_argument("--dry-run", action="store_true", help="print this worker's commands; write nothing")
    p.add_argument("--report-only", action="store_true", help="only the summary and the figure from the CSV")


def _migrate(csv_path: Path) -> None:
    """Rewrite a CSV written before the version columns existed with them (legacy values filled), atomically."""
    B.migrate_table_csv(csv_path, COLUMNS, _LEGACY)


def _append(csv_path: Path, row: list) -> None:
    with open(csv_path, "a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow([f"{v:.4f}" if isinstance(v, float) else v for v in row])


def _threads_of(root: Path, run: str) -> str:
    """The thread count a run folder this worker did not train was trained with: that of the current main-table
    row trained into it (the "all (CRTSC)" rows are ``python -m cxrlib benchmark``'s runs), else unknown (``""``)."""
    for m in B.current_rows(B.read_rows(root / "results" / "cpu" / "metrics.csv")):
        if m["train_command"].split(" --out ")[-1].split()[0] == run and m["threads"] != "":
            return str(int(m["threads"]))  # read_rows parses numbers: 1.0 -> "1", as a worker writes it
    return ""


def run(args) -> int:
    """This worker's rows of the design not yet in the CSV, then the summary and the figure."""
    root = repo_root()
    out = Path(args.out) if args.out else root / "results" / "crtsc_ablation"
    fig = Path(args.fig) if args.fig else (out / "crtsc_ablation.png" if args.out else root / "figures" / "crtsc_ablation.png")
    csv_path = out / "ablation.csv"
    rows = plan(args.shard)
    if not args.report_only:
        if not args.data:
            raise ValueError("pass --data PATH/zhanglab128_train.npz")
        if not args.dry_run:
            (root / "runs" / "crtsc_ablation").mkdir(parents=True, exist_ok=True)
            out.mkdir(parents=True, exist_ok=True)
            if not csv_path.exists():
                csv_path.write_text(",".join(COLUMNS) + "\n")
            _migrate(csv_path)
        from ..data import SPLIT_VERSION

        commit = B.git_commit()
        threads = B.thread_count()
        for r in rows:
            done = [d for d in read_rows(csv_path) if is_current(d)]
            if any((d["table"], d["row"], d["seed"]) == (r["table"], r["row"], str(r["seed"])) for d in done):
                continue
            command = B.display_command(["train", *r["args"]]) + f" --data PATH/{Path(args.data).name} --out {r['run']}"
            label = f"{r['table']} / {r['row']} / seed {r['seed']}"
            if args.dry_run:
                print(f"{label}: {command}")
                continue
            same = next((d for d in done if d["command"] == command), None)
            if same is not None:  # another table's label for the same run: copy its numbers
                _append(csv_path, [r["table"], r["row"], r["seed"], *(same[c] for c in COLUMNS[3:])])
                print(f"{label}: the same run as an earlier row, numbers copied")
                continue
            run_dir = root / r["run"]
            trained_here = not (run_dir / "model.pt").exists()
            if not trained_here:  # never score a model of another split or profile as this row
                B._check_reusable(run_dir / "model.pt", r["method"],
                                  ["train", *r["args"], "--data", args.data, "--out", str(run_dir)])
            else:
                resume = ["--resume"] if (run_dir / "last.pt").exists() else []
                print(f"{label} -> {r['run']}", flush=True)
                B.run_command(["train", *r["args"], "--data", args.data, "--out", str(run_dir), "--no-progress", *resume],
                              run_dir.with_name(run_dir.name + ".log"))
            if not (run_dir / "dev_test.json").exists():
                B.run_command(["score", "--checkpoint", str(run_dir / "model.pt"), "--data", args.data, "--split",
                               "test", "--out", str(run_dir / "dev_test.csv")])
            res = json.loads((run_dir / "dev_test.json").read_text())
            import torch

            ck = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=False)
            _append(csv_path, [r["table"], r["row"], r["seed"], res["auroc"], res["ap"], res["val_threshold"]["acc"],
                               res["val_threshold"]["f1"], ck["val_metrics"]["auroc"],
                               ck.get("train_seconds", 0.0) / 60, command, commit, SPLIT_VERSION,
                               B.current_profile_version(r["method"], "cpu"),
                               threads if trained_here else _threads_of(root, r["run"])])
            print(f"{label}: AUROC {res['auroc']:.4f}", flush=True)
        if args.dry_run:
            return 0
    if not csv_path.exists():
        raise FileNotFoundError(f"{csv_path}: no ablation rows yet; run with --data PATH/zhanglab128_train.npz")
    write_summary(csv_path)
    print(summary_table(csv_path))
    print("figure:", figure(csv_path, fig))
    n_done = sum(is_current(r) for r in read_rows(csv_path))
    if n_done < DESIGN_ROWS:
        print(f"{n_done} of {DESIGN_ROWS} rows in {csv_path} so far (another worker may still run)")
    return 0
