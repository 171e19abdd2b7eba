#!/usr/bin/env bash
# The one test command (CI runs it through .ci/run). It installs what it
# needs, idempotently, then runs every check; any failure fails the script.
#
#   1. tools: .venv with kosoku + websockets; tinyproxy, microsocks, curl, redis-server and nats-server (apt);
#      chromium and browser/node_modules when browser/ has tests
#   2. cargo fmt --check, clippy -D warnings, build --release, test --release
#   3. Autobahn server conformance, all 517 cases, against `wsx serve` and the axum_echo
#      example (conformance/run_server.sh)
#   4. Autobahn client conformance, all 517 cases (conformance/run_client.sh)
#   5. a short fuzzing pass (scripts/fuzz.sh) and a 2 s `wsx bench` smoke run
#   6. browser tests (browser/, node --test through npm test)
#
# Environment: WSX_AUTOBAHN_* (see conformance/run_*.sh) are passed through;
# WSX_CARGO_TEST_TIMEOUT and WSX_BROWSER_TIMEOUT bound `cargo test` and the
# browser tests (seconds, default 1800 and 900); WSX_FUZZ_SECONDS is the time per
# fuzz target (default 15).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# Pinned so a new release cannot change conformance verdicts under us.
KOSOKU_VERSION=0.1.0
WEBSOCKETS_VERSION=17.4

export PATH="$HOME/.cargo/bin:$PATH"
export WSX_PYTHON=$ROOT/.venv/bin/python
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export DEBIAN_FRONTEND=noninteractive
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

SUDO=
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi

RESULTS=()
CURRENT=
START=$SECONDS

summary() {
    local status=$?
    set +e
    local passed=0 failed=0
    echo
    echo "==================== scripts/test.sh summary ===================="
    local line
    for line in "${RESULTS[@]}"; do
        echo "  $line"
        [[ $line == ok* ]] && passed=$((passed + 1))
    done
    if [[ $status -ne 0 ]]; then
        failed=1
        echo "  FAILED  ${CURRENT:-setup} (exit status $status)"
    fi
    echo "  total time: $((SECONDS - START))s"
    echo "steps: $passed passed, $failed failed"
    exit "$status"
}
trap summary EXIT

# step NAME COMMAND...: runs COMMAND; under set -e a failure ends the script
# and summary() reports NAME as the failed step.
step() {
    local name=$1
    shift
    CURRENT=$name
    echo
    echo "==> $name: $*"
    local t0=$SECONDS
    "$@"
    RESULTS+=("ok      $name ($((SECONDS - t0))s)")
    CURRENT=
}

skip() {
    echo
    echo "==> $1: skipped ($2)"
    RESULTS+=("skipped $1 ($2)")
}

# --- 1. tools -------------------------------------------------------------

ensure_python_tools() {
    # --clear also repairs a .venv whose interpreter has gone away.
    if ! .venv/bin/python -c '' 2>/dev/null; then
        python3 -m venv --clear .venv
    fi
    if [[ -x .venv/bin/kosoku ]] && .venv/bin/python - "$KOSOKU_VERSION" "$WEBSOCKETS_VERSION" <<'EOF'
import sys
from importlib.metadata import version
import kosoku, websockets  # noqa: F401  (both must import)
sys.exit(not (version("kosoku") == sys.argv[1] and version("websockets") == sys.argv[2]))
EOF
    then
        echo "kosoku $KOSOKU_VERSION and websockets $WEBSOCKETS_VERSION already in .venv"
    else
        .venv/bin/python -m pip install --disable-pip-version-check -q \
            "kosoku==$KOSOKU_VERSION" "websockets==$WEBSOCKETS_VERSION"
    fi
}

ensure_browser_tools() {
    if [[ ! -x /usr/bin/chromium ]]; then
        $SUDO apt-get update
        $SUDO apt-get install -y chromium
    else
        echo "chromium already installed"
    fi
    # browser/http2.test.mjs makes its test CA with openssl.
    if ! command -v openssl >/dev/null; then
        $SUDO apt-get update
        $SUDO apt-get install -y openssl
    fi
    # Install when node_modules is missing or older than the lockfile.
    if [[ ! -d browser/node_modules ]] ||
        { [[ -f browser/package-lock.json ]] &&
            [[ browser/package-lock.json -nt browser/node_modules/.package-lock.json ]]; }; then
        if [[ -f browser/package-lock.json ]]; then
            (cd browser && npm ci --no-audit --no-fund)
        else
            (cd browser && npm install --no-audit --no-fund)
        fi
    else
        echo "browser/node_modules up to date"
    fi
}

