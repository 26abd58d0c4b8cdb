#!/usr/bin/env bash
# Fuzzes the HTTP-level acceptance step (pipeline::accept with small limits and a
# fixed routing table, which builds the records, then pipeline::accept_within with
# the raw topic's copy) with libFuzzer for the given number of seconds (default
# 600). Not part of CI (CI only checks that the fuzz crate builds: .ci/run).
#
# Needs cargo-fuzz (installed from crates.io when missing), a C++ compiler (for
# libFuzzer) and a toolchain that takes -Z flags: the nightly toolchain when rustup
# has one (`rustup toolchain install nightly`), otherwise the default toolchain with
# RUSTC_BOOTSTRAP=1 (set FUZZ_TOOLCHAIN=stable to force that). Builds in
# CARGO_TARGET_DIR when set (else fuzz/target).
# Findings land in fuzz/artifacts/parse_normalize/; rerun one with
#   cargo +nightly fuzz run parse_normalize fuzz/artifacts/parse_normalize/<file>
# The last lines printed are libFuzzer's final stats (#runs, exec/s, cov) and the
# number of findings.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"

missing() {
  echo "fuzz: cannot run: $*" >&2
  exit 2
}

if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked ||
    missing "cargo-fuzz is not installed and 'cargo install cargo-fuzz --locked' failed"
fi
command -v c++ >/dev/null || command -v clang++ >/dev/null ||
  missing "no C++ compiler (c++ or clang++) to build libFuzzer with (libfuzzer-sys)"

# A toolchain that takes -Z flags (cargo-fuzz passes -Zsanitizer and others).
toolchain=()
if [[ "${FUZZ_TOOLCHAIN:-nightly}" == nightly ]] && rustup run nightly rustc -V >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
  rustc -V >/dev/null 2>&1 || missing "no Rust toolchain (rustc) found"
  echo "fuzz: no nightly toolchain (or FUZZ_TOOLCHAIN=stable): $(rustc -V) with RUSTC_BOOTSTRAP=1"
fi
echo "fuzz: $(rustc "${toolchain[@]}" -V), $(cargo fuzz --version)"

mkdir -p fuzz/corpus/parse_normalize fuzz/artifacts/parse_normalize
# Seed the corpus with the samples, the bad-input fixtures and a sample padded past
# the target's 4096-byte body limit: libFuzzer grows inputs only slowly past the
# longest seed, so without it the size check is seldom reached.
cp tests/fixtures/seed_sample.json tests/fixtures/booking_sample.json fuzz/corpus/parse_normalize/
find tests/fixtures/bad -name '*.json' -size -8k -exec cp {} fuzz/corpus/parse_normalize/ \;
{ cat tests/fixtures/seed_sample.json; printf '%4100s' ''; } >fuzz/corpus/parse_normalize/oversized_sample.json
target_dir=()
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then target_dir=(--target-dir "$CARGO_TARGET_DIR"); fi
# -max_len above the body limit, so mutated inputs reach the size check too.
status=0
cargo "${toolchain[@]}" fuzz run "${target_dir[@]}" parse_normalize -- \
  -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 || status=$?
findings=$(find fuzz/artifacts/parse_normalize -type f | wc -l)
echo "fuzz: ${seconds} s, findings in fuzz/artifacts/parse_normalize/: ${findings}"
exit "$status"
