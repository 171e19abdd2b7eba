#!/usr/bin/env bash
# Side-by-side benchmark of wsx and its peers; writes docs/BENCHMARKS.md and docs/benchmarks.svg.
#
# Each server runs alone on one thread pinned to one CPU, the load generator (`wsx bench`) on
# another; every point runs on every server in every round, the server order rotating from round
# to round. Then each server's memory per idle connection is measured. Run it on a quiet machine.
#
# Four stages, each with its own servers: echo (`wsx bench`), pub/sub (`wsx bench --pubsub`,
# uWebSockets' broadcast_test: N connections on one topic, each round every connection
# publishes one message and receives all N) against `wsx serve --pubsub` and pub/sub peers, and
# TLS (wss:// echo msg/s, `wsx bench --handshakes` handshakes/s, RSS per idle wss:// connection)
# for `wsx serve --tls-cert … --tls-key …` and tokio-tungstenite over tokio-rustls, with a
# self-signed certificate made by openssl for the run; and permessage-deflate (scripts/bench_deflate.sh:
# RSS per idle compressed connection and the ratio on small JSON messages, both negotiations).
#
#   scripts/bench.sh                                            # full run (~40 min)
#   WSX_BENCH_ROUNDS=1 WSX_BENCH_DURATION=1 scripts/bench.sh    # smoke run (~3 min)
#   WSX_BENCH_ECHO=0 WSX_BENCH_TLS=0 scripts/bench.sh           # the pub/sub stage alone
#   WSX_BENCH_ECHO=0 WSX_BENCH_PUBSUB=0 scripts/bench.sh        # the TLS stage alone
#
# Settings (environment):
#   WSX_BENCH_ROUNDS       rounds (default 3)
#   WSX_BENCH_DURATION     seconds measured per run (default 5)
#   WSX_BENCH_WARMUP       seconds of warm-up per run (default 1)
#   WSX_BENCH_ECHO         0 skips the echo stage: its points, idle connections and instruction
#                          counts (default 1)
#   WSX_BENCH_POINTS       CONNSxSIZE list (default "100x20 1000x20 10x1024 10x16384 1x1048576";
#                          empty: no echo points)
#   WSX_BENCH_SERVERS      servers (default "wsx wsx-default wsx-store wsx-hyper wsx-axum raw
#                          tungstenite axum fastwebsockets tokio-websockets"; see wsx_cmd for the
#                          `wsx serve` variants; the others, wsx-hyper and wsx-axum (wsx inside
#                          hyper and axum) included, are `wsx-bench-server --impl NAME`)
#   WSX_BENCH_IDLE_CONNS   idle connections for the memory measurement (default 10000; 0 skips)
#   WSX_BENCH_BINARY       1 sends binary messages instead of text (default 0)
#   WSX_BENCH_INSTR        1 counts each server's user-space instructions per message under
#                          valgrind's callgrind (default 1 when valgrind is installed; 0 skips)
#   WSX_BENCH_INSTR_POINT  the point counted (default 100x20)
#   WSX_BENCH_PUBSUB       0 skips the pub/sub stage (default 1)
#   WSX_BENCH_PUBSUB_POINTS  CONNSxSIZE list of the pub/sub stage (default "100x20 1000x20")
#   WSX_BENCH_PUBSUB_SERVERS pub/sub servers (default "wsx-pubsub tungstenite-broadcast
#                          tungstenite-batch node-ws python-websockets": `wsx serve --pubsub
#                          --threads 1`, `wsx-bench-server --impl NAME`, and the scripts in
#                          crates/wsx-bench/peers; a peer whose runtime is missing is skipped)
#   WSX_BENCH_PUBSUB_IDLE  idle subscribers for the memory comparison of `wsx serve --pubsub`
#                          with plain `wsx serve` (default WSX_BENCH_IDLE_CONNS; 0 skips)
#   WSX_BENCH_PUBSUB_INSTR_SERVERS  servers whose instructions per delivery callgrind counts at
#                          WSX_BENCH_PUBSUB_INSTR_POINT (default "wsx-pubsub tungstenite-batch
#                          tungstenite-broadcast", point 100x20; with WSX_BENCH_INSTR)
#   WSX_BENCH_TLS          0 skips the TLS stage (default 1; needs openssl)
#   WSX_BENCH_TLS_SERVERS  TLS servers (default "wsx-tls tungstenite-tls": `wsx serve --threads 1
#                          --tls-cert … --tls-key …` with every other default, and
#                          `wsx-bench-server --impl tungstenite-tls`)
#   WSX_BENCH_TLS_POINTS   CONNSxSIZE list of wss:// echo runs (default "100x20 10x16384")
#   WSX_BENCH_TLS_HANDSHAKERS  concurrent connectors of the handshake runs (default 8; 0 skips
#                          them): each opens a wss:// connection, upgrades, closes, again; one
#                          run with full TLS handshakes (`--no-tls-resumption`), one resuming
#                          sessions (rustls's default client session cache)
#   WSX_BENCH_TLS_IDLE     idle wss:// connections per server for the memory measurement, each
#                          server's plain ws:// counterpart (wsx-default, tungstenite) measured
#                          next to it (default WSX_BENCH_IDLE_CONNS; 0 skips)
#   WSX_BENCH_DEFLATE      0 skips the permessage-deflate stage (default 1): scripts/bench_deflate.sh
#                          with WSX_BENCH_ROUNDS rounds (RSS per idle connection after one
#                          compressed echo, Chromium's and Python's offers, both negotiations;
#                          the ratio on 1,000 small JSON messages), its tables added to the report
#   WSX_BENCH_DEFLATE_IDLE idle connections per cell of that stage (default 2000)
#   WSX_BENCH_ROUND_TIMEOUT  seconds a pub/sub round may take before the run fails (default 60)
#   WSX_BENCH_SYSCALLS     1 counts each pub/sub server's write and read system calls with
#                          `perf stat` tracepoints (default 1 when perf can; 0 skips)
#   WSX_BENCH_PYTHON       the Python with websockets for python-websockets (default: a venv in
#                          target/wsx-bench/venv from crates/wsx-bench/peers/requirements.txt)
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
ECHO=${WSX_BENCH_ECHO:-1}
POINTS=${WSX_BENCH_POINTS-"100x20 1000x20 10x1024 10x16384 1x1048576"}
read -r -a SERVERS <<<"${WSX_BENCH_SERVERS:-wsx wsx-default wsx-store wsx-hyper wsx-axum raw tungstenite axum fastwebsockets tokio-websockets}"
IDLE_CONNS=${WSX_BENCH_IDLE_CONNS:-10000}
BINARY=${WSX_BENCH_BINARY:-0}
if command -v valgrind >/dev/null; then INSTR=${WSX_BENCH_INSTR:-1}; else INSTR=${WSX_BENCH_INSTR:-0}; fi
INSTR_POINT=${WSX_BENCH_INSTR_POINT:-100x20}
PUBSUB=${WSX_BENCH_PUBSUB:-1}
PUBSUB_POINTS=${WSX_BENCH_PUBSUB_POINTS-"100x20 1000x20"}
read -r -a PUBSUB_SERVERS <<<"${WSX_BENCH_PUBSUB_SERVERS:-wsx-pubsub tungstenite-broadcast tungstenite-batch node-ws python-websockets}"
PUBSUB_IDLE=${WSX_BENCH_PUBSUB_IDLE:-$IDLE_CONNS}
read -r -a PUBSUB_INSTR_SERVERS <<<"${WSX_BENCH_PUBSUB_INSTR_SERVERS:-wsx-pubsub tungstenite-batch tungstenite-broadcast}"
PUBSUB_INSTR_POINT=${WSX_BENCH_PUBSUB_INSTR_POINT:-100x20}
ROUND_TIMEOUT=${WSX_BENCH_ROUND_TIMEOUT:-60}
TLS=${WSX_BENCH_TLS:-1}
DEFLATE=${WSX_BENCH_DEFLATE:-1}
DEFLATE_IDLE=${WSX_BENCH_DEFLATE_IDLE:-2000}
read -r -a TLS_SERVERS <<<"${WSX_BENCH_TLS_SERVERS:-wsx-tls tungstenite-tls}"
TLS_POINTS=${WSX_BENCH_TLS_POINTS-"100x20 10x16384"}
TLS_HANDSHAKERS=${WSX_BENCH_TLS_HANDSHAKERS:-8}
TLS_IDLE=${WSX_BENCH_TLS_IDLE:-$IDLE_CONNS}
PEERS_DIR=crates/wsx-bench/peers
PYTHON=${WSX_BENCH_PYTHON:-}
# The system calls counted in pub/sub runs: every way the servers here write or read a socket.
SYSCALL_EVENTS=syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,syscalls:sys_enter_read,syscalls:sys_enter_readv,syscalls:sys_enter_recvfrom,syscalls:sys_enter_recvmsg
if perf stat -e "$SYSCALL_EVENTS" -o /dev/null -- true 2>/dev/null; then
    SYSCALLS=${WSX_BENCH_SYSCALLS:-1}
