"""Which generator should draw a SQUID-family anomaly map: the kept epoch's or the last epoch's?

The kept epoch is chosen for the discriminator's image score on validation, and on the phantoms it is often an
early one, when the generator still returns a grey field. For each finished localisation run (trained on the
normal phantoms, ``runs/cpu/localisation/<method>_s<seed>``), this script scores the development-test phantoms'
maps against their lesion masks twice, on the benchmark's grid (:data:`cxrlib.benchmark.LOCALISATION_SIZE`):
with the kept generator and with the map generator that ``model.pt`` holds (the last epoch's,
:meth:`cxrlib.methods.squid.scorer.SquidScorer.anomaly_maps`). One CSV row per run: kept and map epochs (1-based),
pixel AUROC of each.

    python scripts/map_generator.py runs/cpu/localisation/squid_s0 ... [--out results/cpu/diagnostics/map_generator.csv]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib import benchmark as B  # noqa: E402
from cxrlib import data as D  # noqa: E402
from cxrlib import metrics as M  # noqa: E402
from cxrlib.methods import load_scorer  # noqa: E402

COLUMNS = ["run", "method", "seed", "split_version", "kept_epoch", "map_epoch", "pixel_auroc_kept", "pixel_auroc_map"]


def map_row(run: Path) -> dict:
    """Pixel AUROC of ``run/model.pt``'s maps from its kept and from its map generator on the test phantoms."""
    scorer = load_scorer(run / "model.pt")
    if scorer.map_gen is None and scorer.meta.get("map_epoch") is None:
        raise ValueError(f"{run / 'model.pt'}: written before map generators existed; finalise the run again")
    ds = D.load(B.LOCALISATION_DATA, size=scorer.image_size)
    test = D.development_split(ds, seed=0).test
    masks = D.load(B.LOCALISATION_DATA, size=B.LOCALISATION_SIZE).masks[test]
    images = ds.images[test]
    with_map = B._resize_maps(scorer.anomaly_maps(images), B.LOCALISATION_SIZE)
    with_kept = B._resize_maps(scorer.anomaly_maps(images, generator="kept"), B.LOCALISATION_SIZE)
    return {"run": run.name, "method": scorer.method, "seed": scorer.meta.get("seed", ""),
            "split_version": scorer.meta.get("split_version", ""), "kept_epoch": scorer.meta["best_epoch"] + 1,
            "map_epoch": scorer.meta["map_epoch"] + 1, "pixel_auroc_kept": M.pixel_auroc(masks, with_kept),
            "pixel_auroc_map": M.pixel_auroc(masks, with_map)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="localisation run folders holding model.pt")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cpu" / "diagnostics" / "map_generator.csv")
    args = ap.parse_args(argv)
    rows = []
    for run in args.runs:
        try:
            r = map_row(run)
        except (FileNotFoundError, ValueError) as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"{run.name}: kept epoch {r['kept_epoch']} pixel AUROC {r['pixel_auroc_kept']:.3f}; map epoch "
              f"{r['map_epoch']} pixel AUROC {r['pixel_auroc_map']:.3f}")
        rows.append(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    B.write_rows(args.out, rows, COLUMNS, float_format=".4f")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
