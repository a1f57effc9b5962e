"""Regenerate the README's results section from the committed metrics CSV.

Usage: python scripts/update_readme_results.py [--profile cpu]
"""
import argparse
from pathlib import Path

from cxrlib.benchmark import readme_results_section, replace_readme_section

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args()
    csv_path = Path("results") / args.profile / "metrics.csv"
    readme = ROOT / "README.md"
    section = readme_results_section(ROOT / csv_path, args.profile, csv_path.as_posix())
    readme.write_text(replace_readme_section(readme.read_text(), section))
    print(f"README results section regenerated from {csv_path}")
