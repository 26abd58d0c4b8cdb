#!/usr/bin/env bash
# Fuzzes the HTTP-level acceptance step (pipeline::accept with small limits, then
# pipeline::route with a fixed routing table and Records::build) with libFuzzer
# (cargo-fuzz, nightly toolchain: `rustup toolchain install nightly` if missing) for
# the given number of seconds (default 600). Not part of CI.
# Findings land in fuzz/artifacts/parse_normalize/; rerun one with
#   cargo +nightly fuzz run parse_normalize fuzz/artifacts/parse_normalize/<file>
# The last lines printed are libFuzzer's final stats (#runs, exec/s, cov) and the
# number of findings.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/parse_normalize fuzz/artifacts/parse_normalize
# Seed the corpus with the samples and the bad-input fixtures.
cp tests/fixtures/seed_sample.json tests/fixtures/booking_sample.json fuzz/corpus/parse_normalize/
find tests/fixtures/bad -name '*.json' -size -8k -exec cp {} fuzz/corpus/parse_normalize/ \;
# -max_len above the target's 4096-byte body limit, so the size check is reached too.
status=0
cargo +nightly fuzz run parse_normalize -- -max_total_time="$seconds" -max_len=8192 \
  -print_final_stats=1 || status=$?
findings=$(find fuzz/artifacts/parse_normalize -type f | wc -l)
echo "fuzz: ${seconds} s, findings in fuzz/artifacts/parse_normalize/: ${findings}"
exit "$status"
