#!/usr/bin/env bash
# EchoAtt on the real SmolLM2-135M at a scale a shared 2-core CPU allows (experiments/README.md,
# "EchoAtt"): attention analysis, the 41 % student distilled in two stages, perplexity and
# zero-shot multiple choice before and after, and the speed benchmark.
# Usage: DATA=/path/to/data experiments/echoatt.sh   (from the repository root; DATA holds glue/SST-2, glue/CoLA)
set -euo pipefail
DATA=${DATA:?set DATA to the folder holding glue/SST-2 and glue/CoLA}
OUT=${OUT:-experiments/echoatt}
RUNS=${RUNS:-outputs/echoatt}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-10}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=offline
mkdir -p "$OUT"

# 1. which layers attend alike: 8 SST-2 blocks of 256 tokens (kept when already there)
[ -f $OUT/smollm2_attention.json ] || $PY -m kdx.analyze attention model=smollm2 task=lm/sst2 task.data_dir=$DATA/glue/SST-2 \
    analyze.samples=8 analyze.seq_len=256 analyze.ratio=0.41 analyze.output=$OUT/smollm2_attention.json \
    hardware.torch_threads=2

# 2. the 41 % student (12 of 30 layers shared), stage 1 KD then stage 2 CE, STEPS steps in all
TRIAL=(task=lm/sst2 task.data_dir=$DATA/glue/SST-2 model=smollm2_echoatt method=echoatt
       model.student.similarity_file=$OUT/smollm2_attention.json
       data.max_length=64 data.batch_size=2 task.max_train_blocks=64 task.max_eval_blocks=16 task.eval_batch_size=4
       trainer.max_steps=$STEPS trainer.log_every_n_steps=5 hardware.torch_threads=2 logger=csv
       paths.output_root=$RUNS hydra.run.dir=$RUNS/trial)
$PY -m kdx "${TRIAL[@]}"

# 3. teacher, student before KD, after stage 1, after stage 2: held-out perplexity + zero-shot MC
CKPTS=$(ls $RUNS/trial/checkpoints/phase1-kd/best-*.ckpt $RUNS/trial/checkpoints/phase2-ce/best-*.ckpt | paste -sd, -)
$PY -m kdx.zeroshot task=lm/sst2 task.data_dir=$DATA/glue/SST-2 model=smollm2_echoatt \
    model.student.similarity_file=$OUT/smollm2_attention.json \
    data.max_length=64 task.max_train_blocks=64 task.max_eval_blocks=16 task.eval_batch_size=4 \
    hardware.torch_threads=2 "zeroshot.checkpoints=[$CKPTS]" zeroshot.data_dir=$DATA/glue zeroshot.limit=50 \
    zeroshot.output=$OUT/smollm2_before_after.json

# 4. speed: teacher vs 23 / 41 / 77 % students of the SmolLM2 architecture, side by side
$PY -m kdx.bench.echoatt --similarity-file $OUT/smollm2_attention.json --seq-len ${BENCH_LEN:-128} --new-tokens 16 \
    --repeats 2 --threads 1 --sdpa-teacher --output $OUT/speed_${BENCH_LEN:-128}.json
