#!/usr/bin/env bash
# CUDA-graph-captured steps on a GPU machine, in one call on one card:
#   1. the retain-train test that a graphed run trains as the eager one does (CUDA half forced);
#   2. Split-MNIST (`experiments/split-mnist.toml`) inside the run per capturable method, with
#      `[training] cuda_graph` off and on: wall time of the training and the steady step;
#   3. plain PyTorch's eager and graphed steps of the same MLP (benches/torch_step_floor.py).
# Carried, built elsewhere:
#   .carry/retain.xz        cargo build --release; strip; xz
#   .carry/train-test.xz    the retain-train test binary (cargo test --release -p retain-train --no-run); strip; xz
#   .carry/data.tar.xz      tar -cJf .carry/data.tar.xz datasets/mnist
set -euo pipefail
LD_LIBRARY_PATH=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for bin in retain train-test; do
    [ -x ".carry/$bin" ] || { xz -dc ".carry/$bin.xz" >".carry/$bin" && chmod +x ".carry/$bin"; }
done
[ -d datasets/mnist ] || tar -xJf .carry/data.tar.xz
o=${OUT:-/tmp/graph}
mkdir -p "$o"
RETAIN_REQUIRE_CUDA=1 .carry/train-test graphed_steps --nocapture 2>&1 | tee "$o/graph-test.log"
for method in naive ewc lwf joint-cumulative; do
    for graph in false true; do
        .carry/retain run experiments/split-mnist.toml --device cuda --quiet --output "$o/runs" \
            --run-name "$method-$graph" --set "method.name=\"$method\"" --set "training.cuda_graph=$graph" \
            || echo "$method cuda_graph=$graph failed"
    done
done
python3 - "$o/runs/split-mnist" <<'PY' | tee "$o/split-mnist.md"
import json, os, statistics, sys
print("| method | cuda_graph | train s | total s | steady step µs | graphed / eager steps | eager reason |")
print("|---|---|---|---|---|---|---|")
for run in sorted(os.listdir(sys.argv[1])):
    path = os.path.join(sys.argv[1], run, "manifest.json")
    if not os.path.exists(path):
        continue
    m = json.load(open(path))
    t = m.get("timings")
    if not t:
        print(f"| {run} | failed: {m.get('error')} |"); continue
    steady = statistics.median(p["train_seconds"] / p["steps"] * 1e6 for p in t["per_task"][1:])
    e = t["step_execution"]
    method, graph = run.rsplit("-", 1)
    print(f"| {method} | {graph} | {t['train_seconds']:.2f} | {t['total_seconds']:.2f} | {steady:.0f} | "
          f"{e['graphed_steps']} / {e['eager_steps']} | {e.get('eager_reason', '')} |")
PY
python3 benches/torch_step_floor.py 2>&1 | tee "$o/torch-floor.log" || true