else
    SYSCALLS=${WSX_BENCH_SYSCALLS:-0}
fi
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
# A pub/sub run also ends at a round's end, at least one round after the warm-up: a server that
# takes many seconds per round (Python at 1,000 connections) needs up to two more.
PUBSUB_RUN_TIMEOUT=$(awk -v t="$RUN_TIMEOUT" -v r="$ROUND_TIMEOUT" 'BEGIN { printf "%d", t + 2 * r }')

say() { printf '%s\n' "$*" >&2; }
die() { say "bench.sh: $*"; exit 1; }

# ---- preparation ----------------------------------------------------------------------------
command -v taskset >/dev/null || die "taskset not found (apt-get install util-linux)"
command -v python3 >/dev/null || die "python3 not found"
if [ "$TLS" = 1 ]; then
    command -v openssl >/dev/null || die "openssl not found (needed by the TLS stage; WSX_BENCH_TLS=0 skips it)"
fi
[ "$(nproc)" -ge 2 ] || say "warning: fewer than 2 CPUs; server and generator will share one"
if [ "${WSX_BENCH_BUILD:-1}" = 1 ]; then
    cargo build --release --quiet -p wsx-cli -p wsx-bench
fi
for bin in "$WSX" "$PEER" "$IDLE"; do [ -x "$bin" ] || die "$bin is missing; build it first"; done
"$GENERATOR" bench --help >/dev/null 2>&1 || die "$GENERATOR bench --help failed: no load generator"
if [ "$PUBSUB" = 1 ]; then
    "$GENERATOR" bench --help 2>/dev/null | grep -q -- --pubsub ||
        die "$GENERATOR bench has no --pubsub: no pub/sub load generator"
