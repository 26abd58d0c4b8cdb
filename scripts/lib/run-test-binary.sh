#!/usr/bin/env bash
# cargo's runner for the test binaries when scripts/test.sh runs the suite (it
# sets `target.<host>.runner` to this file): cargo calls it with the binary and
# the binary's arguments, in cargo's own order and environment, and it runs the
# binary under GNU `timeout`, so a binary that hangs is stopped and named instead
# of holding the whole run:
#
#   test binary hostile (target/debug/deps/hostile-0123456789abcdef) timed out after 900 s
#
# The limit is per binary: WEBHOOK_CONNECTOR_TEST_BINARY_TIMEOUT seconds (default
# 900). `timeout` runs the binary in a process group of its own and signals the
# whole group, so the brokers and connector processes a test started stop with
# it (they would otherwise hold the output pipe open); KILL follows TERM after
# 30 s. Exits with the binary's status (124 or 137 when it timed out).
set -uo pipefail

binary=$1
shift
limit=${WEBHOOK_CONNECTOR_TEST_BINARY_TIMEOUT:-900}
# The binary's name without cargo's hash.
name=$(basename "$binary")
if [[ $name =~ ^(.+)-[0-9a-f]{16}$ ]]; then
  name=${BASH_REMATCH[1]}
fi

# In the background so that an interrupt reaches the binary's group too (it is
# not the terminal's foreground group): INT, TERM or HUP here is sent on as TERM.
started=$SECONDS
timeout --kill-after=30 "$limit" "$binary" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' INT TERM HUP
while :; do
  # (bash's own "Aborted"-style job line is left out: the message below says it.)
  wait "$child" 2>/dev/null
  status=$?
  # A trapped signal ends `wait` early; wait again until the binary is gone.
  kill -0 "$child" 2>/dev/null || break
done

if { [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; } && ((SECONDS - started >= limit)); then
  echo "test binary $name ($binary) timed out after $limit s" >&2
elif [ "$status" -gt 128 ] && [ "$status" -lt 160 ]; then
  echo "test binary $name ($binary) was killed by signal $((status - 128)) (SIG$(kill -l "$((status - 128))"))" >&2
fi
exit "$status"
