"""The SQL functions inside a datafusion-python SessionContext, through datafusion-ffi."""

from __future__ import annotations

import importlib.metadata

import datafusion
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import arrowquant as aq

from conftest import weight_table


def test_installed_datafusion_is_the_major_our_ffi_was_built_for():
    # Nothing checks the FFI ABI at load time (DESIGN.md §7): a different major is UB.
    assert importlib.metadata.version("datafusion").split(".")[0] == "55"


@pytest.fixture
def ctx() -> datafusion.SessionContext:
    ctx = datafusion.SessionContext()
    aq.register(ctx)
    return ctx


def test_every_function_is_registered(ctx):
    names = {f.name for f in aq.udfs()}
    assert names == {"quantize", "dequantize", "quantization_error", "gguf_blocks", "quantize_to_target", "weight_entropy"}
    for name in names:
        # Each one resolves in SQL; a wrong arity is a planning error naming the function.
        with pytest.raises(Exception, match=f"'{name}'"):
            ctx.sql(f"SELECT {name}(1, 2, 3, 4, 5)").collect()


def test_quantize_on_a_pyarrow_table(ctx, table):
    ctx.register_record_batches("layers", [table.to_batches()])
    out = ctx.sql("SELECT layer_name, quantize(weights, 'int8') AS q FROM layers ORDER BY layer_name").to_arrow_table()
    assert out.column_names == ["layer_name", "q"]
    q = out.column("q").to_pylist()
    assert [r["scheme"] for r in q] == ["int8"] * 4
    assert [r["numel"] for r in q] == [1024] * 4
    assert [len(r["scales"]) for r in q] == [8] * 4  # 1024 / 128
    # Same bytes as the pyarrow path.
    direct = aq.quantize_arrow(table, "int8", 128).sort_by("layer_name").column("q").to_pylist()
    assert [r["codes"] for r in q] == [r["codes"] for r in direct]


def numpy_metrics(x: np.ndarray, y: np.ndarray) -> list[float]:
    x, y = x.astype(np.float64), y.astype(np.float64)
    e = x - y
    return [
        float(np.mean(e * e)),
        float(np.max(np.abs(e))),
        float(10 * np.log10(np.sum(x * x) / np.sum(e * e))),
        float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))),
    ]


def test_parquet_int4_round_trip_and_error_metrics_agree_with_numpy(ctx, tmp_path):
    table = weight_table(n_layers=3, rows=8, cols=96, seed=7)
    path = tmp_path / "layers.parquet"
    pq.write_table(table, path)
    ctx.register_parquet("layers", str(path))
    out = ctx.sql(
        """
        SELECT layer_name, weights, q, dequantize(q) AS restored, quantization_error(weights, q) AS err
        FROM (SELECT layer_name, weights, quantize(weights, 'int4', 32) AS q FROM layers)
        ORDER BY layer_name
        """
    ).to_pylist()
    assert len(out) == 3
    for row in out:
        x = np.array(row["weights"], np.float32)
        y = np.array(row["restored"], np.float32)
        scales = np.repeat(np.array(row["q"]["scales"], np.float32), 32)
        # Every element within half a step of its group's scale.
        assert np.all(np.abs(x - y) <= scales / 2 * (1 + 1e-6) + 1e-12)
        err = row["err"]
        got = [err["mse"], err["max_abs_error"], err["sqnr_db"], err["cosine_similarity"]]
        np.testing.assert_allclose(got, numpy_metrics(x, y), rtol=1e-9)


def test_per_row_scheme_through_case(ctx, table):
    ctx.register_record_batches("layers", [table.to_batches()])
    rows = ctx.sql(
        """
        SELECT layer_name, quantize(weights, CASE WHEN layer_name LIKE '%.0.%' THEN 'int8' ELSE 'q4_0' END)['scheme'] AS s
        FROM layers ORDER BY layer_name
        """
    ).to_pylist()
    assert [r["s"] for r in rows] == ["int8", "q4_0", "q4_0", "q4_0"]


