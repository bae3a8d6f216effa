#!/usr/bin/env bash
# Reproduce the amazon18-scientific results table (README "Results"): every variant x every seed,
# then collect. Finished runs are skipped, so an interrupted table resumes where it stopped.
#
#   SEEDS="1 2 3" PRESET=config/cpu.yaml RUNS=runs/exp18 bash experiments/run_table.sh
#   (the tables in results/experiment_log.md were made with PRESET=config/smoke.yaml, the former cpu.yaml)
#   VARIANTS="etegrec llm-simple kw-stride-simple" LOCAL_STRIDE=2 \
#       LLM_ARGS=--interests.cache_only=true bash experiments/run_table.sh
#
# Variants (folder RUNS/<variant>-s<seed>; K = LOCAL_STRIDE):
#   sasrec            SASRec alone (the embeddings step's own test metrics)
#   etegrec           ETEGRec without interests (interest_fusion: false)
#   kw-simple         + keyword interests, fusion "simple" (stacked cross-attention)
#   kw-adaptive       + keyword interests, fusion "adaptive" (gated)
#   llm-simple        + SmolLM2 interests (local backend, interests.stride=K), run as
#                     llm-strideK-simple. SmolLM2 takes seconds per prompt on 2 CPU cores and
#                     scientific18 has tens of thousands of distinct prefixes, i.e. days
#                     here: the cache is filled on a GPU (experiments/gpu_local_interests.sh) and
#                     read with LLM_ARGS=--interests.cache_only=true
#   kw-stride-simple  + keyword interests at the LLM's stride (kw-strideK-simple): the control that
#                     separates "LLM vs keywords" from "stale prefix vs every prefix"
#   kw-matched-simple + the same, kept only on the rows the LLM row has interests for
#                     (experiments/match_coverage.py; kw-strideK-matched-simple): LLM vs keyword
#                     phrases, all else equal
#   kw-stride-adaptive  kw-stride-simple with the gated fusion (kw-strideK-adaptive)
# Data steps run only for the variants asked for. Several invocations with different SEEDS may run
# side by side once the data steps are done (RUN_DATA_ONLY=1 runs just those).
set -euo pipefail
cd "$(dirname "$0")/.."
bash setup.sh
PY=.venv/bin/python
# idle OpenMP threads sleep instead of spinning: on 2 shared cores spinning wastes CPU
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
SEEDS=${SEEDS:-"1 2 3"}
PRESET=${PRESET:-config/cpu.yaml}
K=${LOCAL_STRIDE:-8}
LLM_ARGS=${LLM_ARGS:-}
VARIANTS=${VARIANTS:-"sasrec etegrec kw-simple kw-adaptive"}
RUNS=${RUNS:-runs/exp18}
KW=data/exp18-keywords
LLM=data/exp18-local-stride$K
KWS=data/exp18-keywords-stride$K
KWM=data/exp18-kw-matched-stride$K
mkdir -p "$RUNS"
wants() { [[ " $VARIANTS " == *" $1 "* ]]; }
KNOWN=" sasrec etegrec kw-simple kw-adaptive llm-simple kw-stride-simple kw-matched-simple kw-stride-adaptive "
for variant in $VARIANTS; do  # before any data step: a typo must not cost an hour first
  if [[ $KNOWN != *" $variant "* ]]; then
    echo "run_table.sh: unknown variant '$variant' (one of:$KNOWN)" >&2
    exit 2
  fi
done

# 1. data: splits + keyword interests + SASRec item embeddings (the tokenizer's input, seed 2024)
if [[ ! -f $KW/scientific18/scientific18_emb_256.npy ]]; then
  $PY data_process.py --dataset=scientific18 --out_dir=$KW --interests.backend=keywords \
    --embeddings.kind=sasrec
fi
# 2. the same splits with SmolLM2 interests; the item embeddings are shared, not retrained
if { wants llm-simple || wants kw-matched-simple; } \
  && [[ ! -f $LLM/scientific18/scientific18.interest_emb.npy ]]; then
  # shellcheck disable=SC2086  # LLM_ARGS is a list of --key=value words
  $PY data_process.py --dataset=scientific18 --out_dir="$LLM" --interests.backend=local \
    --interests.recipe=history --interests.stride="$K" --embeddings.kind=none $LLM_ARGS
  cp $KW/scientific18/scientific18_emb_256.npy "$LLM"/scientific18/
fi
if { wants kw-stride-simple || wants kw-stride-adaptive || wants kw-matched-simple; } \
  && [[ ! -f $KWS/scientific18/scientific18.interest_emb.npy ]]; then
  $PY data_process.py --dataset=scientific18 --out_dir="$KWS" --interests.backend=keywords \
    --interests.stride="$K" --embeddings.kind=none
  cp $KW/scientific18/scientific18_emb_256.npy "$KWS"/scientific18/
fi
if wants kw-matched-simple && [[ ! -f $KWM/scientific18/scientific18_emb_256.npy ]]; then
  $PY experiments/match_coverage.py --source="$KWS"/scientific18 \
    --like="$LLM"/scientific18 --name=scientific18 --out="$KWM"
fi
if [[ ${RUN_DATA_ONLY:-0} == 1 ]]; then exit 0; fi

train() {  # run_name seed data_dir extra...
  local name=$1 seed=$2 data=$3; shift 3
  local run=$RUNS/$name-s$seed
  if [[ -f $run/test_metrics.json ]]; then return; fi
  if [[ -f $run/last.pt ]]; then
    $PY train.py --resume="$run"
  else
    $PY train.py --dataset=scientific18 --config="$PRESET" --data_dir="$data" --out_dir="$RUNS" \
      --run_name="$name-s$seed" --seed="$seed" "$@"
  fi
}

for seed in $SEEDS; do
  for variant in $VARIANTS; do
    case $variant in
      sasrec)  # one training per seed (metrics only; the shared embeddings stay seed 2024)
        if [[ ! -f $RUNS/sasrec-s$seed.json ]]; then
          $PY experiments/sasrec_seed.py --folder=$KW/scientific18 \
            --name=scientific18 --seed="$seed" --out="$RUNS/sasrec-s$seed.json"
        fi ;;
      etegrec) train etegrec "$seed" $KW --interest_fusion=false ;;
      kw-simple) train kw-simple "$seed" $KW --interest_fusion=true --fusion_type=simple ;;
      kw-adaptive) train kw-adaptive "$seed" $KW --interest_fusion=true --fusion_type=adaptive ;;
      llm-simple)
        train "llm-stride$K-simple" "$seed" "$LLM" --interest_fusion=true --fusion_type=simple ;;
      kw-stride-simple)
        train "kw-stride$K-simple" "$seed" "$KWS" --interest_fusion=true --fusion_type=simple ;;
      kw-matched-simple)
        train "kw-stride$K-matched-simple" "$seed" "$KWM" --interest_fusion=true \
          --fusion_type=simple ;;
      kw-stride-adaptive)
        train "kw-stride$K-adaptive" "$seed" "$KWS" --interest_fusion=true --fusion_type=adaptive ;;
    esac
  done
done

$PY experiments/collect.py --runs="$RUNS" --out=results --baseline=etegrec \
  --plot="asset/results_$(basename "$RUNS").png" --title="amazon18-scientific, CPU preset"
