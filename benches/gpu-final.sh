#!/usr/bin/env bash
# End-to-end timings, the per-method step benches and the loader bench on a GPU machine, with
# the plain PyTorch loop as the same-call baseline. Binaries are built elsewhere and carried:
#   .carry/retain                          cargo build --release
#   .carry/bin/{train_step,rehearsal_step,loader}
#                                          cargo bench --no-run -p retain-bench -p retain-stream
#   .carry/bin/stream_tests                cargo test --release -p retain-stream --no-run
#   .carry/mnist/*.gz                      MNIST
set -euo pipefail
# Bench binaries find MNIST through the path they were built at.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
LD_LIBRARY_PATH=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
.carry/retain data fetch mnist --from .carry/mnist >/dev/null
out=/tmp/final
timed() {
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    python3 -c "print(f'{$end - $start:.2f}')"
}
for run in 1 2; do
    echo "split-mnist (5x2, 1 epoch) run $run: $(timed .carry/retain run experiments/split-mnist.toml --device cuda --output $out --run-name s$run -q) s"
    echo "perm-mnist 10x1000 run $run: $(timed .carry/retain run experiments/perm-mnist.toml --device cuda --output $out --run-name p$run -q --set stream.tasks=10) s"
done
python3 - "$out" <<'PY'
import json, sys
for name in ("split-mnist/s2", "perm-mnist/p2"):
    t = json.load(open(f"{sys.argv[1]}/{name}/manifest.json"))["timings"]
    print(f"{name}: total {t['total_seconds']:.2f} s, train {t['train_seconds']:.2f} s, eval {t['eval_seconds']:.2f} s, "
          f"load {t['load_seconds']:.2f} s, {t['steps']} steps, {t['seconds_per_step'] * 1e6:.0f} us/step")
PY
python3 benches/torch_step.py --device cuda --batch 10 --steps 6000 2>/dev/null
.carry/bin/stream_tests cuda_batches_equal 2>&1 | grep -E "test |result"
export RETAIN_BENCH_THREADS=1
.carry/bin/train_step --bench cuda 2>&1 | grep -E "^train_step|time:" | paste - - || true
.carry/bin/rehearsal_step --bench cuda 2>&1 | grep -E "^step|time:" | paste - - || true
.carry/bin/loader --bench cuda 2>&1 | grep -E "^(loader|eval|step)|time:" | paste - - || true
