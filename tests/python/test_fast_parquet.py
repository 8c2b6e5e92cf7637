"""The Parquet fast path (src/io/fast_parquet) reads what pyarrow, DuckDB and polars write exactly
as they read it back, and as the parquet crate's generic reader does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import arrowquant as aq
from arrowquant import _internal


def weights_table(item=pa.float32(), large=False, rows=(4096, 0, 1, 70_000, None, 3)) -> pa.Table:
    rng = np.random.default_rng(7)
    lists = [None if n is None else (rng.standard_normal(n) * 0.02).astype(item.to_pandas_dtype()) for n in rows]
    typ = pa.large_list(item) if large else pa.list_(item)
    return pa.table({
        "layer_name": [f"layer.{i}" for i in range(len(rows))],
        "weights": pa.array(lists, typ),
        "shape": [None if n is None else [n] for n in rows],
    })


def values_bits(t: pa.Table) -> np.ndarray:
    w = t.column("weights").combine_chunks()
    flat = w.flatten()
    return np.frombuffer(flat.buffers()[1], dtype=np.uint8)[flat.offset * flat.type.byte_width:][: len(flat) * flat.type.byte_width]


def assert_reads_like(path, expected: pa.Table) -> None:
    fast = aq.read_parquet(path)
    generic = pa.table(_internal.read_parquet(str(path), False))
    assert fast.num_rows == expected.num_rows
    for name in expected.column_names:
        assert fast.column(name).to_pylist() == expected.column(name).to_pylist(), name
        assert fast.column(name).to_pylist() == generic.column(name).to_pylist(), name
    assert fast.column("weights").type == generic.column("weights").type
    assert values_bits(fast).tobytes() == values_bits(generic).tobytes()
    exp = expected.column("weights").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    got = fast.column("weights").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    assert np.array_equal(exp.view(np.uint8), got.astype(exp.dtype).view(np.uint8))


@pytest.mark.parametrize("compression", ["none", "snappy", "zstd", "gzip", "lz4", "brotli"])
@pytest.mark.parametrize("dictionary", [True, False])
def test_pyarrow_files(tmp_path, compression, dictionary):
    t = weights_table()
    p = tmp_path / "w.parquet"
    pq.write_table(t, p, compression=compression, use_dictionary=dictionary, data_page_size=1 << 14)
    assert_reads_like(p, t)


@pytest.mark.parametrize("options", [
    {"data_page_version": "2.0"},
    {"use_byte_stream_split": ["weights.list.element"], "use_dictionary": False},
    {"row_group_size": 2},
    {"write_statistics": False, "data_page_size": 100},
])
def test_pyarrow_page_layouts(tmp_path, options):
    t = weights_table()
    p = tmp_path / "w.parquet"
    pq.write_table(t, p, **options)
    assert_reads_like(p, t)


@pytest.mark.parametrize("item,large", [(pa.float16(), False), (pa.float64(), False), (pa.float32(), True)])
def test_pyarrow_item_types(tmp_path, item, large):
    t = weights_table(item, large)
    p = tmp_path / "w.parquet"
    pq.write_table(t, p)
    assert_reads_like(p, t)
    assert aq.read_parquet(p).schema.field("weights").type == pq.read_table(p).schema.field("weights").type


def test_nulls_inside_lists_fall_back(tmp_path):
    t = pa.table({"layer_name": ["a", "b", "c"],
                  "weights": pa.array([[1.0, 2.0], [3.0, None, 5.0], [6.0]], pa.list_(pa.float32()))})
    p = tmp_path / "w.parquet"
    pq.write_table(t, p)
    assert aq.read_parquet(p).column("weights").to_pylist() == [[1.0, 2.0], [3.0, None, 5.0], [6.0]]


def test_duckdb_files(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    t = weights_table()
    p = tmp_path / "duck.parquet"
    con = duckdb.connect()
    con.register("t", t)
    for codec in ["uncompressed", "snappy", "zstd"]:
        con.execute(f"COPY t TO '{p}' (FORMAT PARQUET, COMPRESSION {codec}, ROW_GROUP_SIZE 2)")
        assert_reads_like(p, pq.read_table(p))
        assert aq.read_parquet(p).column("weights").to_pylist() == t.column("weights").to_pylist()


def test_polars_files(tmp_path):
    pl = pytest.importorskip("polars")
    t = weights_table()
    p = tmp_path / "polars.parquet"
    for codec in ["uncompressed", "snappy", "zstd", "lz4"]:
        pl.from_arrow(t).write_parquet(p, compression=codec, row_group_size=3, data_page_size=1 << 12)
        assert_reads_like(p, pq.read_table(p))
        assert aq.read_parquet(p).column("weights").to_pylist() == t.column("weights").to_pylist()


def test_convert_reads_a_duckdb_file(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    t = weights_table(rows=(4096, 256, 70_000))
    src, out = tmp_path / "duck.parquet", tmp_path / "q.parquet"
    con = duckdb.connect()
    con.register("t", t)
    con.execute(f"COPY t TO '{src}' (FORMAT PARQUET)")
    aq.convert(src, out, "int8", 128)
    q = pq.read_table(out)
    expected = aq.quantize_arrow(t, "int8", 128)
    assert q.column("q").to_pylist() == expected.column("q").to_pylist()