fi

# The Node and Python pub/sub peers, installed once: `npm ci` from the lockfile when
# node_modules is missing or older than it, a venv from requirements.txt when the Python found
# lacks the pinned websockets. A peer that cannot be set up is left out, with a warning.
setup_pubsub_peers() {
    local kept=() server pinned
    for server in "${PUBSUB_SERVERS[@]}"; do
        case $server in
            node-ws)
                if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
                    say "warning: node or npm not found; leaving node-ws out"
                    continue
                fi
                if [ ! -f "$PEERS_DIR/node_modules/.package-lock.json" ] ||
                    [ "$PEERS_DIR/package-lock.json" -nt "$PEERS_DIR/node_modules/.package-lock.json" ]; then
                    if ! (cd "$PEERS_DIR" && npm ci --ignore-scripts --no-audit --no-fund \
                        --loglevel=error) >&2; then
                        say "warning: npm ci failed in $PEERS_DIR; leaving node-ws out"
                        continue
                    fi
                fi
                ;;
            python-websockets)
                pinned=$(sed -n 's/^websockets==//p' "$PEERS_DIR/requirements.txt")
                if [ -z "$PYTHON" ]; then
                    PYTHON=target/wsx-bench/venv/bin/python
                    if ! "$PYTHON" -c "import sys, websockets; sys.exit(websockets.__version__ != '$pinned')" 2>/dev/null; then
                        say "bench: installing websockets $pinned into target/wsx-bench/venv"
                        python3 -m venv target/wsx-bench/venv >&2 &&
                            "$PYTHON" -m pip install --quiet --disable-pip-version-check \
                                -r "$PEERS_DIR/requirements.txt" >&2 || true
                    fi
                fi
                if ! "$PYTHON" -c "import websockets.asyncio.server" 2>/dev/null; then
                    say "warning: $PYTHON cannot import websockets.asyncio.server; leaving python-websockets out"
                    continue
                fi
                "$PYTHON" -c "import websockets; v = websockets.__version__; v == '$pinned' or print(f'warning: websockets {v}, not the pinned $pinned')" >&2
                ;;
        esac
        kept+=("$server")
    done
    PUBSUB_SERVERS=("${kept[@]}")
}
if [ "$PUBSUB" = 1 ]; then setup_pubsub_peers; fi

# 10,000 idle connections need as many descriptors in the server and in the idle client.
want=$((IDLE_CONNS + 1024))
if [ "$TLS" = 1 ] && [ "$TLS_IDLE" -gt "$IDLE_CONNS" ]; then want=$((TLS_IDLE + 1024)); fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$want" ] ||
        say "warning: ulimit -n is $(ulimit -n); the idle-connection test may fail"
fi

