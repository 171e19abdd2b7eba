#!/usr/bin/env bash
# What permessage-deflate costs `wsx serve --threads 1`, in its default negotiation (no context
# takeover either way) and with --deflate-context-takeover:
#
#   1. server RSS per idle connection, N of them, each having first exchanged one ~200 B
#      JSON-like message with the echo (so the codecs were used), for Chromium's offer, Python
#      websockets' offer and no offer (no compression);
#   2. the compression ratio of 1,000 such messages, sent one at a time on one connection,
#      bytes on the wire each way (frame headers included) over the message bytes.
#
#   bash scripts/bench_deflate.sh           (WSX_DEFLATE_IDLE=2000 WSX_DEFLATE_ROUNDS=3)
#
# Prints a Markdown table; the raw figures go to target/bench-deflate.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IDLE=${WSX_DEFLATE_IDLE:-2000}
ROUNDS=${WSX_DEFLATE_ROUNDS:-3}
WSX=target/release/wsx
IDLER=target/release/wsx-bench-idle
RATIO=target/release/wsx-bench-ratio
OUT=target/bench-deflate.jsonl
[[ -x $WSX ]] || cargo build --release -p wsx-cli
[[ -x $IDLER && -x $RATIO ]] ||
    cargo build --release -p wsx-bench --bin wsx-bench-idle --bin wsx-bench-ratio
ulimit -n 65536 2>/dev/null || true

CHROMIUM_OFFER="permessage-deflate; client_max_window_bits"
# Python websockets' own default offer, asked of the library when it is installed.
PYTHON=${WSX_PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=/work/main/.venv/bin/python
PYTHON_OFFER=$("$PYTHON" -c '
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate as e
from websockets.headers import build_extension
print(build_extension([(x.name, x.get_request_params()) for x in e(None)]))' 2>/dev/null ||
    echo "$CHROMIUM_OFFER")

DIR=$(mktemp -d)
SERVER=
CLIENT=
cleanup() {
    [[ -n $CLIENT ]] && kill "$CLIENT" 2>/dev/null || true
    [[ -n $SERVER ]] && kill "$SERVER" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# start MODE: `wsx serve --threads 1` with every default (MODE default) or with
# --deflate-context-takeover (MODE takeover).
start() {
    local flag=()
    [[ $1 == takeover ]] && flag=(--deflate-context-takeover)
    PORT=$(free_port)
    "$WSX" serve --listen "127.0.0.1:$PORT" --threads 1 "${flag[@]}" 2>"$DIR/serve.log" &
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

# idle MODE OFFER: server bytes per idle connection (OFFER empty: no Sec-WebSocket-Extensions).
idle() {
    local offer=() before after
    [[ -n $2 ]] && offer=(--offer "$2")
    start "$1"
    sleep 0.3
    before=$(rss_kib "$SERVER")
    "$IDLER" "127.0.0.1:$PORT" -c "$IDLE" --warm "${offer[@]}" --hold 600 \
        >"$DIR/idle.out" 2>"$DIR/idle.err" &
    CLIENT=$!
    for _ in $(seq 1200); do
        grep -q '^ready' "$DIR/idle.out" && break
        kill -0 "$CLIENT" 2>/dev/null || { cat "$DIR/idle.err" >&2; exit 1; }
        sleep 0.1
    done
    sleep 1
    after=$(rss_kib "$SERVER")
    kill "$CLIENT"
    wait "$CLIENT" 2>/dev/null || true
    CLIENT=
    stop
    echo "{\"kind\":\"idle\",\"mode\":\"$1\",\"offer\":\"$2\",\"connections\":$IDLE,\"rss_before_kib\":$before,\"rss_after_kib\":$after}" >>"$OUT"
    echo $(((after - before) * 1024 / IDLE))
}

# ratio MODE: the JSON line of wsx-bench-ratio against the server in MODE.
ratio() {
    start "$1"
    local json
    json=$("$RATIO" "127.0.0.1:$PORT" --offer "$CHROMIUM_OFFER" -n 1000)
    stop
    echo "{\"kind\":\"ratio\",\"mode\":\"$1\",\"result\":$json}" >>"$OUT"
    echo "$json"
}

: >"$OUT"
declare -A RSS
CELLS=("default|none" "default|chromium" "default|python" "takeover|chromium" "takeover|python")
for round in $(seq "$ROUNDS"); do
    # Interleaved, the order reversed every other round.
    order=("${CELLS[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#CELLS[@]} - 1; i >= 0; i--)); do order+=("${CELLS[i]}"); done
    fi
    for cell in "${order[@]}"; do
        mode=${cell%|*}
        case ${cell#*|} in
            none) offer= ;;
            chromium) offer=$CHROMIUM_OFFER ;;
            python) offer=$PYTHON_OFFER ;;
        esac
        bytes=$(idle "$mode" "$offer")
        RSS[$cell]="${RSS[$cell]:-} $bytes"
        echo "round $round: $cell $bytes bytes per idle connection" >&2
    done
done
DEFAULT_RATIO=$(ratio default)
TAKEOVER_RATIO=$(ratio takeover)

median() { printf '%s\n' $1 | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
spread() { printf '%s\n' $1 | sort -n | awk '{ v[NR] = $1 } END { printf "%d (%d–%d)", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
times() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
share() {
    python3 -c 'import json, sys
r = json.loads(sys.argv[1])
wire, plain = r[sys.argv[2]], r["message_bytes"]
print(f"{wire / plain * 100:.1f} % ({wire:,} of {plain:,} B)")' "$1" "$2"
}
answer() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])["answer"])' "$1"; }

base=$(median "${RSS[default|none]}")
echo
echo "Offers: Chromium \`$CHROMIUM_OFFER\`; Python websockets \`$PYTHON_OFFER\`."
echo
echo "| \`wsx serve --threads 1\`, $IDLE idle connections, each after one ~190 B echo | RSS per connection, median (min–max) of $ROUNDS | vs no deflate |"
echo "|---|---:|---:|"
echo "| no deflate offered | $(spread "${RSS[default|none]}") B | 1.00× |"
for mode in default takeover; do
    label="default (no context takeover)"
    [[ $mode == takeover ]] && label="\`--deflate-context-takeover\`"
    for client in chromium python; do
        cell="$mode|$client"
        echo "| $label, ${client^}'s offer | $(spread "${RSS[$cell]}") B | $(times "$(median "${RSS[$cell]}")" "$base") |"
    done
done
echo
echo "| 1,000 chat-like JSON messages (~190 B), one at a time, Chromium's offer | answer | server → client on the wire | client → server on the wire |"
echo "|---|---|---:|---:|"
echo "| default | \`$(answer "$DEFAULT_RATIO")\` | $(share "$DEFAULT_RATIO" server_wire_bytes) | $(share "$DEFAULT_RATIO" client_wire_bytes) |"
echo "| \`--deflate-context-takeover\` | \`$(answer "$TAKEOVER_RATIO")\` | $(share "$TAKEOVER_RATIO" server_wire_bytes) | $(share "$TAKEOVER_RATIO" client_wire_bytes) |"
