#!/usr/bin/env bash
# The peer benchmark: govhub's adapter call beside the same mapping as an
# Extism plugin, one process, one run. Not part of CI: Extism brings its
# own wasmtime, a long first build (about 15 minutes on 2 cores).
#
#   tests/peers/run.sh [criterion args...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

rustup target add wasm32-wasip2 wasm32-unknown-unknown >/dev/null

echo "== building the govhub components (wasm32-wasip2)"
(cd "$root" && cargo build --release --target wasm32-wasip2 \
    --target-dir target/adapters -p police-adapter -p fixture-trivial)

# The same versions of the shared crates as the main workspace.
[ -f "$here/Cargo.lock" ] || cp "$root/Cargo.lock" "$here/Cargo.lock"

echo "== building the Extism plugin (wasm32-unknown-unknown)"
(cd "$here" && cargo build --release --target wasm32-unknown-unknown -p extism-police)

echo "== running the benchmark"
cd "$here"
cargo bench -p extism-bench --bench peers -- "$@"
