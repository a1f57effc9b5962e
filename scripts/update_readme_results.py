"""Regenerate the results page (results/README.md), the README's summary table and the results figures from
the committed CSVs (see cxrlib/report.py). Nothing is trained.

Usage: python scripts/update_readme_results.py [--profile cpu] [--no-figures]
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib.report import write_all  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--no-figures", action="store_true")
    args = ap.parse_args()
    for path in write_all(ROOT, args.profile, figures=not args.no_figures):
        print(path.relative_to(ROOT))
