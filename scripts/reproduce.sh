#!/usr/bin/env bash
# The main job: set up the environment if needed, then re-run every numbered notebook with papermill.
# Profile: CXR_PROFILE=quick (default, CPU, embedded sample) | cpu | full. Extra args go to cxrlib.reproduce.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m cxrlib.reproduce --profile "${CXR_PROFILE:-quick}" "$@"
