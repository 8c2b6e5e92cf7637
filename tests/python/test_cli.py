"""The `arrowquant` command line end to end: import, convert, dequantize, sql, demo, and the
safety rules (atomic output, refusing to overwrite, clear errors, exit codes)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import weight_table


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "arrowquant", *args], capture_output=True, text=True, timeout=600
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]]) -> None:
    """A .safetensors file by the format's definition: u64 header size, JSON header, data."""
    header, data, offset = {}, b"", 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def test_import_widens_every_float_dtype_and_skips_integers(tmp_path):
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((4, 8)).astype(np.float32)
    f16 = rng.standard_normal(16).astype(np.float16)
    bf16_src = rng.standard_normal((2, 4)).astype(np.float32)
    bf16 = (bf16_src.view(np.uint32) >> 16).astype(np.uint16)  # truncation is a valid bf16
    ids = np.arange(5, dtype=np.int64)
    model = tmp_path / "model.safetensors"
    write_safetensors(model, {
        "a.weight": ("F32", [4, 8], f32.tobytes()),
        "b.weight": ("F16", [16], f16.tobytes()),
        "c.weight": ("BF16", [2, 4], bf16.tobytes()),
        "position_ids": ("I64", [5], ids.tobytes()),
    })
    out = tmp_path / "model.parquet"
    proc = run("import", str(model), str(out))
    assert "skipped position_ids (I64: not a float tensor)" in proc.stdout
    t = pq.read_table(out)
    assert t.column("layer_name").to_pylist() == ["a.weight", "b.weight", "c.weight"]
    assert t.column("shape").to_pylist() == [[4, 8], [16], [2, 4]]
    assert t.column("dtype").to_pylist() == ["F32", "F16", "BF16"]
    w = t.column("weights").to_pylist()
    np.testing.assert_array_equal(np.array(w[0], np.float32), f32.ravel())
    np.testing.assert_array_equal(np.array(w[1], np.float32), f16.astype(np.float32))
    np.testing.assert_array_equal(np.array(w[2], np.float32), (bf16.astype(np.uint32) << 16).view(np.float32).ravel())


def test_a_safetensors_header_that_lies_is_a_clear_error(tmp_path):
    model = tmp_path / "bad.safetensors"
    write_safetensors(model, {"a": ("F32", [4], b"\0" * 16)})
    raw = model.read_bytes().replace(b"[0, 16]", b"[0, 64]")
    model.write_bytes(raw)
    proc = run("import", str(model), str(tmp_path / "out.parquet"), check=False)
    assert proc.returncode == 1
    assert "not a valid safetensors file" in proc.stderr
    assert not (tmp_path / "out.parquet").exists()


@pytest.fixture
def layers(tmp_path) -> Path:
    t = weight_table(n_layers=5, rows=16, cols=64, seed=3)
    norm = pa.table({
        "layer_name": ["encoder.norm.weight"],
        "weights": pa.array([np.ones(64, np.float32)], pa.list_(pa.float32())),
        "shape": pa.array([[64]], pa.list_(pa.int64())),
    })
    path = tmp_path / "layers.parquet"
    pq.write_table(pa.concat_tables([t, norm]), path)
    return path


