"""``ArrowQuantV2``: the seed system's API, on top of arrowquant's kernels.

"Time-aware" here is grouped asymmetric quantization of weights: each tensor is split into
``num_time_groups`` contiguous groups, each with its own scale and minimum. A weight table has no
timestep data; the name is kept so the seed's calls work unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the command line never loads pyarrow (nor numpy)
    import pyarrow as pa

from . import _internal
from ._errors import ConfigError


class ArrowQuantV2:
    """The seed's quantizer: ``ArrowQuantV2(mode="time_aware").quantize_arrow(table, bit_width=4)``.

    - ``mode="time_aware"`` (default): ``int{bit_width}_asym`` in ``num_time_groups`` groups per tensor.
    - ``mode="base"``: symmetric ``int{bit_width}`` in groups of ``group_size`` (128).

    The result is the same table as :func:`arrowquant.quantize_arrow`: the other columns, then ``q``.

    >>> import pyarrow as pa, arrowquant as aq
    >>> t = pa.table({"layer_name": ["fc"], "weights": [[0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]]})
    >>> q = aq.ArrowQuantV2().quantize_arrow(t, bit_width=2, num_time_groups=2)
    >>> r = q.column("q")[0].as_py()
    >>> r["scheme"], r["group_size"], r["scales"], r["mins"]
    ('int2_asym', 4, [1.0, 1.0], [0.0, 10.0])
    """

    MODES = ("time_aware", "base")
    BIT_WIDTHS = (2, 4, 8)

    def __init__(self, mode: str = "time_aware", group_size: int = 128) -> None:
        if mode not in self.MODES:
            raise ConfigError(f"mode: expected one of {', '.join(self.MODES)}, got {mode!r}")
        if not isinstance(group_size, int) or group_size < 0:
            raise ConfigError(f"group_size: expected a non-negative integer, got {group_size!r}")
        self.mode = mode
        self.group_size = group_size

    def __repr__(self) -> str:
        return f"ArrowQuantV2(mode={self.mode!r})"

    def validate_parameters(self, bit_width: int, num_time_groups: int) -> None:
        """Raise :class:`ConfigError` (a ``ValueError``) unless both are allowed.

        >>> import arrowquant as aq
        >>> aq.ArrowQuantV2().validate_parameters(3, 10)
        Traceback (most recent call last):
        ...
        arrowquant.ConfigError: bit_width: expected one of 2, 4, 8, got 3
        """
        if isinstance(bit_width, bool) or bit_width not in self.BIT_WIDTHS:
            raise ConfigError(f"bit_width: expected one of 2, 4, 8, got {bit_width!r}")
        if isinstance(num_time_groups, bool) or not isinstance(num_time_groups, int) or num_time_groups < 1:
            raise ConfigError(f"num_time_groups: expected a positive integer, got {num_time_groups!r}")

    def validate_arrow_input(self, table: Any) -> bool:
        """Check that ``table`` is a weight table; raise :class:`SchemaError` if not, else True."""
        schema = table.schema if hasattr(table, "schema") and not hasattr(table, "__arrow_c_schema__") else table
        if not hasattr(schema, "__arrow_c_schema__"):
            import pyarrow as pa

            schema = pa.table(table).schema
        _internal.validate_schema(schema)
        return True

    def _args(self, bit_width: int, num_time_groups: int) -> dict[str, Any]:
        self.validate_parameters(bit_width, num_time_groups)
        if self.mode == "time_aware":
            return {"scheme": f"int{bit_width}_asym", "num_groups": num_time_groups}
        return {"scheme": f"int{bit_width}", "group_size": self.group_size}

    def quantize_arrow(
        self, weights_table: Any, bit_width: int = 4, num_time_groups: int = 10, min_accuracy: float | None = None
    ) -> pa.Table:
        """Quantize a weight table (any Arrow stream). With ``min_accuracy``, each layer gets the
        narrowest of int2, int4, int8 whose cosine similarity reaches it (``quantize_to_target``)."""
        args = self._args(bit_width, num_time_groups)
        import pyarrow as pa

        return pa.table(_internal.quantize_stream(weights_table, min_cosine=min_accuracy, **args))

    def quantize_arrow_batch(
        self, batch: Any, bit_width: int = 4, num_time_groups: int = 10, min_accuracy: float | None = None
    ) -> pa.RecordBatch:
        """Quantize one record batch, like :meth:`quantize_arrow`."""
        args = self._args(bit_width, num_time_groups)
        import pyarrow as pa

        return pa.record_batch(_internal.quantize_batch(batch, min_cosine=min_accuracy, **args))
