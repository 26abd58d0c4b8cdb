#!/usr/bin/env bash
# The test command: installs (once) and starts a local Kafka-compatible broker,
# installs HAProxy (Debian's package) for the replica test when it is missing,
# installs (once) the official AsyncAPI parser the tests validate the generated
# AsyncAPI document with (scripts/validate-asyncapi.cjs, needs Node.js and npm),
# and the official OTLP decoder (PyPI's opentelemetry-proto, in a venv) of the
# receiver the trace tests export to (tests/fixtures/otlp_receiver.py),
# checks the links of README.md and docs/ (scripts/check-links.sh; a broken one
# fails the command before any test runs), checks the deployment files of
# deploy/ and docker/Dockerfile with kubernetes-validate, checkov, hadolint and
# promtool (scripts/check-deploy.sh, installing them once; a failure also fails
# the command before any test runs), runs the whole test suite (unit,
# property and integration tests) against the broker, and stops it whatever the
# outcome. Extra arguments go to `cargo test`.
#
# Every test binary runs, even after one failed (`--no-fail-fast`), each under
# an outer time limit that names the binary that hung
# (scripts/lib/run-test-binary.sh, WEBHOOK_CONNECTOR_TEST_BINARY_TIMEOUT seconds,
# default 900). It always ends with one summary line (also in
# target/test-summary.txt) with cargo's exit status, and exits with that status:
#
#   tests: 265 passed, 0 failed, cargo exit 0
#   tests: 250 passed, 0 failed, cargo exit 101, FAILED (a test binary aborted: tests/hostile.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh
source scripts/lib/validators.sh

mkdir -p target
output="$PWD/target/test-output.log"
: >"$output"
cargo_status=""
# Why the command failed before cargo ran, when it did (for the summary line).
failed_before_cargo=""
export WEBHOOK_CONNECTOR_TEST_BINARY_TIMEOUT="${WEBHOOK_CONNECTOR_TEST_BINARY_TIMEOUT:-900}"

# The closing line: the sum of every test binary's `test result:` counts, cargo's
# exit status, and when that is not 0, FAILED and the binaries that ended without
# a result of their own (aborted, killed, timed out). cargo announces each binary
# with a `Running` line (`Doc-tests` for doc-tests), which splits the output into
# one section per binary.
summarize() {
  awk -v status="$cargo_status" -v limit="$WEBHOOK_CONNECTOR_TEST_BINARY_TIMEOUT" \
    -v before="$failed_before_cargo" '
    { gsub(/\033\[[0-9;]*m/, "") } # CARGO_TERM_COLOR=always
    /^ +Running / { name[++n] = ($2 == "unittests") ? $3 : $2; next }
    /^ +Doc-tests / { name[++n] = "doc-tests of " $2; next }
    /^test result:/ {
      counted[n] = 1; results++
      for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) }
    }
    /^test binary .* timed out after / { timed_out[n] = 1 }
    /^test binary .* was killed by signal / { killed[n] = 1 }
    function add(list, item, separator) { return list == "" ? item : list separator item }
    END {
      line = sprintf("tests: %d passed, %d failed", p, f)
      if (status == "") { print line ", cargo did not run, FAILED" (before == "" ? "" : " (" before ")"); exit }
      if (status == "interrupted") { print line ", cargo interrupted, FAILED"; exit }
      line = line ", cargo exit " status
      if (status == 0) { print line; exit }
      for (k = 1; k <= n; k++) {
        if (timed_out[k]) { hung = add(hung, name[k], ", ") }
        else if (killed[k] || !counted[k]) { aborted = add(aborted, name[k], ", ") }
      }
      why = ""
      if (n == 0 && results == 0) why = "no test binary ran"
      if (aborted != "") why = add(why, (aborted ~ /, /) ? "test binaries aborted: " aborted : "a test binary aborted: " aborted, "; ")
      if (hung != "") why = add(why, "timed out after " limit " s: " hung, "; ")
      print line ", FAILED" (why == "" ? "" : " (" why ")")
    }' "$output" | tee "$PWD/target/test-summary.txt"
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
# The load balancer of the replica test (tests/replicas.rs).
ensure_system_packages haproxy
ensure_asyncapi_parser
ensure_otlp_receiver
ensure_link_checker
log "Checking the links of README.md, docs/ and bench/HISTORY.md (scripts/check-links.sh)"
if ! bash scripts/check-links.sh; then
  failed_before_cargo="broken links in the docs: run scripts/check-links.sh"
  echo "error: the docs have broken links (listed above); fix them, then run the tests again" >&2
  exit 1
fi
log "Checking the deployment files: deploy/ and docker/Dockerfile (scripts/check-deploy.sh)"
if ! bash scripts/check-deploy.sh; then
  failed_before_cargo="deployment checks failed: run scripts/check-deploy.sh"
  echo "error: the deployment checks failed (named above); fix them, then run the tests again" >&2
  exit 1
fi
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

# Every binary runs (cargo stops at the first failing one otherwise), each through
# the runner that puts the outer time limit on it; cargo keeps its order, its
# environment and the arguments it passes.
cargo_args=(--locked --no-fail-fast)
for arg in "$@"; do
  case $arg in
    --) break ;;
    --no-fail-fast) cargo_args=(--locked) ;; # given already: cargo takes it once
  esac
done
command -v timeout >/dev/null ||
  { echo "error: GNU timeout (coreutils) is missing; the test binaries run under it" >&2; exit 1; }
host=$(${RUSTC:-rustc} -vV | sed -n 's/^host: //p')
runner="target.$host.runner=['bash', '$PWD/scripts/lib/run-test-binary.sh']"
log "Running cargo test (each test binary limited to $WEBHOOK_CONNECTOR_TEST_BINARY_TIMEOUT s)"
cargo_status=interrupted
set +e
cargo --config "$runner" test "${cargo_args[@]}" "$@" 2>&1 | tee "$output"
cargo_status=${PIPESTATUS[0]}
set -e
exit "$cargo_status"
