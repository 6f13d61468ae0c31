#!/usr/bin/env bash
# Fidelity on a GPU machine: one seed gives identical initial weights on CPU and CUDA (the
# retain-models init tests, CUDA half included), then the reproduction grids of RESULTS.md
# with the reference initialisation. Carried, built elsewhere:
#   .carry/retain.xz        cargo build --release; strip; xz
#   .carry/models-test.xz   the retain-models test binary (cargo test -p retain-models --no-run); strip; xz
#   .carry/data.tar.xz      tar -cJf .carry/data.tar.xz datasets/mnist datasets/fashion-mnist
# Reports and metrics go to $OUT.
set -euo pipefail
LD_LIBRARY_PATH=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__) + '/lib')")
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for bin in retain models-test; do
    [ -x ".carry/$bin" ] || { xz -dc ".carry/$bin.xz" >".carry/$bin" && chmod +x ".carry/$bin"; }
done
[ -d datasets/mnist ] || tar -xJf .carry/data.tar.xz
o=${OUT:-/tmp/fidelity}
.carry/models-test init:: --test-threads 1 2>&1 | tee "$o/init-tests.log"
out=$o/results
for grid in repro-vandeven-split-mnist repro-vandeven-split-mnist-task-il repro-gem-perm-mnist; do
    start=$(date +%s.%N)
    .carry/retain grid run "experiments/$grid.toml" --output "$out" --runs-per-device 6 --quiet || true
    end=$(date +%s.%N)
    python3 -c "print(f'$grid: {$end - $start:.1f} s')"
    .carry/retain report "$out/$grid" --format markdown | tee "$o/$grid.md"
    cp "$out/$grid/metrics.parquet" "$o/$grid-metrics.parquet"
done
