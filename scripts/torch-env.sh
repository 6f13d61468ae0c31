# Sourced by the justfile: puts the project's virtualenv first on PATH and tells tch where
# libtorch is. A libtorch the user already has (LIBTORCH set) wins; otherwise the PyTorch
# 2.11 that ./setup.sh installed into .venv is used (LIBTORCH_USE_PYTORCH).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$root/.venv/bin:$PATH"
if [ -z "${LIBTORCH:-}" ]; then
    export LIBTORCH_USE_PYTORCH=1
else
    unset LIBTORCH_USE_PYTORCH
    export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
