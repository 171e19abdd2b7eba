#!/usr/bin/env bash
# Autobahn server conformance: kosoku's fuzzingclient drives `wsx serve` (or the
# axum_echo example), then check.py judges conformance/reports/servers/index.json
# (servers-axum/ for the example).
#
# Expects target/release/wsx to be built (scripts/test.sh builds it) and
# .venv/bin/kosoku to be installed (scripts/test.sh installs it).
#
# Environment:
#   WSX_AUTOBAHN_TESTEE       the server under test: `serve` (default, target/release/wsx
#                             serve) or `axum_echo` (target/release/examples/axum_echo, built
#                             with `cargo build --release -p wsx --features axum --example
#                             axum_echo`)
#   WSX_AUTOBAHN_EXCLUDE      space-separated case globs to skip (default: none; all 517
#                             cases run, permessage-deflate groups 12 and 13 included)
#   WSX_AUTOBAHN_INCLUDE      space-separated case globs to run (default: all)
#   WSX_AUTOBAHN_PARALLELISM  cases run in parallel (default 2)
#   WSX_AUTOBAHN_TIMEOUT      seconds before the kosoku run is abandoned (default 1200)
#   WSX_AUTOBAHN_JUDGE_ONLY   a report directory to judge as this script judges its own,
#                             without running anything (conformance/test_check.py uses it)
#
# The report must hold every case of the selection: the count comes from kosoku
# (conformance/case_count.py), so a run cut short fails however well its cases went,
# as in run_client.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
KOSOKU=$ROOT/.venv/bin/kosoku
PYTHON=$ROOT/.venv/bin/python
TESTEE=${WSX_AUTOBAHN_TESTEE:-serve}
case $TESTEE in
    serve)
        WSX=$ROOT/target/release/wsx
        OUT=$ROOT/conformance/reports/servers
        LOG=$ROOT/conformance/reports/wsx-serve.log
        ;;
    axum_echo)
        WSX=$ROOT/target/release/examples/axum_echo
        OUT=$ROOT/conformance/reports/servers-axum
        LOG=$ROOT/conformance/reports/axum-echo.log
        ;;
    *)
        echo "run_server.sh: WSX_AUTOBAHN_TESTEE=$TESTEE is neither serve nor axum_echo" >&2
        exit 1
        ;;
esac
# The server's command line, listening on $1.
start_testee() {
    case $TESTEE in
        serve) "$WSX" serve --listen "$1" ;;
        axum_echo) "$WSX" "$1" ;;
    esac
}
EXCLUDE=${WSX_AUTOBAHN_EXCLUDE-}
INCLUDE=${WSX_AUTOBAHN_INCLUDE-}
PARALLELISM=${WSX_AUTOBAHN_PARALLELISM:-2}
TIMEOUT=${WSX_AUTOBAHN_TIMEOUT:-1200}

[[ -x $KOSOKU ]] || { echo "run_server.sh: $KOSOKU is missing; run scripts/test.sh" >&2; exit 1; }

select=()
read -ra globs <<<"$INCLUDE"   # read splits on spaces without expanding the globs
for glob in "${globs[@]}"; do select+=(-i "$glob"); done
read -ra globs <<<"$EXCLUDE"
for glob in "${globs[@]}"; do select+=(-x "$glob"); done

# How many cases the selection holds, for check.py's --min-cases.
COUNT=$("$PYTHON" "$ROOT/conformance/case_count.py" "${select[@]}")

if [[ -n ${WSX_AUTOBAHN_JUDGE_ONLY:-} ]]; then
    exec "$PYTHON" "$ROOT/conformance/check.py" --min-cases "$COUNT" "$WSX_AUTOBAHN_JUDGE_ONLY"
fi

# The judge itself first (a second): a check.py that passed a short report would make
# this whole run meaningless.
"$PYTHON" -m unittest -q "$ROOT/conformance/test_check.py"

[[ -x $WSX ]] || { echo "run_server.sh: $WSX is missing; run cargo build --release (see WSX_AUTOBAHN_TESTEE)" >&2; exit 1; }

# A stale report must never pass for a fresh one.
rm -rf "$OUT"
mkdir -p "$OUT"

SERVER_PID=
stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Start the server on a free port; retry if another process grabbed the port
# between our probe and the server's bind.
PORT=
for attempt in 1 2 3; do
    PORT=$(free_port)
    start_testee "127.0.0.1:$PORT" >"$LOG" 2>&1 &
    SERVER_PID=$!
    up=
    for _ in $(seq 100); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            break
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            up=1
            break
        fi
        sleep 0.1
    done
    if [[ -n $up ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        break
    fi
    echo "run_server.sh: $TESTEE did not come up on port $PORT (attempt $attempt); its log:" >&2
    tail -n 20 "$LOG" >&2 || true
    stop_server
    PORT=
done
[[ -n $PORT ]] || { echo "run_server.sh: could not start $TESTEE" >&2; exit 1; }

args=(-m fuzzingclient -p "$PARALLELISM" -o "$OUT" "${select[@]}")
echo "run_server.sh: $TESTEE on 127.0.0.1:$PORT (pid $SERVER_PID); kosoku ${args[*]} ($COUNT cases)"

# kosoku exits 1 when a case fails by its own (laxer) rule and still writes the
# report; check.py below is the judge, so its status is what counts. Any other
# kosoku failure leaves no index.json, which check.py rejects.
set +e
timeout "$TIMEOUT" "$KOSOKU" "${args[@]}" "127.0.0.1:$PORT"
kosoku_status=$?
set -e
echo "run_server.sh: kosoku exited with $kosoku_status"
if [[ $kosoku_status -eq 124 ]]; then
    echo "run_server.sh: kosoku timed out after ${TIMEOUT}s" >&2
    exit 1
fi

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    wait "$SERVER_PID" && status=0 || status=$?
    SERVER_PID=
    echo "run_server.sh: $TESTEE died during the run (status $status); its log:" >&2
    tail -n 50 "$LOG" >&2 || true
    exit 1
fi
stop_server

"$PYTHON" "$ROOT/conformance/check.py" --min-cases "$COUNT" "$OUT"
