#!/usr/bin/env bash
# The quick start: installs (once) and starts a local Kafka-compatible broker on
# loopback, creates the routed topics, and runs the connector with the example
# configuration in the foreground. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh

ensure_system_packages "${BUILD_PACKAGES[@]}"
ensure_broker_installed
log "Building webhook-connector"
cargo build --locked --quiet
bin="$PWD/target/debug/webhook-connector"

kafka_port=$(pick_port 9092)
http_port=$(pick_port 8080)
broker_log="$PWD/target/quickstart-broker.log"
connector_pid=""
# Stops the connector (SIGINT: no drain delay for a local run; SIGKILL if it is
# still there after 15 s) and the broker.
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$connector_pid" ] && kill -0 "$connector_pid" 2>/dev/null; then
    kill -INT "$connector_pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$connector_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$connector_pid" 2>/dev/null || true
    wait "$connector_pid" 2>/dev/null || true
  fi
  stop_broker
  log "Stopped the connector and the broker"
}
trap cleanup EXIT INT TERM

log "Starting the broker on 127.0.0.1:$kafka_port (log: $broker_log)"
start_broker "$kafka_port" "$broker_log"

export CONNECTOR__KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:$kafka_port"
export CONNECTOR__SERVER__LISTEN="127.0.0.1:$http_port"
# Local quick start: no secret shared with a platform; production sets CONNECTOR__WEBHOOK__SECRETS instead.
export CONNECTOR__WEBHOOK__ALLOW_UNSIGNED=true
# The example routes pseudonymise contact details, which needs privacy.key. A local
# key is made once and kept in the cache, so tokens stay the same across runs;
# production sets its own secret (CONNECTOR__PRIVACY__KEY).
if [ -z "${CONNECTOR__PRIVACY__KEY:-}" ]; then
  key_file="$CACHE_DIR/quickstart-privacy.key"
  if [ ! -s "$key_file" ]; then
    mkdir -p "$CACHE_DIR"
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$key_file")
  fi
  CONNECTOR__PRIVACY__KEY="$(cat "$key_file")"
  export CONNECTOR__PRIVACY__KEY
  log "Pseudonymising with the local key in $key_file"
fi
"$bin" check --config config/default.toml
log "Creating the topics (the state topic compacted)"
"$bin" create-topics --config config/default.toml --partitions 1

cat <<MSG

  webhook-connector listens on http://127.0.0.1:$http_port (Kafka: 127.0.0.1:$kafka_port)

  Post the platform's sample customer notification and a sample booking notification,
  from another terminal in this folder:
    curl -sS -H 'Content-Type: application/json' --data-binary @tests/fixtures/seed_sample.json http://127.0.0.1:$http_port/webhooks/customer
    curl -sS -H 'Content-Type: application/json' --data-binary @tests/fixtures/booking_sample.json http://127.0.0.1:$http_port/webhooks/booking

  Read the events back (Tansu prints values re-parsed: keys sorted, numbers as floats):
    $TANSU_BIN cat consume customer.marketing-opt-ins --broker tcp://127.0.0.1:$kafka_port
    $TANSU_BIN cat consume customer.contact-details --broker tcp://127.0.0.1:$kafka_port
    $TANSU_BIN cat consume booking.status --broker tcp://127.0.0.1:$kafka_port
    $TANSU_BIN cat consume booking.tables --broker tcp://127.0.0.1:$kafka_port
    $TANSU_BIN cat consume customer.state --broker tcp://127.0.0.1:$kafka_port

  Erase customer 862 (a tombstone on customer.state, an event on privacy.erasures):
    CONNECTOR__PRIVACY__KEY=\$(cat $CACHE_DIR/quickstart-privacy.key) CONNECTOR__KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$kafka_port target/debug/webhook-connector forget --entity customer --id 862

  Ctrl-C stops the connector and the broker.

MSG
"$bin" run --config config/default.toml &
connector_pid=$!
wait "$connector_pid" || true
connector_pid=""
