"""One options model: the same mistake gets the same words from the command line, from SQL and
from Python. Each front end names the option its own way (``--group-size``, ``'quantize'
argument 3 (group_size)``, ``group_size``); what follows the name is the same text, from
``src/options.rs``."""

from __future__ import annotations

import subprocess
import sys

import datafusion
import pyarrow.parquet as pq
import pytest

import arrowquant as aq
from conftest import weight_table

SCHEMES = "int8, int8_asym, int4, int4_asym, int2, int2_asym, q8_0, q4_0, q2_k, q3_k, q4_k, q5_k, q6_k, int8_zp, int4_zp, int2_zp"

# mistake: (cli args, SQL, python call, (cli label, SQL label, python label), the shared words)
MISTAKES = {
    "unknown scheme": (
        ["--scheme", "int3"],
        "SELECT quantize(weights, 'int3', 128) FROM t",
        lambda t, p, o: aq.quantize_arrow(t, "int3", 128),
        ("'--scheme <SCHEME>': ", "'quantize' argument 2 (scheme): ", "scheme: "),
        f"expected one of {SCHEMES}, got 'int3'",
    ),
    "negative group size": (
        ["--scheme", "int8", "--group-size", "-4"],
        "SELECT quantize(weights, 'int8', -4) FROM t",
        lambda t, p, o: aq.quantize_arrow(t, "int8", -4),
        ("'--group-size <GROUP_SIZE>': ", "'quantize' argument 3 (group_size): ", "group_size: "),
        "expected 0 (one group per tensor) or a positive number of elements, got -4",
    ),
    "ggml block": (
        ["--scheme", "q4_0", "--group-size", "64"],
        "SELECT quantize(weights, 'q4_0', 64) FROM t",
        lambda t, p, o: aq.quantize_arrow(t, "q4_0", 64),
        ("--group-size: ", "'quantize' argument 3 (group_size): ", "group_size: "),
        "q4_0 uses fixed blocks of 32, got 64",
    ),
    "cosine target out of range": (
        ["--min-cosine", "1.5"],
        "SELECT quantize_to_target(weights, 1.5) FROM t",
        lambda t, p, o: aq.convert(p, o, min_cosine=1.5),
        ("--min-cosine: ", "'quantize_to_target' argument 2 (min_cosine): ", "min_cosine: "),
        "expected a cosine similarity between -1 and 1, got 1.5",
    ),
    "unknown method": (
        ["--scheme", "int4", "--method", "best"],
        "SELECT quantize(weights, 'int4', 128, 'best') FROM t",
        lambda t, p, o: aq.quantize_arrow(t, "int4", 128, method="best"),
        ("'--method <METHOD>': ", "'quantize' argument 4 (method): ", "method: "),
        "unknown method 'best': expected 'rtn' or 'search'",
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_the_same_mistake_reads_the_same_everywhere(mistake, tmp_path):
    cli_args, sql, py, labels, words = MISTAKES[mistake]
    t = weight_table(n_layers=2)
    path, out = tmp_path / "t.parquet", tmp_path / "out.parquet"
    pq.write_table(t, path)

    proc = subprocess.run([sys.executable, "-m", "arrowquant", "convert", str(path), str(out), *cli_args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    ctx = datafusion.SessionContext()
    aq.register(ctx)
    ctx.from_arrow(t, "t")
    with pytest.raises(Exception) as sql_error:
        ctx.sql(sql).collect()
    with pytest.raises(aq.ConfigError) as py_error:
        py(t, path, out)

    messages = (proc.stderr, str(sql_error.value), str(py_error.value))
    for label, message in zip(labels, messages):
        assert label + words in message, (label + words, message)
    assert not out.exists()
