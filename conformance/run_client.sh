#!/usr/bin/env bash
# Autobahn client conformance: kosoku's fuzzingserver serves the cases, the
# wsx example `autobahn_client` drives them, then check.py judges
# conformance/reports/clients/index.json.
#
# The client protocol (Autobahn's): GET /getCaseCount returns N as a text
# message; /runCase?case=I&agent=A for I in 1..=N runs case I (an echo
# session); /updateReports?agent=A ends the run, and kosoku then writes the
# report and exits. Case numbers index the cases selected with -i/-x, so the
# exclusions below apply to the client run too.
#
# Environment:
#   WSX_AUTOBAHN_EXCLUDE   space-separated case globs to skip (default: none, all 517 cases)
#   WSX_AUTOBAHN_INCLUDE   space-separated case globs to serve (default: all)
#   WSX_AUTOBAHN_TIMEOUT   seconds the client may take (default 1200)
#   WSX_AUTOBAHN_CLIENT    command to run instead of the wsx example; the
#                          server URL is appended as its last argument
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
KOSOKU=$ROOT/.venv/bin/kosoku
PYTHON=$ROOT/.venv/bin/python
OUT=$ROOT/conformance/reports/clients
LOG=$ROOT/conformance/reports/kosoku-fuzzingserver.log
EXCLUDE=${WSX_AUTOBAHN_EXCLUDE-}
INCLUDE=${WSX_AUTOBAHN_INCLUDE-}
TIMEOUT=${WSX_AUTOBAHN_TIMEOUT:-1200}

[[ -x $KOSOKU ]] || { echo "run_client.sh: $KOSOKU is missing; run scripts/test.sh" >&2; exit 1; }

if [[ -n ${WSX_AUTOBAHN_CLIENT:-} ]]; then
    read -ra client <<<"$WSX_AUTOBAHN_CLIENT"
else
    # Build first, so compiling does not eat into the client's timeout.
    cargo build --release -p wsx --example autobahn_client
    client=(cargo run --release -q -p wsx --example autobahn_client --)
fi

# A stale report must never pass for a fresh one.
rm -rf "$OUT"
mkdir -p "$OUT"

KOSOKU_PID=
# shellcheck disable=SC2317  # called from the EXIT trap
stop_kosoku() {
    if [[ -n $KOSOKU_PID ]] && kill -0 "$KOSOKU_PID" 2>/dev/null; then
        kill -TERM "$KOSOKU_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$KOSOKU_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$KOSOKU_PID" 2>/dev/null || true
        wait "$KOSOKU_PID" 2>/dev/null || true
    fi
    KOSOKU_PID=
}
trap stop_kosoku EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

args=(-m fuzzingserver -o "$OUT")
read -ra globs <<<"$INCLUDE"   # read splits on spaces without expanding the globs
for glob in "${globs[@]}"; do args+=(-i "$glob"); done
read -ra globs <<<"$EXCLUDE"
for glob in "${globs[@]}"; do args+=(-x "$glob"); done

# Port 0: kosoku binds an ephemeral port and prints
# "fuzzingserver listening on ws://127.0.0.1:PORT" on stderr, so no race.
"$KOSOKU" "${args[@]}" 127.0.0.1:0 >"$LOG" 2>&1 &
KOSOKU_PID=$!
URL=
for _ in $(seq 300); do
    URL=$(sed -n 's/^fuzzingserver listening on \(ws:\/\/[0-9.]*:[0-9]*\)$/\1/p' "$LOG" | head -n 1)
    [[ -n $URL ]] && break
    kill -0 "$KOSOKU_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ -z $URL ]]; then
    echo "run_client.sh: kosoku fuzzingserver did not start; its log:" >&2
    cat "$LOG" >&2 || true
    exit 1
fi

# How many cases the selection holds, for check.py's --min-cases.
COUNT=$("$PYTHON" - "$URL" <<'EOF'
import asyncio, sys
from websockets.asyncio.client import connect

async def main():
    async with connect(sys.argv[1] + "/getCaseCount") as ws:
        print(int(await asyncio.wait_for(ws.recv(), 30)))

asyncio.run(main())
EOF
)
echo "run_client.sh: kosoku ${args[*]} on $URL serves $COUNT cases; client: ${client[*]} $URL"

set +e
timeout "$TIMEOUT" "${client[@]}" "$URL"
client_status=$?
set -e
echo "run_client.sh: client exited with $client_status"

# The client should end the run with /updateReports. If kosoku is still up
# (client crashed, timed out, or forgot), end it ourselves so the report of
# the cases that did run gets written.
for _ in $(seq 100); do
    kill -0 "$KOSOKU_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$KOSOKU_PID" 2>/dev/null; then
    echo "run_client.sh: kosoku still running; requesting /updateReports" >&2
    "$PYTHON" - "$URL" <<'EOF' || true
import asyncio, sys
from websockets.asyncio.client import connect

async def main():
    async with connect(sys.argv[1] + "/updateReports?agent=run_client.sh") as ws:
        try:
            await asyncio.wait_for(ws.recv(), 30)
        except Exception:
            pass

asyncio.run(main())
EOF
fi
kosoku_status=
for _ in $(seq 1200); do
    if ! kill -0 "$KOSOKU_PID" 2>/dev/null; then
        wait "$KOSOKU_PID" && kosoku_status=0 || kosoku_status=$?
        KOSOKU_PID=
        break
    fi
    sleep 0.1
done
if [[ -z $kosoku_status ]]; then
    echo "run_client.sh: kosoku did not exit after /updateReports" >&2
    tail -n 20 "$LOG" >&2 || true
    exit 1
fi
# kosoku exits 1 when a case fails by its own (laxer) rule and still writes
# the report; check.py is the judge.
echo "run_client.sh: kosoku exited with $kosoku_status"
tail -n 20 "$LOG"

check_status=0
"$PYTHON" "$ROOT/conformance/check.py" --min-cases "$COUNT" "$OUT" || check_status=$?
if [[ $client_status -ne 0 ]]; then
    echo "run_client.sh: the client failed (status $client_status)" >&2
    exit 1
fi
exit "$check_status"
