"""Parity with the seed's ArrowQuantV2 (DESIGN.md §8): its calls, its defaults, its errors."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

import arrowquant as aq

from conftest import weight_table


def test_the_seeds_own_call_on_a_table_from_python_lists():
    table = pa.table({"layer_name": ["l0", "l1"], "weights": [[float(i) for i in range(100)], [0.5] * 30]})
    q = aq.ArrowQuantV2().quantize_arrow(table, bit_width=4)
    rows = q.column("q").to_pylist()
    assert [r["scheme"] for r in rows] == ["int4_asym", "int4_asym"]
    # num_time_groups defaults to 10: groups of ceil(numel / 10)
    assert [r["group_size"] for r in rows] == [10, 3]
    assert [len(r["scales"]) for r in rows] == [10, 10]
    assert len(rows[0]["mins"]) == 10
    back = aq.dequantize_arrow(q).column("weights").to_pylist()
    np.testing.assert_allclose(back[0], np.arange(100), atol=9 / 15 / 2 + 1e-5)  # half a step of each group
    assert back[1] == [0.5] * 30


@pytest.mark.parametrize("bit_width", [2, 4, 8])
def test_base_mode_is_symmetric_in_groups(bit_width):
    t = weight_table()
    q = aq.ArrowQuantV2(mode="base").quantize_arrow(t, bit_width=bit_width)
    r = q.column("q")[0].as_py()
    assert (r["scheme"], r["group_size"], r["mins"]) == (f"int{bit_width}", 128, None)
    assert len(r["codes"]) == 1024 * bit_width // 8
    b = aq.ArrowQuantV2(mode="base").quantize_arrow_batch(t.to_batches()[0], bit_width=bit_width)
    assert isinstance(b, pa.RecordBatch) and b.column("q").to_pylist() == q.column("q").to_pylist()


def test_bad_parameters_name_the_allowed_values():
    v2 = aq.ArrowQuantV2()
    with pytest.raises(ValueError, match="bit_width: expected one of 2, 4, 8, got 3"):
        v2.validate_parameters(3, 10)
    with pytest.raises(aq.ConfigError, match="num_time_groups: expected a positive integer, got 0"):
        v2.quantize_arrow(weight_table(), bit_width=4, num_time_groups=0)
    with pytest.raises(aq.ConfigError, match="mode: expected one of time_aware, base, got 'fast'"):
        aq.ArrowQuantV2(mode="fast")
    assert v2.validate_arrow_input(weight_table()) is True
    with pytest.raises(aq.SchemaError):
        v2.validate_arrow_input(pa.table({"layer_name": ["a"]}))


def test_min_accuracy_picks_a_width_per_layer_and_meets_it():
    n = 4096
    rng = np.random.default_rng(5)
    ternary = rng.choice([-0.05, 0.0, 0.05], n).astype(np.float32)
    gaussian = rng.standard_normal(n).astype(np.float32)
    heavy = (rng.standard_t(1.5, n) * 0.02).astype(np.float32)  # heavy tails
    t = pa.table({"layer_name": ["ternary", "gaussian", "heavy"],
                  "weights": pa.array([ternary, gaussian, heavy], pa.list_(pa.float32()))})
    q = aq.ArrowQuantV2(mode="base").quantize_arrow(t, bit_width=4, min_accuracy=0.995)
    schemes = [r["scheme"] for r in q.column("q").to_pylist()]
    assert schemes[0] == "int2" and schemes[2] == "int8", schemes
    s = aq.summarize(t, q)
    assert all(c >= 0.995 for c in s.column("cosine_similarity").to_pylist())
    assert s.column("scheme").to_pylist() == schemes


def test_summarize_reports_compression_and_cosine():
    t = weight_table(n_layers=3)
    q = aq.quantize_arrow(t, "int4", 32)
    s = aq.summarize(t, q)
    assert s.column_names == ["layer_name", "shape", "scheme", "numel", "bytes_before", "bytes_after",
                              "compression_ratio", "mse", "max_abs_error", "sqnr_db", "cosine_similarity", "sensitivity"]
    assert all(5.0 < e < 8.0 for e in s.column("sensitivity").to_pylist())  # Gaussian in 256 bins
    assert s.column("bytes_before").to_pylist() == [4096] * 3
    assert s.column("bytes_after").to_pylist() == [512 + 32 * 4] * 3
    assert s.column("compression_ratio").to_pylist() == [6.4] * 3
    assert math.isclose(float(s.schema.metadata[b"compression_ratio"]), 6.4)
    total = float(s.schema.metadata[b"cosine_similarity"])
    assert 0.99 < total <= 1.0
    with pytest.raises(aq.QuantizationError, match="layer 'encoder.2.weight' is in the original table but not in the quantized one"):
        aq.summarize(t, q.slice(0, 2))


def test_every_error_is_an_arrowquant_error():
    for cls in (aq.SchemaError, aq.QuantizationError, aq.ConfigError):
        assert issubclass(cls, aq.ArrowQuantError) and issubclass(cls, ValueError)