mkdir -p "$(dirname "$OUT")" "$LOGS"
: >"$OUT"
# The TLS stage's certificate: self-signed, P-256, for 127.0.0.1 (the servers bind only there),
# an end-entity certificate (CA:FALSE) that the clients trust as their only root.
TLS_CERT=$LOGS/tls-cert.pem
TLS_KEY=$LOGS/tls-key.pem
if [ "$TLS" = 1 ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$TLS_KEY" -out "$TLS_CERT" -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -addext basicConstraints=critical,CA:FALSE 2>>"$LOGS/openssl.log" ||
        die "openssl could not make the TLS stage's certificate (see $LOGS/openssl.log)"
fi
# Also measures how busy the machine is, and warns if something else is running.
python3 scripts/bench_report.py machine \
    --setting rounds="$ROUNDS" --setting duration="$DURATION" --setting warmup="$WARMUP" \
    --setting binary="$BINARY" --setting server_cpu="$SERVER_CPU" \
    --setting client_cpu="$CLIENT_CPU" --setting idle_connections="$IDLE_CONNS" \
    --setting pubsub_idle_connections="$PUBSUB_IDLE" --setting round_timeout="$ROUND_TIMEOUT" \
    --setting tls_idle_connections="$TLS_IDLE" --setting tls_handshakers="$TLS_HANDSHAKERS" \
    --setting node="$(node --version 2>/dev/null || echo none)" \
    --setting python="$("${PYTHON:-python3}" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo none)" \
    --setting websockets="$("${PYTHON:-python3}" -c 'import websockets; print(websockets.__version__)' 2>/dev/null || echo none)" \
    --setting ws="$(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$PEERS_DIR/node_modules/ws/package.json" 2>/dev/null | head -n 1)" >>"$OUT"

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
#   wsx-pubsub   `wsx serve --pubsub` with every other default: a connection to /P subscribes
#                to topic P and publishes there, the sender included (broadcast_test)
#   wsx-tls      wsx-default over TLS (`--tls-cert`, `--tls-key`: wss://, ALPN h2 and http/1.1)
wsx_cmd() {
    case $1 in
        wsx-tls) echo "$WSX serve --threads 1 --shutdown-timeout 1 --tls-cert $TLS_CERT --tls-key $TLS_KEY" ;;
        wsx-pubsub) echo "$WSX serve --pubsub --threads 1 --shutdown-timeout 1" ;;
        wsx) echo "$WSX serve --threads 1 --no-deflate --ping-interval 0 --shutdown-timeout 1" ;;
        wsx-default) echo "$WSX serve --threads 1 --shutdown-timeout 1" ;;
        wsx-store) echo "$WSX serve --threads 1 --no-deflate --ping-interval 0 --shutdown-timeout 1 --stream-threshold 1073741824" ;;
    esac
}

# server_cmd NAME PORT: sets CMD to the command line of server NAME listening on PORT.
server_cmd() {
    case $1 in
        wsx | wsx-default | wsx-store | wsx-pubsub | wsx-tls) read -r -a CMD <<<"$(wsx_cmd "$1")"
            CMD+=(--listen "127.0.0.1:$2") ;;
        tungstenite-tls) CMD=("$PEER" --impl "$1" --listen "127.0.0.1:$2" --tls-cert "$TLS_CERT"
            --tls-key "$TLS_KEY") ;;
        node-ws) CMD=(node "$PEERS_DIR/ws_broadcast.mjs" --listen "127.0.0.1:$2") ;;
        python-websockets) CMD=("$PYTHON" "$PEERS_DIR/python_broadcast.py" --listen "127.0.0.1:$2") ;;
        *) CMD=("$PEER" --impl "$1" --listen "127.0.0.1:$2") ;;
    esac
}

# is_tls NAME: whether server NAME speaks wss:// (then its clients trust TLS_CERT).
is_tls() { case $1 in *-tls) return 0 ;; *) return 1 ;; esac; }

# target NAME PORT: sets URL to what the generator connects to for server NAME on PORT, and
# GEN_TLS to the generator's flags for it (`--cacert` for a TLS server, else none).
target() {
    if is_tls "$1"; then
        URL="wss://127.0.0.1:$2/"
        GEN_TLS=(--cacert "$TLS_CERT")
    else
        URL="ws://127.0.0.1:$2/"
        GEN_TLS=()
    fi
}

