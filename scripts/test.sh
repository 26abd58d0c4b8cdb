#!/usr/bin/env bash
# The test command: installs (once) and starts a local Kafka-compatible broker,
# runs the whole test suite (unit, property and integration tests) against it,
# and stops the broker whatever the outcome. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh

ensure_broker_installed
mkdir -p target
port=$(pick_port)
broker_log="$PWD/target/test-broker.log"
trap stop_broker EXIT
log "Starting the test broker on 127.0.0.1:$port (log: $broker_log)"
start_broker "$port" "$broker_log"

export WEBHOOK_CONNECTOR_TEST_KAFKA="127.0.0.1:$port"
export WEBHOOK_CONNECTOR_TANSU="$TANSU_BIN"
log "Running cargo test"
output="$PWD/target/test-output.log"
cargo test --locked "$@" 2>&1 | tee "$output"
# One closing line for the whole suite: the sum of every test binary's counts.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$output" | tee "$PWD/target/test-summary.txt"
