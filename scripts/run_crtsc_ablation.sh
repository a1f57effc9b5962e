#!/usr/bin/env bash
# CRTSC ablations (issue 5) in the cpu profile on the development split (seed 0), one `train` + `score` per run:
#   table3: components, 5 rows x 3 seeds: SQUID baseline, +KL, +TSCC, +CRM (T = 8, the paper's value alone), all (crtsc preset;
#           its runs live in runs/cpu/crtsc_s<seed>, shared with `python -m cxrlib benchmark --methods crtsc`)
#   table5: CRM reduction T in {8, 12, 16, 20, 24}, full CRTSC otherwise, seed 0
#   table6: lambda_tscc in {0.01, 0.02, 0.03, 0.05}, full CRTSC otherwise, seed 0 (the paper's chosen value is 0.03;
#           its exact sweep values are not in methods.md, these bracket it)
# Runs with identical settings share one run folder and one command (e.g. table5 T=24 = table3 "all" seed 0), so
# 22 trainings for 24 rows; a row whose command already has a row in the CSV copies that row's numbers (same run).
# Each finished run appends one row (metrics at the validation threshold, its command and the commit) to
# results/crtsc_ablation/ablation.csv; re-running skips finished rows and resumes an interrupted one (--resume).
# Usage: bash scripts/run_crtsc_ablation.sh PATH/zhanglab128_train.npz        (DRY_RUN=1 prints the commands only)
# On a 2-core machine two workers, one thread each, finish sooner than one with two threads:
#   SHARD=0/2 OMP_NUM_THREADS=1 bash scripts/run_crtsc_ablation.sh D &  SHARD=1/2 OMP_NUM_THREADS=1 bash scripts/run_crtsc_ablation.sh D
# Worker i of n takes every n-th distinct run folder (rows sharing a folder stay in one worker); each worker
# writes the summary, figure and README block of the CSV as it stands when it ends (the last one sees every row).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: run_crtsc_ablation.sh PATH/zhanglab128_train.npz}
PY=${PY:-.venv/bin/python}
OUT=${ABLATION_OUT:-results/crtsc_ablation}  # ABLATION_OUT: another folder for the CSV (tests)
CSV=$OUT/ablation.csv
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -z "${DRY_RUN:-}" ]; then
    mkdir -p $OUT runs/crtsc_ablation
    [ -f $CSV ] || echo "table,row,seed,auroc,ap,acc,f1,val_auroc,train_minutes,command,commit" > $CSV
fi

# table|row label|seed|place T lambda_tscc gen_loss lambda_gen
# the full CRTSC rows first: they are also the method's 3-seed result (python -m cxrlib benchmark --methods crtsc)
ROWS=()
for SEED in 0 1 2; do ROWS+=("table3|all (CRTSC)|$SEED|paper 24 0.03 kl 0.002"); done
for SEED in 0 1 2; do
    ROWS+=("table3|baseline (SQUID)|$SEED|none 8 0 bce 0.005"
           "table3|+KL|$SEED|none 8 0 kl 0.002"
           "table3|+TSCC|$SEED|none 8 0.03 bce 0.005"
           "table3|+CRM|$SEED|paper 8 0 bce 0.005")
done
for T in 8 12 16 20 24; do ROWS+=("table5|T=$T|0|paper $T 0.03 kl 0.002"); done
for L in 0.01 0.02 0.03 0.05; do ROWS+=("table6|lambda_tscc=$L|0|paper 24 $L kl 0.002"); done

SHARD=${SHARD:-0/1}
SHARD_I=${SHARD%/*}; SHARD_N=${SHARD#*/}
[[ "$SHARD_I" =~ ^[0-9]+$ && "$SHARD_N" =~ ^[1-9][0-9]*$ && $SHARD_I -lt $SHARD_N ]] \
    || { echo "error: SHARD must be i/n with 0 <= i < n, got '$SHARD'" >&2; exit 2; }
