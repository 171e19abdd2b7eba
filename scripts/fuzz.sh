#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (libFuzzer, on stable Rust).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      default 60
#
# Every target `cargo fuzz list` names runs (8: frame_header, handshake_request,
# handshake_response, connection_server, connection_client, streaming_server, streaming_client,
# deflate); scripts/test.sh's short pass gives each 15 s, 2 minutes in all plus the build.
#   WSX_FUZZ_TARGETS="deflate frame_header" scripts/fuzz.sh 30   a subset
#
# Installs cargo-fuzz if it is missing, builds all targets once, then runs each one with a
# single job, starting from the committed seeds (fuzz/seeds/TARGET, never written to) plus a
# scratch corpus (fuzz/corpus/TARGET, gitignored, grows across runs). Prints the executions per
# target and exits non-zero if any target crashed, leaked, hung or ran out of memory; the
# offending input is saved under fuzz/artifacts/TARGET/ and the log under
# fuzz/target/fuzz-logs/TARGET.log.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_TARGET=${1:-60}
if ! [[ $SECONDS_PER_TARGET =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
    exit 2
fi

export PATH="$HOME/.cargo/bin:$PATH"
# cargo-fuzz passes -Z flags (sanitizers, coverage instrumentation) to rustc.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

TARGETS=${WSX_FUZZ_TARGETS:-$(cargo fuzz list)}
LOGS=fuzz/target/fuzz-logs
mkdir -p "$LOGS"

echo "building fuzz targets"
cargo fuzz build

failed=()
summary=()
for target in $TARGETS; do
    corpus=fuzz/corpus/$target
    artifacts=fuzz/artifacts/$target
    mkdir -p "$corpus" "$artifacts"
    log=$LOGS/$target.log
    echo "fuzzing $target for ${SECONDS_PER_TARGET}s"
    status=0
    # The first corpus directory receives new inputs; the seeds are only read.
    # -timeout turns a hang into a reported failure instead of a stuck run.
    cargo fuzz run "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" \
        -rss_limit_mb=2048 \
        -timeout=30 \
        -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -n 1)
    if [[ $status -ne 0 || -z $runs ]]; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        summary+=("FAILED $target (exit $status, ${execs:-?} executions; log: $log)")
        failed+=("$target")
        echo "---- $target failed; the end of $log:"
        tail -n 60 "$log"
        echo "---- saved inputs:"
        ls -l "$artifacts"
    else
        summary+=("ok     $target: $runs")
    fi
done

echo
echo "==================== scripts/fuzz.sh summary ===================="
for line in "${summary[@]}"; do
    echo "  $line"
done
if [[ ${#failed[@]} -ne 0 ]]; then
    echo "fuzzing found problems in: ${failed[*]}"
    exit 1
fi
