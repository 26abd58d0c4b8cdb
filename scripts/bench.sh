#!/usr/bin/env bash
# The benchmark: builds in release mode, starts a fresh local broker and the
# connector (signatures on) for every measurement, drives POST /webhooks/customer with wrk at concurrency 1, 16, 64
# and 256, measures latency at half the maximum throughput, soaks for 2 minutes at
# concurrency 64, and compares with a baseline producing the same records straight to
# Kafka in the same run (the cheapest way: pre-built, a ThreadedProducer, a counting
# delivery callback): events/s and CPU seconds per 10k events of both, and their
# ratios, as medians of three rounds. Every level is measured three times: with no
# trace export, and exporting spans over OTLP to a collector that discards them at
# sampling 1.0 and 0.01 (--no-traces: only the first). Prints a table and writes
# bench/results.json.
# Further arguments go to the bench, e.g. --compare before=/path/to/an/older/webhook-connector
# (measured at every level in the same run) or --rounds 1.
# First it runs the adversarial-body benchmark (examples/adversarial.rs: the CPU work
# of accept (with routing) + Records::build for worst-case bodies, no broker), which writes
# bench/adversarial.json and fails the script (after the rest has run) when a shape
# costs more than 10 times the seed sample's time per KiB (the smoke run, whose few
# hundred milliseconds per shape are noisier, fails only past 15 times). The bench
# exits 1 when any run had a failed request or no throughput, so a broken
# connector fails the smoke run (and CI) too.
#   scripts/bench.sh           the full run (about 20 minutes once built)
#   scripts/bench.sh --smoke   a few seconds, results in target/bench/smoke.json and
#                              target/bench/adversarial-smoke.json
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh

if [ "${1:-}" = "--smoke" ]; then
  shift
  args=(--duration-secs 2 --levels 1,16 --soak-secs 0 --out target/bench/smoke.json)
  adversarial_args=(--quick --out target/bench/adversarial-smoke.json)
else
  args=(--rounds 3 --out bench/results.json)
  adversarial_args=(--out bench/adversarial.json)
fi

# The build's packages, curl (readiness checks) and wrk (the load).
ensure_system_packages "${BUILD_PACKAGES[@]}" curl wrk
ensure_broker_installed
log "Building in release mode"
cargo build --release --locked --bin webhook-connector --example bench --example adversarial

mkdir -p target/bench
log "Adversarial bodies (no broker)"
adversarial_status=0
target/release/examples/adversarial "${adversarial_args[@]}" || adversarial_status=$?
# The bench starts a fresh broker for every measurement.
target/release/examples/bench --tansu "$TANSU_BIN" \
  --connector target/release/webhook-connector "${args[@]}" "$@"
if [ "$adversarial_status" -ne 0 ]; then
  log "The adversarial-body benchmark failed (exit $adversarial_status): see its output above"
  exit "$adversarial_status"
fi
