#!/usr/bin/env bash
# Grid throughput on a GPU host: the same grid of small Split-MNIST runs (8 seeds of naive
# fine-tuning) with 1, 4 and 8 concurrent runs per card, on one card and, when the host has
# several, on all of them.
#   bash benches/gpu-grid.sh path/to/retain path/to/mnist-gz-folder
set -euo pipefail
bin=${1:?retain binary}
mnist=${2:?folder with MNIST .gz files}
out=${RESULTS:-/tmp/retain-grid-bench}
LD_LIBRARY_PATH=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
export LD_LIBRARY_PATH
"$bin" data fetch mnist --from "$mnist" >/dev/null
gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c
grid=$(mktemp --suffix=.toml)
sed -e 's/^"seed" = .*/"seed" = [0, 1, 2, 3, 4, 5, 6, 7]/' -e '/^"training.optimizer.lr"/d' \
    experiments/split-mnist-grid.toml >"$grid"
all=$(seq -s, -f 'cuda:%g' 0 $((gpus - 1)))
for devices in cuda:0 "$all"; do
    for per in 1 4 8; do
        rm -rf "$out"
        start=$(date +%s.%N)
        "$bin" grid run "$grid" --devices "$devices" --runs-per-device "$per" --output "$out" --quiet \
            | grep -E 'runs/hour|failed' || true
        end=$(date +%s.%N)
        python3 -c "print(f'devices={\"$devices\"} runs_per_device=$per: 8 runs in {$end - $start:.1f} s, {8 * 3600 / ($end - $start):.0f} runs/hour')"
    done
    [ "$gpus" -gt 1 ] || break
done
