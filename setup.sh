#!/usr/bin/env bash
# One-time setup on a fresh machine; idempotent and quick when already done.
#   - a project-local virtualenv (.venv) with PyTorch 2.11.0 (libtorch for tch 0.24),
#     unless LIBTORCH already points at a libtorch 2.11;
#   - `just` (from PyPI's rust-just) and pyarrow (tests read Parquet back with it) in .venv.
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
echo "setup: done. Next: .venv/bin/just run experiments/split-mnist.toml  |  .venv/bin/just test"
