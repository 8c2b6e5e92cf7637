"""ggml's K-quants, byte for byte against ggml itself: PyPI libggml-python 0.20.2.post1 ships
ggml's prebuilt libggml-base.so, whose ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row,
NULL) is what llama-quantize runs without an importance matrix."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import pyarrow as pa
import pytest

import arrowquant as aq

TYPES = {"q2_k": (10, 84), "q3_k": (11, 110), "q4_k": (12, 144), "q5_k": (13, 176), "q6_k": (14, 210)}
N = 1 << 20


@pytest.fixture(scope="module")
def ggml():
    import libggml

    lib = ctypes.CDLL(os.path.join(os.path.dirname(libggml.__file__), "lib64", "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def ggml_blocks(lib, scheme: str, x: np.ndarray) -> bytes:
    t, size = TYPES[scheme]
    rows = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
    out = np.zeros(rows.size // 256 * size, np.uint8)
    rows = np.ascontiguousarray(rows, np.float32)
    lib.ggml_quantize_chunk(t, rows.ctypes.data, out.ctypes.data, 0, rows.shape[0], rows.shape[1], None)
    return out.tobytes()


def cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(12)
    blocks = N // 256
    scales = np.exp(rng.uniform(-8, 8, (blocks, 1))).astype(np.float32)
    constant = np.repeat(rng.standard_normal((blocks, 1)), 256, axis=1)
    mixed = rng.standard_normal((blocks, 256)).astype(np.float32)
    mixed[::2, :32] = 0.0  # a zero sub-block in every other super-block
    mixed[1::2, 100:116] = 3.0  # a constant 16-value sub-block
    return {
        "normal": rng.standard_normal((blocks, 256)).astype(np.float32) * 0.02,
        "normal, per-block scales": (rng.standard_normal((blocks, 256)) * scales).astype(np.float32),
        "heavy-tailed": (rng.standard_t(3, (blocks, 256)) * 0.02).astype(np.float32),
        "all zero": np.zeros((blocks, 256), np.float32),
        "constant blocks": constant.astype(np.float32),
        "tiny (1e-30)": (rng.standard_normal((blocks, 256)) * 1e-30).astype(np.float32),
        "subnormal": (rng.standard_normal((blocks, 256)) * 1e-40).astype(np.float32),
        "zero and constant sub-blocks": mixed,
        "up to f16's range (1e5)": (rng.standard_normal((blocks, 256)) * 1e5).astype(np.float32),
        "rows of 256k columns": rng.standard_normal((4, 1 << 18)).astype(np.float32),
    }


CASES = cases()


@pytest.mark.parametrize("scheme", sorted(TYPES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_k_quants_are_byte_identical_to_ggml(ggml, scheme, case):
    x = CASES[case]
    rows = x.reshape(-1, 1 << 18) if x.shape[-1] == 256 else x  # one row per 256k values
    t = pa.table({"layer_name": [f"r{i}" for i in range(len(rows))],
                  "weights": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1])})
    q = aq.quantize_arrow(t, scheme, 256)
    ours = b"".join(r["codes"] for r in q.column("q").to_pylist())
    want = ggml_blocks(ggml, scheme, rows)
    assert len(ours) == len(want)
    if ours != want:
        size = TYPES[scheme][1]
        first = next(i for i in range(len(ours)) if ours[i] != want[i]) // size
        pytest.fail(f"{scheme} {case}: block {first} differs: ours {ours[first * size:(first + 1) * size].hex()}, "
                    f"ggml {want[first * size:(first + 1) * size].hex()}")
    back = np.concatenate([np.array(w, np.float32) for w in aq.dequantize_arrow(q).column("weights").to_pylist()])
    assert np.all(np.isfinite(back))


@pytest.mark.parametrize("scheme", sorted(TYPES))
@pytest.mark.parametrize("magnitude", [1e10, 1.5e38, 3.4e38])
def test_weights_past_f16s_range_are_refused_where_ggml_writes_no_usable_scale(ggml, scheme, magnitude):
    """Past f16's range ggml writes blocks whose scale is inf or NaN, or (once x*x overflows f32)
    q6_k/q3_k blocks of zeros with d = 0. arrowquant refuses such a block, naming it, instead of
    writing a file that dequantizes to inf, NaN or zeros."""
    x = np.full((1, 256), magnitude, np.float32)
    x[0, ::2] = -magnitude
    want = ggml_blocks(ggml, scheme, x)
    # where ggml's block keeps its f16 d (and dmin): q2_k at 80, q3_k at 108, q4_k/q5_k at 0, q6_k at 208
    at, n = {"q2_k": (80, 2), "q3_k": (108, 1), "q4_k": (0, 2), "q5_k": (0, 2), "q6_k": (208, 1)}[scheme]
    back = np.frombuffer(want[at:at + 2 * n], np.float16)
    assert not np.all(np.isfinite(back)) or np.all(back == 0), (scheme, back)
    t = pa.table({"layer_name": ["huge"], "weights": pa.array([x[0]], pa.list_(pa.float32()))})
    with pytest.raises(aq.QuantizationError, match=rf"layer 'huge' \(row 0\): {scheme} block 0 has scale .*overflows f16"):
        aq.quantize_arrow(t, scheme, 256)
