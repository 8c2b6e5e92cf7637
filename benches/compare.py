"""arrowquant against what a user would pick instead, measured in one run on the same data.

Prints one table: GB/s of float32 input and the ratio to a baseline of the same section.
  kernels (one 64 MB table, --quick; 256 MB in the full run):
    - speed of light: numpy astype(int8) (1 thread) and the same loop in Rust (1 and all threads)
    - arrowquant quantize_arrow per scheme, 1 thread and all threads
    - the obvious vectorized numpy code for each scheme, gguf.quants for q8_0/q4_0, and ggml's
      own ggml_quantize_chunk (libggml-python) for the K-quants
  end to end, Parquet -> Parquet:
    - pyarrow read_table + write_table with no quantization (the I/O floor)
    - arrowquant convert; the SQL `COPY (SELECT ... quantize ...) TO` path
    - pyarrow read + numpy per-row absmax int8 + pyarrow write
    - DuckDB doing per-row absmax int8 in SQL with list lambdas (if duckdb is installed)

  Parquet (--parquet; 256 MiB and 2 GB, uncompressed and zstd, files written by pyarrow):
    - reading the weight table: aq.read_parquet (fast path) against the parquet crate's generic
      reader and pyarrow.parquet.read_table
    - arrowquant convert int8 g128 against pyarrow + numpy and the pyarrow read+write floor,
      with each one's peak RSS
    - writing the table: aq.write_parquet (fast path) against the generic writer and pyarrow
    - arrowquant import (safetensors -> Parquet) against pyarrow writing the same table

    python benches/compare.py [--quick] [--parquet [--sizes 256,2048]]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import arrowquant as aq
from arrowquant import _internal

ROWS = COLS = 2048  # 4 M elements (16 MB) per layer


def make_table(mb: int) -> pa.Table:
    n_layers = max(1, mb * 1_000_000 // (ROWS * COLS * 4))
    numel = ROWS * COLS
    values = pa.array(np.random.default_rng(0).standard_normal(n_layers * numel, dtype=np.float32) * 0.02)
    offsets = pa.array(np.arange(0, (n_layers + 1) * numel, numel, dtype=np.int32))
    return pa.table({"layer_name": [f"model.layers.{i}.weight" for i in range(n_layers)],
                     "weights": pa.ListArray.from_arrays(offsets, values),
                     "shape": [[ROWS, COLS]] * n_layers})


def best(f, repeat: int, settle: bool = False) -> float:
    """Best of `repeat` timed runs after a warm-up; with `settle`, each run starts after
    `os.sync()`, so that it does not wait for the disk to write back what the one before wrote."""
    f()  # warm up
    times = []
    for _ in range(repeat):
        if settle:
            os.sync()
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def round_away(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def numpy_quantize(x: np.ndarray, scheme: str, g: int) -> tuple[np.ndarray, np.ndarray]:
    """The vectorized numpy a user would write for the linear schemes (groups of g)."""
    bits = int(scheme[3])
    v = x.reshape(-1, g)
    if scheme.endswith("_zp"):
        lo = np.minimum(v.min(axis=1, keepdims=True), 0)
        hi = np.maximum(v.max(axis=1, keepdims=True), 0)
        levels = (1 << bits) - 1
        d = (hi - lo) / levels
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(d > 0, np.clip(round_away(-lo / d), 0, levels), 0)
            q = np.where(d > 0, np.clip(round_away(v / d) + z, 0, levels), 0).astype(np.uint8)
    elif scheme.endswith("_asym"):
        lo, hi = v.min(axis=1, keepdims=True), v.max(axis=1, keepdims=True)
        levels = (1 << bits) - 1
        d = (hi - lo) / levels
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(d > 0, np.clip(round_away((v - lo) / d), 0, levels), 0).astype(np.uint8)
    else:
        qmax = (1 << (bits - 1)) - 1
        d = np.abs(v).max(axis=1, keepdims=True) / qmax
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(d > 0, np.clip(round_away(v / d), -qmax, qmax), 0).astype(np.int8).view(np.uint8)
    q = q.ravel()
    if bits == 4:
        q = (q[0::2] & 0x0F) | (q[1::2] << 4)
    elif bits == 2:
        q = (q[0::4] & 3) | ((q[1::4] & 3) << 2) | ((q[2::4] & 3) << 4) | ((q[3::4] & 3) << 6)
    return q, d


def kernel_rows(table: pa.Table, repeat: int) -> list[tuple[str, str, float, str]]:
    nbytes = table.column("weights").chunk(0).values.nbytes
    x = table.column("weights").chunk(0).values.to_numpy()
    weights = table.column("weights").chunk(0)
    threads = os.cpu_count() or 1
    rows = []
    sol_np = best(lambda: x.astype(np.int8), repeat)
    sol_1 = best(lambda: _internal.speed_of_light(weights, 1), repeat)
    sol_n = best(lambda: _internal.speed_of_light(weights, threads), repeat)
    rows.append(("speed of light", "numpy astype(int8), 1 thread", nbytes / sol_np, "1.00 (baseline)"))
    rows.append(("speed of light", "Rust f32 -> i8 loop, 1 thread", nbytes / sol_1, f"{sol_np / sol_1:.2f}"))
    rows.append(("speed of light", f"Rust f32 -> i8 loop, {threads} threads", nbytes / sol_n, f"{sol_np / sol_n:.2f}"))
    try:
        from gguf.constants import GGMLQuantizationType as T
        from gguf.quants import quantize as gguf_quantize
    except ImportError:
        gguf_quantize = None
    ggml = ggml_library()
    for scheme in aq.SCHEMES:
        k_quant = scheme.endswith("_k")
        g = 256 if k_quant else 32 if scheme.startswith("q") else 128
        one = best(lambda: aq.quantize_arrow(table, scheme, g, threads=1), repeat)
        many = best(lambda: aq.quantize_arrow(table, scheme, g, threads=0), repeat)
        if k_quant:
            if ggml is None:
                continue
            ggml_type, size = {"q2_k": (10, 84), "q3_k": (11, 110), "q4_k": (12, 144), "q5_k": (13, 176),
                               "q6_k": (14, 210)}[scheme]
            xs = np.ascontiguousarray(x[: len(x) // 8])  # ggml's reference is slow: an eighth
            out = np.zeros(xs.size // 256 * size, np.uint8)
            ref = best(lambda: ggml.ggml_quantize_chunk(ggml_type, xs.ctypes.data, out.ctypes.data, 0,
                                                        xs.size // COLS, COLS, None), 1) * 8
            ref_name = "ggml_quantize_chunk"
        elif scheme.startswith("q"):
            if gguf_quantize is None:
                continue
            qt = T.Q8_0 if scheme == "q8_0" else T.Q4_0
            xs = x[: len(x) // 8]  # gguf.quants is slow: an eighth of the data
            ref = best(lambda: gguf_quantize(xs, qt), 1) * 8
            ref_name = "gguf.quants"
        else:
            ref = best(lambda: numpy_quantize(x, scheme, g), max(1, repeat // 2))
            ref_name = "numpy"
        rows.append((f"{scheme} g{g}", f"{ref_name}", nbytes / ref, "1.00 (baseline)"))
        rows.append((f"{scheme} g{g}", "arrowquant, 1 thread", nbytes / one,
                     f"{ref / one:.1f} vs {ref_name}, {sol_1 / one:.2f} of light"))
        rows.append((f"{scheme} g{g}", f"arrowquant, {threads} threads", nbytes / many,
                     f"{one / many:.2f} vs 1 thread"))
    return rows


def ggml_library():
    """ggml's prebuilt libggml-base.so from PyPI libggml-python, or None when not installed."""
    try:
        import ctypes

        import libggml
    except ImportError:
        return None
    lib = ctypes.CDLL(os.path.join(os.path.dirname(libggml.__file__), "lib64", "libggml-base.so"))
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def e2e_rows(table: pa.Table, d: Path, repeat: int) -> list[tuple[str, str, float, str]]:
    src = d / "in.parquet"
    pq.write_table(table, src)
    nbytes = table.column("weights").chunk(0).values.nbytes
    cli = [sys.executable, "-m", "arrowquant"]

    def floor() -> None:
        pq.write_table(pq.read_table(src), d / "floor.parquet")

    def convert() -> None:
        run(cli + ["convert", str(src), str(d / "aq.parquet"), "--scheme", "int8", "--overwrite"])

    def copy_sql() -> None:
        out = d / "copy.parquet"
        out.unlink(missing_ok=True)
        run(cli + ["sql", "--table", f"t={src}",
                   f"COPY (SELECT layer_name, shape, quantize(weights, 'int8', 128) AS q FROM t) TO '{out}' STORED AS PARQUET"])

    def numpy_job() -> None:
        t = pq.read_table(src)
        w = t.column("weights").combine_chunks()
        x = w.values.to_numpy().reshape(len(t), -1)
        d_ = np.abs(x).max(axis=1, keepdims=True) / 127
        q = round_away(x / d_).astype(np.int8)
        codes = pa.array([row.tobytes() for row in q], pa.large_binary())
        pq.write_table(pa.table({"layer_name": t.column("layer_name"), "codes": codes,
                                 "scale": pa.array(d_.ravel().astype(np.float32))}), d / "np.parquet")

    rows = []
    base = best(floor, repeat)
    rows.append(("Parquet -> Parquet", "pyarrow read + write (I/O floor)", nbytes / base, "1.00 (baseline)"))
    for name, f in [("arrowquant convert int8 g128", convert), ("SQL COPY (SELECT quantize ...) TO", copy_sql),
                    ("pyarrow read + numpy + write", numpy_job)]:
        t = best(f, repeat)
        rows.append(("Parquet -> Parquet", name, nbytes / t, f"{t / base:.2f} of the floor's time"))
    try:
        import duckdb
    except ImportError:
        rows.append(("Parquet -> Parquet", "DuckDB SQL (not installed: pip install duckdb)", float("nan"), ""))
    else:
        def duck() -> None:
            con = duckdb.connect()
            con.execute(f"""
                COPY (SELECT layer_name, d, list_transform(weights, lambda x: round(x / d)::TINYINT) AS q
                      FROM (SELECT layer_name, weights,
                                   list_max(list_transform(weights, lambda x: abs(x))) / 127 AS d
                            FROM read_parquet('{src}'))) TO '{d / "duck.parquet"}' (FORMAT PARQUET)""")
            con.close()
        t = best(duck, max(1, repeat // 2))
        rows.append(("Parquet -> Parquet", "DuckDB SQL per-row absmax int8", nbytes / t, f"{t / base:.2f} of the floor's time"))
    return rows


def timed_child(cmd: list[str]) -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of a child process, started after `os.sync()` (see `best`).
    The RSS comes from GNU time, whose own child starts from a small process: Linux carries the
    forking process's peak RSS over exec, so measuring a direct child of this (large) process
    would report ours."""
    os.sync()
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stderr}")
    return elapsed, int(proc.stderr.strip().splitlines()[-1]) * 1024


def best_child(cmd: list[str], repeat: int) -> tuple[float, int]:
    runs = [timed_child(cmd) for _ in range(repeat + 1)][1:]
    return min(r[0] for r in runs), max(r[1] for r in runs)


PY_JOB = """
import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
src, out = sys.argv[1], sys.argv[2]
t = pq.read_table(src)
w = t.column("weights").combine_chunks()
x = w.values.to_numpy().reshape(len(t), -1)
d = np.abs(x).max(axis=1, keepdims=True) / 127
q = (np.sign(x / d) * np.floor(np.abs(x / d) + 0.5)).astype(np.int8)
codes = pa.array([row.tobytes() for row in q], pa.large_binary())
pq.write_table(pa.table({"layer_name": t.column("layer_name"), "codes": codes,
                         "scale": pa.array(d.ravel().astype(np.float32))}), out)
"""

PY_FLOOR = """
import sys, pyarrow.parquet as pq
pq.write_table(pq.read_table(sys.argv[1]), sys.argv[2], compression=sys.argv[3])
"""


def parquet_rows(mb: int, compression: str, d: Path, repeat: int) -> list[tuple[str, str, float, str]]:
    """The Parquet section for one size and codec: read, convert and import."""
    from safetensors.numpy import save_file

    table = make_table(mb)
    nbytes = table.column("weights").chunk(0).values.nbytes
    src = d / f"in-{mb}-{compression}.parquet"
    pq.write_table(table, src, compression=compression)
    what = f"{mb} MB, {compression}"
    rows = []
    # Reading the weight table into memory.
    generic = best(lambda: _internal.read_parquet(str(src), False), repeat)
    pyarrow = best(lambda: pq.read_table(src), repeat)
    fast = best(lambda: _internal.read_parquet(str(src), True), repeat)
    rows.append((f"read {what}", "parquet crate generic reader", nbytes / generic, "1.00 (baseline)"))
    rows.append((f"read {what}", "pyarrow.parquet.read_table", nbytes / pyarrow, f"{generic / pyarrow:.2f}x"))
    rows.append((f"read {what}", "arrowquant.read_parquet (fast path)", nbytes / fast,
                 f"{generic / fast:.2f}x generic, {pyarrow / fast:.2f}x pyarrow"))
    # convert against a user's pyarrow + numpy script and the read+write floor (child processes,
    # so that each one's peak RSS is its own).
    py = sys.executable
    floor, floor_rss = best_child([py, "-c", PY_FLOOR, str(src), str(d / "floor.parquet"), compression], repeat)
    numpy_t, numpy_rss = best_child([py, "-c", PY_JOB, str(src), str(d / "np.parquet")], repeat)
    conv, conv_rss = best_child([py, "-m", "arrowquant", "convert", str(src), str(d / "aq.parquet"),
                                 "--scheme", "int8", "--group-size", "128", "--overwrite"], repeat)
    mb_ = 1 << 20
    rows.append((f"convert {what}", f"pyarrow read + write floor ({floor_rss // mb_} MB RSS)", nbytes / floor,
                 "1.00 (baseline)"))
    rows.append((f"convert {what}", f"pyarrow + numpy int8 ({numpy_rss // mb_} MB RSS)", nbytes / numpy_t,
                 f"{numpy_t / floor:.2f} of the floor's time"))
    rows.append((f"convert {what}", f"arrowquant convert int8 g128 ({conv_rss // mb_} MB RSS)", nbytes / conv,
                 f"{conv / floor:.2f} of the floor's time, {numpy_t / conv:.2f}x pyarrow + numpy"))
    # Writing the weight table from memory: the parquet crate's generic writer, pyarrow, and
    # the fast path (aq.write_parquet), each with its own default codec (SNAPPY for all three;
    # the fast path drops it for chunks it does not shrink).
    if compression == "none":  # the codec of the file read above plays no part here
        out = d / "w.parquet"
        gen_w = best(lambda: _internal.write_parquet(table, str(out), False), repeat, settle=True)
        pa_w = best(lambda: pq.write_table(table, out), repeat, settle=True)
        fast_w = best(lambda: _internal.write_parquet(table, str(out), True), repeat, settle=True)
        rows.append((f"write {mb} MB", "parquet crate generic writer", nbytes / gen_w, "1.00 (baseline)"))
        rows.append((f"write {mb} MB", "pyarrow.parquet.write_table", nbytes / pa_w, f"{gen_w / pa_w:.2f}x"))
        rows.append((f"write {mb} MB", "arrowquant.write_parquet (fast path)", nbytes / fast_w,
                     f"{gen_w / fast_w:.2f}x generic, {pa_w / fast_w:.2f}x pyarrow"))
    # import: a safetensors model to a Parquet weight table, against pyarrow writing the same
    # table from memory.
    model = d / f"model-{mb}.safetensors"
    values = table.column("weights").chunk(0).values.to_numpy()
    save_file({n: values[i * ROWS * COLS:(i + 1) * ROWS * COLS].reshape(ROWS, COLS)
               for i, n in enumerate(table.column("layer_name").to_pylist())}, str(model))
    write = best(lambda: pq.write_table(table, d / "pa-write.parquet", compression=compression), repeat, settle=True)
    imp, _ = best_child([py, "-m", "arrowquant", "import", str(model), str(d / "imported.parquet"), "--overwrite"],
                        repeat)
    model.unlink()
    rows.append((f"import {what}", "pyarrow write_table (table in memory)", nbytes / write, "1.00 (baseline)"))
    rows.append((f"import {what}", "arrowquant import (safetensors -> Parquet)", nbytes / imp,
                 f"{write / imp:.2f}x"))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64 MB and fewer repetitions (under 2 minutes)")
    p.add_argument("--parquet", action="store_true", help="only the Parquet section (read, convert, import)")
    p.add_argument("--sizes", default="256,2048", help="MB per run of the Parquet section")
    args = p.parse_args()
    if args.parquet:
        print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}")
        print(f"python {platform.python_version()}, pyarrow {pa.__version__}, arrowquant {aq.__version__}\n")
        rows = []
        with tempfile.TemporaryDirectory(dir=os.environ.get("ARROWQUANT_BENCH_DIR")) as d:
            for mb in map(int, args.sizes.split(",")):
                for compression in ["none", "zstd"]:
                    rows += parquet_rows(mb, compression, Path(d), 1 if mb > 1000 else 3)
        print(f"| {'what':<22} | {'how':<52} | {'GB/s':>6} | ratio |")
        print(f"|{'-' * 24}|{'-' * 54}|{'-' * 8}|-------|")
        for what, how, gbs, ratio in rows:
            print(f"| {what:<22} | {how:<52} | {gbs / 1e9:>6.2f} | {ratio} |")
        return
    mb, repeat = (64, 2) if args.quick else (256, 3)
    table = make_table(mb)
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, pyarrow {pa.__version__}, arrowquant {aq.__version__}")
    print(f"data: {table.num_rows} layers of [{ROWS}, {COLS}] float32 = {mb} MB; best of {repeat}\n")
    rows = kernel_rows(table, repeat)
    with tempfile.TemporaryDirectory(dir=os.environ.get("ARROWQUANT_BENCH_DIR")) as d:
        rows += e2e_rows(table, Path(d), repeat)
    print(f"| {'what':<20} | {'how':<46} | {'GB/s':>6} | ratio |")
    print(f"|{'-' * 22}|{'-' * 48}|{'-' * 8}|-------|")
    for what, how, gbs, ratio in rows:
        print(f"| {what:<20} | {how:<46} | {gbs / 1e9:>6.2f} | {ratio} |")


if __name__ == "__main__":
    main()