# start_server NAME LOG: a fresh server on a free port, pinned; sets SERVER_PID and PORT.
start_server() {
    PORT=$(free_port)
    local cmd
    server_cmd "$1" "$PORT"
    cmd=("${CMD[@]}")
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
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
# User + system CPU of a process in clock ticks (fields 14 and 15 of /proc/PID/stat, counted
# after the parenthesised command name).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# The servers in round R's order: the list rotated left by R.
rotated() {
    local r=$1 n=${#SERVERS[@]} i
    for ((i = 0; i < n; i++)); do printf '%s\n' "${SERVERS[(i + r) % n]}"; done
}

# measure_run HEAD OUT LABEL FIELD: from now until the generator (CLIENT_PID) exits, the
# server's CPU time and the wall time; then stops the server, appends the run's JSON line (HEAD,
# the generator's exit status, both times, and its last line of OUT) and says FIELD of it.
measure_run() {
    local head=$1 out=$2 label=$3 field=$4 rc=0 t0 c0 t1 c1 json
    t0=$(date +%s%N)
    c0=$(cpu_ticks "$SERVER_PID")
    wait "$CLIENT_PID" || rc=$?
    CLIENT_PID=
    t1=$(date +%s%N)
    c1=$(cpu_ticks "$SERVER_PID")
    stop_server
    json=$(tail -n 1 "$out")
    case $json in \{*\}) ;; *) json=null ;; esac
    printf '%s,"rc":%d,"server_cpu_secs":%s,"window_secs":%s,"bench":%s}\n' "$head" "$rc" \
        "$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", c / hz }')" \
        "$(awk -v t=$((t1 - t0)) 'BEGIN { printf "%.3f", t / 1e9 }')" "$json" >>"$OUT"
    say "  $(printf '%-16s' "$label") $(printf '%s' "$json" | grep -o "\"$field\":[0-9.]*" || echo "failed (rc $rc)")" \
        "server CPU $(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v t=$((t1 - t0)) \
            'BEGIN { printf "%.0f%%", (t > 0 ? 100 * c / hz / (t / 1e9) : 0) }')"
}

# run_point ROUND SERVER CONNS SIZE [KIND]: one throughput run, one JSON line of KIND (default
# run; tls_run in the TLS stage).
#
# Besides the generator's report it records the server's CPU time over a window that opens once
# every connection is accepted and closes when the generator exits: with a single-threaded
# generator the generator may be the bottleneck, and then the server's CPU per message is the
# figure that still tells the servers apart.
run_point() {
    local round=$1 server=$2 conns=$3 size=$4 kind=${5:-run} log="$LOGS/$2.log" out="$LOGS/bench.out"
    local fd0 gen
    local flags=(-c "$conns" -s "$size" -d "$DURATION" --warmup "$WARMUP" --json)
    if [ "$BINARY" = 1 ]; then flags+=(--binary); fi
    local head="{\"kind\":\"$kind\",\"round\":$round,\"server\":\"$server\",\"connections\":$conns,\"size\":$size"
    if ! start_server "$server" "$log"; then
        say "  $server: server did not start (see $log)"
        printf '%s,"rc":-1,"bench":null}\n' "$head" >>"$OUT"
        return
    fi
    fd0=$(fd_count "$SERVER_PID")
    target "$server" "$PORT"
    taskset -c "$CLIENT_CPU" timeout "$RUN_TIMEOUT" "$GENERATOR" bench "$URL" \
        "${flags[@]}" "${GEN_TLS[@]}" >"$out" 2>>"$log" &
    gen=$!
    CLIENT_PID=$gen
    while kill -0 "$gen" 2>/dev/null && [ "$(fd_count "$SERVER_PID")" -lt $((fd0 + conns)) ]; do
        sleep 0.02
    done
    measure_run "$head" "$out" "$server" msgs_per_sec
}

