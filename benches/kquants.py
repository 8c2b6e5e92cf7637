"""K-quants against ggml's own quantizer, measured in the same run: GB/s of f32 input per core.

    python benches/kquants.py [MB=64] [REPEATS=3]

ggml: libggml-python 0.20.2.post1's prebuilt libggml-base.so, ggml_quantize_chunk (the reference
quantizers that llama-quantize runs without an importance matrix), one thread. arrowquant:
quantize_arrow with threads=1 and then threads=2; both give the same bytes (checked here).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

import numpy as np
import pyarrow as pa

import arrowquant as aq

TYPES = {"q2_k": (10, 84), "q3_k": (11, 110), "q4_k": (12, 144), "q5_k": (13, 176), "q6_k": (14, 210)}


def best(f, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    import libggml

    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    lib = ctypes.CDLL(os.path.join(os.path.dirname(libggml.__file__), "lib64", "libggml-base.so"))
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    cols = 4096
    x = (np.random.default_rng(0).standard_normal((mb * (1 << 20) // 4 // cols, cols)) * 0.02).astype(np.float32)
    t = pa.table({"layer_name": ["w"], "weights": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.size)})
    gb = x.nbytes / 1e9
    print(f"{mb} MB of f32 (rows of {cols}), best of {repeats}; GB/s of input")
    print(f"{'type':6} {'ggml 1 thread':>14} {'ours 1 thread':>14} {'ratio':>7} {'ours 2 threads':>15} {'2 vs 1':>7}")
    for name, (ggml_type, size) in TYPES.items():
        out = np.zeros(x.size // 256 * size, np.uint8)
        tg, _ = best(lambda: lib.ggml_quantize_chunk(ggml_type, x.ctypes.data, out.ctypes.data, 0,
                                                     x.shape[0], cols, None), repeats)
        t1, q1 = best(lambda: aq.quantize_arrow(t, name, 256, threads=1), repeats)
        t2, q2 = best(lambda: aq.quantize_arrow(t, name, 256, threads=2), repeats)
        codes = q1.column("q")[0]["codes"].as_py()
        assert codes == out.tobytes() == q2.column("q")[0]["codes"].as_py(), name
        print(f"{name:6} {gb / tg:14.3f} {gb / t1:14.3f} {tg / t1:6.1f}x {gb / t2:15.3f} {t1 / t2:6.2f}x")


if __name__ == "__main__":
    main()
