"""`arrowquant convert` against the I/O floor, on a generated weight table (issue 4's target).

Generates a Parquet weight table of --gb GB of float32 (layers of [1024, 1024], row groups of 8
layers), then runs, each in its own process so peak RSS is its own:
  - the I/O floor: pyarrow.parquet.read_table + write_table of the same file (default settings)
  - arrowquant convert --scheme int8 --per-channel
and prints wall time, the ratio to the floor, and peak RSS.

    python benches/convert.py [--gb 2] [--dir data/bench]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MEASURE = r"""
import resource, sys, time
t = time.perf_counter()
{body}
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def generate(path: Path, gb: float) -> None:
    rows, cols = 1024, 1024
    n_layers = int(gb * 1e9 / (rows * cols * 4))
    schema = pa.schema({"layer_name": pa.string(), "weights": pa.list_(pa.float32()), "shape": pa.list_(pa.int64())})
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, n_layers, 8):
            n = min(8, n_layers - start)
            values = pa.array(rng.standard_normal(n * rows * cols, dtype=np.float32) * 0.02)
            offsets = pa.array(np.arange(0, (n + 1) * rows * cols, rows * cols, dtype=np.int32))
            w.write_table(pa.table({
                "layer_name": [f"model.layers.{start + i}.weight" for i in range(n)],
                "weights": pa.ListArray.from_arrays(offsets, values),
                "shape": [[rows, cols]] * n,
            }, schema=schema))


def measure(body: str) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", MEASURE.format(body=body)], check=True, capture_output=True, text=True)
    seconds, rss = out.stdout.split()[-2:]
    return float(seconds), int(rss)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=2.0)
    p.add_argument("--dir", default="data/bench")
    args = p.parse_args()
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    src = d / f"weights-{args.gb:g}gb.parquet"
    if not src.exists():
        generate(src, args.gb)
    size = src.stat().st_size
    floor_out, aq_out = d / "floor.parquet", d / "int8.parquet"
    floor = measure(f"import pyarrow.parquet as pq; pq.write_table(pq.read_table({str(src)!r}), {str(floor_out)!r})")
    conv = measure(
        "from arrowquant import _internal; "
        f"rc = _internal.cli_main(['arrowquant', 'convert', {str(src)!r}, {str(aq_out)!r}, '--scheme', 'int8', "
        "'--per-channel', '--overwrite']); assert rc == 0"
    )
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}; python {platform.python_version()}, pyarrow {pa.__version__}")
    print(f"input: {src} ({size / 1e9:.2f} GB on disk)")
    print(f"{'job':<44} {'seconds':>8} {'x floor':>8} {'peak RSS MB':>12}")
    print(f"{'pyarrow read_table + write_table (I/O floor)':<44} {floor[0]:>8.2f} {1.0:>8.2f} {floor[1] / 1e6:>12.0f}")
    print(f"{'arrowquant convert int8 --per-channel':<44} {conv[0]:>8.2f} {conv[0] / floor[0]:>8.2f} {conv[1] / 1e6:>12.0f}")
    for f in (floor_out, aq_out):
        f.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