# run_idle ROUND SERVER [KIND PATH COUNT]: RSS before and after COUNT (default IDLE_CONNS) idle
# upgraded connections to PATH (default /), recorded as KIND (default rss).
run_idle() {
    local round=$1 server=$2 kind=${3:-rss} path=${4:-/} count=${5:-$IDLE_CONNS}
    local log="$LOGS/$2.log" ready="$LOGS/idle.out" before after tls=()
    if is_tls "$server"; then tls=(--cacert "$TLS_CERT"); fi
    local head="{\"kind\":\"$kind\",\"round\":$round,\"server\":\"$server\",\"connections\":$count,\"path\":\"$path\""
    if ! start_server "$server" "$log"; then
        printf '%s,"ok":false,"error":"server did not start"}\n' "$head" >>"$OUT"
        return
    fi
    sleep 0.5
    before=$(rss_kib "$SERVER_PID")
    : >"$ready"
    taskset -c "$CLIENT_CPU" "$IDLE" "127.0.0.1:$PORT" -c "$count" --path "$path" --hold 600 \
        "${tls[@]}" >"$ready" 2>>"$log" &
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
        say "  $(printf '%-16s' "$server") $(((after - before) * 1024 / count)) bytes per idle connection to $path"
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

# run_handshakes ROUND SERVER TLS: one `wsx bench --handshakes` run with TLS_HANDSHAKERS
# connectors (TCP connect, TLS handshake, upgrade, close handshake, again), one JSON line; TLS
# full: every TLS handshake a full one, resumed: the client resumes sessions. The server's CPU
# time is taken over the measured part (after the warm-up) until the generator exits.
run_handshakes() {
    local round=$1 server=$2 tls=$3 log="$LOGS/$2.log" out="$LOGS/bench.out"
    local gen flags=()
    if [ "$tls" = full ]; then flags=(--no-tls-resumption); fi
    local head="{\"kind\":\"tls_handshakes\",\"round\":$round,\"server\":\"$server\",\"tls\":\"$tls\",\"connections\":$TLS_HANDSHAKERS"
    if ! start_server "$server" "$log"; then
        say "  $server: server did not start (see $log)"
        printf '%s,"rc":-1,"bench":null}\n' "$head" >>"$OUT"
        return
    fi
    target "$server" "$PORT"
    taskset -c "$CLIENT_CPU" timeout "$RUN_TIMEOUT" "$GENERATOR" bench --handshakes "$URL" \
        -c "$TLS_HANDSHAKERS" -d "$DURATION" --warmup "$WARMUP" --json "${GEN_TLS[@]}" "${flags[@]}" \
        >"$out" 2>>"$log" &
    gen=$!
    CLIENT_PID=$gen
    sleep "$WARMUP"
    measure_run "$head" "$out" "$server $tls" handshakes_per_sec
}

# plain_of NAME: the ws:// server a TLS server is compared with for idle memory.
plain_of() {
    case $1 in
        wsx-tls) echo wsx-default ;;
        tungstenite-tls) echo tungstenite ;;
    esac
}

