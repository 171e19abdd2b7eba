#!/usr/bin/env bash
# Side-by-side benchmark of wsx and its peers; writes docs/BENCHMARKS.md and docs/benchmarks.svg.
#
# Each server runs alone on one thread pinned to one CPU, the load generator (`wsx bench`) on
# another; every point runs on every server in every round, the server order rotating from round
# to round. Then each server's memory per idle connection is measured. Run it on a quiet machine.
#
#   scripts/bench.sh                                            # full run (~25 min)
#   WSX_BENCH_ROUNDS=1 WSX_BENCH_DURATION=1 scripts/bench.sh    # smoke run (~1 min)
#
# Settings (environment):
#   WSX_BENCH_ROUNDS       rounds (default 3)
#   WSX_BENCH_DURATION     seconds measured per run (default 5)
#   WSX_BENCH_WARMUP       seconds of warm-up per run (default 1)
#   WSX_BENCH_POINTS       CONNSxSIZE list (default "100x20 1000x20 10x1024 10x16384 1x1048576")
#   WSX_BENCH_SERVERS      servers (default "wsx wsx-default wsx-store wsx-hyper wsx-axum raw
#                          tungstenite axum fastwebsockets tokio-websockets"; see wsx_cmd for the
#                          `wsx serve` variants; the others, wsx-hyper and wsx-axum (wsx inside
#                          hyper and axum) included, are `wsx-bench-server --impl NAME`)
#   WSX_BENCH_IDLE_CONNS   idle connections for the memory measurement (default 10000; 0 skips)
#   WSX_BENCH_BINARY       1 sends binary messages instead of text (default 0)
#   WSX_BENCH_INSTR        1 counts each server's user-space instructions per message under
#                          valgrind's callgrind (default 1 when valgrind is installed; 0 skips)
#   WSX_BENCH_INSTR_POINT  the point counted (default 100x20)
#   WSX_BENCH_SERVER_CPU   CPU the servers are pinned to (default 0)
#   WSX_BENCH_CLIENT_CPU   CPU the generator is pinned to (default 1)
#   WSX_BENCH_BUILD        0 skips `cargo build --release` (default 1)
#   WSX_BENCH_GENERATOR    the load generator binary, anything with `bench URL ... --json`
#                          (default target/release/wsx)
#   WSX_BENCH_OUT          the JSON lines file (default target/wsx-bench/results-DATE.jsonl)
#   WSX_BENCH_DOCS         where BENCHMARKS.md and benchmarks.svg go (default docs)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${WSX_BENCH_ROUNDS:-3}
DURATION=${WSX_BENCH_DURATION:-5}
WARMUP=${WSX_BENCH_WARMUP:-1}
POINTS=${WSX_BENCH_POINTS:-"100x20 1000x20 10x1024 10x16384 1x1048576"}
read -r -a SERVERS <<<"${WSX_BENCH_SERVERS:-wsx wsx-default wsx-store wsx-hyper wsx-axum raw tungstenite axum fastwebsockets tokio-websockets}"
IDLE_CONNS=${WSX_BENCH_IDLE_CONNS:-10000}
BINARY=${WSX_BENCH_BINARY:-0}
if command -v valgrind >/dev/null; then INSTR=${WSX_BENCH_INSTR:-1}; else INSTR=${WSX_BENCH_INSTR:-0}; fi
INSTR_POINT=${WSX_BENCH_INSTR_POINT:-100x20}
# Seconds of the short and the long counted run.
INSTR_SHORT=2
INSTR_LONG=8
SERVER_CPU=${WSX_BENCH_SERVER_CPU:-0}
CLIENT_CPU=${WSX_BENCH_CLIENT_CPU:-1}
WSX=target/release/wsx
PEER=target/release/wsx-bench-server
IDLE=target/release/wsx-bench-idle
GENERATOR=${WSX_BENCH_GENERATOR:-$WSX}
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=${WSX_BENCH_OUT:-target/wsx-bench/results-$STAMP.jsonl}
DOCS=${WSX_BENCH_DOCS:-docs}
LOGS=target/wsx-bench/logs-$STAMP
# A run that takes this much longer than it should has hung: connecting 1000 clients is slow.
CLK_TCK=$(getconf CLK_TCK)
RUN_TIMEOUT=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 120 }')

