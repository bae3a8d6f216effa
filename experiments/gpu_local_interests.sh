#!/usr/bin/env bash
# SmolLM2 (local backend) interests for amazon18-scientific on a GPU machine. It fills the interest
# cache that `VARIANTS="llm-simple kw-stride-simple" LOCAL_STRIDE=K LLM_ARGS=--interests.cache_only=true
# bash experiments/run_table.sh` then reads on the CPU with no LLM call left to make (2 CPU cores
# need seconds per prompt).
#
#   DEADLINE=520 BATCH=256 SHARDS=4 STRIDES="2 1" bash experiments/gpu_local_interests.sh \
#       --interests.max_retries=2
#
# The strides run in turn until DEADLINE seconds are spent. A finer stride's prompts include every
# coarser one's (prefix lengths 1, 1+k, 1+2k, ...), so nothing is asked twice, and a stride cut off
# by the deadline keeps each finished prompt (the cache is durable line by line): give the table
# the finest stride that completed as LOCAL_STRIDE (or add LLM_ARGS=--interests.cache_only=true to
# use a stride that did not). Each stride runs SHARDS processes on the one GPU, each asking its
# own share of the prompts (interests.shard) and appending to the same cache: one process leaves
# the GPU idle while it prepares batches and launches small kernels. The phrases are not embedded
# here (interests.embed=false): the CPU run embeds them with the sentence-transformer from the
# cache. Extra arguments go to every data_process.py call; logs go to LOG_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEADLINE=${DEADLINE:-300}
BATCH=${BATCH:-256}
SHARDS=${SHARDS:-4}
STRIDES=${STRIDES:-"8 4 2 1"}
OUT_DIR=${OUT_DIR:-data/exp18-local-gpu}
LOG_DIR=${LOG_DIR:-$OUT_DIR}
((SHARDS >= 1)) || { echo "gpu_local_interests.sh: SHARDS must be >= 1" >&2; exit 2; }
mkdir -p "$LOG_DIR"
end=$((SECONDS + DEADLINE))
# Convert the GGUF once, before the shards start (they would all write the same converted copy).
"$PY" - "$@" <<'PY' || exit 1
import sys

import torch

from config import load_config
from data.interests.local_llm import load_model
from data.paths import resolve

cfg = load_config("data_process", sys.argv[1:])
load_model(resolve(cfg.interests.cache_dir), torch.device("cpu"))
PY
for stride in $STRIDES; do
  left=$((end - SECONDS))
  if ((left < 20)); then break; fi
  echo "== stride $stride, ${left}s left, $SHARDS processes"
  pids=()
  logs=()
  for ((shard = 0; shard < SHARDS; shard++)); do
    logs+=("$LOG_DIR/stride$stride-shard$shard.log")
    timeout -s KILL "$left" "$PY" data_process.py --dataset=scientific18 \
      --out_dir="$OUT_DIR/shard$shard" --interests.backend=local --interests.recipe=history \
      --interests.stride="$stride" \
      --interests.local_batch_size="$BATCH" --interests.shard="$shard" --interests.shards="$SHARDS" \
      --interests.embed=false --embeddings.kind=none "$@" \
      >"${logs[-1]}" 2>&1 &
    pids+=($!)
  done
  rc=0
  for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
  grep -h "^\[interests\]" "${logs[@]}"
  if ((rc != 0)); then echo "== stride $stride stopped (exit $rc) after $SECONDS s"; break; fi
  echo "== stride $stride complete after $SECONDS s"
done
