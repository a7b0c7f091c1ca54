#!/usr/bin/env bash
# A/B benchmark: the work tree against another revision, in one run.
#
#   tests/bench-ab.sh REV            # e.g. HEAD, HEAD~1, main, 1267e61
#
# Builds REV (in a git worktree under target/bench-ab/) and the work tree
# side by side, then runs each phase alternately, A, B, A, B, ...:
#   call     police.ingest on a pooled instance and the native mapping
#            (each side's own `adapter_call` bench, criterion, short)
#   http     single-event POST /v1/events, journal full, and bare hyper
#   durable  single-event and batched ingest, and the raw SQLite ceiling
#   e2e      end to end to a department: maximum rate, p99 at half of it
# and prints every figure's min / median / max for A (REV) and B (the
# work tree), and the ratio of the medians B / A. The load generator is the
# work tree's for both sides (the same client, the same bare baselines);
# each side runs its own hub binary and its own adapters.
#
# Settings (environment): ROUNDS (pairs, default 3), PHASES (default
# call,http,durable,e2e), EVENTS (requests per http/durable/e2e figure,
# default 20000). REV must be a commit whose `durable`, `http` and `e2e`
# tables and `adapter_call` bench this script reads exist there (0378a93 or
# later; the work tree's load generator drives both sides). REV builds in a
# target folder of its own, target/bench-ab/target-a, kept between runs:
# the first run compiles every dependency there once (as long as a cold
# build), later runs only what changed. (Building both sides in one target
# folder does not work: Cargo names a workspace crate's artifacts by its
# path relative to the workspace, so the two sides share them, and which
# one is rebuilt depends on file times.) Every command's output is kept in
# target/bench-ab/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

rev=${1:?usage: tests/bench-ab.sh REV (a commit to compare the work tree with)}
rounds=${ROUNDS:-3}
phases=${PHASES:-call,http,durable,e2e}
events=${EVENTS:-20000}
sha=$(git rev-parse --verify "$rev^{commit}")
short=${sha:0:9}

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
out=$root/target/bench-ab
logs=$out/logs
mkdir -p "$out" "$logs"
# A setting of the adapter_call bench that would skip its figures.
unset GOVHUB_BENCH_POLICE GOVHUB_BENCH_ROUNDS GOVHUB_BENCH_CALLS
trap 'echo "bench-ab failed; the logs are in $logs" >&2' ERR