say() { printf '%s\n' "$*" >&2; }
die() { say "bench.sh: $*"; exit 1; }

# ---- preparation ----------------------------------------------------------------------------
command -v taskset >/dev/null || die "taskset not found (apt-get install util-linux)"
command -v python3 >/dev/null || die "python3 not found"
[ "$(nproc)" -ge 2 ] || say "warning: fewer than 2 CPUs; server and generator will share one"
if [ "${WSX_BENCH_BUILD:-1}" = 1 ]; then
    cargo build --release --quiet -p wsx-cli -p wsx-bench
fi
for bin in "$WSX" "$PEER" "$IDLE"; do [ -x "$bin" ] || die "$bin is missing; build it first"; done
"$GENERATOR" bench --help >/dev/null 2>&1 || die "$GENERATOR bench --help failed: no load generator"

# 10,000 idle connections need as many descriptors in the server and in the idle client.
want=$((IDLE_CONNS + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$want" ] ||
        say "warning: ulimit -n is $(ulimit -n); the idle-connection test may fail"
fi

mkdir -p "$(dirname "$OUT")" "$LOGS"
: >"$OUT"
# Also measures how busy the machine is, and warns if something else is running.
python3 scripts/bench_report.py machine \
    --setting rounds="$ROUNDS" --setting duration="$DURATION" --setting warmup="$WARMUP" \
    --setting binary="$BINARY" --setting server_cpu="$SERVER_CPU" \
    --setting client_cpu="$CLIENT_CPU" --setting idle_connections="$IDLE_CONNS" >>"$OUT"

# ---- helpers --------------------------------------------------------------------------------
SERVER_PID=
PORT=
CLIENT_PID=
cleanup() {
    if [ -n "$CLIENT_PID" ]; then kill "$CLIENT_PID" 2>/dev/null || true; fi
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wsx_cmd NAME: the command line of a wsx variant (without --listen).
#   wsx          keepalive off, no compression: like for like with the peers, which ping nobody
#   wsx-default  every default of `wsx serve` (keepalive on; deflate offered, the generator
#                does not accept it)
#   wsx-store    like wsx, but each message is received whole before it is echoed (store and
#                forward, as the peers do), for the 1 MiB comparison
wsx_cmd() {
    case $1 in
        wsx) echo "$WSX serve --threads 1 --no-deflate --ping-interval 0 --shutdown-timeout 1" ;;
        wsx-default) echo "$WSX serve --threads 1 --shutdown-timeout 1" ;;
        wsx-store) echo "$WSX serve --threads 1 --no-deflate --ping-interval 0 --shutdown-timeout 1 --stream-threshold 1073741824" ;;
    esac
}

