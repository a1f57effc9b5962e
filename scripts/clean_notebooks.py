"""Keep the committed notebooks clean: no saved widget state or frozen progress widgets (their plain-text
fallback is kept), and no statements joined with ``;`` on one line (split onto their own lines).

Usage: python scripts/clean_notebooks.py [notebooks/NN_name.ipynb ...]   (default: all numbered notebooks)
Run by scripts/refresh_outputs.sh after executing; tests/test_notebooks_structure.py checks the result.
"""
import io
import json
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def split_joined_statements(source: str) -> str:
    """``a = 1; b = 2`` -> two lines with the same indentation; a trailing ``;`` (which hides a cell's last
    value) is kept. Lines whose ``;`` sits inside a string or bracket are left alone."""
    out = []
    for line in source.splitlines(keepends=True):
        try:
            toks = list(tokenize.generate_tokens(io.StringIO(line.rstrip("\n") + "\n").readline))
        except (tokenize.TokenError, IndentationError, SyntaxError):
            out.append(line)
            continue
        semis = [t for t in toks if t.type == tokenize.OP and t.string == ";"]
        rest = [t for t in toks if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.COMMENT)]
        if not semis or (len(semis) == 1 and rest and rest[-1] is semis[0]):
            out.append(line)
            continue
        indent = line[:len(line) - len(line.lstrip())]
        text, pieces, start = line.rstrip("\n"), [], 0
        for t in semis:
            pieces.append(text[start:t.start[1]].strip())
            start = t.end[1]
        tail = text[start:].strip()
        trailing = tail == "" or tail.startswith("#")
        if not trailing:
            pieces.append(tail)
        pieces = [p for p in pieces if p]
        new = [indent + p for p in pieces]
        if trailing:
            new[-1] += ";" + (("  " + tail) if tail else "")
        out.append("\n".join(new) + ("\n" if line.endswith("\n") else ""))
    return "".join(out)


def clean(path: Path) -> bool:
    nb = json.loads(path.read_text())
    before = json.dumps(nb)
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        cell["source"] = split_joined_statements(src).splitlines(keepends=True)
        outputs = []
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if WIDGET_MIME in data:
                data.pop(WIDGET_MIME)
                # a progress widget's text fallback is a frozen bar: drop it with the widget
                if not data or data.get("text/plain", [""])[0].startswith(("HBox", "VBox", "Output")):
                    continue
            outputs.append(o)
        cell["outputs"] = outputs
    changed = json.dumps(nb) != before
    if changed:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changed


if __name__ == "__main__":
    files = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for f in files:
        print(f"{f.name}: {'cleaned' if clean(f) else 'clean'}")
