#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv with a CPU-friendly, pinned torch.
# Re-running is cheap: it only installs when .venv is missing or the install did not finish.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -f .venv/.installed ]; then
    echo "== creating .venv with $($PY --version)"
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    # constraints-cpu.txt holds torch/torchvision: nothing installed later can move them
    .venv/bin/python -m pip install -q -c constraints-cpu.txt -e ".[notebooks,test]"
    .venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
    touch .venv/.installed
fi
