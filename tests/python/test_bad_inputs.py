"""Every bad input, through every entry point that can meet it, each in its own subprocess so an
abort would show: the process must exit normally with the expected error (or result).

Entry points: `py` = aq.quantize_arrow / dequantize_arrow, `dfpy` = SQL in a datafusion-python
SessionContext, `sql` = SQL in Rust's DataFusion (`arrowquant sql`), `cli` = `arrowquant convert`
/ `dequantize`. The table of cases is also in README.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

F32 = "pa.list_(pa.float32())"


def t(weights: str, shape: str | None = None, weights_type: str = F32) -> str:
    cols = f"'layer_name': ['enc.0'], 'weights': pa.array({weights}, {weights_type})"
    if shape is not None:
        cols += f", 'shape': pa.array({shape}, pa.list_(pa.int64()))"
    return "pa.table({" + cols + "})"


# name: (table expression, scheme, group_size, {entry point: expected})
# expected: "ok" or (error class for py / exit code for cli, message fragment)
CASES: dict[str, tuple[str, str, object, dict]] = {
    "weights of strings": (t("[['a']]", weights_type="pa.list_(pa.string())"), "int8", 128, {
        "py": ("SchemaError", "column 'weights': expected list<float32>"),
        "dfpy": ("Exception", "'quantize' argument 1 (weights): expected a list of floats"),
        "sql": (1, "'quantize' argument 1 (weights): expected a list of floats"),
        "cli": (1, "column 'weights': expected list<float32>")}),
    "no weights column": ("pa.table({'layer_name': ['a'], 'w': [[1.0]]})", "int8", 128, {
        "py": ("SchemaError", "column 'weights': expected list<float32> (or large_list, fixed_size_list; float16/float64 items), found no such column"),
        "dfpy": ("Exception", "weights"),
        "sql": (1, "weights"),
        "cli": (1, "found no such column")}),
    "null inside a list": (t("[[1.0, None]]"), "int8", 128, {
        "py": ("QuantizationError", "layer 'enc.0' (row 0): element 1 is null"),
        "dfpy": ("Exception", "quantize: row 0: element 1 is null"),
        "sql": (1, "quantize: row 0: element 1 is null"),
        "cli": (1, "element 1 is null")}),
    "NaN": (t("[[1.0, float('nan')]]"), "int4", 32, {
        "py": ("QuantizationError", "layer 'enc.0' (row 0): element 1 is NaN, but weights must be finite"),
        "dfpy": ("Exception", "quantize: row 0: element 1 is NaN"),
        "sql": (1, "quantize: row 0: element 1 is NaN"),
        "cli": (1, "element 1 is NaN")}),
    "+inf": (t("[[float('inf'), 1.0]]"), "int8_asym", 128, {
        "py": ("QuantizationError", "element 0 is inf"), "dfpy": ("Exception", "element 0 is inf"),
        "sql": (1, "element 0 is inf"), "cli": (1, "element 0 is inf")}),
    "-inf": (t("[[1.0, 2.0, float('-inf')]]"), "int2", 32, {
        "py": ("QuantizationError", "element 2 is -inf"), "dfpy": ("Exception", "element 2 is -inf"),
        "sql": (1, "element 2 is -inf"), "cli": (1, "element 2 is -inf")}),
    "q8_0 of 3 elements": (t("[[1.0, 2.0, 3.0]]"), "q8_0", 32, {
        "py": ("QuantizationError", "q8_0 needs a length that is a multiple of 32, got 3 elements"),
        "dfpy": ("Exception", "q8_0 needs a length that is a multiple of 32"),
        "sql": (1, "multiple of 32"), "cli": (1, "multiple of 32")}),
    "K-quant of 100 elements": (t("[[1.0] * 100]"), "q4_k", 256, {
        "py": ("QuantizationError", "q4_k needs a length that is a multiple of 256, got 100 elements"),
        "dfpy": ("Exception", "q4_k needs a length that is a multiple of 256"),
        "sql": (1, "multiple of 256"), "cli": (1, "multiple of 256")}),
    "subnormals": (t("[[1e-45, -2e-45, 0.0, 5e-39]]"), "int8", 128, {
        "py": "ok", "dfpy": "ok", "sql": "ok", "cli": "ok"}),
    "f32::MAX": (t("[[3.4028235e38, -3.4028235e38, 0.0]]"), "int4_asym", 128, {
        "py": "ok", "dfpy": "ok", "sql": "ok", "cli": "ok"}),
    "shape product mismatch": (t("[[1.0, 2.0, 3.0]]", "[[2, 2]]"), "int8", 128, {
        "py": ("QuantizationError", "layer 'enc.0' (row 0): shape [2, 2] has 4 elements but the row has 3"),
        "cli": (1, "shape [2, 2] has 4 elements but the row has 3")}),
    "negative dimension": (t("[[1.0, 2.0]]", "[[-1, -2]]"), "int8", 128, {
        "py": ("QuantizationError", "shape [-1, -2] has a negative dimension -1"),
        "cli": (1, "negative dimension")}),
    "zero dimension, empty row": (t("[[]]", "[[0, 4]]"), "int8", 128, {"py": "ok", "cli": "ok"}),
    "group_size 0 (per tensor)": (t("[[1.0, -2.0]]"), "int8", 0, {"py": "ok", "dfpy": "ok", "sql": "ok", "cli": "ok"}),
    "group_size negative": (t("[[1.0]]"), "int8", -4, {
        "py": ("ConfigError", "group_size: expected 0 (one group per tensor) or a positive number of elements, got -4"),
        "dfpy": ("Exception", "'quantize' argument 3 (group_size): expected 0 (one group per tensor) or a positive number of elements, got -4"),
        "sql": (1, "'quantize' argument 3 (group_size)"),
        "cli": (2, "--group-size")}),
    "group_size larger than the row": (t("[[1.0, -2.0, 3.0]]"), "int4", 1000, {"py": "ok", "dfpy": "ok", "sql": "ok", "cli": "ok"}),
    "unknown scheme": (t("[[1.0]]"), "int3", 128, {
        "py": ("ConfigError", "scheme: expected one of int8, int8_asym, int4, int4_asym, int2, int2_asym, q8_0, q4_0, q2_k, q3_k, q4_k, q5_k, q6_k, int8_zp, int4_zp, int2_zp, got 'int3'"),
        "dfpy": ("Exception", "'quantize' argument 2 (scheme): expected one of"),
        "sql": (1, "'quantize' argument 2 (scheme): expected one of"),
        "cli": (2, "expected one of int8")}),
    "empty table": ("pa.table({'layer_name': pa.array([], pa.string()), 'weights': pa.array([], " + F32 + ")})", "int8", 128, {
        "py": "ok", "dfpy": "ok", "sql": "ok", "cli": "ok"}),
    "one empty list": (t("[[]]"), "int4", 128, {"py": "ok", "dfpy": "ok", "sql": "ok", "cli": "ok"}),
}

Q = "{'scheme': %r, 'bits': 8, 'group_size': %d, 'numel': %d, 'codes': %r, 'scales': %r, 'mins': None}"
Q_CASES: dict[str, tuple[str, str]] = {
    "codes shorter than numel": (Q % ("int8", 0, 4, b"\x01\x02", [1.0]), "int8 with numel 4 needs 4 bytes of codes, got 2"),
    "scales count wrong": (Q % ("int8", 2, 4, b"\x01\x02\x03\x04", [1.0]), "numel 4 in groups of 2 needs 2 scales, got 1"),
    "unknown scheme name": (Q % ("int7", 0, 1, b"\x01", [1.0]), "q.scheme: expected one of int8"),
    "asymmetric without mins": (Q % ("int4_asym", 0, 2, b"\x01", [1.0]), "int4_asym needs mins, got null"),
    "q4_0 with numel 31": (Q % ("q4_0", 32, 31, b"\x00" * 16, [1.0]), "q4_0 needs numel to be a multiple of 32, got 31"),
}


def run_code(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arrowquant", *args], capture_output=True, text=True, timeout=120)


PRELUDE = "import json, pyarrow as pa, pyarrow.parquet as pq, datafusion, arrowquant as aq\n"


def check_python(code: str, expected) -> None:
    proc = run_code(PRELUDE + textwrap.dedent(f"""
        try:
            {code}
        except Exception as e:
            print(json.dumps([type(e).__name__, str(e)]))
        else:
            print(json.dumps(["ok", ""]))
    """))
    assert proc.returncode == 0, f"the process died: {proc.returncode}\n{proc.stderr}"
    kind, message = json.loads(proc.stdout.strip().splitlines()[-1])
    if expected == "ok":
        assert kind == "ok", message
    else:
        cls, fragment = expected
        assert kind != "ok", "no error raised"
        if cls != "Exception":
            assert kind == cls, (kind, message)
        assert fragment in message, message


def check_cli(proc: subprocess.CompletedProcess, expected) -> None:
    assert proc.returncode in (0, 1, 2), f"the process died: {proc.returncode}\n{proc.stderr}"
    if expected == "ok":
        assert proc.returncode == 0, proc.stderr
    else:
        code, fragment = expected
        assert proc.returncode == code, proc.stderr
        assert fragment in proc.stderr, proc.stderr


PARAMS = [(name, ep) for name, (_, _, _, eps) in CASES.items() for ep in eps]


@pytest.mark.parametrize("name,entry", PARAMS, ids=[f"{n}-{e}" for n, e in PARAMS])
def test_bad_input(name, entry, tmp_path):
    table, scheme, group, expected = CASES[name]
    expected = expected[entry]
    sql = f"SELECT quantize(weights, '{scheme}', {group}) AS q FROM t"
    if entry == "py":
        check_python(f"aq.dequantize_arrow(aq.quantize_arrow({table}, {scheme!r}, {group!r}))", expected)
    elif entry == "dfpy":
        check_python(f"ctx = datafusion.SessionContext(); aq.register(ctx); ctx.from_arrow({table}, 't'); "
                     f"ctx.sql({sql!r}).collect()", expected)
    else:
        path = tmp_path / "t.parquet"
        setup = run_code(PRELUDE + f"pq.write_table({table}, {str(path)!r})")
        assert setup.returncode == 0, setup.stderr
        if entry == "sql":
            check_cli(run_cli("sql", "--table", f"t={path}", sql), expected)
        else:
            args = ["convert", str(path), str(tmp_path / "out.parquet"), "--scheme", scheme, "--group-size", str(group)]
            proc = run_cli(*args)
            check_cli(proc, expected)
            assert (tmp_path / "out.parquet").exists() == (proc.returncode == 0)


@pytest.mark.parametrize("name", sorted(Q_CASES))
@pytest.mark.parametrize("entry", ["py", "dfpy"])
def test_edited_q_struct(name, entry):
    q, fragment = Q_CASES[name]
    table = f"pa.table({{'layer_name': ['a'], 'q': pa.array([{q}])}})"
    if entry == "py":
        check_python(f"aq.dequantize_arrow({table})", ("QuantizationError", fragment))
    else:
        check_python(f"ctx = datafusion.SessionContext(); aq.register(ctx); ctx.from_arrow({table}, 't'); "
                     "ctx.sql('SELECT dequantize(q) FROM t').collect()", ("Exception", fragment))


@pytest.mark.parametrize("content,fragment", [
    (b"", "t.parquet"),
    (b"PAR1" + b"\0" * 100, "t.parquet"),
])
def test_unreadable_parquet_files(tmp_path, content, fragment):
    path = tmp_path / "t.parquet"
    path.write_bytes(content)
    check_cli(run_cli("convert", str(path), str(tmp_path / "o.parquet"), "--scheme", "int8"), (1, fragment))
    check_cli(run_cli("sql", "--table", f"t={path}", "SELECT * FROM t"), (1, fragment))
    assert not (tmp_path / "o.parquet").exists()
