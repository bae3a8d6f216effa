#!/usr/bin/env bash
# Train ETEGRec once per line of a settings file and seed, PARALLEL at a time, into RUNS/<label>-s<seed>
# (finished runs are skipped, killed ones continue with --resume), then collect the table.
#
#   SEEDS="1 2 3" PARALLEL=2 RUNS=runs/base bash experiments/base_sweep.sh SETTINGS [LABEL...]
#
# SETTINGS holds one run per line: a label, then --key=value words for train.py (blank lines and #
# comments are skipped); LABELs pick lines (default: all). Every run reads DATA (default data/, the
# folder `bash run.sh` writes). With SASREC=1 the SASRec baseline is also trained once per seed on
# the same data (RUNS/sasrec-s<seed>.json). Each run logs to RUNS/<label>-s<seed>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
PARALLEL=${PARALLEL:-2}
# one run gains nothing from a second thread at the CPU preset's size, and runs side by side with
# torch's default threads each would oversubscribe the cores (results/bench/train-cpu-preset-*)
cores=$(nproc)
(( PARALLEL >= 1 )) || PARALLEL=1
run_threads=${OMP_NUM_THREADS:-$(( cores / PARALLEL > 0 ? cores / PARALLEL : 1 ))}
SEEDS=${SEEDS:-"1 2 3"}
RUNS=${RUNS:-runs/base}
DATA=${DATA:-data/}
settings=$1; shift
mkdir -p "$RUNS"
LABELS=("$@")

one() {  # label seed args...
  local label=$1 seed=$2; shift 2
  local run=$RUNS/$label-s$seed
  if [[ -f $run/test_metrics.json ]]; then return 0; fi
  export OMP_NUM_THREADS=$run_threads
  if [[ -f $run/last.pt ]]; then
    $PY train.py --resume="$run"
  else
    rm -rf "$run"  # a start killed before its first checkpoint
    # shellcheck disable=SC2068  # args are --key=value words
    $PY train.py --dataset=scientific18 --data_dir="$DATA" --out_dir="$RUNS" \
      --run_name="$label-s$seed" --seed="$seed" $@
  fi
}

running=0 failed=0
for seed in $SEEDS; do
  if [[ ${SASREC:-0} == 1 && ! -f $RUNS/sasrec-s$seed.json ]]; then
    $PY experiments/sasrec_seed.py --folder="$DATA/scientific18" \
      --name=scientific18 --seed="$seed" --out="$RUNS/sasrec-s$seed.json" \
      > "$RUNS/sasrec-s$seed.log" 2>&1 || failed=$((failed + 1))
  fi
  while read -r label args || [[ -n $label ]]; do
    [[ -z $label || $label == \#* ]] && continue
    if [[ ${#LABELS[@]} -gt 0 && " ${LABELS[*]} " != *" $label "* ]]; then continue; fi
    # shellcheck disable=SC2086
    one "$label" "$seed" $args > "$RUNS/$label-s$seed.log" 2>&1 &
    running=$((running + 1))
    if ((running >= PARALLEL)); then wait -n || failed=$((failed + 1)); running=$((running - 1)); fi
  done < "$settings"
done
while ((running > 0)); do wait -n || failed=$((failed + 1)); running=$((running - 1)); done
echo "base_sweep: $failed failed run(s)"
exit $((failed > 0))
