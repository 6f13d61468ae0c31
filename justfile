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

# Run an experiment file, e.g. `just run experiments/split-mnist.toml --set seed=1`.
run experiment *args: (fetch "mnist")
    {{env}} && {{bin}} run {{experiment}} {{args}}

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

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all --check
    {{env}} && cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all
