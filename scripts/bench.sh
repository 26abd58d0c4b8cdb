#!/usr/bin/env bash
# The benchmark: builds in release mode, starts a fresh local broker and the
# connector (signatures on) for every measurement, drives POST /webhooks/customer with wrk at concurrency 1, 16, 64
# and 256, measures latency at half the maximum throughput, soaks for 2 minutes at
# concurrency 64, and compares with a baseline producing the same events straight to
# Kafka in the same run. Prints a table and writes bench/results.json.
#   scripts/bench.sh           the full run (about 6 minutes once built)
#   scripts/bench.sh --smoke   a few seconds, results in target/bench/smoke.json
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh

if [ "${1:-}" = "--smoke" ]; then
  args=(--duration-secs 2 --levels 1,16 --soak-secs 0 --out target/bench/smoke.json)
else
  args=(--out bench/results.json)
fi

# The build's packages, curl (readiness checks) and wrk (the load).
ensure_system_packages "${BUILD_PACKAGES[@]}" curl wrk
ensure_broker_installed
log "Building in release mode"
cargo build --release --locked --bin webhook-connector --example bench

mkdir -p target/bench
# The bench starts a fresh broker for every measurement.
target/release/examples/bench --tansu "$TANSU_BIN" \
  --connector target/release/webhook-connector "${args[@]}"
