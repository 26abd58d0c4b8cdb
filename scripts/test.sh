#!/usr/bin/env bash
# The test command: installs (once) and starts a local Kafka-compatible broker,
# installs (once) the official AsyncAPI parser the tests validate the generated
# AsyncAPI document with (scripts/validate-asyncapi.cjs, needs Node.js and npm),
# runs the whole test suite (unit, property and integration tests) against the
# broker, and stops it whatever the outcome. Extra arguments go to `cargo test`.
# It always ends with one summary line, `tests: N passed, M failed` (also in
# target/test-summary.txt), and exits with cargo's exit status.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh
source scripts/lib/validators.sh

mkdir -p target
output="$PWD/target/test-output.log"
: >"$output"
# One closing line for the whole suite: the sum of every test binary's counts
# (0 and 0 when cargo stopped before running any test, e.g. a compile error).
summarize() {
  awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
       END { printf "tests: %d passed, %d failed\n", p, f }' "$output" | tee "$PWD/target/test-summary.txt"
}
# On any exit: stop the broker, print the summary, keep the exit status.
finish() {
  local status=$?
  stop_broker
  summarize || true
  exit "$status"
}
trap finish EXIT

ensure_system_packages "${BUILD_PACKAGES[@]}"
ensure_broker_installed
ensure_system_packages nodejs npm
ensure_asyncapi_parser
port=$(pick_port)
broker_log="$PWD/target/test-broker.log"
log "Starting the test broker on 127.0.0.1:$port (log: $broker_log)"
start_broker "$port" "$broker_log"

export WEBHOOK_CONNECTOR_TEST_KAFKA="127.0.0.1:$port"
export WEBHOOK_CONNECTOR_TANSU="$TANSU_BIN"
export WEBHOOK_CONNECTOR_ASYNCAPI_PARSER="$ASYNCAPI_PARSER_DIR"
# Most integration tests wait on the network, not the CPU: run more of them at
# once than there are cores. The tests that load the machine or measure time
# run alone whatever this says (tests/common/turns.rs).
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-6}"
log "Running cargo test"
set +e
cargo test --locked "$@" 2>&1 | tee "$output"
status=${PIPESTATUS[0]}
set -e
exit "$status"