def test_gguf_blocks_match_gguf_quants(ctx, table):
    from gguf.constants import GGMLQuantizationType as T
    from gguf.quants import quantize

    ctx.register_record_batches("layers", [table.to_batches()])
    rows = ctx.sql(
        "SELECT weights, gguf_blocks(quantize(weights, 'q8_0')) AS b8, gguf_blocks(quantize(weights, 'q4_0')) AS b4 FROM layers"
    ).to_pylist()
    for r in rows:
        x = np.array(r["weights"], np.float32)
        assert r["b8"] == quantize(x, T.Q8_0).tobytes()
        assert r["b4"] == quantize(x, T.Q4_0).tobytes()


def test_gguf_blocks_match_gguf_quants_on_a_million_values(ctx):
    """2^20 values of every kind of block (Gaussian, heavy-tailed, magnitude ties, one non-zero,
    scales near f16's max and subnormal, zeros): ggml's bytes, as gguf.quants computes them."""
    import pyarrow as pa
    from gguf.constants import GGMLQuantizationType as T
    from gguf.quants import quantize

    rng = np.random.default_rng(20)
    blocks = rng.standard_normal((1 << 15, 32)).astype(np.float32)
    kind = np.arange(len(blocks)) % 8
    blocks[kind == 1] = rng.standard_t(2, (int((kind == 1).sum()), 32)).astype(np.float32) * 0.02
    blocks[kind == 2] = np.where(np.arange(32) % 2 == 0, 4.0, -4.0).astype(np.float32)
    blocks[kind == 3] = 0.0
    blocks[kind == 3, 31] = 3.0
    blocks[kind == 4] = ((np.arange(32) - 15.5) * 3.2e4).astype(np.float32)
    blocks[kind == 5] = ((np.arange(32) - 15.5) * 1.0e-7).astype(np.float32)
    blocks[kind == 6] = 0.0
    x = blocks.reshape(-1)
    t = pa.table({"weights": pa.FixedSizeListArray.from_arrays(pa.array(x), len(x))})
    ctx.register_record_batches("big", [t.to_batches()])
    row = ctx.sql("SELECT gguf_blocks(quantize(weights, 'q8_0')) AS b8, "
                  "gguf_blocks(quantize(weights, 'q4_0')) AS b4 FROM big").to_pylist()[0]
    with np.errstate(all="ignore"):
        assert row["b8"] == quantize(blocks, T.Q8_0).tobytes()
        assert row["b4"] == quantize(blocks, T.Q4_0).tobytes()


def test_errors_reach_python_as_exceptions(ctx):
    with pytest.raises(Exception, match=r"'quantize' argument 2 \(scheme\): expected one of int8, .*got 'int3'"):
        ctx.sql("SELECT quantize([1.0], 'int3')").collect()
    with pytest.raises(Exception, match=r"quantize: row 0: element 1 is NaN"):
        ctx.sql("SELECT quantize([1.0, 'NaN'::double])").collect()


def test_read_safetensors_through_datafusion_python(ctx, tmp_path):
    """A table function crossing datafusion-ffi: segfaults unless tokio's rt-multi-thread is on."""
    import json
    import struct

    w = np.arange(-8, 8, dtype=np.float32)
    h = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    h += b" " * (-len(h) % 8)
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(h)) + h + w.tobytes())
    rows = ctx.sql(f"SELECT layer_name, shape, dequantize(quantize(weights, 'int8', shape[-1])) AS back "
                   f"FROM read_safetensors('{path}')").to_pylist()
    assert rows == [{"layer_name": "w", "shape": [4, 4], "back": pytest.approx(w.tolist(), abs=8 / 127 / 2 + 1e-6)}]
    with pytest.raises(Exception, match="not a valid safetensors file"):
        (tmp_path / "bad.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}")
        ctx.sql(f"SELECT * FROM read_safetensors('{tmp_path / 'bad.safetensors'}')").collect()
