# Recipes for retain. Run `./setup.sh` once first; `just --list` shows everything.

set shell := ["bash", "-euo", "pipefail", "-c"]

env := "source scripts/torch-env.sh"
bin := "target/release/retain"

# List the recipes.
default:
    @just --list

# Build the release binary.
build:
    {{env}} && cargo build --release

# Fetch and verify a dataset into datasets/ (mnist, fashion-mnist, ...).
fetch name="mnist": build
    {{env}} && {{bin}} data fetch {{name}}

# Fetch and verify every dataset an experiment or grid file uses (stream, [pretrain] stage).
fetch-for file: build
    {{env}} && {{bin}} data fetch --for {{file}}

# Run an experiment file, e.g. `just run experiments/split-mnist.toml --set seed=1`.
run experiment *args: (fetch-for experiment)
    {{env}} && {{bin}} run {{experiment}} {{args}}

# What a run would do and roughly how long it would take, without doing it.
plan experiment *args: build
    {{env}} && {{bin}} plan {{experiment}} {{args}}

# Train (or reuse) only an experiment's [pretrain] stage: `just pretrain exp.toml --out teacher.safetensors`.
pretrain experiment *args: (fetch-for experiment)
    {{env}} && {{bin}} pretrain {{experiment}} {{args}}

# Show libtorch, CUDA and cuDNN as this binary sees them.
doctor: build
    {{env}} && {{bin}} doctor

# Show which datasets are present and verified.
data-list: build
    {{env}} && {{bin}} data list

# The whole test suite (dev profile), with the MNIST data it needs.
test:
    {{env}} && cargo run --quiet -- data fetch mnist
    {{env}} && cargo run --quiet -- data fetch fashion-mnist
    {{env}} && cargo test --workspace

# Run a grid file (cells in parallel, resumable), then collect it: `just grid experiments/x.toml`.
grid file *args: (fetch-for file)
    {{env}} && {{bin}} grid run {{file}} {{args}}

# Regression check: small CPU grids (reduced Split-MNIST, 2 seeds: naive; replay, DER++, iCaRL, SI) against results/baselines/.
check:
    {{env}} && cargo run --quiet -- data fetch mnist
    rm -rf results/check
    {{env}} && cargo run --quiet -- grid run experiments/check-split-mnist.toml --output results/check --quiet
    {{env}} && cargo run --quiet -- check results/check/check-split-mnist --baseline results/baselines/check-split-mnist.toml
    {{env}} && cargo run --quiet -- grid run experiments/check-split-mnist-methods.toml --output results/check --quiet
    {{env}} && cargo run --quiet -- check results/check/check-split-mnist-methods --baseline results/baselines/check-split-mnist-methods.toml

# Create crates/methods/NAME from templates/method and register it (see README, "Adding a method").
new-method name:
    scripts/new-method.sh {{name}}

# Scaffold a throw-away method, test it, check `retain methods` lists it, then remove it.
check-new-method:
    scripts/check-new-method.sh

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all --check
    {{env}} && cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all
