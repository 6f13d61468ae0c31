#!/usr/bin/env bash
# The parameter-efficient fine-tuning grid (experiments/peft-fashion.toml) and the LoRA
# read-out run on a GPU machine. Carried, built elsewhere:
#   .carry/retain.xz       cargo build --release; strip; xz
#   .carry/data.tar.xz     tar -cJf .carry/data.tar.xz datasets/mnist datasets/fashion-mnist
# What the repository records (report, chart, Parquet files, manifest) is copied to $OUT.
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
nvidia-smi --query-gpu=name --format=csv,noheader
.carry/retain run experiments/peft-lora-readouts.toml --device cuda --output "$out" 2>&1 | tail -40
# Step time of each method alone on the card (the grid's cells share it four ways), with the
# flat-buffer optimiser and with libtorch's per-tensor one: 1 task, one run at a time, from
# the stage cached above (same output folder and experiment name).
for flat in true false; do
    for spec in naive lora qlora-nf4 qlora-int8 adapter bitfit prompt prefix; do
        args=(--set "method.name=\"${spec%%-*}\"" --set "training.flat_optimizer=$flat")
        case $spec in qlora-*) args+=(--set "method.quant=\"${spec#qlora-}\"") ;; esac
        .carry/retain run /tmp/peft-fashion.toml --device cuda --output "$out" -q \
            --set stream.tasks=1 "${args[@]}" --run-name "step-$spec-flat-$flat"
    done
done
# Split-MNIST (MLP, batch 10, SGD) end to end with either optimiser, twice each.
for round in 1 2; do for flat in true false; do
    start=$(date +%s.%N)
    .carry/retain run experiments/split-mnist.toml --device cuda --output "$out" -q \
        --set "training.flat_optimizer=$flat" --run-name "flat-$flat-$round"
    end=$(date +%s.%N)
    python3 -c "print(f'split-mnist flat_optimizer=$flat, round $round: {$end - $start:.2f} s process start to exit')"
done; done
python3 - "$out" <<'PY'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
for manifest in sorted(root.glob("*/step-*/manifest.json")) + sorted(root.glob("split-mnist/*/manifest.json")):
    m = json.load(open(manifest))
    t, c = m["timings"], m["costs"]
    print(f"{manifest.parent.name:28} {t['seconds_per_step'] * 1e3:7.3f} ms/step  total {t['total_seconds']:6.2f} s  "
          f"trainable {c['trainable_parameters']:>7}  frozen {c['frozen_base_bytes']:>8} B")
PY
# Flat copies of what the repository records (the device returns few, shallow files).
o=${OUT:-/tmp/peft}
cp "$out"/peft-fashion/plots/accuracy-vs-parameters.png "$o/accuracy-vs-parameters.png"
cp "$out"/peft-fashion/plots/accuracy-vs-parameters.svg "$o/accuracy-vs-parameters.svg"
cp "$out"/peft-fashion/report.md "$o/peft-fashion-report.md"
cp "$out"/peft-fashion/runs.parquet "$o/peft-fashion-runs.parquet"
cp "$out"/peft-fashion/metrics.parquet "$o/peft-fashion-metrics.parquet"
cp "$out"/peft-lora-readouts/lora-seed0/metrics.parquet "$o/lora-readouts-metrics.parquet"
cp "$out"/peft-lora-readouts/lora-seed0/accuracy.parquet "$o/lora-readouts-accuracy.parquet"
cp "$out"/peft-lora-readouts/lora-seed0/manifest.json "$o/lora-readouts-manifest.json"
rm -rf "$out"