def test_convert_writes_q_keeps_excluded_layers_and_reports(layers, tmp_path):
    out, report = tmp_path / "q.parquet", tmp_path / "report.json"
    proc = run("convert", str(layers), str(out), "--scheme", "int8", "--per-channel",
               "--exclude", "*norm*", "--report", str(report))
    assert "total: 6 layers" in proc.stdout
    t = pq.read_table(out)
    assert set(t.column_names) == {"layer_name", "shape", "q", "weights"}
    rows = {r["layer_name"]: r for r in t.to_pylist()}
    assert rows["encoder.norm.weight"]["q"] is None
    assert rows["encoder.norm.weight"]["weights"] == [1.0] * 64
    q = rows["encoder.0.weight"]["q"]
    assert rows["encoder.0.weight"]["weights"] is None
    assert (q["scheme"], q["group_size"], len(q["scales"])) == ("int8", 64, 16)
    meta = pq.read_schema(out).metadata
    assert meta[b"arrowquant.version"] == pq.read_metadata(out).metadata[b"arrowquant.version"]
    assert json.loads(meta[b"arrowquant.options"]) == {
        "scheme": "int8", "group": "per_channel", "exclude": ["*norm*"], "overwrite": False, "min_cosine": None,
        "method": "rtn"}
    r = json.loads(report.read_text())
    assert len(r["layers"]) == 6
    by_name = {l["layer_name"]: l for l in r["layers"]}
    assert by_name["encoder.norm.weight"]["scheme"] == "float32"
    assert by_name["encoder.0.weight"]["bytes_before"] == 4096
    assert by_name["encoder.0.weight"]["bytes_after"] == 1024 + 16 * 4
    assert by_name["encoder.0.weight"]["cosine_similarity"] > 0.999
    assert by_name["encoder.norm.weight"]["sensitivity"] == 0.0  # a constant layer
    assert 5.0 < by_name["encoder.0.weight"]["sensitivity"] < 8.0
    assert r["compression_ratio"] > 2.5

    back = tmp_path / "back.parquet"
    run("dequantize", str(out), str(back))
    b = {r["layer_name"]: r for r in pq.read_table(back).to_pylist()}
    orig = {r["layer_name"]: r for r in pq.read_table(layers).to_pylist()}
    assert b["encoder.norm.weight"]["weights"] == [1.0] * 64
    x = np.array(orig["encoder.2.weight"]["weights"], np.float32)
    y = np.array(b["encoder.2.weight"]["weights"], np.float32)
    d = np.repeat(np.array(rows["encoder.2.weight"]["q"]["scales"], np.float32), 64)
    assert np.all(np.abs(x - y) <= d / 2 * (1 + 1e-6))


def test_sql_subcommand_runs_queries_on_tables(layers):
    proc = run("sql", "--table", f"layers={layers}",
               "SELECT layer_name, quantize(weights, 'q4_0')['scheme'] AS s FROM layers ORDER BY layer_name LIMIT 2")
    assert "encoder.0.weight" in proc.stdout and "q4_0" in proc.stdout


def test_usage_errors_exit_2_and_data_errors_exit_1(layers, tmp_path):
    out = tmp_path / "q.parquet"
    run("convert", str(layers), str(out), "--scheme", "int4")
    before = out.read_bytes()
    proc = run("convert", str(layers), str(out), "--scheme", "int4", check=False)
    assert proc.returncode == 2 and "exists; pass --overwrite" in proc.stderr
    assert out.read_bytes() == before
    proc = run("convert", str(layers), str(layers), "--scheme", "int4", "--overwrite", check=False)
    assert proc.returncode == 2 and "is the input" in proc.stderr
    proc = run("convert", str(layers), str(out), "--scheme", "int3", check=False)
    assert proc.returncode == 2 and "expected one of int8" in proc.stderr
    corrupt = tmp_path / "cut.parquet"
    corrupt.write_bytes(layers.read_bytes()[: layers.stat().st_size // 2])
    proc = run("convert", str(corrupt), str(tmp_path / "c.parquet"), "--scheme", "int8", check=False)
    assert proc.returncode == 1 and "cut.parquet" in proc.stderr
    assert not (tmp_path / "c.parquet").exists()
    nan = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"layer_name": ["bad.layer"], "weights": pa.array([[1.0, float("nan")]], pa.list_(pa.float32()))}), nan)
    proc = run("convert", str(nan), str(tmp_path / "n.parquet"), "--scheme", "int8", check=False)
    assert proc.returncode == 1 and "element 1 is NaN" in proc.stderr
    assert not (tmp_path / "n.parquet").exists()


