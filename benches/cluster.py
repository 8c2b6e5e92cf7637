"""`quantize_to_target` (CPU-bound) over >= 1 GB on a loopback Ballista cluster, in one run:

- the single-machine job (`arrowquant convert`, every core of this machine);
- one executor with one task slot, pinned to one core (`taskset`): a cluster of one 1-core machine;
- two executors with one slot each, pinned to different cores: two 1-core machines.

Each executor sees only its core (the kernels size their threads by the CPU affinity), so the
two-executor run is what two machines would do, minus the network. Prints seconds, GB/s of
float32 in, and the ratio two executors / one executor.

    python benches/cluster.py [--gb 1.0] [--min-cosine 0.995]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
from test_cluster import CLI, Cluster  # noqa: E402


def model(path: Path, gb: float) -> int:
    """A weight table of [1024, 1024] Gaussian layers, 8 per row group; returns its f32 bytes."""
    layer = 1024 * 1024
    n = max(8, int(gb * 1e9 / (4 * layer)))
    rng = np.random.default_rng(0)
    writer = None
    for start in range(0, n, 8):
        names, lists = [], []
        for i in range(start, min(n, start + 8)):
            names.append(f"model.layers.{i}.weight")
            lists.append(rng.standard_normal(layer, dtype=np.float32) * 0.02)
        offsets = np.arange(0, (len(lists) + 1) * layer, layer, dtype=np.int32)
        t = pa.table(
            {
                "layer_name": names,
                "weights": pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(lists))),
                "shape": pa.array([[1024, 1024]] * len(lists), pa.list_(pa.int64())),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, t.schema, compression="none")
        writer.write_table(t, row_group_size=8)
    assert writer is not None
    writer.close()
    return n * layer * 4


def timed(args: list[str]) -> float:
    import subprocess

    os.sync()
    start = time.perf_counter()
    r = subprocess.run([*CLI, *args], capture_output=True, text=True)
    took = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {r.stderr}")
    return took


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--min-cosine", default="0.995")
    a = p.parse_args()
    if not shutil.which("taskset") or (os.cpu_count() or 1) < 2:
        raise SystemExit("needs taskset and two cores")
    root = Path(tempfile.mkdtemp(prefix="aq-cluster-bench-"))
    try:
        src = root / "model.parquet"
        nbytes = model(src, a.gb)
        flags = ["--min-cosine", a.min_cosine, "--group-size", "128"]
        rows = []
        t = timed(["convert", str(src), str(root / "single.parquet"), *flags])
        rows.append(("single machine (2 cores)", t))
        for n in (1, 2):
            c = Cluster(root / f"c{n}", executors=n, pin=True)
            try:
                t = timed(["convert", "--cluster", c.url, str(src), str(root / f"out{n}"), *flags])
            finally:
                c.stop()
            rows.append((f"{n} executor{'s' if n > 1 else ''}, 1 slot, 1 core each", t))
        print(f"quantize_to_target (min cosine {a.min_cosine}, g128) over {nbytes / 1e9:.2f} GB of float32")
        print("| run | seconds | GB/s |")
        print("|---|---:|---:|")
        for name, t in rows:
            print(f"| {name} | {t:.2f} | {nbytes / 1e9 / t:.2f} |")
        print(f"two executors / one executor: {rows[1][1] / rows[2][1]:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
