#!/usr/bin/env bash
# The main job on the bundled default data, from a fresh machine: setup (venv, build), then
# `arrowquant demo`: writes a sample model (about 220 MB, fixed seed) as safetensors, imports
# it as a Parquet weight table, converts it to int8 per channel and prints the per-layer report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
arrowquant demo --dir data/demo "$@"