def test_a_killed_convert_leaves_no_output_and_the_input_untouched(tmp_path):
    big = tmp_path / "big.parquet"
    n_layers, numel = 48, 1 << 20
    values = pa.array(np.random.default_rng(0).standard_normal(n_layers * numel, dtype=np.float32))
    offsets = pa.array(np.arange(0, (n_layers + 1) * numel, numel, dtype=np.int32))
    pq.write_table(pa.table({"layer_name": [f"l{i}" for i in range(n_layers)],
                             "weights": pa.ListArray.from_arrays(offsets, values)}), big, row_group_size=4)
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    out = tmp_path / "out.parquet"
    cmd = [sys.executable, "-m", "arrowquant", "convert", str(big), str(out), "--scheme", "int4", "--overwrite"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    full = time.perf_counter() - start
    out.unlink()
    killed = 0
    for fraction in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(full * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():
            # Killed after the rename (or it finished first): the output must be complete.
            assert pq.read_table(out).num_rows == n_layers, f"partial output after a kill at {fraction:.0%}"
            out.unlink()
        else:
            assert proc.returncode == -signal.SIGKILL
            killed += 1
        assert not [p for p in tmp_path.iterdir() if p.name not in ("big.parquet",) and not p.name.startswith(".out.parquet.arrowquant-")]
    assert killed >= 4, f"only {killed} of 7 runs were killed mid-way (full run {full:.2f} s)"
    assert hashlib.sha256(big.read_bytes()).hexdigest() == digest


def test_demo_prints_the_report(tmp_path):
    proc = run("demo", "--dir", str(tmp_path / "demo"), "--scale", "0.02")
    assert "skipped model.position_ids (I64: not a float tensor)" in proc.stdout
    assert "model.layers.0.mlp.up_proj.weight" in proc.stdout
    assert "total: 50 layers" in proc.stdout


def sharded_model(tmp_path: Path, with_index: bool) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(9)
    tensors = {f"layers.{i}.weight": rng.standard_normal((4, 8)).astype(np.float32) for i in range(4)}
    d = tmp_path / ("indexed" if with_index else "plain")
    d.mkdir()
    names = sorted(tensors)
    weight_map = {}
    for k, shard in enumerate((names[:2], names[2:])):
        fname = f"model-{k + 1:05d}-of-00002.safetensors"
        write_safetensors(d / fname, {n: ("F32", [4, 8], tensors[n].tobytes()) for n in shard})
        weight_map.update({n: fname for n in shard})
    if with_index:
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        (d / "stray.safetensors").write_bytes(b"not a shard: the index does not name it")
    return d, tensors


@pytest.mark.parametrize("with_index", [True, False])
def test_import_and_read_safetensors_take_a_directory_of_shards(tmp_path, with_index):
    d, tensors = sharded_model(tmp_path, with_index)
    out = tmp_path / "sharded.parquet"
    proc = run("import", str(d), str(out))
    assert "imported 4 tensors" in proc.stdout
    t = pq.read_table(out)
    assert sorted(t.column("layer_name").to_pylist()) == sorted(tensors)
    for name, w in zip(t.column("layer_name").to_pylist(), t.column("weights").to_pylist()):
        np.testing.assert_array_equal(np.array(w, np.float32), tensors[name].ravel())
    proc = run("sql", f"SELECT layer_name, array_length(weights) AS n, shape, dtype FROM read_safetensors('{d}') ORDER BY layer_name")
    assert proc.stdout.count("| 32 | [4, 8] | F32") == 4, proc.stdout


def test_read_safetensors_streams_a_file_into_quantize(tmp_path):
    model = tmp_path / "m.safetensors"
    w = np.linspace(-1, 1, 64, dtype=np.float32)
    write_safetensors(model, {"w": ("F32", [8, 8], w.tobytes()), "ids": ("I64", [2], np.arange(2, dtype=np.int64).tobytes())})
    proc = run("sql", f"SELECT layer_name, quantize(weights, 'int8', shape[-1])['scales'] AS s FROM read_safetensors('{model}')")
    assert "| w " in proc.stdout and "ids" not in proc.stdout
    proc = run("sql", "SELECT * FROM read_safetensors(42)", check=False)
    assert proc.returncode == 1 and "'read_safetensors' takes 1 argument, a string literal path" in proc.stderr


def test_convert_memory_does_not_grow_with_a_single_row_group(tmp_path):
    """pyarrow's write_table puts a whole weight table in one row group; convert must still
    stream it a tensor at a time (its reader pulls pages, not whole column chunks)."""
    measure = (
        "import resource, subprocess, sys\n"
        "subprocess.run([sys.executable, '-m', 'arrowquant', *sys.argv[1:]], check=True,"
        " capture_output=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    )
    rng = np.random.default_rng(3)
    peaks = {}
    for layers in (4, 16):  # 64 MB and 256 MB of float32, tensors of 4 M elements
        numel = 4 * 1024 * 1024
        values = pa.array(rng.standard_normal(layers * numel, dtype=np.float32))
        offsets = pa.array(np.arange(0, (layers + 1) * numel, numel, dtype=np.int32))
        t = pa.table({"layer_name": [f"l{i}" for i in range(layers)],
                      "weights": pa.ListArray.from_arrays(offsets, values)})
        src = tmp_path / f"in{layers}.parquet"
        pq.write_table(t, src)
        assert pq.ParquetFile(src).metadata.num_row_groups == 1
        del t, values
        out = subprocess.run(
            [sys.executable, "-c", measure, "convert", str(src), str(tmp_path / f"out{layers}.parquet"),
             "--scheme", "int4", "--group-size", "128"],
            capture_output=True, text=True, timeout=300, check=True)
        peaks[layers] = int(out.stdout)
    grew = peaks[16] - peaks[4]
    # 192 MiB more input. Reading whole column chunks grew the peak by more than that (the
    # chunk alone); streaming grows it by the output the Parquet writer holds (24 MiB of int4)
    # plus allocator slack, which varies with thread timing: measured 33-43 MiB.
    assert grew < 128 * 2**20, f"peak RSS grew by {grew / 2**20:.0f} MiB for 192 MiB more input"


def test_python_convert_is_the_same_job_as_the_command_line(layers, tmp_path):
    import arrowquant as aq

    report = aq.convert(layers, tmp_path / "py.parquet", "int4", "per_channel", exclude=["*norm*"])
    run("convert", str(layers), str(tmp_path / "cli.parquet"), "--scheme", "int4", "--per-channel",
        "--exclude", "*norm*", "--report", str(tmp_path / "r.json"))
    cli = json.loads((tmp_path / "r.json").read_text())
    assert [(l["layer_name"], l["scheme"], l["bytes_after"]) for l in report["layers"]] == \
        [(l["layer_name"], l["scheme"], l["bytes_after"]) for l in cli["layers"]]
    assert report["layers"][-1]["scheme"] == "float32"  # encoder.norm.weight kept
    assert report["compression_ratio"] == pytest.approx(cli["compression_ratio"])
    py_q, cli_q = pq.read_table(tmp_path / "py.parquet"), pq.read_table(tmp_path / "cli.parquet")
    key = lambda t: t.sort_by("layer_name").column("q").to_pylist()  # noqa: E731
    assert key(py_q) == key(cli_q)
    # Errors are the package's exception classes.
    with pytest.raises(aq.ConfigError, match="exists; pass --overwrite"):
        aq.convert(layers, tmp_path / "py.parquet")
    with pytest.raises(aq.ConfigError, match="scheme: expected one of int8"):
        aq.convert(layers, tmp_path / "x.parquet", "int3")
    bad = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"layer_name": ["enc.0"],
                             "weights": pa.array([[1.0, float("nan")]], pa.list_(pa.float32()))}), bad)
    with pytest.raises(aq.QuantizationError, match="element 1 is NaN"):
        aq.convert(bad, tmp_path / "y.parquet")
    assert not (tmp_path / "y.parquet").exists()


