"""The exceptions arrowquant raises. Every error a user can cause is one of these."""

from __future__ import annotations


class ArrowQuantError(Exception):
    """Base class of every arrowquant error."""


class SchemaError(ArrowQuantError, ValueError):
    """The table is not a weight table: says, per column, what was expected and what was found."""


class QuantizationError(ArrowQuantError, ValueError):
    """A row's data cannot be quantized (NaN, infinity, a shape that disagrees with the length)."""


class ConfigError(ArrowQuantError, ValueError):
    """Bad options: an unknown scheme, a negative group size, an unknown mode."""


for _cls in (ArrowQuantError, SchemaError, QuantizationError, ConfigError):
    _cls.__module__ = "arrowquant"
