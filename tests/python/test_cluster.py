"""A loopback Ballista cluster: one scheduler and two executors, each a separate process of the
`arrowquant` command line, on 127.0.0.1. The cluster's `convert` and SQL give the same bytes as
the single-machine job, both executors write parts, a SIGKILLed executor leaves no half-written
part under its final name, and an unreachable scheduler is an error within seconds."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import weight_table

CLI = [sys.executable, "-m", "arrowquant"]


def free_ports(n: int) -> list[int]:
    """`n` distinct ports nothing listens on now (and their successors, for gRPC)."""
    ports: list[int] = []
    socks = []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        socks.append(s)
        if port < 65000 and all(abs(port - p) > 1 for p in ports):
            ports.append(port)
    for s in socks:
        s.close()
    return ports


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} after {timeout} s: {log.read_text()}")


class Cluster:
    """The processes of one loopback cluster."""

    def __init__(
        self, root: Path, executors: int = 2, executor_timeout: int = 4, pin: bool = False
    ) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        ports = free_ports(1 + executors)
        self.port = ports[0]
        self.url = f"df://127.0.0.1:{self.port}"
        self.scheduler = self._start(
            "scheduler",
            ["scheduler", "--bind", f"127.0.0.1:{self.port}", "--executor-timeout", str(executor_timeout)],
        )
        wait_for_port(self.port, self.scheduler, self.logs[0])
        self.executors = []
        for i, port in enumerate(ports[1:]):
            work = root / f"work{i}"
            p = self._start(
                f"executor{i}",
                [
                    "executor",
                    "--scheduler", f"127.0.0.1:{self.port}",
                    "--bind", f"127.0.0.1:{port}",
                    "--work-dir", str(work),
                    "--concurrent-tasks", "1",
                    "--heartbeat", "1",
                ],
                # benches/cluster.py: each executor on its own core, as if on its own machine.
                prefix=["taskset", "-c", str(i)] if pin else [],
            )
            wait_for_port(port + 1, p, self.logs[-1])
            self.executors.append(p)
        # The executors register on their first heartbeat.
        time.sleep(2)

    def _start(self, name: str, args: list[str], prefix: list[str] = []) -> subprocess.Popen:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen([*prefix, *CLI, *args], stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """16 layers in 8 row groups."""
    path = tmp_path_factory.mktemp("model") / "model.parquet"
    t = weight_table(n_layers=16, rows=64, cols=256, seed=3)
    pq.write_table(t, path, row_group_size=2)
    assert pq.ParquetFile(path).num_row_groups == 8
    return path


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def read_parts(out: Path) -> pa.Table:
    files = sorted(out.glob("part-*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files])
    return t.sort_by("layer_name")


def assert_same_q(cluster_dir: Path, single: Path) -> None:
    got = read_parts(cluster_dir)
    want = pq.read_table(single).sort_by("layer_name")
    assert got.column("layer_name").to_pylist() == want.column("layer_name").to_pylist()
    for name in want.column_names:
        # Layer by layer, byte for byte: codes, scales, mins, scheme, everything in `q`.
        assert got.column(name).combine_chunks().equals(want.column(name).combine_chunks()), name


@pytest.mark.parametrize(
    "flags",
    [["--scheme", "int4", "--group-size", "64"], ["--min-cosine", "0.999", "--group-size", "64"]],
    ids=["int4_g64", "quantize_to_target"],
)
def test_cluster_convert_equals_the_single_machine_job(cluster, model, tmp_path, flags):
    single = tmp_path / "single.parquet"
    r = run("convert", str(model), str(single), *flags)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    r = run("convert", "--cluster", cluster.url, str(model), str(out), *flags)
    assert r.returncode == 0, r.stderr + "".join(l.read_text() for l in cluster.logs)
    assert_same_q(out, single)
    manifest = json.loads((out / "_SUCCESS").read_text())
    parts = manifest["parts"]
    # The scan split into tasks by row groups (8 here, byte ranges of one file: 7 or 8 non-empty
    # tasks), each its own part, numbered in layer order; both executors wrote some.
    n = len(parts)
    assert 4 <= n <= 8, parts
    assert [p["file"] for p in parts] == [f"part-{i:05d}.parquet" for i in range(n)]
    assert sorted(p["file"] for p in parts) == sorted(f.name for f in out.glob("part-*.parquet"))
    writers = {p["executor"] for p in parts}
    assert len(writers) == 2, writers
    assert all(w.startswith("executor ") for w in writers)
    assert sum(p["rows"] for p in parts) == 16
    # The report was gathered from the executors: one line per layer, the same errors as the
    # single-machine job's report.
    layers = manifest["report"]["layers"]
    assert len(layers) == 16
    r = run("convert", str(model), str(tmp_path / "single2.parquet"), *flags, "--report", str(tmp_path / "r.json"))
    want = json.loads((tmp_path / "r.json").read_text())["layers"]
    for g, w in zip(layers, want):
        assert g["layer_name"] == w["layer_name"] and g["scheme"] == w["scheme"]
        assert g["bytes_after"] == w["bytes_after"]
        assert g["mse"] == pytest.approx(w["mse"], rel=1e-12)
    # Readers see only the parts: DataFusion's SQL over the directory.
    r = run("sql", "--table", f"q={out}", "SELECT count(*) AS n FROM q")
    assert r.returncode == 0 and "| 16 |" in r.stdout, r.stdout + r.stderr


def test_cluster_sql_equals_local_sql(cluster, model):
    sql = (
        "SELECT layer_name, quantization_error(weights, quantize(weights, 'int4', 64))['sqnr_db'] AS sqnr, "
        "array_length(weights) AS n FROM t ORDER BY layer_name"
    )
    local = run("sql", "--table", f"t={model}", sql)
    remote = run("sql", "--cluster", cluster.url, "--table", f"t={model}", sql)
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
    assert remote.stdout.count("encoder.") == 16


def test_a_table_that_cannot_run_on_the_cluster_is_refused_on_the_client(cluster, tmp_path):
    r = run("sql", "--cluster", cluster.url, "SELECT * FROM read_safetensors('/nonexistent.safetensors')")
    assert r.returncode != 0
    assert "cluster" in r.stderr or "safetensors" in r.stderr, r.stderr


def test_an_unreachable_scheduler_is_a_clear_error_within_seconds():
    (port,) = free_ports(1)
    start = time.monotonic()
    r = run("sql", "--cluster", f"df://127.0.0.1:{port}", "SELECT 1", timeout=30)
    assert time.monotonic() - start < 15
    assert r.returncode == 2
    assert "no scheduler answers" in r.stderr, r.stderr


def test_a_killed_executor_leaves_no_half_written_part(tmp_path):
    c = Cluster(tmp_path / "c", executor_timeout=3)
    try:
        path = tmp_path / "big.parquet"
        # 16 row groups of 2 layers of 4 MB: long enough to kill an executor in the middle.
        t = weight_table(n_layers=32, rows=1024, cols=1024, seed=5)
        pq.write_table(t, path, row_group_size=2)
        out = tmp_path / "out"
        job = subprocess.Popen(
            [*CLI, "convert", "--cluster", c.url, str(path), str(out), "--min-cosine", "0.9999"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob("part-*.parquet")):
            time.sleep(0.05)
        victim = c.executors[1]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        _, stderr = job.communicate(timeout=600)
        for f in out.glob("part-*.parquet"):
            pq.read_table(f)  # every part under its final name is whole
        print(f"killed executor: job exit {job.returncode}, {stderr.strip()[-300:]}")
        if job.returncode == 0:
            manifest = json.loads((out / "_SUCCESS").read_text())
            assert sum(p["rows"] for p in manifest["parts"]) == 32
            assert read_parts(out).num_rows == 32
        else:
            assert not (out / "_SUCCESS").exists()
            assert stderr.strip(), "a failed job says why"
    finally:
        c.stop()
