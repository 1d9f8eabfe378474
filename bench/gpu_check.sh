#!/usr/bin/env bash
# The GPU measurements of the speed work, prepared for a machine with one CUDA device (never run
# by the tests). Needs a CUDA build of torch in .venv (the Makefile's default pin is a CPU wheel:
# `.venv/bin/pip install torch==<version> --index-url https://download.pytorch.org/whl/cu124`).
#   1. `make bench` on the GPU: every ratio with bf16 autocast on both sides  -> bench/gpu/
#   2. one MiniLM KD trial without and with torch.compile: time to first step and wall time
# Usage: bench/gpu_check.sh [repeats]   (about 5 minutes on one recent GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
$PY -c "import torch, sys; ok = torch.cuda.is_available(); print('cuda:', ok, torch.__version__, torch.cuda.get_device_name() if ok else ''); sys.exit(0 if ok else 1)"
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv || true

$PY -m kdx.bench.speed --repeats "${1:-3}" --out bench/gpu hardware=gpu

work=$(mktemp -d)
for compile in false true; do
  $PY -m kdx method=kd model=minilm task.train_size=4000 trainer.max_epochs=1 hardware=gpu \
      hardware.compile=$compile logger=none trainer.enable_progress_bar=false \
      paths.cache_dir="$work/cache" hydra.run.dir="$work/compile-$compile" > "$work/compile-$compile.log" 2>&1
  $PY - "$work/compile-$compile/results.json" "$compile" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"compile={sys.argv[2]}: start to first step {r['timing']['process_start_to_first_step_s']} s, "
      f"trial {r['train_time_s']} s, {r['steps']} steps, {r['main_metric']}")
PYEOF
done
echo "bench table: bench/gpu/results.md"
