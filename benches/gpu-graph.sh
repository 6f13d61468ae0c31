#!/usr/bin/env bash
# The training step at the launch floor, in one call on one card (`OUT=... bash benches/gpu-graph.sh`):
#   1. the CUDA tests that graphed and eager runs train alike: the trainer's own
#      (`graphed_steps_train_as_eager_steps_do`) and each method's (`tests/it/graphs.rs`),
#      their CUDA halves forced (RETAIN_REQUIRE_CUDA=1);
#   2. Split-MNIST per method (`experiments/split-mnist*.toml`), and Permuted-MNIST (naive, EWC),
#      inside the run, `[training] cuda_graph` off and on;
#   3. the ViT of experiments/peft-fashion.toml at batch 64 with Adam, fp32 and bf16, eager and
#      graphed;
#   4. ResNet-18 (nf 64) steps of `experiments/split-cifar.toml` on generated CIFAR-10 files of
#      the real format and size, fp32 and bf16 + channels-last, eager and graphed, batch 32 and
#      128; the projected wall time of the 50-epoch experiment;
#   5. plain PyTorch's eager and graphed steps of the same MLP, ResNet-18 and ViT
#      (benches/torch_step_floor.py).
# Carried, built elsewhere (stripped, xz):
#   .carry/retain.xz        cargo build --release
#   .carry/train-test.xz    cargo test --release -p retain-train --no-run
#   .carry/it-test.xz       cargo test --release --test it --no-run
#   .carry/data.tar.xz      tar -cJf .carry/data.tar.xz datasets/mnist
set -euo pipefail
LD_LIBRARY_PATH=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for bin in retain train-test it-test; do
    [ -e ".carry/$bin.xz" ] || [ -x ".carry/$bin" ] || continue
    [ -x ".carry/$bin" ] || { xz -dc ".carry/$bin.xz" >".carry/$bin" && chmod +x ".carry/$bin"; }
done
[ -d datasets/mnist ] || tar -xJf .carry/data.tar.xz
# The test binaries find datasets/ under the checkout they were built in (/work/main).
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; } || true
o=${OUT:-/tmp/graph}
mkdir -p "$o"
only=${ONLY:-tests mnist vit cifar torch}

if [[ $only == *tests* ]]; then
    if [ -x .carry/train-test ]; then
        RETAIN_REQUIRE_CUDA=1 .carry/train-test graphed_steps --nocapture 2>&1 | tee "$o/graph-test.log" || true
    fi
    RETAIN_REQUIRE_CUDA=1 .carry/it-test graphs:: --nocapture 2>&1 | tee "$o/graph-methods-test.log" || true
fi

# `run NAME EXPERIMENT ARGS...`: one run into $o/runs, its failure recorded, not fatal.
run() {
    local name=$1 experiment=$2
    shift 2
    .carry/retain run "$experiment" --device cuda --quiet --output "$o/runs" --run-name "$name" "$@" \
        || echo "$name failed"
}

if [[ $only == *mnist* ]]; then
    for spec in naive:split-mnist ewc:split-mnist lwf:split-mnist joint-cumulative:split-mnist \
        replay:split-mnist-replay der:split-mnist-der agem:split-mnist-agem gem:split-mnist-gem \
        lora:split-mnist prompt:split-mnist-vit-prompt naive-perm:perm-mnist; do
        method=${spec%%:*} experiment=experiments/${spec#*:}.toml set=()
        case $method in
            ewc | lwf | joint-cumulative | lora) set=(--set "method.name=\"$method\"") ;;
        esac
        for graph in false true; do
            run "$method-$graph" "$experiment" "${set[@]}" --set "training.cuda_graph=$graph"
        done
    done
fi

