#!/usr/bin/env bash
# SQUID, cpu profile, 3 seeds on the development split, then development-test scores.
# Usage: bash scripts/run_squid_cpu.sh PATH/zhanglab128_train.npz [METHOD]   (logs and runs under runs/, metrics under results/)
# Re-running resumes unfinished seeds (--resume) and skips finished ones.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: run_squid_cpu.sh PATH/zhanglab128_train.npz [squid|simsid]}
METHOD=${2:-squid}
PY=.venv/bin/python
mkdir -p results/${METHOD}_cpu
for SEED in 0 1 2; do
    RUN=runs/${METHOD}_cpu_s${SEED}
    if [ ! -f $RUN/model.pt ]; then
        RESUME=""; [ -f $RUN/last.pt ] && RESUME="--resume"
        /usr/bin/time -v $PY -m cxrlib train --method $METHOD --profile cpu --data "$DATA" --seed $SEED --out $RUN --no-progress $RESUME \
            >> $RUN.log 2>&1 || { mkdir -p $RUN; tail -5 $RUN.log; exit 1; }
    fi
    $PY -m cxrlib score --checkpoint $RUN/model.pt --data "$DATA" --split test --out results/${METHOD}_cpu/dev_test_s${SEED}.csv
done
$PY - <<PYEOF
import json, glob, numpy as np
rows = [json.load(open(f)) for f in sorted(glob.glob("results/${METHOD}_cpu/dev_test_s*.json"))]
for k in ("auroc", "ap"):
    v = np.array([r[k] for r in rows]); print(f"${METHOD} cpu {k}: {v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f} over {len(v)} seeds")
for k in ("acc", "f1"):
    v = np.array([r["val_threshold"][k] for r in rows]); print(f"${METHOD} cpu {k} (validation threshold): {v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f}")
PYEOF
