#!/usr/bin/env bash
# Runs the reproduction grids on a GPU machine and prints their reports.
#   bash benches/gpu-repro.sh path/to/retain path/to/mnist-gz-folder
set -euo pipefail
bin=${1:?retain binary}
mnist=${2:?folder with MNIST .gz files}
LD_LIBRARY_PATH=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name --format=csv,noheader
"$bin" data fetch mnist --from "$mnist" >/dev/null
for grid in repro-vandeven-split-mnist repro-gem-perm-mnist; do
    "$bin" grid run "experiments/$grid.toml" --runs-per-device 6 --quiet || true
    "$bin" report "results/$grid" --format markdown
done
