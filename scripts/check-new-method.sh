#!/usr/bin/env bash
# Checks the promise of `just new-method`: it creates a crate whose tests pass, registers it
# with a one-line change outside the crate, and `retain methods` lists it with its
# hyper-parameters. Scaffolds a throw-away method in this checkout (which must have no
# uncommitted changes), then removes every trace of it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
name=${1:-scaffold-probe}
dir="crates/methods/$name"

if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
    echo "error: uncommitted changes; the check edits and then restores the checkout" >&2
    exit 2
fi
cleanup() {
    git checkout --quiet -- .
    rm -rf "$dir"
}
trap cleanup EXIT

scripts/new-method.sh "$name"
# Outside the new crate: one added line (Cargo.lock, which cargo regenerates, aside).
changed=$(git diff --numstat -- . ':!Cargo.lock')
if [[ "$(echo "$changed" | wc -l)" != 1 || "$(echo "$changed" | cut -f1,2)" != $'1\t0' ]]; then
    echo "error: new-method changed more than one line outside $dir:" >&2
    echo "$changed" >&2
    exit 1
fi
source scripts/torch-env.sh
cargo test --quiet -p "retain-method-$name"
listing=$(cargo run --quiet -- methods)
grep -q "^$name " <<<"$listing" || { echo "error: \`retain methods\` does not list $name" >&2; exit 1; }
card=$(cargo run --quiet -- methods "$name")
grep -q "weight  *float  *1.0" <<<"$card" || {
    echo "error: \`retain methods $name\` does not show the template's hyper-parameter:" >&2
    echo "$card" >&2
    exit 1
}
echo "new-method check passed: $name scaffolded, tested, listed, removed"