def test_convert_reads_a_directory_of_files_and_row_groups(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    t = weight_table(n_layers=7, rows=8, cols=32, seed=5)
    pq.write_table(t.slice(0, 4), d / "a.parquet", row_group_size=2)  # two row groups
    pq.write_table(t.slice(4, 3), d / "b.parquet")
    (d / "notes.txt").write_text("not parquet: ignored")
    out = tmp_path / "q.parquet"
    run("convert", str(d), str(out), "--scheme", "int4", "--group-size", "32")
    got = pq.read_table(out)
    assert sorted(got.column("layer_name").to_pylist()) == sorted(t.column("layer_name").to_pylist())
    import arrowquant as aq
    ref = {r["layer_name"]: r["q"] for r in aq.quantize_arrow(t, "int4", 32).to_pylist()}
    assert all(r["q"] == ref[r["layer_name"]] for r in got.to_pylist())

    # Files whose columns differ are refused, naming the file; so is a directory with none.
    pq.write_table(pa.table({"layer_name": ["x"], "w": [[1.0]]}), d / "c.parquet")
    proc = run("convert", str(d), str(tmp_path / "bad.parquet"), "--scheme", "int8", check=False)
    assert proc.returncode == 1 and "c.parquet" in proc.stderr and "differ" in proc.stderr, proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run("convert", str(empty), str(tmp_path / "none.parquet"), "--scheme", "int8", check=False)
    assert proc.returncode == 1 and "no *.parquet files" in proc.stderr, proc.stderr
    assert not (tmp_path / "bad.parquet").exists() and not (tmp_path / "none.parquet").exists()
