#!/usr/bin/env bash
# The real-data reproduction suite (experiments/README.md, "Real data: MiniLM on GLUE"):
# 9 methods x 3 GLUE tasks x 5 seeds on the real pre-trained MiniLM pair, one trial at a time.
#
#   KDX_GLUE_DIR=/path/to/glue bash experiments/minilm_suite.sh            # everything (hours on 2 cores)
#   KDX_GLUE_DIR=/path/to/glue SEEDS="0" TASKS="sst2" METHODS="kd" bash experiments/minilm_suite.sh
#
# KDX_GLUE_DIR holds the official GLUE folders SST-2, MRPC and CoLA. Results land under
# $OUT (default multirun/minilm_suite); a rerun skips completed trials (skip_completed).
# Then: python -m kdx.report multirun/minilm_suite --baseline kd --test ttest
set -euo pipefail
: "${KDX_GLUE_DIR:?set KDX_GLUE_DIR to the folder holding SST-2, MRPC and CoLA}"
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-multirun/minilm_suite}
SEEDS=${SEEDS:-"0 1 2 3 4"}
TASKS=${TASKS:-"sst2 mrpc cola"}
METHODS=${METHODS:-"finetune kd takd annealing continuation prokd mate combined bpkd"}
EXTRA=${EXTRA:-}            # more overrides for every trial (e.g. a smoke row's smaller slices)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

folder_of() { case $1 in sst2) echo SST-2;; mrpc) echo MRPC;; cola) echo CoLA;; esac; }
length_of() { case $1 in mrpc) echo 128;; *) echo 32;; esac; }   # MRPC pairs need more tokens

for seed in $SEEDS; do
  for task in $TASKS; do
    for method in $METHODS; do
      echo "== $method $task seed $seed"
      # shellcheck disable=SC2086
      $PYTHON -m kdx +experiment="${method}_minilm" task="glue/$task" \
        task.data_dir="$KDX_GLUE_DIR/$(folder_of "$task")" task.max_length="$(length_of "$task")" \
        seed="$seed" paths.output_root="$OUT" trainer.enable_progress_bar=false \
        hydra.run.dir="$OUT/$task/$method/seed$seed" $EXTRA
    done
  done
done
$PYTHON -m kdx.report "$OUT" --baseline kd --test ttest
