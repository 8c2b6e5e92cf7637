"""Type stubs of the native module ``arrowquant._internal``."""

import os
from typing import Any

__version__: str
SCHEMES: list[str]
DEFAULT_GROUP_SIZE: int

class ScalarUdf:
    """A SQL function of arrowquant, handed to datafusion-python as an FFI capsule."""

    @property
    def name(self) -> str: ...
    def __datafusion_scalar_udf__(self) -> object: ...

class TableFunction:
    """The table function read_safetensors, handed to datafusion-python as an FFI capsule."""

    @property
    def name(self) -> str: ...
    def __datafusion_table_function__(self, session: object) -> object: ...

def udfs() -> list[ScalarUdf]: ...
def udtfs() -> list[TableFunction]: ...
def quantize_stream(
    data: Any,
    scheme: str = "int8",
    group_size: int | str | None = None,
    num_groups: int | None = None,
    min_cosine: float | None = None,
    threads: int = 0,
    method: str = "rtn",
) -> Any: ...
def quantize_batch(
    batch: Any,
    scheme: str = "int8",
    group_size: int | str | None = None,
    num_groups: int | None = None,
    min_cosine: float | None = None,
    threads: int = 0,
    method: str = "rtn",
) -> Any: ...
def summarize(original: Any, quantized: Any) -> Any: ...
def dequantize_stream(data: Any) -> Any: ...
def validate_schema(schema: Any) -> None: ...
def weights_values_address(array: Any) -> int: ...
def passthrough(data: Any) -> Any: ...
def read_parquet(path: str | os.PathLike[str], fast: bool = True) -> Any: ...
def write_parquet(data: Any, path: str | os.PathLike[str], fast: bool = True) -> None: ...
def cli_main(argv: list[str]) -> int: ...
def speed_of_light(array: Any, threads: int = 1) -> int: ...
def convert(
    input: str,
    output: str,
    scheme: str = "int8",
    group_size: int | str | None = None,
    exclude: list[str] = ...,
    min_cosine: float | None = None,
    overwrite: bool = False,
    method: str = "rtn",
) -> str: ...
def convert_compressed_tensors(
    input: str,
    output: str,
    scheme: str = "int8",
    group_size: int | str | None = None,
    include: list[str] = ...,
    exclude: list[str] = ...,
    overwrite: bool = False,
    max_shard_bytes: int | None = None,
    config_from: str | None = None,
    method: str = "rtn",
) -> str: ...