# Builds one side: its hub and load generator, its adapter_call bench, and
# its adapters.
# Binaries are copied out of target/release, which both sides share.
build_side() {
    local name=$1 src=$2 target=$3 bin=$out/$1 log=$logs/build-$1.txt
    mkdir -p "$bin"
    echo "==> building $name ($src; log: $log)" >&2
    (cd "$src" && CARGO_TARGET_DIR=$target cargo build --release -p govhub --bins) >"$log" 2>&1
    cp "$target/release/govhub" "$target/release/govhub-load" "$bin/"
    (cd "$src" && CARGO_TARGET_DIR=$target cargo bench -p govhub --bench adapter_call --no-run) >>"$log" 2>&1
    local bench
    bench=$(sed -n 's/.*Executable .*(\(.*adapter_call-[0-9a-f]*\)).*/\1/p' "$log" | tail -n1)
    [[ -n $bench ]] || { echo "no adapter_call bench built for $name (see $log)" >&2; exit 1; }
    [[ $bench == /* ]] || bench=$src/$bench
    cp "$bench" "$bin/adapter_call"
    # The bench builds the side's adapters the way its tests do (every
    # adapter crate, into the side's target/adapters) before it filters.
    "$bin/adapter_call" --bench 'no-such-benchmark' >/dev/null 2>&1
    echo "$src/target/adapters/wasm32-wasip2/release" >"$bin/wasm-dir"
}

tree=$out/worktree-$short
if [[ ! -d $tree ]]; then
    git worktree prune
    git worktree add --detach "$tree" "$sha" >/dev/null
fi
build_side a "$tree" "$out/target-a"
build_side b "$root" "$root/target"
if cmp -s "$out/a/govhub" "$out/b/govhub"; then
    echo "warning: A and B built the same govhub binary (REV is the work tree?)" >&2
fi
load=$out/b/govhub-load

# One figure per line into $out/figures: side phase name value.
figures=$out/figures
: >"$figures"
record() { echo "$1 $2 $3 $4" >>"$figures"; }

# Criterion's middle estimate, in µs.
criterion_us() {
    awk -v want="$1" '
        $0 ~ want { hit = 1 }
        hit && /time:/ {
            sub(/.*time: *\[/, ""); split($0, f, " ");
            v = f[3]; u = f[4];
            if (u == "ns") v /= 1000; else if (u == "ms") v *= 1000;
            print v; exit
        }'
}

# The n-th column (1-based, after the leading |) of the table row `| 1 |`,
# with its thousands separators and units dropped.
column() {
    awk -F'|' -v n="$1" '$2 ~ /^ *1 *$/ { v = $(n + 1); gsub(/[^0-9.]/, "", v); print v; exit }'
}

run_phase() {
    local side=$1 phase=$2 bin=$out/$1 dir
    dir=$(mktemp -d "$out/run.XXXXXX")
    local err=$logs/$phase-$side.stderr
    local wasm
    wasm=$(cat "$bin/wasm-dir")
    case $phase in
    call)
        local log=$logs/call-$side.txt
        (cd "$dir" && "$bin/adapter_call" --bench 'police.ingest/(native|govhub-pooled-instance)$' \
            --warm-up-time 1 --measurement-time 3 --noplot >"$log" 2>"$err")
        local native govhub
        native=$(criterion_us 'police.ingest/native' <"$log")
        govhub=$(criterion_us 'police.ingest/govhub-pooled-instance' <"$log")
        record "$side" call native_us "$native"
        record "$side" call govhub_us "$govhub"
        record "$side" call ratio_to_native "$(awk -v g="$govhub" -v n="$native" 'BEGIN { printf "%.2f", g / n }')"
        ;;
    http)
        local log=$logs/http-$side.txt
        "$load" http --govhub "$bin/govhub" --wasm-dir "$wasm" --runs 1 --events "$events" --dir "$dir" >"$log" 2>"$err"
        local bare full
        bare=$(column 2 <"$log")
        full=$(column 3 <"$log")
        record "$side" http bare_hyper_req_s "$bare"
        record "$side" http single_full_ev_s "$full"
        record "$side" http ratio_to_bare "$(awk -v a="$full" -v b="$bare" 'BEGIN { printf "%.3f", a / b }')"
        # CPU per request (builds before the line was added do not print it).
        local cpu
        cpu=$(sed -n 's/.*govhub full \([0-9.]*\) µs.*/\1/p' "$log")
        [[ -z $cpu ]] || record "$side" http hub_cpu_us_per_event "$cpu"
        cpu=$(sed -n 's/.*CPU per request: bare hyper \([0-9.]*\) µs.*/\1/p' "$log")
        [[ -z $cpu ]] || record "$side" http bare_cpu_us_per_request "$cpu"
        ;;
    durable)
        local log=$logs/durable-$side.txt
        "$load" durable --govhub "$bin/govhub" --wasm-dir "$wasm" --events "$events" --latency-seconds 3 \
            --dir "$dir" >"$log" 2>"$err"
        local ceiling single batched
        ceiling=$(sed -n 's/^raw SQLite ceiling.*: \([0-9.]*\) rows\/s/\1/p' "$log")
        single=$(sed -n 's/^govhub single-event requests .*: \([0-9.]*\) events\/s.*/\1/p' "$log" | head -n1)
        batched=$(sed -n 's/^govhub batched requests .*: \([0-9.]*\) events\/s.*/\1/p' "$log" | head -n1)
        record "$side" durable sqlite_ceiling_rows_s "$ceiling"
        record "$side" durable single_ev_s "$single"
        record "$side" durable batched_ev_s "$batched"
        record "$side" durable batched_to_ceiling "$(awk -v a="$batched" -v b="$ceiling" 'BEGIN { printf "%.3f", a / b }')"
        record "$side" durable p99_at_half_ms "$(sed -n 's/^latency at .* p99 \([0-9.]*\) ms.*/\1/p' "$log")"
        ;;
    e2e)
        local log=$logs/e2e-$side.txt
        "$load" e2e --govhub "$bin/govhub" --wasm-dir "$wasm" --events "$events" --latency-seconds 3 \
            --dir "$dir" >"$log" 2>"$err"
        record "$side" e2e max_ev_s "$(sed -n 's/^end to end, closed loop: .* = \([0-9.]*\) events\/s.*/\1/p' "$log")"
        record "$side" e2e p99_at_half_ms "$(sed -n 's/^end to end at .* p99 \([0-9.]*\) ms.*/\1/p' "$log")"
        record "$side" e2e hub_cpu_us_per_event "$(sed -n 's/^CPU during it: the hub \([0-9.]*\) µs per event.*/\1/p' "$log")"
        ;;
    esac
    rm -rf "$dir"
}

IFS=, read -r -a wanted <<<"$phases"
for ((round = 1; round <= rounds; round++)); do
    for phase in "${wanted[@]}"; do
        for side in a b; do
            echo "==> round $round/$rounds: $phase, $side" >&2
            run_phase "$side" "$phase"
        done
    done
done

echo
echo "A = $short ($rev), B = the work tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' + changes')); $rounds rounds, A and B alternating"
echo
echo "| phase | figure | A min / median / max | B min / median / max | B / A (medians) |"
echo "|---|---|---|---|---|"
awk '
    { key = $2 " " $3; if (!(key in seen)) { seen[key] = 1; order[++n] = key }
      vals[$1 " " key] = vals[$1 " " key] " " $4 }
    function spread(list,    a, m, i, j, t, mid) {
        MED = "";
        m = split(list, a, " ");
        if (m == 0 || a[1] == "") return "-";
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        mid = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2;
        MED = mid;
        return sprintf("%s / %s / %s", a[1], mid, a[m]);
    }
    END {
        for (i = 1; i <= n; i++) {
            split(order[i], k, " ");
            sa = spread(vals["a " order[i]]); ma = MED;
            sb = spread(vals["b " order[i]]); mb = MED;
            r = (ma != "" && mb != "" && ma + 0 != 0) ? sprintf("%.2f", mb / ma) : "-";
            printf "| %s | %s | %s | %s | %s |\n", k[1], k[2], sa, sb, r;
        }
    }' "$figures"
