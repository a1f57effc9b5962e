#!/usr/bin/env bash
# The test command: set up the environment if needed, then unit tests + every notebook under nbval
# in the quick profile (CPU, the embedded sample).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export CXR_PROFILE=quick MPLBACKEND=Agg PYTHONHASHSEED=0
# the notebooks save their figures here, not in figures/: a test run leaves the committed figures as they are
export CXR_FIG_DIR="${CXR_FIG_DIR:-${TMPDIR:-/tmp}/cxr_test_figures}"
exec .venv/bin/python -m pytest tests notebooks --nbval-lax --nbval-current-env \
    --nbval-sanitize-with notebooks/nbval_sanitize.cfg --nbval-cell-timeout 1500 "$@"
