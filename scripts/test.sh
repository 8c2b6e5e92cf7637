#!/usr/bin/env bash
# Every test, from a fresh machine: setup, formatting and lints, the Rust tests (unit, property,
# the byte-for-byte comparison with gguf.quants, and the sqllogictest files under sql/), then the
# Python tests and doctests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

cargo fmt --check
ARROWQUANT_PYTHON="$VIRTUAL_ENV/bin/python" cargo test --release
python -m pytest -q
cargo clippy --release --all-targets -- -D warnings
PYO3_PYTHON="$VIRTUAL_ENV/bin/python" cargo clippy --release --lib --features python -- -D warnings
