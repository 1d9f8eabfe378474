#!/usr/bin/env bash
# Robustness of the real-data suite's students (experiments/README.md, "Real data: robustness"):
# the word-substitution attack of `python -m kdx.evaluate suite=robustness` on every finished trial
# of experiments/minilm_suite.sh, written into each trial's results.json under `robustness`.
#
#   bash experiments/minilm_robustness.sh                       # every trial under $OUT not yet attacked
#   TASKS=sst2 METHODS="kd combined" SEEDS="0 1 2" bash experiments/minilm_robustness.sh
#
# The out-of-domain sets (SST-2 -> IMDB, Yelp) load from the hub; offline, give local copies with
# EXTRA="robustness.ood.files.imdb=FILE" or they are recorded as not loadable. Then:
#   python -m kdx.report $OUT --baseline kd --test ttest --metric robustness/attack/attacked_acc
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-multirun/minilm_suite}
SEEDS=${SEEDS:-"0 1 2 3 4"}
TASKS=${TASKS:-"sst2 mrpc cola"}
METHODS=${METHODS:-"finetune kd takd annealing continuation prokd mate combined bpkd"}
EXAMPLES=${EXAMPLES:-200}   # attacked dev examples per student (the first EXAMPLES of the split)
EXTRA=${EXTRA:-}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1} TOKENIZERS_PARALLELISM=false

attacked() { "$PYTHON" -c "import json, sys; sys.exit(0 if 'attack' in json.load(open('$1')).get('robustness', {}) else 1)"; }

for seed in $SEEDS; do
  for task in $TASKS; do
    for method in $METHODS; do
      trial="$OUT/$task/$method/seed$seed"
      if [ ! -f "$trial/results.json" ]; then echo "== $trial: not trained yet"; continue; fi
      if attacked "$trial/results.json"; then echo "== $trial: attacked already"; continue; fi
      echo "== attacking $trial"
      # shellcheck disable=SC2086
      "$PYTHON" -m kdx.evaluate checkpoint="$trial" suite=robustness robustness.attack.examples="$EXAMPLES" $EXTRA
    done
  done
done
