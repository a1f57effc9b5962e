"""Every numbered notebook has the agreed head, a parameters cell reading the profile from the environment,
python3 kernelspec metadata, and saves a figure; the README's table lists each one."""
import re
from pathlib import Path

import nbformat
import pytest

from cxrlib.reproduce import notebook_paths

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebook_paths(ROOT / "notebooks")


def test_there_are_numbered_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == sorted(p.name[:2] for p in NOTEBOOKS)
    assert {"00_data.ipynb", "01_patching.ipynb"} <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_head_and_parameters(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {path.name[:2]}")
    heads = [c.source.splitlines()[0] for c in cells if c.cell_type == "markdown" and c.source]
    order = [h for h in heads if h in ("## Setup environment", "## Setup imports", "## Parameters")]
    assert order == ["## Setup environment", "## Setup imports", "## Parameters"]
    imports = next(i for i, c in enumerate(cells) if c.source.startswith("## Setup imports"))
    assert "cxrlib.print_config()" in cells[imports + 1].source
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    assert 'os.environ.get("CXR_PROFILE", "quick")' in params[0].source
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert "save_figure(" in code
    assert ".cuda(" not in code


def test_readme_lists_every_notebook():
    readme = (ROOT / "README.md").read_text()
    for p in NOTEBOOKS:
        assert f"](notebooks/{p.name})" in readme, p.name
        assert f"colab.research.google.com/github/cxr-anomaly/cxr-anomaly/blob/main/notebooks/{p.name}" in readme


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path):
    """No saved widget state or frozen progress widgets, no ``;``-joined statements, no path echoes
    (``python scripts/clean_notebooks.py`` fixes the first two)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("clean_notebooks", ROOT / "scripts" / "clean_notebooks.py")
    clean = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clean)
    nb = nbformat.read(path, as_version=4)
    assert "widgets" not in nb.metadata
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert clean.split_joined_statements(cell.source) == cell.source, cell.source[:80]
        for out in cell.get("outputs", []):
            assert clean.WIDGET_MIME not in out.get("data", {})
            assert "PosixPath(" not in str(out.get("data", {}).get("text/plain", ""))
