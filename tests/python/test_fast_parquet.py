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


# The writer's fast path (src/io/fast_parquet/write.rs): what arrowquant writes, every reader reads.

LONG_ROWS = (4096, 0, 1, 700_000, None, 3, 300_000)  # 700k floats span three 1 MiB pages


def float_bits(column: pa.ChunkedArray | pa.Array) -> bytes:
    flat = (column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column).flatten()
    return flat.to_numpy(zero_copy_only=False).tobytes()


@pytest.mark.parametrize("item,large", [(pa.float32(), False), (pa.float32(), True),
                                        (pa.float16(), False), (pa.float64(), False)])
def test_written_files_read_back_in_pyarrow(tmp_path, item, large):
    t = weights_table(item, large, rows=LONG_ROWS)
    p = tmp_path / "w.parquet"
    aq.write_parquet(t, p)
    back = pq.read_table(p)
    assert back.schema.field("weights").type == t.schema.field("weights").type
    assert back.column("layer_name").to_pylist() == t.column("layer_name").to_pylist()
    assert back.column("shape").to_pylist() == t.column("shape").to_pylist()
    assert back.column("weights").null_count == 1
    assert [len(v) if v.is_valid else None for v in back.column("weights")] == list(LONG_ROWS)
    assert float_bits(back.column("weights")) == float_bits(t.column("weights"))
    assert_reads_like(p, t)
    # The weights column chunk is PLAIN pages with RLE levels, split across pages.
    col = pq.ParquetFile(p).metadata.row_group(0).column(1)
    assert col.path_in_schema.startswith("weights.list.")
    assert set(col.encodings) == {"PLAIN", "RLE"}
    assert col.num_values == sum(n or 1 for n in LONG_ROWS)


def test_written_files_read_back_in_duckdb_and_polars(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    t = weights_table(rows=LONG_ROWS)
    p = tmp_path / "w.parquet"
    aq.write_parquet(t, p)
    d = duckdb.connect().sql(f"SELECT * FROM read_parquet('{p}')").to_arrow_table()
    assert d.column("layer_name").to_pylist() == t.column("layer_name").to_pylist()
    assert [None if v is None else len(v) for v in d.column("weights").to_pylist()] == list(LONG_ROWS)
    assert float_bits(d.column("weights")) == float_bits(t.column("weights"))
    # DuckDB's own list functions over the file, row by row.
    got = duckdb.connect().execute(
        f"SELECT layer_name, len(weights), weights[1], weights[-1] FROM read_parquet('{p}') ORDER BY layer_name"
    ).fetchall()
    w = t.column("weights").to_pylist()
    assert got == [(f"layer.{i}", None if v is None else len(v), (v or [None])[0], (v or [None])[-1])
                   for i, v in enumerate(w)]
    frame = pl.read_parquet(p)
    assert frame["weights"].list.len().to_list() == list(LONG_ROWS)
    assert float_bits(frame.to_arrow().column("weights")) == float_bits(t.column("weights"))


def test_written_nulls_inside_lists_read_back(tmp_path):
    w = [[1.0, None, 3.0], None, [], [None], [5.0] * 300_000]
    t = pa.table({"layer_name": list("abcde"), "weights": pa.array(w, pa.list_(pa.float32()))})
    p = tmp_path / "w.parquet"
    aq.write_parquet(t, p)
    assert pq.read_table(p).column("weights").to_pylist() == w
    assert aq.read_parquet(p).column("weights").to_pylist() == w


def test_import_and_dequantize_outputs_read_in_duckdb(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    from safetensors.numpy import save_file
    rng = np.random.default_rng(3)
    tensors = {"a.weight": rng.standard_normal((512, 600), dtype=np.float32),
               "b.weight": rng.standard_normal((7,), dtype=np.float32)}
    model, table = tmp_path / "m.safetensors", tmp_path / "w.parquet"
    save_file(tensors, str(model))
    assert _internal.cli_main(["arrowquant", "import", str(model), str(table)]) == 0
    rows = duckdb.connect().execute(
        f"SELECT layer_name, weights FROM read_parquet('{table}') ORDER BY layer_name").fetchall()
    assert [r[0] for r in rows] == ["a.weight", "b.weight"]
    for name, values in rows:
        assert np.array_equal(np.array(values, np.float32), tensors[name].ravel()), name
    q, back = tmp_path / "q.parquet", tmp_path / "back.parquet"
    aq.convert(table, q, "int8", 128)
    assert _internal.cli_main(["arrowquant", "dequantize", str(q), str(back)]) == 0
    got = duckdb.connect().execute(
        f"SELECT layer_name, weights FROM read_parquet('{back}') ORDER BY layer_name").fetchall()
    want = aq.dequantize_arrow(pq.read_table(q)).sort_by("layer_name")
    for (name, values), expected in zip(got, want.column("weights").to_pylist()):
        assert np.array_equal(np.array(values, np.float32), np.array(expected, np.float32)), name
