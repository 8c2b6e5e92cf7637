"""Crossing the Python/Rust boundary: is anything copied?

For 4 MB, 40 MB and 400 MB of float32 weights, times (best of N, same run, same data):
  - handover: pyarrow -> Rust -> pyarrow with no kernel (`_internal.passthrough`)
  - quantize_arrow int8, groups of 128
  - the same bytes copied once by numpy, as a reference of what one copy costs
Handover must stay flat as the size grows (zero copy); quantize grows with the data.

    python benches/handover.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pyarrow as pa

import arrowquant as aq
from arrowquant import _internal


def table_of(nbytes: int, layer_numel: int = 1 << 20) -> pa.Table:
    n = nbytes // 4
    layers = max(1, n // layer_numel)
    numel = n // layers
    values = pa.array(np.random.default_rng(0).standard_normal(layers * numel, dtype=np.float32))
    offsets = pa.array(np.arange(0, (layers + 1) * numel, numel, dtype=np.int32))
    return pa.table({"layer_name": [f"l{i}" for i in range(layers)], "weights": pa.ListArray.from_arrays(offsets, values)})


def best(f, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; python {platform.python_version()}, "
          f"pyarrow {pa.__version__}, arrowquant {aq.__version__}")
    print(f"{'size':>8} {'handover ms':>12} {'numpy copy ms':>14} {'quantize_arrow ms':>18} {'quantize GB/s':>14}")
    for mb in (4, 40, 400):
        t = table_of(mb * 1_000_000)
        values = t.column("weights").chunk(0).values.to_numpy()
        hand = best(lambda: pa.table(_internal.passthrough(t)), args.repeat)
        copy = best(lambda: values.copy(), args.repeat)
        quant = best(lambda: aq.quantize_arrow(t, "int8", 128), args.repeat)
        print(f"{mb:>6}MB {hand * 1e3:>12.3f} {copy * 1e3:>14.3f} {quant * 1e3:>18.2f} {t.nbytes / quant / 1e9:>14.2f}")


if __name__ == "__main__":
    main()
