"""Regenerate the results page (results/README.md), the README's summary table and the results figures from the
committed CSVs: the same as ``python -m cxrlib report`` (see cxrlib/report.py). Nothing is trained.

Usage: python scripts/update_readme_results.py [--profile cpu] [--no-figures]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
