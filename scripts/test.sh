#!/usr/bin/env bash
# Every test, from a fresh machine: setup, formatting and lints, the Rust tests (unit, property,
# the byte-for-byte comparison with gguf.quants, and the sqllogictest files under sql/), then the
# Python tests and doctests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

cargo fmt --check
# The kernels' instruction-set tests compare each build (portable, AVX2, AVX-512) byte for byte and
# fail on a CPU that cannot run one, unless told to skip it. Say so loudly when this CPU cannot.
for flag in avx2 avx512f avx512bw avx512vl avx512dq; do
  if ! grep -qw "$flag" /proc/cpuinfo 2>/dev/null; then
    echo "test.sh: this CPU lacks $flag: the byte comparison of the builds it cannot run is SKIPPED" >&2
    export ARROWQUANT_SKIP_ISA_TESTS=1
  fi
done
ARROWQUANT_PYTHON="$VIRTUAL_ENV/bin/python" cargo test --release
python -m pytest -q
cargo clippy --release --all-targets -- -D warnings
PYO3_PYTHON="$VIRTUAL_ENV/bin/python" cargo clippy --release --lib --features python -- -D warnings
