#!/usr/bin/env bash
# HAGRID at fixture scale with the real SmolLM2-135M pair (docs/methods.md §8): the twelve-query
# HAGRID-schema fixture of the tests (8 train / 4 dev queries), a teacher fine-tuned on it in the
# teacher store, then the every-third-layer student fine-tuned alone and distilled. A check that
# the whole path runs and what it measures at this scale, not a result about HAGRID.
# Usage: experiments/hagrid_fixture.sh [base] [generator]   (default: base: finetune and kd;
#        generator: token_kd with the generalised JSD and seq_kd with greedy teacher answers)
# Outputs: $EXP_ROOT/hagrid/<trial key>/ (results.json, val/generations.jsonl); teacher store in $KDX_CACHE_DIR.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       WANDB_MODE=disabled KDX_CACHE_DIR=${KDX_CACHE_DIR:-/tmp/exp_cache}
EXP_ROOT=${EXP_ROOT:-/tmp/exp}
DATA=$EXP_ROOT/hagrid_data
python -c "from tests.hagrid_fixture import write_hagrid; write_hagrid('$DATA')"
# 4 epochs of 2 batches for the teacher and each student; evaluation (greedy, 48 new tokens) after
# the last epoch only, which is then also the best checkpoint.
KDX=(python -m kdx -m trainer.enable_progress_bar=false logger=none task=hagrid task.data_dir=$DATA model=smollm2
     model.teacher.finetuned=false task.max_length=320 task.max_answer_tokens=64 task.generation.max_new_tokens=48
     data.batch_size=4 trainer.max_epochs=4 model.teacher_epochs=4 +trainer.check_val_every_n_epoch=4
     hydra.sweep.dir=$EXP_ROOT/hagrid)

base() { "${KDX[@]}" method=finetune,kd; }

generator() {
  "${KDX[@]}" method=token_kd method.divergence=jsd
  "${KDX[@]}" method=seq_kd method.generation.strategy=greedy method.generation.max_new_tokens=64
}

for part in "${@:-base}"; do "$part"; done
