#!/usr/bin/env bash
# Fuzzes parse + normalize with libFuzzer (cargo-fuzz, nightly toolchain) for the
# given number of seconds (default 600). Not part of CI.
# Findings land in fuzz/artifacts/parse_normalize/; rerun one with
#   cargo +nightly fuzz run parse_normalize fuzz/artifacts/parse_normalize/<file>
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/parse_normalize
# Seed the corpus with the sample and the bad-input fixtures.
cp tests/fixtures/seed_sample.json fuzz/corpus/parse_normalize/
find tests/fixtures/bad -name '*.json' -size -8k -exec cp {} fuzz/corpus/parse_normalize/ \;
cargo +nightly fuzz run parse_normalize -- -max_total_time="$seconds" -max_len=8192
