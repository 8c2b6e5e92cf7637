"""arrowquant: quantize neural-network weights stored as Arrow tables.

A weight table has one row per tensor: ``layer_name`` (string), ``weights`` (list<float32>) and
optionally ``shape`` (list<int64>). Any Arrow producer works as input (pyarrow, polars, duckdb,
arro3, nanoarrow: anything with ``__arrow_c_stream__`` or ``__arrow_c_array__``), without
copying its buffers; results are pyarrow objects.

>>> import pyarrow as pa, arrowquant as aq
>>> t = pa.table({"layer_name": ["fc"], "weights": pa.array([[127.0, -2.5, 0.5]], pa.list_(pa.float32()))})
>>> q = aq.quantize_arrow(t, scheme="int8", group_size=0)
>>> q.column("q")[0]["codes"].as_py()
b'\\x7f\\xfd\\x01'
>>> aq.dequantize_arrow(q).column("weights").to_pylist()
[[127.0, -3.0, 1.0]]
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the command line never loads pyarrow (nor numpy)
    import pyarrow as pa

from . import _internal
from ._errors import ArrowQuantError, ConfigError, QuantizationError, SchemaError
from ._seed import ArrowQuantV2

__version__: str = _internal.__version__

SCHEMES: tuple[str, ...] = tuple(_internal.SCHEMES)
"""Every scheme name: int8, int8_asym, int4, int4_asym, int2, int2_asym, q8_0, q4_0, q2_k … q6_k, int8_zp, int4_zp, int2_zp."""

DEFAULT_GROUP_SIZE: int = _internal.DEFAULT_GROUP_SIZE

__all__ = [
    "ArrowQuantError",
    "ArrowQuantV2",
    "ConfigError",
    "DEFAULT_GROUP_SIZE",
    "QuantizationError",
    "SCHEMES",
    "SchemaError",
    "__version__",
    "convert",
    "dequantize_arrow",
    "quantize_arrow",
    "quantize_arrow_batch",
    "read_parquet",
    "write_parquet",
    "register",
    "summarize",
    "udfs",
    "validate_schema",
]


def quantize_arrow(
    data: Any,
    scheme: str = "int8",
    group_size: int | str | None = DEFAULT_GROUP_SIZE,
    *,
    threads: int = 0,
    method: str = "rtn",
) -> pa.Table:
    """Quantize a weight table: ``SELECT <other columns>, quantize(weights, scheme, group_size) AS q``.

    ``data`` is any Arrow stream or batch producer; a stream is read batch by batch, never
    collected whole, with the GIL released while each batch is quantized. ``group_size`` is a
    number of elements per scale, ``0`` or ``None`` for one scale per tensor, or
    ``"per_channel"`` for one scale per row of the innermost dimension (needs ``shape``).
    q8_0 and q4_0 always use ggml's blocks of 32. A tensor of a million elements or more is
    split across ``threads`` threads (0: every core) at group boundaries, with the same result.
    ``method="search"`` chooses each group's scale (and min or zero point) of least squared
    error instead of rounding to the range (linear schemes; never worse than ``"rtn"``).

    >>> import pyarrow as pa, arrowquant as aq
    >>> t = pa.table({"layer_name": ["a", "b"],
    ...               "weights": pa.array([[1.0, -2.0], [0.5, 0.25]], pa.list_(pa.float32()))})
    >>> q = aq.quantize_arrow(t, scheme="int4")
    >>> q.column_names
    ['layer_name', 'q']
    >>> [row["scheme"] for row in q.column("q").to_pylist()]
    ['int4', 'int4']
    """
    import pyarrow as pa

    return pa.table(_internal.quantize_stream(data, scheme, group_size, threads=threads, method=method))


def quantize_arrow_batch(
    batch: Any,
    scheme: str = "int8",
    group_size: int | str | None = DEFAULT_GROUP_SIZE,
    *,
    threads: int = 0,
    method: str = "rtn",
) -> pa.RecordBatch:
    """Quantize one record batch (see :func:`quantize_arrow`); returns a ``pyarrow.RecordBatch``.

    >>> import pyarrow as pa, arrowquant as aq
    >>> b = pa.record_batch({"layer_name": ["a"], "weights": pa.array([[7.0, 1.0]], pa.list_(pa.float32()))})
    >>> aq.quantize_arrow_batch(b, scheme="int4", group_size=32).column("q")[0]["codes"].as_py()
    b'\\x17'
    """
    import pyarrow as pa

    return pa.record_batch(_internal.quantize_batch(batch, scheme, group_size, threads=threads, method=method))


def dequantize_arrow(data: Any) -> pa.Table:
    """Turn a quantized table back into a weight table: ``q`` becomes ``weights`` (list<float32>).

    >>> import pyarrow as pa, arrowquant as aq
    >>> t = pa.table({"layer_name": ["a"], "weights": pa.array([[0.0, 7.0, -3.5]], pa.list_(pa.float32()))})
    >>> aq.dequantize_arrow(aq.quantize_arrow(t, "int4")).column("weights").to_pylist()
    [[0.0, 7.0, -4.0]]
    """
    import pyarrow as pa

    return pa.table(_internal.dequantize_stream(data))


def read_parquet(path: str | os.PathLike[str]) -> pa.Table:
    """Read a Parquet weight table (a file or a directory of them) into a ``pyarrow.Table``.

    ``list<float>`` columns (float16/32/64 items, one row per tensor) are read straight from
    their pages at memory speed; every other column, and any page the fast path does not cover
    (nulls inside a list, unusual encodings), by the parquet crate's generic reader. The result
    is the same as ``pyarrow.parquet.read_table``'s, and the buffers are handed over without a copy.

    >>> import pyarrow as pa, pyarrow.parquet as pq, arrowquant as aq, tempfile, os
    >>> t = pa.table({"layer_name": ["a", "b"],
    ...               "weights": pa.array([[1.0, -2.0], []], pa.list_(pa.float32()))})
    >>> path = os.path.join(tempfile.mkdtemp(), "w.parquet")
    >>> pq.write_table(t, path)
    >>> aq.read_parquet(path).equals(t)
    True
    """
    import pyarrow as pa

    return pa.table(_internal.read_parquet(os.fspath(path)))


def write_parquet(data: Any, path: str | os.PathLike[str]) -> None:
    """Write any Arrow table or stream (``__arrow_c_stream__``) to a Parquet file at ``path``.

    Top-level ``list<float>`` columns (weights) are written row by row: a tensor's levels as
    two runs and its values as one copy of the Arrow buffer, in PLAIN pages; every other column
    by the parquet crate's writer. Every Parquet reader reads the file (pyarrow, DuckDB, polars,
    DataFusion). Like every arrowquant output the file appears whole or not at all.

    >>> import pyarrow as pa, pyarrow.parquet as pq, arrowquant as aq, tempfile, os
    >>> t = pa.table({"layer_name": ["a", "b", "c"],
    ...               "weights": pa.array([[1.0, -2.0], [], None], pa.list_(pa.float32()))})
    >>> path = os.path.join(tempfile.mkdtemp(), "w.parquet")
    >>> aq.write_parquet(t, path)
    >>> pq.read_table(path).equals(t)
    True
    """
    _internal.write_parquet(data, os.fspath(path))


def validate_schema(schema: Any) -> None:
    """Raise :class:`SchemaError` unless ``schema`` is a weight table's (DESIGN.md §1).

    >>> import pyarrow as pa, arrowquant as aq
    >>> aq.validate_schema(pa.schema({"layer_name": pa.string(), "weights": pa.list_(pa.float32())}))
    >>> aq.validate_schema(pa.schema({"name": pa.string(), "weights": pa.list_(pa.string())}))
    Traceback (most recent call last):
    ...
    arrowquant.SchemaError: not a weight table: column 'layer_name': expected utf8 (or large_utf8, utf8view), found no such column; column 'weights': expected list<float32> (or large_list, fixed_size_list; float16/float64 items), found List(Utf8). The table has [name: Utf8, weights: List(Utf8)]
    """
    if not hasattr(schema, "__arrow_c_schema__"):
        raise TypeError(f"expected an Arrow schema (__arrow_c_schema__), got {type(schema).__name__}")
    _internal.validate_schema(schema)


def summarize(original: Any, quantized: Any) -> pa.Table:
    """Per layer: shape (when ``original`` has one), scheme, numel, bytes before and after,
    ``compression_ratio``, ``mse``, ``max_abs_error``, ``sqnr_db``, ``cosine_similarity`` and
    ``sensitivity`` of ``quantized`` against ``original`` (joined on ``layer_name``): the same table as ``convert``'s report. The whole
    model's ``compression_ratio``, ``cosine_similarity`` and byte counts are in the schema
    metadata.

    >>> import pyarrow as pa, arrowquant as aq
    >>> t = pa.table({"layer_name": ["a"], "weights": pa.array([[1.0, -1.0, 0.5, 0.0]], pa.list_(pa.float32()))})
    >>> s = aq.summarize(t, aq.quantize_arrow(t, "int8"))
    >>> s.column("bytes_before")[0].as_py(), s.column("bytes_after")[0].as_py()
    (16, 8)
    >>> float(s.schema.metadata[b"compression_ratio"])
    2.0
    """
    import pyarrow as pa

    return pa.table(_internal.summarize(original, quantized))


def convert(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    scheme: str = "int8",
    group_size: int | str | None = DEFAULT_GROUP_SIZE,
    *,
    exclude: list[str] | tuple[str, ...] = (),
    min_cosine: float | None = None,
    overwrite: bool = False,
    format: str | None = None,
    include: list[str] | tuple[str, ...] = (),
    max_shard_bytes: int | None = None,
    config_from: str | os.PathLike[str] | None = None,
    method: str = "rtn",
) -> dict[str, Any]:
    """The streaming job of ``arrowquant convert``: Parquet weight table in, quantized Parquet out.

    With ``format="compressed-tensors"`` (the default when ``input`` is a Hugging Face model
    directory, one with a ``config.json``), ``output`` is a model directory that
    ``transformers.AutoModelForCausalLM.from_pretrained`` and vLLM load: the 2-D ``*.weight``
    tensors quantized (less ``exclude``, embeddings and ``lm_head``, plus ``include``), packed
    exactly as compressed-tensors' ``pack-quantized`` format, in shards of at most
    ``max_shard_bytes`` (5 GB); returns ``{"quantized": [...], "dense": [...], "shards": [...]}``.
    An already quantized ``q`` table (the Parquet output of this function) is exported the same
    way, exactly and without requantizing, with ``config_from=`` the original model directory.

    ``input`` is a Parquet file or a directory of them, read a tensor at a time (memory does not
    grow with the model); ``output`` appears atomically when the job is done. ``group_size`` is as
    in :func:`quantize_arrow`; layers whose names match a glob of ``exclude`` stay float32;
    ``min_cosine`` picks int2, int4 or int8 per layer; ``method`` is as in :func:`quantize_arrow`. Runs in Rust on every core with the GIL
    released; returns the report: ``layers`` (shape, scheme, bytes, error metrics, sensitivity
    per layer), ``compression_ratio``, ``cosine_similarity``, ``seconds``.

    >>> import os, tempfile, pyarrow as pa, pyarrow.parquet as pq, arrowquant as aq
    >>> d = tempfile.mkdtemp()
    >>> t = pa.table({"layer_name": ["fc", "norm"], "weights": pa.array([[7.0, -1.0], [1.0, 1.0]], pa.list_(pa.float32()))})
    >>> pq.write_table(t, os.path.join(d, "model.parquet"))
    >>> r = aq.convert(os.path.join(d, "model.parquet"), os.path.join(d, "q.parquet"), "int4", exclude=["norm"])
    >>> [(layer["layer_name"], layer["scheme"]) for layer in r["layers"]]
    [('fc', 'int4'), ('norm', 'float32')]
    >>> pq.read_table(os.path.join(d, "q.parquet")).column("q")[0]["codes"].as_py()
    b'\\xf7'
    """
    import json

    if format is None and os.path.isfile(os.path.join(os.fspath(input), "config.json")):
        format = "compressed-tensors"
    if config_from is not None and format is None:
        format = "compressed-tensors"
    if format == "compressed-tensors":
        if min_cosine is not None:
            raise ConfigError("min_cosine: compressed-tensors is written with one scheme")
        written = _internal.convert_compressed_tensors(
            os.fspath(input), os.fspath(output), scheme, group_size,
            list(include), list(exclude), overwrite, max_shard_bytes,
            None if config_from is None else os.fspath(config_from), method,
        )
        return json.loads(written)
    if format not in (None, "parquet"):
        raise ConfigError(f"format: expected 'parquet' or 'compressed-tensors', got {format!r}")
    if include or max_shard_bytes is not None:
        raise ConfigError("include and max_shard_bytes are for format='compressed-tensors'")
    report = _internal.convert(
        os.fspath(input), os.fspath(output), scheme, group_size, list(exclude), min_cosine, overwrite, method
    )
    return json.loads(report)


def udfs() -> list[Any]:
    """Every arrowquant SQL function as an object with ``__datafusion_scalar_udf__``."""
    return list(_internal.udfs())


def register(ctx: Any) -> None:
    """Register every arrowquant SQL function into a ``datafusion.SessionContext``: the scalar
    functions of :func:`udfs` and the table function ``read_safetensors('path')``.

    >>> import datafusion, arrowquant as aq
    >>> ctx = datafusion.SessionContext()
    >>> aq.register(ctx)
    >>> ctx.sql("SELECT quantize([7.0, -1.0], 'int4', 0)['codes'] AS c").to_pylist()
    [{'c': b'\\xf7'}]
    """
    import datafusion

    for f in _internal.udfs():
        ctx.register_udf(datafusion.udf(f))
    for t in _internal.udtfs():
        ctx.register_udtf(datafusion.udtf(t, t.name))
