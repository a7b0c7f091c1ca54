#!/usr/bin/env bash
# Fuzzes every parser the hub exposes to other people's systems: the
# CloudEvents readers (structured, batch, binary with its headers), the
# adapter manifest, the hub config, the grid map, and each shipped
# adapter's `ingest` compiled natively. libFuzzer needs nightly Rust; the
# script installs it and cargo-fuzz when missing. CI does not run this: it
# replays the committed corpora on stable (tests/fuzz_replay.rs).
#
#   tests/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60, all)
#
# What a run keeps: tests/fuzz/corpus/<target>/ is merged with what it
# found and minimized at the end (commit it); a crash, hang or out-of-memory
# stops that target and leaves its input in tests/fuzz/artifacts/<target>/
# (reproduce: cargo +nightly fuzz run --fuzz-dir tests/fuzz TARGET FILE).
# Fix it, then keep the input in tests/fuzz/regressions/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
fuzz=tests/fuzz

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' $fuzz/Cargo.toml | grep -v '^govhub-fuzz$')
fi

# Built once for every target (the hub is a large crate): no sanitizer,
# debug assertions on (overflow checks, as the debug build has them).
echo "==> building ${#targets[@]} fuzz targets (nightly, first time: several minutes)"
cargo +nightly fuzz build --fuzz-dir $fuzz --sanitizer none --debug-assertions

report=()
for t in "${targets[@]}"; do
    mkdir -p "$fuzz/corpus/$t" "$fuzz/artifacts/$t"
    fresh=$(mktemp -d)
    echo "==> $t: ${seconds} s"
    started=$(date +%s)
    status=ok
    # Inputs up to 64 KiB; 2 s per input at most; 2 GiB of memory.
    if ! cargo +nightly fuzz run --fuzz-dir $fuzz --sanitizer none --debug-assertions "$t" \
        "$fresh" "$fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=2 -rss_limit_mb=2048 \
        -artifact_prefix="$fuzz/artifacts/$t/" -print_final_stats=1 \
        >"$fuzz/artifacts/$t/last-run.log" 2>&1; then
        status="FOUND: see $fuzz/artifacts/$t/"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$fuzz/artifacts/$t/last-run.log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$fuzz/artifacts/$t/last-run.log" | tail -n1 | cut -d' ' -f2)
    # Keep what reaches code, minimized: the old corpus and the new inputs
    # merged into an empty folder (libFuzzer keeps the smallest set that
    # reaches the same edges; hit counts are not kept apart, which makes
    # the set three times smaller), which replaces the corpus; the
    # committed seeds (the samples) stay whatever the merge says.
    kept=$(mktemp -d)
    if cargo +nightly fuzz run --fuzz-dir $fuzz --sanitizer none --debug-assertions "$t" \
        "$kept" "$fuzz/corpus/$t" "$fresh" -- -merge=1 -use_counters=0 -max_len=65536 -timeout=2 \
        >"$fuzz/artifacts/$t/merge.log" 2>&1 && [ -n "$(ls -A "$kept")" ]; then
        rm -rf "$fuzz/corpus/$t"
        mv "$kept" "$fuzz/corpus/$t"
        git checkout -q -- "$fuzz/corpus/$t" 2>/dev/null || true
    else
        rm -rf "$kept"
    fi
    rm -rf "$fresh"
    took=$(($(date +%s) - started))
    line="$t: ${took} s, ${runs:-?} inputs, coverage ${cov:-?}, $(ls "$fuzz/corpus/$t" | wc -l) in corpus: $status"
    echo "    $line"
    report+=("$line")
done
echo "==> fuzzing done"
printf '  %s\n' "${report[@]}"
