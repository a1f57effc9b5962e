#!/usr/bin/env bash
# The GPU path, run for real: every method's full profile for one epoch, then scored, with a report
# (benchmarks/results/gpu_check/gpu_check.md). On a machine without CUDA: --dry-run (CPU, quick profile).
#   bash scripts/gpu_check.sh --data PATH/zhanglab128_train.npz
#   bash scripts/gpu_check.sh --dry-run --out /tmp/gpu_check
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python benchmarks/gpu_check.py "$@"