# The real proxies of the client's proxy tests (crates/wsx/tests/proxy.rs,
# crates/wsx-cli/tests/proxy.rs); they fail without them when CI is set.
ensure_proxy_tools() {
    local missing=()
    [[ -x /usr/bin/tinyproxy ]] || missing+=(tinyproxy)
    [[ -x /usr/bin/microsocks ]] || missing+=(microsocks)
    # curl (with HTTP/2, as Debian builds it): the HTTP/2 POST /publish test's client.
    [[ -x /usr/bin/curl ]] || missing+=(curl)
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "tinyproxy, microsocks and curl already installed"
        return
    fi
    $SUDO apt-get update
    # The tests start their own instances on free ports, whatever services the packages start.
    $SUDO apt-get install -y "${missing[@]}"
}

ensure_broker_tools() {
    local missing=()
    [[ -x /usr/bin/redis-server ]] || missing+=(redis-server)
    [[ -x /usr/sbin/nats-server ]] || missing+=(nats-server)
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "redis-server and nats-server already installed"
        return
    fi
    $SUDO apt-get update
    # The tests start their own servers on free loopback ports, whatever services the packages
    # start.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

step "python tools" ensure_python_tools
step "proxy tools" ensure_proxy_tools
step "broker tools" ensure_broker_tools
if [[ -f browser/package.json ]]; then
    step "browser tools" ensure_browser_tools
else
    skip "browser tools" "no browser/package.json"
fi

# --- 2. Rust ---------------------------------------------------------------

step "cargo fmt" cargo fmt --all -- --check
# --workspace: default-members is only wsx-cli.
# --all-features: wsx's hyper and axum integrations too (only wsx has features; fuzz/ is its
# own workspace).
step "cargo clippy" cargo clippy --workspace --all-targets --all-features -- -D warnings
step "cargo build" cargo build --release
step "cargo build axum_echo" cargo build --release -p wsx --features axum --example axum_echo
# A hung test must not eat CI's whole budget; timeout signals cargo and the
# test binaries (its process group). 30 minutes includes compiling.
step "cargo test" timeout -k 30 "${WSX_CARGO_TEST_TIMEOUT:-1800}" cargo test --workspace --release --all-features

# --- 3-4. Autobahn conformance --------------------------------------------

step "autobahn server" bash conformance/run_server.sh
step "autobahn server (axum)" env WSX_AUTOBAHN_TESTEE=axum_echo bash conformance/run_server.sh
if [[ -f crates/wsx/examples/autobahn_client.rs ]]; then
    step "autobahn client" bash conformance/run_client.sh
else
    skip "autobahn client" "no crates/wsx/examples/autobahn_client.rs"
fi

# --- 5. fuzzing and the load generator ---------------------------------------

# A short bounded pass over every fuzz target (scripts/fuzz.sh installs cargo-fuzz when
# missing); long runs are documented in fuzz/README.md.
step "fuzz (short)" bash scripts/fuzz.sh "${WSX_FUZZ_SECONDS:-15}"

# `wsx bench` works end to end: 2 s against `wsx serve`, every message echoed, no errors.
bench_smoke() {
    local port log out
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    log=$(mktemp)
    target/release/wsx serve --listen "127.0.0.1:$port" --threads 1 2>"$log" &
    local pid=$!
    for _ in $(seq 50); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    out=$(target/release/wsx bench "ws://127.0.0.1:$port/" -c 10 -s 64 -d 2 --warmup 0.5 --json) || {
        kill "$pid"
        cat "$log"
        return 1
    }
    kill "$pid"
    wait "$pid" || true
    echo "$out"
    python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["errors"] == 0, r
assert r["messages"] > 1000, r
assert r["latency_us"]["p50"] > 0, r
print(f'bench smoke: {r["msgs_per_sec"]:.0f} msg/s, p50 {r["latency_us"]["p50"]} us')
PY
}
step "bench smoke" bench_smoke

# --- 6. browser -------------------------------------------------------------

browser_tests() {
    (cd browser && timeout -k 10 "${WSX_BROWSER_TIMEOUT:-900}" npm test)
}
if [[ -f browser/package.json ]]; then
    step "browser tests" browser_tests
else
    skip "browser tests" "no browser/package.json"
fi
