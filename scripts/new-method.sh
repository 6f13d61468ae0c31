#!/usr/bin/env bash
# Creates crates/methods/NAME from templates/method, adds it to the workspace dependencies
# and the CLI's dependencies in Cargo.toml, and registers it in src/registry.rs.
# Usage: scripts/new-method.sh NAME   (NAME: lower case, digits and dashes, e.g. `si` or `my-reg`)
set -euo pipefail

name="${1:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ ! "$name" =~ ^[a-z][a-z0-9]*(-[a-z0-9]+)*$ ]]; then
    echo "error: method name \`$name\` must be lower case letters, digits and single dashes, starting with a letter (e.g. \`si\`, \`my-reg\`)" >&2
    exit 2
fi
dir="crates/methods/$name"
if [[ -e "$dir" ]]; then
    echo "error: $dir already exists" >&2
    exit 2
fi
if grep -q "(\"$name\"," src/registry.rs; then
    echo "error: a method named \`$name\` is already registered in src/registry.rs" >&2
    exit 2
fi

crate="retain_method_${name//-/_}"
# my-reg -> MyReg
type="$(echo "$name" | awk -F- '{ for (i = 1; i <= NF; i++) printf "%s%s", toupper(substr($i, 1, 1)), substr($i, 2) }')"

mkdir -p "$dir/src"
substitute() { sed -e "s/__NAME__/$name/g" -e "s/__TYPE__/$type/g" "$1" > "$2"; }
substitute templates/method/Cargo.toml.in "$dir/Cargo.toml"
substitute templates/method/src/lib.rs.in "$dir/src/lib.rs"
cp templates/method/build.rs "$dir/build.rs"

# Cargo.toml: one line after the last method in [workspace.dependencies], one after the last
# method in the CLI's [dependencies].
awk -v dep="retain-method-$name = { path = \"$dir\" }" \
    -v use="retain-method-$name.workspace = true" '
    { lines[NR] = $0 }
    /^retain-method-[a-z0-9-]+ = \{ path = / { last_path = NR }
    /^retain-method-[a-z0-9-]+\.workspace = true/ { last_use = NR }
    END {
        if (!last_path || !last_use) { print "no retain-method-* lines in Cargo.toml" > "/dev/stderr"; exit 1 }
        for (i = 1; i <= NR; i++) {
            print lines[i]
            if (i == last_path) print dep
            if (i == last_use) print use
        }
    }' Cargo.toml > Cargo.toml.new
mv Cargo.toml.new Cargo.toml

# src/registry.rs: a line before the `];` that closes METHODS.
awk -v entry="    (\"$name\", $crate::from_params)," '
    /^pub const METHODS/ { in_table = 1 }
    in_table && /^\];/ { print entry; in_table = 0; done = 1 }
    { print }
    END { if (!done) { print "METHODS table not found in src/registry.rs" > "/dev/stderr"; exit 1 } }
    ' src/registry.rs > src/registry.rs.new
mv src/registry.rs.new src/registry.rs

echo "created $dir (crate retain-method-$name, type $type), registered as \`$name\`"
echo "next: edit $dir/src/lib.rs, then: cargo test -p retain-method-$name"
