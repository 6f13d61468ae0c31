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
# Step time of each method alone on the card (the grid's cells share it four ways): 2 tasks,
# one run at a time, from the stage cached above (same output folder and experiment name).
for spec in naive lora qlora-nf4 qlora-int8 adapter bitfit prompt prefix; do
    args=(--set "method.name=\"${spec%%-*}\"")
    case $spec in qlora-*) args+=(--set "method.quant=\"${spec#qlora-}\"") ;; esac
    .carry/retain run /tmp/peft-fashion.toml --device cuda --output "$out" -q \
        --set stream.tasks=2 "${args[@]}" --run-name "step-$spec"
done
python3 - "$out/peft-fashion" <<'PY'
import json, pathlib, sys
for manifest in sorted(pathlib.Path(sys.argv[1]).glob("step-*/manifest.json")):
    m = json.load(open(manifest))
    c = m["costs"]
    print(f"{manifest.parent.name:24} {m['timings']['seconds_per_step'] * 1e3:7.2f} ms/step  "
          f"trainable {c['trainable_parameters']:>7}  frozen {c['frozen_base_bytes']:>8} B")
PY
# Flat copies of what the repository records (the device returns shallow folders only).
mkdir -p "${OUT:-/tmp/peft}/plots"
cp "$out"/peft-fashion/plots/accuracy-vs-parameters.* "$out"/peft-fashion/plots/acc-*.png "${OUT:-/tmp/peft}/plots/"
cp "$out"/peft-lora-readouts/lora-seed0/{metrics.parquet,accuracy.parquet,manifest.json} "${OUT:-/tmp/peft}/" 
# Keep what the repository records; drop model checkpoints.
find "$out" -name '*.safetensors' -delete
