"""Shared fixtures: small weight tables built with pyarrow and numpy."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest


def weight_table(n_layers: int = 4, rows: int = 16, cols: int = 64, seed: int = 0) -> pa.Table:
    """A weight table of `n_layers` Gaussian [rows, cols] matrices (float32)."""
    rng = np.random.default_rng(seed)
    names, weights, shapes = [], [], []
    for i in range(n_layers):
        w = rng.standard_normal(rows * cols).astype(np.float32) * (0.02 * (i + 1))
        names.append(f"encoder.{i}.weight")
        weights.append(w)
        shapes.append([rows, cols])
    offsets = np.arange(0, (n_layers + 1) * rows * cols, rows * cols, dtype=np.int32)
    values = pa.array(np.concatenate(weights), pa.float32())
    return pa.table(
        {
            "layer_name": pa.array(names, pa.string()),
            "weights": pa.ListArray.from_arrays(pa.array(offsets), values),
            "shape": pa.array(shapes, pa.list_(pa.int64())),
        }
    )


@pytest.fixture
def table() -> pa.Table:
    return weight_table()