# run_instr SERVER [MODE POINT]: user-space instructions per message (echoed, or delivered with
# MODE pubsub) at POINT (default INSTR_POINT), counted by callgrind in a short and a long run
# (bench_report.py takes the difference, which cancels start-up, handshakes and shutdown).
# Deterministic where the timings above are not.
run_instr() {
    local server=$1 mode=${2:-echo} point=${3:-$INSTR_POINT} log="$LOGS/$1.log"
    local conns=${point%x*} size=${point#*x} kind=instr extra=()
    local runs=() d vg out msgs instr cmd
    if [ "$mode" = pubsub ]; then
        kind=pubsub_instr
        extra=(--pubsub --round-timeout "$ROUND_TIMEOUT")
    fi
    for d in $INSTR_SHORT $INSTR_LONG; do
        PORT=$(free_port)
        vg="$LOGS/callgrind-$server-$d.log"
        server_cmd "$server" "$PORT"
        cmd=("${CMD[@]}")
        RUST_LOG=warn taskset -c "$SERVER_CPU" valgrind --tool=callgrind \
            --callgrind-out-file=/dev/null --log-file="$vg" "${cmd[@]}" >>"$log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 300); do
            (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
            sleep 0.1
        done
        out=$(taskset -c "$CLIENT_CPU" timeout "$RUN_TIMEOUT" "$GENERATOR" bench \
            "ws://127.0.0.1:$PORT/" -c "$conns" -s "$size" -d "$d" --warmup 0 --json \
            "${extra[@]}" 2>>"$log" | tail -n 1) || true
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
    printf '{"kind":"%s","server":"%s","connections":%d,"size":%d,"runs":[%s]}\n' \
        "$kind" "$server" "$conns" "$size" "$(IFS=,; echo "${runs[*]}")" >>"$OUT"
    say "  $(printf '%-16s' "$server") ${runs[*]}"
}

# syscall_json FILE: perf stat's CSV counts as {"write":N,...}, or null.
syscall_json() {
    # "<not counted>": the tracepoint never fired while the process ran.
    awk -F, '$3 ~ /^syscalls:sys_enter_/ {
        name = $3; sub(/^syscalls:sys_enter_/, "", name)
        out = out (out == "" ? "" : ",") "\"" name "\":" ($1 ~ /^[0-9]+$/ ? $1 : 0)
    } END { print (out == "" ? "null" : "{" out "}") }' "$1" 2>/dev/null || echo null
}

# run_pubsub ROUND SERVER CONNS SIZE: one broadcast_test run, one JSON line.
#
# Like run_point, with the server's CPU time over the window from all connections accepted to
# the generator's exit; also the server's peak RSS (VmHWM) before the generator connects and
# after the run, and, with SYSCALLS, its system calls over the same window.
run_pubsub() {
    local round=$1 server=$2 conns=$3 size=$4 log="$LOGS/$2.log" out="$LOGS/bench.out"
    local json rc=0 fd0 gen t0 c0 t1 c1 hwm0 hwm1 perf_pid= sys=null
    local stat="$LOGS/perf-stat.out"
    local head="{\"kind\":\"pubsub_run\",\"round\":$round,\"server\":\"$server\",\"connections\":$conns,\"size\":$size"
    if ! start_server "$server" "$log"; then
        say "  $server: server did not start (see $log)"
        printf '%s,"rc":-1,"bench":null}\n' "$head" >>"$OUT"
        return
    fi
    sleep 0.3  # an interpreter's start-up settles
    hwm0=$(hwm_kib "$SERVER_PID")
    fd0=$(fd_count "$SERVER_PID")
    taskset -c "$CLIENT_CPU" timeout "$PUBSUB_RUN_TIMEOUT" "$GENERATOR" bench --pubsub \
        "ws://127.0.0.1:$PORT/" -c "$conns" -s "$size" -d "$DURATION" --warmup "$WARMUP" \
        --round-timeout "$ROUND_TIMEOUT" --json >"$out" 2>>"$log" &
    gen=$!
    CLIENT_PID=$gen
    while kill -0 "$gen" 2>/dev/null && [ "$(fd_count "$SERVER_PID")" -lt $((fd0 + conns)) ]; do
        sleep 0.02
    done
    t0=$(date +%s%N)
    c0=$(cpu_ticks "$SERVER_PID")
    if [ "$SYSCALLS" = 1 ]; then
        perf stat -x, -e "$SYSCALL_EVENTS" -p "$SERVER_PID" -o "$stat" 2>>"$log" &
        perf_pid=$!
    fi
    wait "$gen" || rc=$?
    CLIENT_PID=
    t1=$(date +%s%N)
    c1=$(cpu_ticks "$SERVER_PID")
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        sys=$(syscall_json "$stat")
    fi
    hwm1=$(hwm_kib "$SERVER_PID")
    stop_server
    json=$(tail -n 1 "$out")
    case $json in \{*\}) ;; *) json=null ;; esac
    printf '%s,"rc":%d,"server_cpu_secs":%s,"window_secs":%s,"hwm_before_kib":%d,"hwm_after_kib":%d,"syscalls":%s,"bench":%s}\n' \
        "$head" "$rc" \
        "$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", c / hz }')" \
        "$(awk -v t=$((t1 - t0)) 'BEGIN { printf "%.3f", t / 1e9 }')" "$hwm0" "$hwm1" "$sys" \
        "$json" >>"$OUT"
    say "  $(printf '%-22s' "$server") $(printf '%s' "$json" | grep -o '"deliveries_per_sec":[0-9.]*' || echo "failed (rc $rc)")" \
        "server CPU $(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v t=$((t1 - t0)) \
            'BEGIN { printf "%.0f%%", (t > 0 ? 100 * c / hz / (t / 1e9) : 0) }')" \
        "generator $(printf '%s' "$json" | grep -o '"generator_cpu":[0-9.]*' | cut -d: -f2 || true)" \
        "peak +$(((hwm1 - hwm0) * 1024 / conns)) B/conn"
}

# The servers of list NAME in round R's order: rotated left by R.
rotated_list() {
    local r=$1 i
    shift
    local list=("$@") n=$#
    for ((i = 0; i < n; i++)); do printf '%s\n' "${list[(i + r) % n]}"; done
}

# ---- the run --------------------------------------------------------------------------------
if [ "$ECHO" = 1 ]; then
    say "bench: ${#SERVERS[@]} servers × points [$POINTS] × $ROUNDS rounds, ${DURATION}s + ${WARMUP}s each"
fi
if [ "$PUBSUB" = 1 ]; then
    say "bench: pub/sub ${PUBSUB_SERVERS[*]} × points [$PUBSUB_POINTS] × $ROUNDS rounds"
fi
if [ "$TLS" = 1 ]; then
    say "bench: TLS ${TLS_SERVERS[*]} × points [$TLS_POINTS], handshakes, idle × $ROUNDS rounds"
