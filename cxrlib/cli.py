"""Command line: ``python -m cxrlib {train,score,benchmark,report,data,reproduce} --help``.

    python -m cxrlib train --method squid --data PATH/zhanglab128_train.npz --profile cpu --seed 0 --out runs/squid_cpu_s0
    python -m cxrlib score --checkpoint runs/squid_cpu_s0/model.pt --data PATH/zhanglab128_train.npz --split test --out scores.csv
    python -m cxrlib score --checkpoint runs/squid_cpu_s0/model.pt --data PATH/chest_xray/test --out official.csv
    python -m cxrlib benchmark --table wscxr --data PATH/zhanglab128_train.npz     # one results table
    python -m cxrlib report                                                        # the results page from the CSVs

``train`` uses the data layer's development split (seed 0) of ``--data``: normals to train, validation to
select the checkpoint and the threshold. ``score`` writes one row per image (name, score, label when known)
and, when labels are known, the metrics as JSON beside the CSV: AUROC, AP, ACC/F1 at the threshold stored in
the checkpoint (chosen on validation) and, labelled as such, at the papers' test-tuned threshold.
``benchmark --table NAME`` runs one table of :data:`cxrlib.tables.TABLES` (default ``main``); ``benchmark --table
NAME --help`` lists its own options.
Bad input ends with a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import data as D
from . import distributed
from . import metrics as M
from .benchmark import CommandError
from .checkpoint import CheckpointError, TrainingDivergedError
from .data import DataError
from .methods import add_train_arguments, load_scorer, method_module
from .precision import PRECISIONS
from .reproduce import run_notebooks
from .tables import TABLES
from .utils import PROFILES, atomic_write_bytes, atomic_write_json, repo_root

__all__ = ["build_parser", "main"]


def _train(args) -> int:
    if args.precision and args.method in ("patchcore", "wscxr"):
        raise ValueError(f"--precision: {args.method} trains no network (its backbone is fixed)")
    ctx = distributed.context()  # joins the process group under torchrun; one process otherwise
    try:
        path = method_module(args.method).train_from_args(args)
    finally:
        distributed.shutdown(ctx)
    if not ctx.is_main:  # rank 0 reports
        return 0
    if path is None:
        print("stopped before the last epoch; run again with --resume")
    else:
        print(f"scorer written to {path}")
    return 0


def _score(args) -> int:
    scorer = load_scorer(args.checkpoint, device=args.device)
    if args.feature_cache is not None:
        if not hasattr(scorer, "feature_cache"):
            raise ValueError(f"{args.checkpoint}: --feature-cache applies to patch-feature methods "
                             f"(patchcore, wscxr), not to {scorer.method}")
        scorer.feature_cache = args.feature_cache
    if args.precision != "fp32":
        if not hasattr(scorer, "set_precision"):
            raise ValueError(f"{args.checkpoint}: --precision {args.precision}: {scorer.method} scores in fp32 only")
        scorer.set_precision(args.precision)
    ds = D.load(args.data, size=scorer.image_size)
    if args.split != "all":
        # val and test are the development split's, the same under every training protocol
        version = scorer.meta.get("split_version", "image-v1")
        if version != D.SPLIT_VERSION:
            raise D.DataError(f"{args.checkpoint}: trained on development split '{version}', but this code's split "
                              f"is '{D.SPLIT_VERSION}': its --split {args.split} would hold other images (retrain, "
                              f"or score with --split all)")
        split = D.development_split(ds, seed=scorer.meta.get("split_seed", 0))
        ds = ds.subset(getattr(split, args.split))
    if len(ds) == 0:
        raise D.DataError(f"{args.data}: no images to score")
    t0 = time.time()
    scores = scorer.score(ds.images)
    seconds = time.time() - t0
    rows = ["name,score,label"] + [f"{n},{s:.6f},{'' if y < 0 else int(y)}"
                                   for n, s, y in zip(ds.names, scores, ds.labels)]
    out = Path(args.out)
    atomic_write_bytes(out, ("\n".join(rows) + "\n").encode())
    print(f"scored {len(ds)} images in {seconds:.1f} s ({len(ds) / max(seconds, 1e-9):.1f} images/s) -> {out}")
    if (ds.labels >= 0).all() and len(np.unique(ds.labels)) == 2:
        res = M.evaluate(ds.labels, scores, val_threshold=scorer.threshold)
        speed = "" if args.feature_cache else len(ds) / max(seconds, 1e-9)  # cached features: no inference speed
        res.update({"checkpoint": str(args.checkpoint), "method": scorer.method, "data": str(args.data),
                    "split": args.split, "seconds": seconds, "images_per_second": speed,
                    "precision": getattr(scorer, "precision", "fp32"),
                    "checkpoint_val_auroc": (scorer.meta.get("val_metrics") or {}).get("auroc", ""),
                    "split_version": scorer.meta.get("split_version", "image-v1") if args.split != "all" else ""})
        atomic_write_json(res, out.with_suffix(".json"))
        v, t = res["val_threshold"], res["test_tuned"]
        print(f"AUROC {res['auroc']:.4f}  AP {res['ap']:.4f}  |  validation threshold: ACC {v['acc']:.4f} "
              f"F1 {v['f1']:.4f} sens {v['sensitivity']:.4f} spec {v['specificity']:.4f}  |  test-tuned "
              f"(oracle, papers' protocol): ACC {t['acc']:.4f} F1 {t['f1']:.4f}  -> {out.with_suffix('.json')}")
    else:
        print("labels unknown or one class only: scores written, no metrics")
    return 0


def _benchmark(args) -> int:
    status = TABLES[args.table].run(args)
    if not getattr(args, "dry_run", False):
        print("`python -m cxrlib report` regenerates the results page from the CSVs")
    return status


def _report(args) -> int:
    from .report import write_all

    root = repo_root()
    for path in write_all(root, args.profile, figures=not args.no_figures):
        print(Path(path).relative_to(root))
    return 0


def _data(args) -> int:
    ds = D.load(args.data)
    for split_seed in args.split_seeds:
        for split in (D.development_split(ds, split_seed),
                      D.weakly_supervised_protocol(ds, args.k, split_seed),
                      D.semi_supervised_protocol(ds, args.n_unlabelled, args.anomaly_rate, split_seed)):
            print(D.split_report(ds, split), end="\n\n")
    return 0


def _reproduce(args) -> int:
    run_notebooks(args.profile, args.out, args.only, args.data)
    return 0


def build_parser(method: str | None = None, table: str = "main") -> argparse.ArgumentParser:
    """The parser; with ``method`` the ``train`` command also takes that method's own options, and ``benchmark``
    takes the options of ``table`` (:data:`cxrlib.tables.TABLES`)."""
    ap = argparse.ArgumentParser(prog="python -m cxrlib", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a method on the development split of --data")
    add_train_arguments(t, method)
    t.set_defaults(func=_train)

    s = sub.add_parser("score", help="score images with a trained model.pt")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--data", required=True, help="npz (images[, labels, names]) or a folder tree")
    s.add_argument("--split", choices=("all", "train", "val", "test"), default="all",
                   help="score only this part of the development split of --data (default all images)")
    s.add_argument("--out", required=True, help="CSV of name,score,label; metrics go to the same name .json")
    s.add_argument("--device", default=None)
    s.add_argument("--precision", choices=(*PRECISIONS, "auto"), default="fp32",
                   help="arithmetic of the forward passes (squid, simsid, crtsc): fp32 (default, what the results "
                        "tables use), bf16 or fp16 autocast with channels-last tensors, or auto")
    s.add_argument("--feature-cache", default=None, metavar="DIR",
                   help="patchcore/wscxr only: reuse the backbone features cached in DIR (as train's --feature-cache "
                        "does); the images/s printed is then not an inference speed and is not stored")
    s.set_defaults(func=_score)

    b = sub.add_parser("benchmark", help="run one results table (default main: every method on one split, "
                                          "results/<profile>/metrics.csv)",
                       description="Run one results table: " + "; ".join(f"{t.name}: {t.title} ({t.csv})"
                                                                          for t in TABLES.values()) +
                       ". `benchmark --table NAME --help` lists NAME's own options.")
    b.add_argument("--table", choices=list(TABLES), default="main", help="the table to run (default main)")
    TABLES[table].add_arguments(b.add_argument_group(f"{table} table options"))
    b.set_defaults(func=_benchmark)

    rp = sub.add_parser("report", help="regenerate results/README.md, the README's summary and the results "
                                       "figures from the committed CSVs (nothing is trained)")
    rp.add_argument("--profile", choices=PROFILES, default="cpu")
    rp.add_argument("--no-figures", action="store_true")
    rp.set_defaults(func=_report)

    d = sub.add_parser("data", help="summarise a data set's development split under every protocol: images, "
                                     "patients per part and the patients any two parts share (zero)")
    d.add_argument("--data", required=True, help="npz, folder tree, 'embedded' or 'phantoms'")
    d.add_argument("--split-seeds", nargs="*", type=int, default=[0, 1])
    d.add_argument("--k", type=int, default=16, help="labelled anomalies of the weakly supervised protocol")
    d.add_argument("--n-unlabelled", type=int, default=700, help="unlabelled pool of the semi-supervised protocol")
    d.add_argument("--anomaly-rate", type=float, default=0.6)
    d.set_defaults(func=_data)

    r = sub.add_parser("reproduce", help="re-run every numbered notebook with papermill")
    r.add_argument("--profile", choices=PROFILES, default="quick")
    r.add_argument("--data", default=None)
    r.add_argument("--out", default=None)
    r.add_argument("--only", nargs="*")
    r.set_defaults(func=_reproduce)
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    method, table = None, "main"
    if argv[:1] == ["train"]:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--method", default="squid")
        method = pre.parse_known_args(argv[1:])[0].method
    if argv[:1] == ["benchmark"]:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--table", default="main")
        table = pre.parse_known_args(argv[1:])[0].table
        table = table if table in TABLES else "main"  # an unknown name: the parser's choices refuse it
    args = build_parser(method, table).parse_args(argv)
    try:
        return args.func(args)
    except (DataError, CheckpointError, TrainingDivergedError, FileNotFoundError, ValueError, CommandError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept (use --resume)", file=sys.stderr)
        return 130

