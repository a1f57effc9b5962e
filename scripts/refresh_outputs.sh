#!/usr/bin/env bash
# Maintainers: re-execute notebooks in place in the quick profile so the committed outputs are current.
# Usage: bash scripts/refresh_outputs.sh [notebooks/NN_name.ipynb ...]   (default: all numbered notebooks)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export CXR_PROFILE=quick PYTHONHASHSEED=0
files=("$@"); [ ${#files[@]} -eq 0 ] && files=(notebooks/[0-9][0-9]_*.ipynb)
for nb in "${files[@]}"; do
    echo "== $nb"
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=1800 "$nb"
    .venv/bin/python scripts/clean_notebooks.py "$nb"
done
