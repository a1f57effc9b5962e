"""The README's results section is generated from the committed CSV, not typed by hand."""
import re
from pathlib import Path

from cxrlib import benchmark as B

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_section_matches_the_committed_csv():
    readme = (ROOT / "README.md").read_text()
    assert B.README_START in readme and B.README_END in readme
    m = re.search(r"\[`(results/[^`]+/metrics\.csv)`\]", readme)
    assert m, "the results section names its CSV"
    csv_path = m.group(1)
    profile = Path(csv_path).parent.name
    expected = B.readme_results_section(ROOT / csv_path, profile, csv_path)
    assert expected in readme, "README results differ from the CSV: run python scripts/update_readme_results.py"
