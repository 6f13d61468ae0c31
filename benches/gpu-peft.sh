#!/usr/bin/env bash
# The parameter-efficient fine-tuning grid (experiments/peft-fashion.toml) and the LoRA
# read-out run on a GPU machine. Carried, built elsewhere:
#   .carry/retain.xz       cargo build --release; strip; xz
#   .carry/data.tar.xz     tar -cJf .carry/data.tar.xz datasets/mnist datasets/fashion-mnist
# Results (runs/accuracy/metrics Parquet, plots, manifests) are copied to $OUT.
set -euo pipefail
LD_LIBRARY_PATH=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
[ -x .carry/retain ] || { xz -dc .carry/retain.xz >.carry/retain && chmod +x .carry/retain; }
[ -d datasets/fashion-mnist ] || tar -xJf .carry/data.tar.xz
out=${OUT:-/tmp/peft}/results
# The three seeds' pretrain stages first, so that concurrent cells reuse them (the grid's
# experiment without its [grid] table: same name, same stage cache).
sed '/^\[grid\]/,$d' experiments/peft-fashion.toml >/tmp/peft-fashion.toml
for seed in 0 1 2; do
    .carry/retain pretrain /tmp/peft-fashion.toml --seed "$seed" --device cuda --output "$out"
done
start=$(date +%s.%N)
.carry/retain grid run experiments/peft-fashion.toml --output "$out" --quiet "$@"
end=$(date +%s.%N)
python3 -c "print(f'grid wall time: {$end - $start:.1f} s')"
.carry/retain report "$out/peft-fashion" --format markdown | tee "$out/peft-fashion/report.md"
.carry/retain run experiments/peft-lora-readouts.toml --device cuda --output "$out" 2>&1 | tail -40
# Keep what the repository records; drop model checkpoints.
find "$out" -name '*.safetensors' -delete
