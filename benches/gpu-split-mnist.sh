#!/usr/bin/env bash
# Split-MNIST wall time and training-step time on a GPU machine, against a plain PyTorch loop
# of the same model, batch and optimizer on the same card in the same call.
#
# Expects a retain binary built elsewhere (`cargo build --release`) and MNIST as .gz files:
#   bash benches/gpu-split-mnist.sh path/to/retain path/to/mnist-gz-folder
# and a python3 with PyTorch 2.11 (its libtorch is what the binary links at run time).
set -euo pipefail
bin=${1:?retain binary}
mnist=${2:?folder with MNIST .gz files}
out=${OUT:-/tmp/retain-gpu-bench}
mkdir -p "$out"
LD_LIBRARY_PATH=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
export LD_LIBRARY_PATH

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
"$bin" doctor
"$bin" data fetch mnist --from "$mnist" >/dev/null

for run in 1 2 3; do
    start=$(date +%s.%N)
    "$bin" run experiments/split-mnist.toml --device cuda --run-name "gpu$run" --output "$out" -q
    end=$(date +%s.%N)
    echo "split-mnist run $run: wall $(python3 -c "print(f'{$end - $start:.2f}')") s (process start to exit)"
done
python3 - "$out" <<'PY'
import json, sys, statistics
for run in (1, 2, 3):
    m = json.load(open(f"{sys.argv[1]}/split-mnist/gpu{run}/manifest.json"))
    t = m["timings"]
    # Task 1 includes CUDA/cuBLAS warm-up; tasks 2..5 show the steady-state step.
    steady = [p["train_seconds"] / p["steps"] * 1e6 for p in t["per_task"][1:]]
    print(f"run {run}: total {t['total_seconds']:.2f} s (train {t['train_seconds']:.2f}, eval {t['eval_seconds']:.3f}, "
          f"load {t['load_seconds']:.2f}), steady step {statistics.median(steady):.1f} us")
PY
for batch in 10 128; do
    python3 benches/torch_step.py --device cuda --batch "$batch" --steps 6000 2>/dev/null
    "$bin" run experiments/split-mnist.toml --device cuda --run-name "b$batch" --output "$out" -q \
        --set training.batch_size=$batch
    python3 - "$out/split-mnist/b$batch/manifest.json" "$batch" <<'PY'
import json, sys, statistics
t = json.load(open(sys.argv[1]))["timings"]
steady = [p["train_seconds"] / p["steps"] * 1e6 for p in t["per_task"][1:]]
print(f"retain batch={sys.argv[2]} us_per_step={statistics.median(steady):.1f} (median of tasks 2-5)")
PY
done
