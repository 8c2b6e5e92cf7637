"""GGUF files that llama.cpp runs: `arrowquant convert IN.gguf OUT.gguf --preset P` on a tiny
random-weight llama written with gguf-py's GGUFWriter. gguf-py's GGUFReader reads the output,
every quantized tensor equals ggml's own quantizer (libggml-python) on the input, and llama.cpp
itself (PyPI xllamacpp, in-process, bound to 127.0.0.1) loads it and generates tokens."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

from tiny_llama import write_tiny_llama

GGML = {"Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "Q8_0": 8, "Q4_0": 2}


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "arrowquant", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    write_tiny_llama(path)
    return path


@pytest.fixture(scope="module")
def q4_k_m(tiny):
    out = tiny.parent / "tiny-q4_k_m.gguf"
    run("convert", str(tiny), str(out), "--preset", "Q4_K_M")
    return out


def test_q4_k_m_types_order_keys_and_bytes_match_llama_quantize(tiny, q4_k_m):
    import libggml
    from gguf import GGUFReader

    src, out = GGUFReader(tiny), GGUFReader(q4_k_m)
    want_types = {}
    for t in src.tensors:
        name = t.name
        if t.data.ndim < 2:
            want_types[name] = "F32"
        elif name == "output.weight":
            want_types[name] = "Q6_K"
        elif ".attn_v." in name or ".ffn_down." in name:
            want_types[name] = "Q6_K" if use_more_bits(int(name.split(".")[1]), 8) else "Q4_K"
        else:
            want_types[name] = "Q4_K"
    got = {t.name: t.tensor_type.name for t in out.tensors}
    assert got == want_types
    # llama.cpp's order: the tensors outside blocks, then blk.N numerically, names sorted within
    names = [t.name for t in out.tensors]
    key = lambda n: (int(n.split(".")[1]) if n.startswith("blk.") else -1, n)
    assert names == sorted(names, key=key)
    # every key-value of the input, then the two llama-quantize sets, last
    src_keys = [k for k in src.fields if not k.startswith("GGUF.") and k != "general.file_type"]
    out_keys = [k for k in out.fields if not k.startswith("GGUF.")]
    assert out_keys == src_keys + ["general.quantization_version", "general.file_type"]
    assert out.fields["general.file_type"].contents() == 15
    assert out.fields["general.quantization_version"].contents() == 2
    # the bytes: ggml's own quantizer on the same f32 rows
    lib = ctypes.CDLL(os.path.join(os.path.dirname(libggml.__file__), "lib64", "libggml-base.so"))
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    source = {t.name: t for t in src.tensors}
    for t in out.tensors:
        x = np.ascontiguousarray(source[t.name].data, np.float32)
        if t.tensor_type.name == "F32":
            assert bytes(t.data.tobytes()) == x.tobytes(), t.name
            continue
        rows = x.reshape(-1, x.shape[-1])
        want = np.zeros(t.n_bytes, np.uint8)
        lib.ggml_quantize_chunk(GGML[t.tensor_type.name], rows.ctypes.data, want.ctypes.data, 0,
                                rows.shape[0], rows.shape[1], None)
        assert t.data.tobytes() == want.tobytes(), t.name
        assert list(t.shape) == list(source[t.name].shape), t.name


def generate(path, n=8) -> tuple[str, int]:
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = str(path)
    p.n_ctx, p.n_predict, p.n_batch, p.n_ubatch, p.n_parallel = 128, n, 128, 128, 1
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 1
    p.warmup = False
    p.sampling.temp, p.sampling.seed = 0.0, 42
    p.hostnames = ["127.0.0.1"]
    srv = xlc.Server(p)
    res = srv.handle_completions({"prompt": "Once upon a time", "max_tokens": n, "temperature": 0.0,
                                  "ignore_eos": True, "cache_prompt": False})
    if isinstance(res, str):
        import json

        res = json.loads(res)
    assert "error" not in res, res
    return res["choices"][0]["text"], res["usage"]["completion_tokens"]


def test_llama_cpp_loads_the_output_and_generates(q4_k_m):
    text, tokens = generate(q4_k_m)
    assert tokens == 8
    assert isinstance(text, str)


@pytest.mark.parametrize("preset", ["Q8_0", "Q4_0", "Q4_K_S", "Q5_K_M", "Q6_K"])
def test_every_preset_writes_a_file_llama_cpp_runs(tiny, tmp_path, preset):
    from gguf import GGUFReader

    out = tmp_path / f"tiny-{preset}.gguf"
    run("convert", str(tiny), str(out), "--preset", preset)
    file_type = {"Q8_0": 7, "Q4_0": 2, "Q4_K_S": 14, "Q5_K_M": 17, "Q6_K": 18}[preset]
    assert GGUFReader(out).fields["general.file_type"].contents() == file_type
    _, tokens = generate(out, 4)
    assert tokens == 4


def test_types_as_user_sql_and_read_gguf(tiny, tmp_path):
    rules = tmp_path / "rules.sql"
    rules.write_text("SELECT layer_name, CASE WHEN layer_name LIKE '%norm%' THEN 'f32' "
                     "WHEN layer_name LIKE '%attn_v%' THEN 'q8_0' ELSE 'q6_k' END AS type "
                     "FROM tensors ORDER BY layer_name")
    out = tmp_path / "custom.gguf"
    run("convert", str(tiny), str(out), "--types", str(rules))
    proc = run("sql", f"SELECT ggml_type, count(*) AS n FROM read_gguf('{out}') GROUP BY ggml_type ORDER BY ggml_type")
    rows = [[c.strip() for c in line.split("|")[1:3]] for line in proc.stdout.splitlines() if "|" in line]
    assert rows[1:] == [["F32", "17"], ["Q6_K", "50"], ["Q8_0", "8"]]
    # read_gguf dequantizes: q8_0 of the input is within half a step of it
    proc = run("sql", f"SELECT max(e['max_abs_error']) < 0.001 AS close FROM (SELECT quantization_error(a.weights, "
               f"quantize(a.weights, 'q8_0')) AS e FROM read_gguf('{out}') a WHERE a.ggml_type = 'Q8_0')")
    assert "true" in proc.stdout
    _, tokens = generate(out, 2)
    assert tokens == 2


def test_bad_gguf_inputs(tiny, q4_k_m, tmp_path):
    out = tmp_path / "o.gguf"
    # already quantized: refused unless --allow-requantize, as llama-quantize does
    proc = run("convert", str(q4_k_m), str(out), "--preset", "Q8_0", check=False)
    assert proc.returncode == 2 and "tensor 'output.weight' is already Q6_K; pass --allow-requantize" in proc.stderr, proc.stderr
    run("convert", str(q4_k_m), str(out), "--preset", "Q8_0", "--allow-requantize")
    # tensor data past the end of the file
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 2])
    proc = run("convert", str(cut), str(tmp_path / "c.gguf"), "--preset", "Q4_K_M", check=False)
    assert proc.returncode == 1 and "cut.gguf" in proc.stderr, proc.stderr
    assert not (tmp_path / "c.gguf").exists()
    # an unknown ggml type id in a tensor info
    data = bytearray(tiny.read_bytes())
    first = data.find(b"token_embd.weight") + len(b"token_embd.weight")
    n_dims = int.from_bytes(data[first:first + 4], "little")
    at = first + 4 + 8 * n_dims
    data[at:at + 4] = (99).to_bytes(4, "little")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    proc = run("convert", str(bad), str(tmp_path / "b.gguf"), "--preset", "Q4_K_M", check=False)
    assert proc.returncode == 1 and "unknown ggml type 99" in proc.stderr, proc.stderr
    # GGUF options on Parquet files are a usage error, not silently ignored
    proc = run("convert", str(tiny), str(tmp_path / "o.parquet"), "--preset", "Q4_K_M", check=False)
    assert proc.returncode == 2 and "GGUF converts to GGUF" in proc.stderr, proc.stderr
    # a type the rules name that GGUF cannot store
    rules = tmp_path / "bad.sql"
    rules.write_text("SELECT layer_name, 'int4' AS type FROM tensors")
    proc = run("convert", str(tiny), str(out), "--types", str(rules), "--overwrite", check=False)
    assert proc.returncode == 2 and "type 'int4' is not one GGUF can store" in proc.stderr, proc.stderr


@pytest.mark.parametrize("preset,fallback", [("Q4_K_M", "Q5_0"), ("Q5_K_M", "Q5_1")])
def test_rows_not_a_multiple_of_256_fall_back_as_llama_cpp_does(tmp_path, preset, fallback):
    """n_embd 320 with GQA and tied embeddings: the K presets fall back to q5_0/q5_1 (and q8_0 for
    the q6_k tensors), byte for byte ggml's quantizers, and llama.cpp runs the result."""
    import libggml
    from gguf import GGUFReader

    odd, out = tmp_path / "tiny320.gguf", tmp_path / "o320.gguf"
    write_tiny_llama(odd, n_embd=320, n_head=4, n_head_kv=2, n_ff=640, tied=True)
    run("convert", str(odd), str(out), "--preset", preset)
    lib = ctypes.CDLL(os.path.join(os.path.dirname(libggml.__file__), "lib64", "libggml-base.so"))
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    source = {t.name: t for t in GGUFReader(odd).tensors}
    types = {}
    for t in GGUFReader(out).tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        if t.tensor_type.name == "F32":
            continue
        rows = np.ascontiguousarray(source[t.name].data, np.float32).reshape(-1, source[t.name].data.shape[-1])
        want = np.zeros(t.n_bytes, np.uint8)
        ggml_type = {"Q5_0": 6, "Q5_1": 7, **GGML}[t.tensor_type.name]
        lib.ggml_quantize_chunk(ggml_type, rows.ctypes.data, want.ctypes.data, 0, rows.shape[0], rows.shape[1], None)
        assert t.data.tobytes() == want.tobytes(), t.name
    assert types.get(fallback, 0) > 0 and types.get("Q8_0", 0) > 0, types
    _, tokens = generate(out, 4)
    assert tokens == 4


