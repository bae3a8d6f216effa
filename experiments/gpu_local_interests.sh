#!/usr/bin/env bash
# SmolLM2 (local backend) interests for amazon18-scientific on a GPU machine. It fills the interest
# cache that `WITH_LLM=1 LOCAL_STRIDE=K bash experiments/run_table.sh` then reads on the CPU with no
# LLM call left to make (2 CPU cores need ~13 s per prompt; an H200 answered 4-9 prompts/s).
#
#   DEADLINE=300 BATCH=512 STRIDES="8 4 2 1" bash experiments/gpu_local_interests.sh
#
# The strides run in turn until DEADLINE seconds are spent. A finer stride's prompts include every
# coarser one's (prefix lengths 1, 1+k, 1+2k, ...), so nothing is asked twice, and a stride cut off
# by the deadline keeps each finished prompt (the cache is durable line by line): give the table
# the finest stride that completed as LOCAL_STRIDE (or add LLM_ARGS=--interests.cache_only=true to
# use a stride that did not). The phrases are not embedded here (interests.embed=false):
# the CPU run embeds them with the sentence-transformer from the cache.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEADLINE=${DEADLINE:-300}
BATCH=${BATCH:-512}
STRIDES=${STRIDES:-"8 4 2 1"}
OUT_DIR=${OUT_DIR:-data/exp18-local}
end=$((SECONDS + DEADLINE))
for stride in $STRIDES; do
  left=$((end - SECONDS))
  if ((left < 20)); then break; fi
  echo "== stride $stride, ${left}s left"
  timeout -s KILL "$left" "$PY" data_process.py --dataset=scientific18 --out_dir="$OUT_DIR" \
    --interests.backend=local --interests.stride="$stride" --interests.local_batch_size="$BATCH" \
    --interests.embed=false --embeddings.kind=none "$@"
  rc=$?
  if ((rc != 0)); then echo "== stride $stride stopped (exit $rc)"; break; fi
  echo "== stride $stride complete after $SECONDS s"
done
