#!/usr/bin/env bash
# Issue 11, item 2 on real data: one recipe-knob attempt for the SST-2 claims of the MiniLM suite
# that did not hold (experiments/README.md, "Real data: follow-ups"). Each part writes its trials
# under $ROOT/<part>; the suite's own trials (multirun/minilm_suite) are the "as configured" side.
#
#   KDX_GLUE_DIR=/path/to/glue bash experiments/minilm_followups.sh                # all parts
#   KDX_GLUE_DIR=/path/to/glue bash experiments/minilm_followups.sh gap attack_floor   # some
#   python -m kdx.report multirun/minilm_followups/gap --baseline kd --test ttest
#   python -m kdx.report multirun/minilm_suite/sst2 multirun/minilm_followups/continuation_psi \
#       --baseline kd --by method.psi.ramp_epochs
#   python -m kdx.report multirun/minilm_suite/sst2 multirun/minilm_followups/prokd_loss --baseline kd --by method.loss
#   python -m kdx.report multirun/minilm_followups/attack_floor --baseline kd \
#       --metric robustness/attack/attacked_acc
set -euo pipefail
: "${KDX_GLUE_DIR:?set KDX_GLUE_DIR to the folder holding SST-2}"
PYTHON=${PYTHON:-.venv/bin/python}
ROOT=${ROOT:-multirun/minilm_followups}
SUITE=${SUITE:-multirun/minilm_suite}
export SEEDS=${SEEDS:-"0 1 2"} TASKS=sst2 KDX_GLUE_DIR PYTHON
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
HERE=$(dirname "$0")

gap() {   # a larger teacher-student gap, as in the papers: a 2-layer student (teacher layers 0 and 3)
  # (a 1-layer student, layers=[0], stayed at chance under every method: too weak to compare them)
  OUT=$ROOT/gap METHODS="finetune kd annealing continuation takd" \
    EXTRA="hardware.torch_threads=1 +model.student.layers=[0,3]" bash "$HERE/minilm_suite.sh"
}

continuation_psi() {   # the paper's psi shape (ramp over 2/3 of the run, then CE only) scaled to 3 epochs
  OUT=$ROOT/continuation_psi METHODS=continuation \
    EXTRA="hardware.torch_threads=1 method.psi.ramp_epochs=2 method.psi.slope=0.25" bash "$HERE/minilm_suite.sh"
}

prokd_loss() {   # Pro-KD with the annealed-MSE loss (its temperature schedule) on the suite's trajectory
  OUT=$ROOT/prokd_loss METHODS=prokd EXTRA="hardware.torch_threads=1 method.loss=annealed_mse" \
    bash "$HERE/minilm_suite.sh"
}

attack_floor() {   # the attack with TextFooler's word-similarity floor 0.5 on the suite's SST-2 students
  "$PYTHON" - "$SUITE/sst2" "$ROOT/attack_floor/sst2" <<'EOF'
import json, sys
from pathlib import Path
suite, out = Path(sys.argv[1]), Path(sys.argv[2])
for results in sorted(suite.glob("*/seed*/results.json")):   # a copy without the first attack's numbers
    target = out / results.relative_to(suite)
    if not target.exists():
        trial = json.loads(results.read_text())
        trial.pop("robustness", None)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(trial, indent=1))
EOF
  OUT=$ROOT/attack_floor EXTRA="robustness.attack.min_similarity=0.5" bash "$HERE/minilm_robustness.sh"
}

source "$HERE/parts.sh"
run_parts "gap continuation_psi prokd_loss attack_floor" "$@"
