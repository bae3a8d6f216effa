#!/usr/bin/env bash
# Train SASRec once per line of a settings file, PARALLEL at a time, and collect every run's valid,
# test and test_skip_history metrics, seconds and epochs into one JSON-lines file.
#
#   PARALLEL=7 bash experiments/sasrec_sweep.sh SETTINGS DATA_FOLDER NAME OUT.jsonl
#
# SETTINGS holds one run per line: a label, then --seed=N and any --embeddings.sasrec_* keys
# (blank lines and # comments are skipped). Paths are relative to the repository root. On a GPU
# machine the runs share the GPU (device auto). Exits non-zero if any run failed (the others are
# still collected).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PARALLEL=${PARALLEL:-2}
settings=$1 folder=$2 name=$3 out=$4
work=${SWEEP_WORK:-$(mktemp -d)}
mkdir -p "$work"
running=0
while read -r label args || [[ -n $label ]]; do
  [[ -z $label || $label == \#* ]] && continue
  rm -f "$work/$label.json"  # a reused SWEEP_WORK must not report an earlier sweep's result
  # shellcheck disable=SC2086  # args is a list of --key=value words
  $PY experiments/sasrec_seed.py --folder="$folder" --name="$name" \
    --out="$work/$label.json" $args > "$work/$label.log" 2>&1 &
  running=$((running + 1))
  if ((running >= PARALLEL)); then wait -n || true; running=$((running - 1)); fi
done < "$settings"
wait || true  # failures are reported (and counted) below
$PY - "$settings" "$work" "$out" <<'EOF'
import json, sys
from pathlib import Path
settings, work, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
with open(out, "w") as f:
    failed = 0
    for line in open(settings):
        if not line.split() or line.split()[0].startswith("#"):
            continue
        label, *args = line.split()
        result = work / f"{label}.json"
        if not result.exists():
            tail = (work / f"{label}.log").read_text()[-400:]
            print(f"{label}: FAILED\n{tail}")
            failed += 1
            continue
        r = json.loads(result.read_text())
        f.write(json.dumps({"label": label, "args": args, **r}) + "\n")
        print(f"{label:14s} valid N@10 {r['valid']['ndcg@10']:.4f} | test R@10 "
              f"{r['test']['recall@10']:.4f} N@10 {r['test']['ndcg@10']:.4f} | skip-history "
              f"R@10 {r['test_skip_history']['recall@10']:.4f} | best epoch {r['best_epoch']}/"
              f"{r['epochs_run']} | {r['seconds']:.0f}s")
sys.exit(1 if failed else 0)
EOF
