#!/usr/bin/env bash
# Small-scale versions of each paper's central claim, sized for a shared 2-core CPU (see README.md).
# Usage: experiments/small_scale.sh [toy|synthetic|prokd|augment|labelreg|report]...  (default: all)
# Outputs: $EXP_ROOT/<name>/ (one folder per trial, results.json each); teacher store in $KDX_CACHE_DIR.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       WANDB_MODE=disabled KDX_CACHE_DIR=${KDX_CACHE_DIR:-/tmp/exp_cache}
EXP_ROOT=${EXP_ROOT:-/tmp/exp}
# GLUE: the folder holding the original GLUE task folders (SST-2/, MRPC/, ...); required by the
# label-regularisation runs, which read real SST-2 text from local files.
GLUE=${GLUE:-}
SEEDS=${SEEDS:-0,1,2}
KDX=(python -m kdx -m trainer.enable_progress_bar=false logger=none)

# Synthetic text task, shrunk (2,000 training sentences, 500 dev); tiny BERT pair (teacher 2x128,
# student 1x16), 6 student epochs.
SYN=(task=synthetic task.train_size=2000 task.val_size=500 trainer.max_epochs=6)
# Continuation-KD's psi for a 6-epoch run with the NLU shape (psi reaches 1/2 at 2/3 of training, then 1).
CONT_PSI=(method.psi.ramp_epochs=4 method.psi.slope=0.125)

toy() {        # Continuation-KD sinusoid toy: is the continuation student smoother (lower clean MSE)?
  "${KDX[@]}" +experiment=continuation_toy method=finetune,kd,annealing,continuation seed=$SEEDS \
    hydra.sweep.dir=$EXP_ROOT/toy
}

synthetic() {  # Annealing-KD / Continuation-KD vs FT, KD, TAKD on the synthetic task
  "${KDX[@]}" "${SYN[@]}" method=finetune,kd,annealing seed=$SEEDS hydra.sweep.dir=$EXP_ROOT/synthetic
  "${KDX[@]}" "${SYN[@]}" method=continuation "${CONT_PSI[@]}" seed=$SEEDS hydra.sweep.dir=$EXP_ROOT/synthetic
  "${KDX[@]}" "${SYN[@]}" method=takd method.assistant_epochs=3 seed=$SEEDS hydra.sweep.dir=$EXP_ROOT/synthetic
}

prokd() {      # Pro-KD (teacher trajectory replay) vs KD from the final teacher
  "${KDX[@]}" "${SYN[@]}" method=prokd seed=$SEEDS hydra.sweep.dir=$EXP_ROOT/synthetic
}

augment() {    # MATE-KD, Combined-KD, backward-pass KD vs KD (shared vocabulary: the tiny pair)
  "${KDX[@]}" "${SYN[@]}" method=mate,combined,bpkd seed=$SEEDS hydra.sweep.dir=$EXP_ROOT/synthetic
}

labelreg() {   # label regularisation with a pre-trained vs a random MiniLM student, SST-2 slice
  # CPU-sized: 500 training sentences, 32 tokens, 2 epochs at lr 2e-4 (few steps); no-teacher methods only by default
  # (LR_METHODS=finetune,label_smoothing,tf_reg,kd adds KD, which fine-tunes a MiniLM teacher per seed).
  [[ -n "$GLUE" ]] || { echo "labelreg reads real SST-2 text: set GLUE=<folder with the GLUE task folders>" >&2; exit 2; }
  local common=(model=minilm task=glue/sst2 task.data_dir=$GLUE/SST-2 task.max_train_examples=${LR_TRAIN:-500}
                task.max_length=32 trainer.max_epochs=2 model.lr=2e-4 model.teacher_epochs=2 seed=$SEEDS
                method=${LR_METHODS:-finetune,label_smoothing,tf_reg})
  # pre-trained: the teacher's layers 0, 2, 4; random: the same 3-layer architecture, fresh weights
  "${KDX[@]}" "${common[@]}" model.student.init=truncated hydra.sweep.dir=$EXP_ROOT/labelreg
  "${KDX[@]}" "${common[@]}" model.student.init=random \
    'model.student.resize={num_hidden_layers:3}' hydra.sweep.dir=$EXP_ROOT/labelreg
}

report() {
  for name in toy synthetic labelreg; do
    [ -d "$EXP_ROOT/$name" ] || continue
    echo "## $name"
    python -m kdx.report "$EXP_ROOT/$name" --baseline ${BASELINE:-kd} --test ttest || true
    python -m kdx.report "$EXP_ROOT/$name" --baseline finetune --test ttest || true
  done
}

source "$(dirname "$0")/parts.sh"
run_parts "toy synthetic prokd augment labelreg report" "$@"