# start_server NAME LOG: a fresh server on a free port, pinned; sets SERVER_PID and PORT.
start_server() {
    PORT=$(free_port)
    local cmd
    case $1 in
        wsx | wsx-default | wsx-store) read -r -a cmd <<<"$(wsx_cmd "$1")"
            cmd+=(--listen "127.0.0.1:$PORT") ;;
        *) cmd=("$PEER" --impl "$1" --listen "127.0.0.1:$PORT") ;;
    esac
    # A simple command, not a compound one, so that no subshell stands in between: taskset
    # execs the server, and $! is the server's own PID (for /proc/PID/status and kill).
    RUST_LOG=warn taskset -c "$SERVER_CPU" "${cmd[@]}" >>"$2" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || { SERVER_PID=; return 1; }
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# User + system CPU of a process in clock ticks (fields 14 and 15 of /proc/PID/stat, counted
# after the parenthesised command name).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# The servers in round R's order: the list rotated left by R.
rotated() {
    local r=$1 n=${#SERVERS[@]} i
    for ((i = 0; i < n; i++)); do printf '%s\n' "${SERVERS[(i + r) % n]}"; done
}

# run_point ROUND SERVER CONNS SIZE: one throughput run, one JSON line.
#
# Besides the generator's report it records the server's CPU time over a window that opens once
# every connection is accepted and closes when the generator exits: with a single-threaded
# generator the generator may be the bottleneck, and then the server's CPU per message is the
# figure that still tells the servers apart.
run_point() {
    local round=$1 server=$2 conns=$3 size=$4 log="$LOGS/$2.log" out="$LOGS/bench.out"
    local json rc=0 fd0 gen t0 c0 t1 c1
    local flags=(-c "$conns" -s "$size" -d "$DURATION" --warmup "$WARMUP" --json)
    if [ "$BINARY" = 1 ]; then flags+=(--binary); fi
    local head="{\"kind\":\"run\",\"round\":$round,\"server\":\"$server\",\"connections\":$conns,\"size\":$size"
    if ! start_server "$server" "$log"; then
        say "  $server: server did not start (see $log)"
        printf '%s,"rc":-1,"bench":null}\n' "$head" >>"$OUT"
        return
    fi
    fd0=$(fd_count "$SERVER_PID")
    taskset -c "$CLIENT_CPU" timeout "$RUN_TIMEOUT" "$GENERATOR" bench "ws://127.0.0.1:$PORT/" \
        "${flags[@]}" >"$out" 2>>"$log" &
    gen=$!
    CLIENT_PID=$gen
    while kill -0 "$gen" 2>/dev/null && [ "$(fd_count "$SERVER_PID")" -lt $((fd0 + conns)) ]; do
        sleep 0.02
    done
    t0=$(date +%s%N)
    c0=$(cpu_ticks "$SERVER_PID")
    wait "$gen" || rc=$?
    CLIENT_PID=
    t1=$(date +%s%N)
    c1=$(cpu_ticks "$SERVER_PID")
    stop_server
    json=$(tail -n 1 "$out")
    case $json in \{*\}) ;; *) json=null ;; esac
    printf '%s,"rc":%d,"server_cpu_secs":%s,"window_secs":%s,"bench":%s}\n' "$head" "$rc" \
        "$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", c / hz }')" \
        "$(awk -v t=$((t1 - t0)) 'BEGIN { printf "%.3f", t / 1e9 }')" "$json" >>"$OUT"
    say "  $(printf '%-16s' "$server") $(printf '%s' "$json" | grep -o '"msgs_per_sec":[0-9.]*' || echo "failed (rc $rc)")" \
        "server CPU $(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v t=$((t1 - t0)) \
            'BEGIN { printf "%.0f%%", (t > 0 ? 100 * c / hz / (t / 1e9) : 0) }')"
}

# run_idle ROUND SERVER: RSS before and after IDLE_CONNS idle upgraded connections.
run_idle() {
    local round=$1 server=$2 log="$LOGS/$2.log" ready="$LOGS/idle.out" before after
    local head="{\"kind\":\"rss\",\"round\":$round,\"server\":\"$server\",\"connections\":$IDLE_CONNS"
    if ! start_server "$server" "$log"; then
        printf '%s,"ok":false,"error":"server did not start"}\n' "$head" >>"$OUT"
        return
    fi
    sleep 0.5
    before=$(rss_kib "$SERVER_PID")
    : >"$ready"
    taskset -c "$CLIENT_CPU" "$IDLE" "127.0.0.1:$PORT" -c "$IDLE_CONNS" --hold 600 \
        >"$ready" 2>>"$log" &
    CLIENT_PID=$!
    local ok=false
    for _ in $(seq 1200); do
        grep -q '^ready' "$ready" && { ok=true; break; }
        kill -0 "$CLIENT_PID" 2>/dev/null || break
        sleep 0.1
    done
    if $ok; then
        sleep 1  # let the last handshakes' buffers settle
        after=$(rss_kib "$SERVER_PID")
        printf '%s,"ok":true,"rss_before_kib":%d,"rss_after_kib":%d}\n' \
            "$head" "$before" "$after" >>"$OUT"
        say "  $(printf '%-16s' "$server") $(((after - before) * 1024 / IDLE_CONNS)) bytes per idle connection"
    else
        printf '%s,"ok":false,"error":"idle connections not established (see %s)"}\n' \
            "$head" "$log" >>"$OUT"
        say "  $server: idle connections failed (see $log)"
    fi
    kill "$CLIENT_PID" 2>/dev/null || true
    wait "$CLIENT_PID" 2>/dev/null || true
    CLIENT_PID=
    stop_server
}

