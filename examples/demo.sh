#!/usr/bin/env bash
# Sets up everything govhub needs on a fresh machine with Rust (rustup),
# builds the hub and the shipped adapters, and runs the demo. Arguments go
# to `govhub demo`: `examples/demo.sh --serve` keeps the hub running and
# serves the cockpit at http://127.0.0.1:8080/ while the stories play.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> adding the wasm32-wasip2 target (adapters are WASI 0.2 components)"
rustup target add wasm32-wasip2

echo "==> building the adapters for wasm32-wasip2"
cargo build --release --target wasm32-wasip2 --target-dir target/adapters \
    -p police-adapter -p webhook-adapter -p traffic-adapter -p fire-adapter \
    -p four-platforms-adapter -p video-patrol-adapter -p city-management-adapter

echo "==> building the hub and the mock departments (the first build compiles wasmtime: several minutes)"
cargo build --release -p govhub

echo "==> govhub demo"
export GOVHUB_CACHE_DIR="${GOVHUB_CACHE_DIR:-$PWD/target/compile-cache}"
exec target/release/govhub demo --wasm-dir target/adapters/wasm32-wasip2/release "$@"