if [[ $only == *vit* ]]; then
    # The vision transformer of experiments/peft-fashion.toml, fully fine-tuned (naive) on
    # Split-MNIST at that experiment's batch 64 with Adam: retain's side of the ViT rows of
    # benches/torch_step_floor.py, fp32 and bf16, eager and graphed.
    vit=/tmp/split-mnist-vit-naive.toml
    sed -e 's/^name = "prompt"/name = "naive"/' -e '/^length = /d' -e 's/^batch_size = .*/batch_size = 64/' \
        experiments/split-mnist-vit-prompt.toml >"$vit"
    for precision in fp32 bf16; do
        for graph in false true; do
            run "vit-b64-$precision-$graph" "$vit" --set "training.precision=\"$precision\"" \
                --set "training.cuda_graph=$graph"
        done
    done
fi

if [[ $only == *cifar* ]]; then
    # CIFAR-10's binary files (1 label byte + 3072 pixel bytes per record), random pixels,
    # balanced labels: the shapes and sizes of the real data.
    mkdir -p datasets/cifar10
    python3 - <<'PY'
import random
rng = random.Random(0)
for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    records = bytearray(rng.randbytes(10000 * 3073))
    records[0::3073] = bytes(i % 10 for i in range(10000))
    open(f"datasets/cifar10/{name}", "wb").write(records)
PY
    # Two epochs of every task's 10000 images: the capture at each task's start is amortised
    # as in the real experiment. "noaug" drops crop and flip, as PyTorch's reference step has none.
    cifar=(--set stream.test_samples_per_task=1000 --set training.epochs=2)
    noaug=(--set stream.augment.crop_padding=0 --set stream.augment.flip=false)
    for variant in b32-fp32-false b32-fp32-true b32-bf16cl-false b32-bf16cl-true b32-bf16cl-true-noaug \
        b128-fp32-false b128-bf16cl-true b128-bf16cl-true-noaug; do
        IFS=- read -r batch arith graph aug <<<"$variant"
        precision=fp32 format=contiguous extra=()
        [[ $arith == bf16cl ]] && precision=bf16 format=channels_last
        [[ $aug == noaug ]] && extra=("${noaug[@]}")
        run "resnet18-$variant" experiments/split-cifar.toml "${cifar[@]}" "${extra[@]}" \
            --set "training.batch_size=${batch#b}" --set "training.precision=\"$precision\"" \
            --set "training.memory_format=\"$format\"" --set "training.cuda_graph=$graph"
    done
fi

python3 - "$o/runs" <<'PY' | tee "$o/runs.md"
import json, os, statistics, sys
root = sys.argv[1]
print("| run | train s | eval s | total s | steady step µs | graphed / eager steps | eager reason |")
print("|---|---|---|---|---|---|---|")
steps = {}
for experiment in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    for run in sorted(os.listdir(os.path.join(root, experiment))):
        path = os.path.join(root, experiment, run, "manifest.json")
        if not os.path.exists(path):
            continue
        m = json.load(open(path))
        t = m.get("timings")
        if not t:
            print(f"| {run} | failed: {m.get('error')} |"); continue
        steady = statistics.median(p["train_seconds"] / p["steps"] * 1e6 for p in t["per_task"][1:])
        steps[run] = steady
        e = t["step_execution"]
        print(f"| {run} | {t['train_seconds']:.2f} | {t['eval_seconds']:.2f} | {t['total_seconds']:.2f} | {steady:.0f} | "
              f"{e['graphed_steps']} / {e['eager_steps']} | {e.get('eager_reason') or ''} |")
# experiments/split-cifar.toml: 5 tasks of 10000 training images, 50 epochs, batch 32.
per_run = 5 * 50 * -(-10000 // 32)
for run, us in sorted(steps.items()):
    if run.startswith("resnet18-b32") and not run.endswith("noaug"):
        print(f"projected split-cifar training ({per_run} steps) with {run}: {per_run * us / 1e6 / 60:.1f} min")
PY

if [[ $only == *torch* ]]; then
    python3 benches/torch_step_floor.py 2>&1 | tee "$o/torch-floor.log" || true
fi
