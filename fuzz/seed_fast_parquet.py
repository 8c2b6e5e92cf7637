"""Seed corpus of the fast_parquet fuzz target: small weight tables as pyarrow writes them, with
every layout the fast path reads (codecs, dictionary, v2 pages, byte-stream-split, float16/64,
large_list) and one with a null inside a list.

    python fuzz/seed_fast_parquet.py fuzz/corpus/fast_parquet
"""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def table(rng, item=pa.float32(), large=False, nulls=False):
    rows = [rng.standard_normal(n).astype(item.to_pandas_dtype()).tolist() for n in (40, 0, 1, 9)] + [None]
    if nulls:
        rows[0][3] = None
    typ = (pa.large_list if large else pa.list_)(item)
    return pa.table({"layer_name": [str(i) for i in range(5)], "weights": pa.array(rows, typ)})


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    layouts = [{}, {"compression": "none"}, {"compression": "zstd"},
               {"use_dictionary": False, "compression": "none", "data_page_size": 64},
               {"data_page_version": "2.0", "compression": "none"},
               {"use_byte_stream_split": ["weights.list.element"], "use_dictionary": False, "compression": "none"},
               {"compression": "gzip"}, {"compression": "lz4"}]
    kinds = [{}, {"item": pa.float16()}, {"item": pa.float64(), "large": True}, {"nulls": True}]
    for i, (layout, kind) in enumerate((l, k) for l in layouts for k in kinds):
        pq.write_table(table(rng, **kind), out / f"seed{i:02d}.parquet", **layout)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
