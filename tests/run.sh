#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, doc tests, the adapters'
# offline tests, and the end-to-end tests in tests/ (real binary, real
# adapters built for wasm32-wasip2). What CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2

# One release build serves everything: the end-to-end tests run the
# release binary (cranelift itself is slow unoptimized), so the unit tests
# share its build instead of compiling wasmtime a second time.
started=$(date +%s)
cargo test --release --workspace
echo "all tests passed in $(( $(date +%s) - started )) s"
