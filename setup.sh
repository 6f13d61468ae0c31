#!/usr/bin/env bash
# One-time setup on a fresh machine; idempotent and quick when already done.
#   - a project-local virtualenv (.venv) with PyTorch 2.11.0 (libtorch for tch 0.24),
#     unless LIBTORCH already points at a libtorch 2.11;
#   - `just` (from PyPI's rust-just), pyarrow (tests read Parquet back with it) and tensorboard
#     (to watch runs; tests read the event files back with it) in .venv;
#   - the CUDA runtime header package the CUDA-graph shim needs (nvidia-cuda-crt).
# Datasets are fetched by the just recipes that need them (`just fetch mnist`).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install Rust from https://rustup.rs first" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@"; }

if [ -n "${LIBTORCH:-}" ]; then
    echo "setup: using LIBTORCH=$LIBTORCH (not installing PyTorch)"
elif ! .venv/bin/python -c 'import sys, torch; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
    echo "setup: installing torch==2.11.0 into .venv (about 2 minutes)"
    pip_install torch==2.11.0
fi
[ -x .venv/bin/just ] || pip_install rust-just
.venv/bin/python -c 'import pyarrow' 2>/dev/null || pip_install pyarrow
.venv/bin/python -c 'import tensorboard' 2>/dev/null || pip_install tensorboard
# The CUDA-graph shim (crates/retain-graph) compiles against the CUDA runtime headers the wheel
# ships; the one it lacks, crt/host_config.h, comes from nvidia-cuda-crt (the release matching
# the wheel's CUDA 13.0 runtime). Without it the shim is left out and steps run eagerly.
if [ -z "${LIBTORCH:-}" ] && .venv/bin/python -c 'import sys, torch; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
    site=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
    [ -e "$site/nvidia/cu13/include/crt/host_config.h" ] || pip_install nvidia-cuda-crt==13.0.88
fi
echo "setup: done. Next: .venv/bin/just run experiments/split-mnist.toml  |  .venv/bin/just test"
