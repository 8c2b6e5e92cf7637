"""Faults and concurrency (issue 7): kills at random points, a full disk, two jobs racing for one
output, and many threads quantizing at once giving the same bytes as one."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import datafusion
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import arrowquant as aq

from conftest import weight_table

N_LAYERS, NUMEL = 32, 1 << 20


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.parquet"
    values = pa.array(np.random.default_rng(0).standard_normal(N_LAYERS * NUMEL, dtype=np.float32))
    offsets = pa.array(np.arange(0, (N_LAYERS + 1) * NUMEL, NUMEL, dtype=np.int32))
    pq.write_table(pa.table({"layer_name": [f"l{i}" for i in range(N_LAYERS)],
                             "weights": pa.ListArray.from_arrays(offsets, values)}), path, row_group_size=2)
    return path


def convert_cmd(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "arrowquant", "convert", str(src), str(out), "--scheme", "int8", *extra]


def test_twenty_kills_at_random_points_never_leave_a_partial_output(big, tmp_path):
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    out = tmp_path / "out.parquet"
    start = time.perf_counter()
    subprocess.run(convert_cmd(big, out), check=True, capture_output=True)
    full = time.perf_counter() - start
    out.unlink()
    rng = random.Random(7)
    killed_mid_way = 0
    for _ in range(20):
        proc = subprocess.Popen(convert_cmd(big, out, "--overwrite"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, full))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():  # killed after the rename: complete
            assert pq.read_table(out).num_rows == N_LAYERS
            out.unlink()
        else:
            killed_mid_way += 1
    assert killed_mid_way >= 10, f"only {killed_mid_way} of 20 kills landed mid-run (run takes {full:.2f} s)"
    assert hashlib.sha256(big.read_bytes()).hexdigest() == digest


def test_a_full_disk_is_a_clear_error_and_leaves_no_output(big, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        out = mnt / "out.parquet"
        proc = subprocess.run(convert_cmd(big, out), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stderr
        assert "No space left on device" in proc.stderr or "space" in proc.stderr.lower(), proc.stderr
        assert list(mnt.iterdir()) == [], "the temporary file was not removed"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_two_jobs_racing_for_one_output_leave_one_complete_file(big, tmp_path):
    out = tmp_path / "out.parquet"
    procs = [subprocess.Popen(convert_cmd(big, out, "--overwrite", *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for extra in ([], ["--group-size", "64"])]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    t = pq.read_table(out)
    assert t.num_rows == N_LAYERS
    groups = set(t.column("q").combine_chunks().field("group_size").to_pylist())
    assert groups in ({128}, {64}), f"a mix of both jobs: {groups}"
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_eight_threads_give_the_same_bytes_as_one():
    tables = [weight_table(n_layers=3, rows=64, cols=256, seed=s) for s in range(8)]
    schemes = ["int8", "int4", "int2_asym", "q4_0", "q8_0", "int8_asym", "int4_asym", "int2"]
    expected = [aq.quantize_arrow(t, s, 32).column("q").to_pylist() for t, s in zip(tables, schemes)]
    results: list = [None] * 8

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = aq.quantize_arrow(tables[i], schemes[i], 32).column("q").to_pylist()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_one_session_context_from_several_threads():
    ctx = datafusion.SessionContext()
    aq.register(ctx)
    ctx.from_arrow(weight_table(n_layers=6, seed=3), "layers")
    sql = "SELECT layer_name, gguf_blocks(quantize(weights, 'q4_0')) AS b FROM layers ORDER BY layer_name"
    expected = ctx.sql(sql).to_pylist()
    results: list = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(4):
            rows = ctx.sql(sql).to_pylist()
            with lock:
                results.append(rows)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 24 and all(r == expected for r in results)