declare -A RUN_INDEX=()
for ENTRY in "${ROWS[@]}"; do
    IFS='|' read -r TABLE LABEL SEED SETTINGS <<< "$ENTRY"
    read -r PLACE T L GEN G <<< "$SETTINGS"
    RUN=runs/crtsc_ablation/${PLACE}_T${T}_tscc${L}_${GEN}${G}_s${SEED}
    # the crtsc preset's settings: the same run folder as `python -m cxrlib benchmark` (trained once, used by both)
    [ "$PLACE $T $L $GEN $G" = "paper 24 0.03 kl 0.002" ] && RUN=runs/cpu/crtsc_s${SEED}
    [ -n "${RUN_INDEX[$RUN]:-}" ] || RUN_INDEX[$RUN]=${#RUN_INDEX[@]}
    [ $(( RUN_INDEX[$RUN] % SHARD_N )) -eq "$SHARD_I" ] || continue
    if [ -f $CSV ] && grep -qF "$TABLE,$LABEL,$SEED," $CSV; then continue; fi
    ARGS="--method crtsc --profile cpu --seed $SEED --crm-place $PLACE --crm-reduction $T --lambda-tscc $L --gen-loss $GEN --lambda-gen $G"
    CMD="python -m cxrlib train $ARGS --data PATH/$(basename "$DATA") --out $RUN"  # no machine paths in the CSV
    if [ -n "${DRY_RUN:-}" ]; then echo "$TABLE / $LABEL / seed $SEED: $CMD"; continue; fi
    # the same command already has a row (another table's label for the same run): copy its numbers
    SAME=$(awk -F, -v cmd="$CMD" '$10 == cmd {print; exit}' $CSV)
    if [ -n "$SAME" ]; then
        echo "$TABLE,$LABEL,$SEED,$(echo "$SAME" | cut -d, -f4-)" >> $CSV
        echo "$TABLE / $LABEL / seed $SEED: the same run as an earlier row, numbers copied"
        continue
    fi
    if [ ! -f $RUN/model.pt ]; then
        RESUME=""; [ -f $RUN/last.pt ] && RESUME="--resume"
        echo "$(date -u +%FT%TZ) $TABLE / $LABEL / seed $SEED -> $RUN"
        $PY -m cxrlib train $ARGS --data "$DATA" --out $RUN --no-progress $RESUME >> $RUN.log 2>&1 \
            || { tail -5 $RUN.log; exit 1; }
    fi
    [ -f $RUN/dev_test.json ] || $PY -m cxrlib score --checkpoint $RUN/model.pt --data "$DATA" --split test --out $RUN/dev_test.csv
    $PY - "$TABLE" "$LABEL" "$SEED" "$RUN" "$CMD" "$COMMIT" "$CSV" <<'PYEOF'
import csv, json, sys
import torch
table, label, seed, run, cmd, commit, out = sys.argv[1:]
r = json.load(open(f"{run}/dev_test.json"))
ck = torch.load(f"{run}/model.pt", map_location="cpu", weights_only=False)
row = [table, label, seed, r["auroc"], r["ap"], r["val_threshold"]["acc"], r["val_threshold"]["f1"],
       ck["val_metrics"]["auroc"], ck.get("train_seconds", 0.0) / 60, cmd, commit]
with open(out, "a", newline="") as f:
    csv.writer(f).writerow([f"{v:.4f}" if isinstance(v, float) else v for v in row])
print(f"{table} / {label} / seed {seed}: AUROC {r['auroc']:.4f}")
PYEOF
done
[ -n "${DRY_RUN:-}" ] && exit 0
N_DONE=$(( $(wc -l < $CSV) - 1 ))
# summary (mean ± sample std over seeds), figure and README block, also for a partial CSV (it says how many rows)
if [ "$OUT" = results/crtsc_ablation ]; then REPORT_ARGS="--readme"; else REPORT_ARGS="--figure $OUT/crtsc_ablation.png"; fi
$PY scripts/crtsc_ablation_report.py --csv $CSV $REPORT_ARGS
[ "$N_DONE" -ge "${#ROWS[@]}" ] || echo "$N_DONE of ${#ROWS[@]} rows in $CSV so far (another worker may still run)"