# run_instr SERVER: user-space instructions per message at INSTR_POINT, counted by callgrind in a
# short and a long run (bench_report.py takes the difference, which cancels start-up, handshakes
# and shutdown). Deterministic where the timings above are not.
run_instr() {
    local server=$1 log="$LOGS/$1.log" conns=${INSTR_POINT%x*} size=${INSTR_POINT#*x}
    local runs=() d vg out msgs instr cmd
    for d in $INSTR_SHORT $INSTR_LONG; do
        PORT=$(free_port)
        vg="$LOGS/callgrind-$server-$d.log"
        case $server in
            wsx | wsx-default | wsx-store) read -r -a cmd <<<"$(wsx_cmd "$server")"
                cmd+=(--listen "127.0.0.1:$PORT") ;;
            *) cmd=("$PEER" --impl "$server" --listen "127.0.0.1:$PORT") ;;
        esac
        RUST_LOG=warn taskset -c "$SERVER_CPU" valgrind --tool=callgrind \
            --callgrind-out-file=/dev/null --log-file="$vg" "${cmd[@]}" >>"$log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 300); do
            (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
            sleep 0.1
        done
        out=$(taskset -c "$CLIENT_CPU" timeout "$RUN_TIMEOUT" "$GENERATOR" bench \
            "ws://127.0.0.1:$PORT/" -c "$conns" -s "$size" -d "$d" --warmup 0 --json \
            2>>"$log" | tail -n 1) || true
        # wsx shuts down gracefully on SIGTERM, the peers just end; valgrind reports the count
        # either way. (Not SIGINT: background jobs of a script ignore it.)
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 200); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
        msgs=$(printf '%s' "$out" | grep -o '"messages":[0-9]*' | cut -d: -f2)
        instr=$(grep -o 'Collected : [0-9]*' "$vg" | awk '{ print $3 }') || true
        runs+=("{\"messages\":${msgs:-0},\"instructions\":${instr:-0}}")
    done
    printf '{"kind":"instr","server":"%s","connections":%d,"size":%d,"runs":[%s]}\n' \
        "$server" "$conns" "$size" "$(IFS=,; echo "${runs[*]}")" >>"$OUT"
    say "  $(printf '%-16s' "$server") ${runs[*]}"
}

# ---- the run --------------------------------------------------------------------------------
say "bench: ${#SERVERS[@]} servers × points [$POINTS] × $ROUNDS rounds, ${DURATION}s + ${WARMUP}s each"
say "bench: results in $OUT, server logs in $LOGS"
for ((round = 0; round < ROUNDS; round++)); do
    mapfile -t order < <(rotated "$round")
    say "round $((round + 1))/$ROUNDS: ${order[*]}"
    for point in $POINTS; do
        conns=${point%x*}
        size=${point#*x}
        say " $conns connections × $size bytes"
        for server in "${order[@]}"; do run_point "$((round + 1))" "$server" "$conns" "$size"; done
    done
    if [ "$IDLE_CONNS" -gt 0 ]; then
        say " $IDLE_CONNS idle connections"
        for server in "${order[@]}"; do run_idle "$((round + 1))" "$server"; done
    fi
done

if [ "$INSTR" = 1 ]; then
    say " user-space instructions per message at $INSTR_POINT (callgrind)"
    for server in "${SERVERS[@]}"; do run_instr "$server"; done
fi

python3 scripts/bench_report.py report "$OUT" --md "$DOCS/BENCHMARKS.md" --svg "$DOCS/benchmarks.svg"
