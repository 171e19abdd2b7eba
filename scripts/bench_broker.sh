#!/usr/bin/env bash
# Pub/sub across nodes: `wsx bench --pubsub` (uWebSockets' broadcast protocol, closed loop)
# with N connections spread over two `wsx serve --pubsub --broker` nodes (N/2 each), through a
# real Redis and a real NATS on loopback, next to the same N on one in-process node. Every
# delivery to a connection on the other node crosses the broker.
#
#   bash scripts/bench_broker.sh           (WSX_BROKER_CONNS=1000 WSX_BROKER_SECONDS=5 WSX_BROKER_SIZE=64)
#
# Prints one line per setup: deliveries/s and publish-to-delivery latency p50/p99/p99.9 (from
# `wsx bench --json`; the raw JSON goes to target/bench-broker.jsonl), and the broker's CPU
# time per published message.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CONNS=${WSX_BROKER_CONNS:-1000}
SECONDS_PER=${WSX_BROKER_SECONDS:-5}
SIZE=${WSX_BROKER_SIZE:-64}
WSX=target/release/wsx
OUT=target/bench-broker.jsonl
[[ -x $WSX ]] || cargo build --release
ulimit -n 65536 2>/dev/null || true
: >"$OUT"

DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    exit 1
}

node() { # node BROKER_URL|-: starts a node, sets NODE_PORT
    NODE_PORT=$(free_port)
    local extra=()
    [[ $1 != - ]] && extra=(--broker "$1")
    RUST_LOG=warn "$WSX" serve --listen "127.0.0.1:$NODE_PORT" --pubsub "${extra[@]}" \
        2>>"$DIR/nodes.log" &
    PIDS+=($!)
    wait_port "$NODE_PORT"
}

run() { # run NAME BROKER_PID URL [--also URL]
    local name=$1 broker=$2
    shift 2
    local before=0
    [[ $broker != - ]] && before=$(cpu_ticks "$broker")
    local json
    json=$("$WSX" bench --pubsub --json -c "$CONNS" -s "$SIZE" -d "$SECONDS_PER" --warmup 1 "$@")
    echo "{\"setup\":\"$name\",\"bench\":$json}" >>"$OUT"
    local ticks=-
    [[ $broker != - ]] && ticks=$(($(cpu_ticks "$broker") - before))
    python3 - "$name" "$json" "$ticks" "$(getconf CLK_TCK)" "$CONNS" "$SECONDS_PER" <<'PY'
import json, sys
name, raw, ticks, hz, conns, secs = sys.argv[1:]
b = json.loads(raw)
lat = b["latency_us"]
rate = b["deliveries_per_sec"]
pubs = b["published"] / b["duration_secs"]
# The broker's CPU over warm-up and measurement, per publish at the measured rate (approximate:
# connecting is in it too).
cpu = "" if ticks == "-" else \
    f", broker CPU {int(ticks) / int(hz) / (pubs * (float(secs) + 1)) * 1e6:.1f} us/publish"
print(f"{name:20} {rate:>12,.0f} deliveries/s  {pubs:>9,.0f} publishes/s  p50 {lat['p50']} us  "
      f"p99 {lat['p99']} us  p99.9 {lat['p999']} us  errors {b['errors']}{cpu}")
PY
}

echo "$CONNS connections, $SIZE B messages, ${SECONDS_PER}s each"
node -
run "1 node, in-process" - "ws://127.0.0.1:$NODE_PORT/t"

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" \
    --daemonize no >"$DIR/redis.log" 2>&1 &
REDIS=$!
PIDS+=($REDIS)
wait_port "$REDIS_PORT"
node "redis://127.0.0.1:$REDIS_PORT"; A=$NODE_PORT
node "redis://127.0.0.1:$REDIS_PORT"; B=$NODE_PORT
sleep 0.5
run "2 nodes, Redis" "$REDIS" "ws://127.0.0.1:$A/t" --also "ws://127.0.0.1:$B/t"

NATS_PORT=$(free_port)
nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$DIR/nats.log" 2>&1 &
NATS=$!
PIDS+=($NATS)
wait_port "$NATS_PORT"
node "nats://127.0.0.1:$NATS_PORT"; A=$NODE_PORT
node "nats://127.0.0.1:$NATS_PORT"; B=$NODE_PORT
sleep 0.5
run "2 nodes, NATS" "$NATS" "ws://127.0.0.1:$A/t" --also "ws://127.0.0.1:$B/t"
