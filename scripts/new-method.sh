#!/usr/bin/env bash
# Creates crates/methods/NAME from templates/method and registers it: the one line
# `retain-method-NAME = { path = "../methods/NAME" }` in crates/retain-methods/Cargo.toml.
# Usage: scripts/new-method.sh NAME   (NAME: lower case, digits and dashes, e.g. `si` or `my-reg`)
set -euo pipefail

name="${1:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
registry=crates/retain-methods/Cargo.toml

if [[ ! "$name" =~ ^[a-z][a-z0-9]*(-[a-z0-9]+)*$ ]]; then
    echo "error: method name \`$name\` must be lower case letters, digits and single dashes, starting with a letter (e.g. \`si\`, \`my-reg\`)" >&2
    exit 2
fi
dir="crates/methods/$name"
if [[ -e "$dir" ]]; then
    echo "error: $dir already exists" >&2
    exit 2
fi
if grep -q "^retain-method-$name = " "$registry"; then
    echo "error: a crate retain-method-$name is already registered in $registry" >&2
    exit 2
fi

# my-reg -> MyReg
type="$(echo "$name" | awk -F- '{ for (i = 1; i <= NF; i++) printf "%s%s", toupper(substr($i, 1, 1)), substr($i, 2) }')"

mkdir -p "$dir/src"
substitute() { sed -e "s/__NAME__/$name/g" -e "s/__TYPE__/$type/g" "$1" >"$2"; }
substitute templates/method/Cargo.toml.in "$dir/Cargo.toml"
substitute templates/method/src/lib.rs.in "$dir/src/lib.rs"
cp templates/method/build.rs "$dir/build.rs"

# The registry's one line, before the marker that ends its list of methods.
awk -v entry="retain-method-$name = { path = \"../methods/$name\" }" '
    /^# \(end of methods\)$/ { print entry; done = 1 }
    { print }
    END { if (!done) { print "the end-of-methods marker is missing from '"$registry"'" > "/dev/stderr"; exit 1 } }
    ' "$registry" >"$registry.new"
mv "$registry.new" "$registry"

echo "created $dir (crate retain-method-$name, type $type), registered in $registry"
echo "next: edit $dir/src/lib.rs, then: cargo test -p retain-method-$name && retain methods $name"
