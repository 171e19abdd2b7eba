#!/usr/bin/env bash
# WebSockets over HTTP/2 next to WebSockets over their own TCP connections, both over TLS
# (`wsx serve` offers HTTP/2 only with TLS), with the default configuration:
#
#   1. RSS of `wsx serve --threads 1` per idle WebSocket: N as streams of HTTP/2 connections
#      (250 per connection) and N over TCP connections of their own (wss:// over HTTP/1.1).
#   2. echo msg/s, 20 B, closed loop: 100 WebSockets as streams of one HTTP/2 connection, and
#      100 over TCP connections; rounds interleaved, each figure with its spread.
#
#   bash scripts/bench_http2.sh            (WSX_H2_IDLE=10000 WSX_H2_ROUNDS=3 WSX_H2_SECONDS=5)
#
# Prints a Markdown table; the raw figures go to target/bench-http2.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IDLE=${WSX_H2_IDLE:-10000}
ROUNDS=${WSX_H2_ROUNDS:-3}
SECONDS_PER=${WSX_H2_SECONDS:-5}
WSX=target/release/wsx
OUT=target/bench-http2.jsonl
[[ -x $WSX ]] || cargo build --release
ulimit -n 65536 2>/dev/null || true

DIR=$(mktemp -d)
SERVER=
cleanup() {
    [[ -n $SERVER ]] && kill "$SERVER" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$DIR/key.pem" \
    -out "$DIR/cert.pem" -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

start() {
    PORT=$(free_port)
    "$WSX" serve --listen "127.0.0.1:$PORT" --threads 1 --tls-cert "$DIR/cert.pem" \
        --tls-key "$DIR/key.pem" 2>"$DIR/serve.log" &
    SERVER=$!
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return
        sleep 0.05
    done
    echo "wsx serve did not start" >&2
    cat "$DIR/serve.log" >&2
    exit 1
}
stop() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }

# idle MODE: bytes per idle WebSocket (MODE http2 or http1).
idle() {
    local flag=() before after pid
    [[ $1 == http2 ]] && flag=(--http2)
    start
    sleep 0.3
    before=$(rss_kib "$SERVER")
    "$WSX" bench --idle "${flag[@]}" -c "$IDLE" -d 600 --cacert "$DIR/cert.pem" \
        "wss://localhost:$PORT/" >"$DIR/idle.out" 2>"$DIR/idle.err" &
    pid=$!
    for _ in $(seq 1200); do
        grep -q '^ready' "$DIR/idle.out" && break
        kill -0 "$pid" 2>/dev/null || { cat "$DIR/idle.err" >&2; exit 1; }
        sleep 0.1
    done
    sleep 1
    after=$(rss_kib "$SERVER")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    stop
    echo "{\"kind\":\"idle\",\"mode\":\"$1\",\"connections\":$IDLE,\"rss_before_kib\":$before,\"rss_after_kib\":$after}" >>"$OUT"
    echo $(((after - before) * 1024 / IDLE))
}

# echo MODE: msg/s of 100 WebSockets.
echo_rate() {
    local flag=()
    [[ $1 == http2 ]] && flag=(--http2)
    start
    local json
    json=$("$WSX" bench "${flag[@]}" -c 100 -s 20 -d "$SECONDS_PER" --warmup 1 --json \
        --cacert "$DIR/cert.pem" "wss://localhost:$PORT/")
    stop
    echo "$json" | python3 -c "import json,sys; r=json.load(sys.stdin); assert r['errors']==0, r; print(round(r['msgs_per_sec']))"
}

: >"$OUT"
declare -a H2_IDLE H1_IDLE H2_ECHO H1_ECHO
for round in $(seq "$ROUNDS"); do
    # Interleaved, and the order flipped every round.
    if ((round % 2)); then order=(http2 http1); else order=(http1 http2); fi
    for mode in "${order[@]}"; do
        rate=$(echo_rate "$mode")
        echo "{\"kind\":\"echo\",\"round\":$round,\"mode\":\"$mode\",\"msgs_per_sec\":$rate}" >>"$OUT"
        if [[ $mode == http2 ]]; then H2_ECHO+=("$rate"); else H1_ECHO+=("$rate"); fi
        echo "round $round: echo $mode $rate msg/s" >&2
    done
done
for mode in http2 http1; do
    bytes=$(idle "$mode")
    if [[ $mode == http2 ]]; then H2_IDLE=("$bytes"); else H1_IDLE=("$bytes"); fi
    echo "idle $mode: $bytes bytes per WebSocket" >&2
done

spread() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { printf "%d (%d–%d)", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
echo
echo "| wss:// with default settings, \`wsx serve --threads 1\` | over HTTP/2 (streams) | over HTTP/1.1 (a TCP connection each) |"
echo "|---|---:|---:|"
echo "| echo msg/s, 100 WebSockets × 20 B, median (min–max) of $ROUNDS | $(spread "${H2_ECHO[@]}") | $(spread "${H1_ECHO[@]}") |"
echo "| RSS per idle WebSocket, $IDLE of them | ${H2_IDLE[0]} B | ${H1_IDLE[0]} B |"
