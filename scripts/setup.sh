#!/usr/bin/env bash
# Sets up a fresh machine for arrowquant: a virtualenv in .venv with the pinned Python packages,
# then the Rust extension built into it (release profile, the one `cargo test --release` shares).
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only does what is missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 2; }
# torch (PyPI's wheel pulls its CUDA libraries, ~4 GB installed: `import torch` needs them even on
# a CPU-only machine), transformers and compressed-tensors are the real consumers of the
# compressed-tensors export, loaded in tests/python/test_compressed_tensors.py.
# Python 3.11: the ggml oracle of the tests (PyPI libggml-python 0.20.2.post1, ggml's prebuilt
# quantizers) ships cp311 wheels only.
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
python -m pip install -q --disable-pip-version-check \
  "maturin>=1.9.4,<2" "pyarrow>=26,<27" "datafusion==55.0.0" \
  "pytest>=8" "numpy>=1.26" "gguf==0.19.0" "polars>=1.0" "duckdb>=1.1" "arro3-core>=0.4" "nanoarrow>=0.6" \
  "libggml-python==0.20.2.post1" "xllamacpp==2026.10.11549" \
  "torch==2.15.0" "transformers==5.24.0" "compressed-tensors==0.20.0"
# One build profile for everything: maturin builds with `--release` like `cargo test --release`.
maturin develop --release --quiet