def test_the_q4_k_search_writes_better_blocks_that_llama_cpp_runs(tiny, q4_k_m, tmp_path):
    """`--method search`: the same types, shapes and Q4_K layout as llama-quantize's file, every
    q4_k tensor at least as close to the F32 original (decoded by gguf-py, llama.cpp's format
    in numpy) and closer on average; llama.cpp loads the file and generates."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    out = tmp_path / "tiny-q4_k_m-search.gguf"
    run("convert", str(tiny), str(out), "--preset", "Q4_K_M", "--method", "search")
    source = {t.name: np.asarray(t.data, dtype=np.float32) for t in GGUFReader(tiny).tensors}
    ref = {t.name: t for t in GGUFReader(q4_k_m).tensors}
    gains = []
    for t in GGUFReader(out).tensors:
        r = ref[t.name]
        assert (t.tensor_type, list(t.shape)) == (r.tensor_type, list(r.shape)), t.name
        if t.tensor_type != GGMLQuantizationType.Q4_K:
            assert t.data.tobytes() == r.data.tobytes(), t.name
            continue
        x = source[t.name].astype(np.float64).ravel()
        err = lambda q: float(np.sum((x - dequantize(q.data, q.tensor_type).astype(np.float64).ravel()) ** 2))
        e_search, e_ref = err(t), err(r)
        assert e_search <= e_ref, t.name
        gains.append(10 * np.log10(e_ref / e_search))
    assert len(gains) >= 8
    assert np.mean(gains) > 0.1, gains
    _, tokens = generate(out, 4)
    assert tokens == 4
