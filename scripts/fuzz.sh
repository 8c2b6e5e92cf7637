#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets: kernels, search, dequantize, safetensors, gguf, fast_parquet) for a set time each.
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET=600] [TARGET...]
# cargo-fuzz needs nightly flags (-Z sanitizer); RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them. A crash is saved under fuzz/artifacts/TARGET/ and fails the script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(kernels search dequantize safetensors gguf fast_parquet)
export RUSTC_BOOTSTRAP=1
# Parquet files are out of a fuzzer's reach from nothing: seed fast_parquet with real ones.
if [ ! -d fuzz/corpus/fast_parquet ] && [ -x .venv/bin/python ]; then
  .venv/bin/python fuzz/seed_fast_parquet.py fuzz/corpus/fast_parquet
fi
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${seconds}s"
  (cd fuzz && cargo fuzz run "$t" --release -- -max_total_time="$seconds" -rss_limit_mb=4096)
done