fi
say "bench: results in $OUT, server logs in $LOGS"
for ((round = 0; round < ROUNDS; round++)); do
    if [ "$ECHO" = 1 ]; then
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
    fi
    if [ "$PUBSUB" = 1 ] && [ ${#PUBSUB_SERVERS[@]} -gt 0 ]; then
        mapfile -t order < <(rotated_list "$round" "${PUBSUB_SERVERS[@]}")
        say "round $((round + 1))/$ROUNDS, pub/sub: ${order[*]}"
        for point in $PUBSUB_POINTS; do
            conns=${point%x*}
            size=${point#*x}
            say " broadcast_test: $conns connections × $size bytes"
            for server in "${order[@]}"; do
                run_pubsub "$((round + 1))" "$server" "$conns" "$size"
            done
        done
        if [ "$PUBSUB_IDLE" -gt 0 ]; then
            # The same path for both: plain `wsx serve` echoes at any path.
            say " $PUBSUB_IDLE idle subscribers of /idle, against as many plain idle connections"
            mapfile -t order < <(rotated_list "$round" wsx-pubsub wsx-default)
            for server in "${order[@]}"; do
                run_idle "$((round + 1))" "$server" pubsub_rss /idle "$PUBSUB_IDLE"
            done
        fi
    fi
    if [ "$TLS" = 1 ] && [ ${#TLS_SERVERS[@]} -gt 0 ]; then
        mapfile -t order < <(rotated_list "$round" "${TLS_SERVERS[@]}")
        say "round $((round + 1))/$ROUNDS, TLS: ${order[*]}"
        for point in $TLS_POINTS; do
            conns=${point%x*}
            size=${point#*x}
            say " wss:// echo: $conns connections × $size bytes"
            for server in "${order[@]}"; do
                run_point "$((round + 1))" "$server" "$conns" "$size" tls_run
            done
        done
        if [ "$TLS_HANDSHAKERS" -gt 0 ]; then
            say " wss:// handshakes, $TLS_HANDSHAKERS connectors"
            for tls in full resumed; do
                for server in "${order[@]}"; do run_handshakes "$((round + 1))" "$server" "$tls"; done
            done
        fi
        if [ "$TLS_IDLE" -gt 0 ]; then
            say " $TLS_IDLE idle wss:// connections, and as many ws:// to the plain counterpart"
            for server in "${order[@]}"; do
                run_idle "$((round + 1))" "$server" tls_rss / "$TLS_IDLE"
                plain=$(plain_of "$server")
                if [ -n "$plain" ]; then run_idle "$((round + 1))" "$plain" tls_rss / "$TLS_IDLE"; fi
            done
        fi
    fi
done

if [ "$INSTR" = 1 ] && [ "$ECHO" = 1 ]; then
    say " user-space instructions per message at $INSTR_POINT (callgrind)"
    for server in "${SERVERS[@]}"; do run_instr "$server"; done
fi
if [ "$INSTR" = 1 ] && [ "$PUBSUB" = 1 ]; then
    say " user-space instructions per delivery at $PUBSUB_INSTR_POINT (callgrind)"
    for server in "${PUBSUB_INSTR_SERVERS[@]}"; do run_instr "$server" pubsub "$PUBSUB_INSTR_POINT"; done
fi

DEFLATE_MD=
if [ "$DEFLATE" = 1 ]; then
    say "permessage-deflate: $DEFLATE_IDLE idle connections per cell, $ROUNDS rounds (scripts/bench_deflate.sh)"
    DEFLATE_MD="$LOGS/deflate.md"
    WSX_DEFLATE_IDLE=$DEFLATE_IDLE WSX_DEFLATE_ROUNDS=$ROUNDS bash scripts/bench_deflate.sh \
        >"$DEFLATE_MD" 2>>"$LOGS/deflate.log" || die "the deflate stage failed (see $LOGS/deflate.log)"
fi

python3 scripts/bench_report.py report "$OUT" --md "$DOCS/BENCHMARKS.md" --svg "$DOCS/benchmarks.svg"
if [ -n "$DEFLATE_MD" ]; then
    # Its tables go in before the report's closing "Reproduce" section.
    python3 - "$DOCS/BENCHMARKS.md" "$DEFLATE_MD" "$DEFLATE_IDLE" "$ROUNDS" <<'PY'
import sys
md_path, tables_path, idle, rounds = sys.argv[1:]
md = open(md_path).read()
section = (
    "## permessage-deflate: memory per idle connection and ratio\n\n"
    f"`scripts/bench_deflate.sh`, {rounds} round(s), cells interleaved: `wsx serve --threads 1` "
    f"with {idle} idle connections per cell, each after one compressed echo, and the ratio of "
    "1,000 small JSON messages on one connection, in the default negotiation (no context "
    "takeover either way) and with `--deflate-context-takeover`.\n"
    + open(tables_path).read().rstrip() + "\n\n"
)
at = md.find("## Reproduce")
md = md[:at] + section + md[at:] if at >= 0 else md + "\n" + section
open(md_path, "w").write(md)
PY
fi
