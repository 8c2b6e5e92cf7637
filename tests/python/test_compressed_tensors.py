"""compressed-tensors export, proven with the real consumers: compressed-tensors' own
decompressor (bit for bit against ``dequantize``) and transformers loading the model on CPU.

The model is a tiny random Llama built offline with transformers (``LlamaConfig`` +
``save_pretrained``, bf16), converted by ``arrowquant convert MODEL_DIR OUT_DIR``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import arrowquant as aq

import torch
import transformers
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

HIDDEN, INTER, VOCAB = 128, 256, 256
PROMPT = [[1, 5, 9, 77, 200, 13, 42, 7]]


def make_llama(path: Path, max_shard_size: str = "5GB", seed: int = 0) -> None:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(path, max_shard_size=max_shard_size)
    (path / "tokenizer_config.json").write_text('{"model_max_length": 64}')


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llama") / "model"
    make_llama(path)
    return path


def original_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def our_dequantized(w: torch.Tensor, scheme: str, group_size: int | str) -> torch.Tensor:
    """arrowquant's quantize + dequantize of one weight, as float32."""
    x = w.float().numpy().ravel()
    t = pa.table(
        {
            "layer_name": ["w"],
            "weights": pa.ListArray.from_arrays(pa.array([0, x.size], pa.int32()), pa.array(x)),
            "shape": pa.array([list(w.shape)], pa.list_(pa.int64())),
        }
    )
    back = aq.dequantize_arrow(aq.quantize_arrow(t, scheme=scheme, group_size=group_size))
    values = back.column("weights").combine_chunks().values.to_numpy()
    return torch.from_numpy(values.copy()).reshape(w.shape)


def decompress_all(out_dir: Path) -> dict[str, torch.Tensor]:
    """compressed-tensors' decompressor over every quantized module of an exported model."""
    config = json.loads((out_dir / "config.json").read_text())["quantization_config"]
    qc = QuantizationConfig.model_validate(config)
    assert qc.format == "pack-quantized" and qc.quantization_status == "compressed"
    tensors = original_tensors(out_dir)
    weights = {}
    for group in qc.config_groups.values():
        scheme = QuantizationScheme.model_validate(group)
        for module in scheme.targets:
            local = {
                k[len(module) + 1 :]: v for k, v in tensors.items() if k.startswith(module + ".")
            }
            assert set(local) >= {"weight_packed", "weight_scale", "weight_shape"}, module
            weights[module] = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
    return weights


SCHEMES = ["int8", "int4", "int2", "int8_zp", "int4_zp", "int2_zp"]
GROUPS = [32, 128, "per_channel", 0]


@pytest.mark.parametrize(
    ("scheme", "group_size"),
    [(s, g) for s in SCHEMES for g in GROUPS] + [("q8_0", 32), ("q4_0", 32)],
)
def test_decompressor_gives_dequantize_bit_for_bit(llama: Path, tmp_path: Path, scheme: str, group_size) -> None:
    out = tmp_path / "ct"
    written = aq.convert(llama, out, scheme, group_size)
    assert len(written["quantized"]) == 14
    assert sorted(written["dense"]) == sorted(
        ["lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"]
        + [f"model.layers.{i}.{n}.weight" for i in range(2) for n in ("input_layernorm", "post_attention_layernorm")]
    )
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    (group,) = config["config_groups"].values()
    weights = group["weights"]
    bits = {"int8": 8, "int4": 4, "int2": 2, "q8_0": 8, "q4_0": 4}[scheme.removesuffix("_zp")]
    assert (weights["num_bits"], weights["symmetric"]) == (bits, not scheme.endswith("_zp"))
    if group_size in ("per_channel", 0):
        assert (weights["strategy"], weights["group_size"]) == ("channel", None)
    else:
        assert (weights["strategy"], weights["group_size"]) == ("group", group_size)
    assert sorted(config["ignore"]) == ["lm_head", "model.embed_tokens"]

    theirs = decompress_all(out)
    original = original_tensors(llama)
    assert len(theirs) == 14
    for module, w in theirs.items():
        ours = our_dequantized(original[module + ".weight"], scheme, group_size)
        assert w.dtype == torch.float32 and w.shape == ours.shape, module
        # Bit for bit: compare the float32 bit patterns.
        assert torch.equal(w.view(torch.int32), ours.view(torch.int32)), f"{scheme} {group_size} {module}"
    # Dense tensors are copied byte for byte, in their own dtype.
    out_tensors = original_tensors(out)
    for name in written["dense"]:
        assert out_tensors[name].dtype == torch.bfloat16
        assert torch.equal(out_tensors[name].view(torch.int16), original[name].view(torch.int16)), name


def logits(model_dir: Path, dtype=torch.float32, replace: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if replace:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for module, w in replace.items():
                params[module + ".weight"].copy_(w)
    with torch.no_grad():
        return model(torch.tensor(PROMPT)).logits[0].float()


@pytest.mark.parametrize(("scheme", "group_size", "min_cos"), [("int8", "per_channel", 0.9999), ("int4", 32, 0.97), ("int4", 128, 0.96), ("q4_0", 32, 0.975)])
def test_transformers_loads_the_model(llama: Path, tmp_path: Path, scheme: str, group_size, min_cos: float) -> None:
    out = tmp_path / "ct"
    aq.convert(llama, out, scheme, group_size)
    assert (out / "generation_config.json").exists() and (out / "tokenizer_config.json").exists()
    got = logits(out)
    # The same model with arrowquant's dequantized weights loaded densely: the same numbers
    # (float32 throughout; only the order of float operations inside the two Linear paths may
    # differ, so allow a few ulps of the logits' scale).
    original = original_tensors(llama)
    modules = [k[: -len(".weight")] for k in original if k.endswith("_proj.weight")]
    dense = {m: our_dequantized(original[m + ".weight"], scheme, group_size) for m in modules}
    want = logits(llama, replace=dense)
    scale = want.abs().max().item()
    assert (got - want).abs().max().item() <= 1e-5 * scale
    # Within the expected quantization error of the original model: cosine similarity of the
    # logits of this random tiny model (measured: int8 per channel 0.99995, int4 g32 0.986,
    # int4 g128 0.982, q4_0 0.989).
    base = logits(llama)
    cos = torch.nn.functional.cosine_similarity(got.flatten(), base.flatten(), dim=0).item()
    assert cos >= min_cos, cos
    assert not torch.equal(got, base)
    # And the way users run it: bf16, generating tokens.
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    tokens = model.generate(torch.tensor(PROMPT), max_new_tokens=4, do_sample=False)
    assert tokens.shape == (1, len(PROMPT[0]) + 4)


def test_sharded_model_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "sharded"
    make_llama(src, max_shard_size="300KB")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3
    out = tmp_path / "ct"
    written = aq.convert(src, out, "int4", 32, max_shard_bytes=100_000)
    assert len(written["shards"]) >= 3
    out_index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(set(out_index["weight_map"].values())) == written["shards"]
    for shard in written["shards"]:
        assert (out / shard).stat().st_size <= 100_000 + 4096  # + the header
    names = set(out_index["weight_map"])
    modules = {k[: -len(".weight")] for k in index["weight_map"] if k.endswith("_proj.weight")}
    assert len(modules) == 14
    want = {k for k in index["weight_map"] if not k.endswith("_proj.weight")}
    for m in modules:
        want |= {f"{m}.weight_packed", f"{m}.weight_scale", f"{m}.weight_shape"}
    assert names == want
    # The same as the single-shard export, through transformers.
    single = tmp_path / "single"
    aq.convert(src, single, "int4", 32)
    assert not (single / "model.safetensors.index.json").exists()
    assert torch.equal(logits(out), logits(single))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "arrowquant", *args], capture_output=True, text=True)


def test_the_command_line(llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "ct"
    r = run_cli("convert", str(llama), str(out), "--scheme", "int4", "--group-size", "128", "--exclude", "*down_proj*")
    assert r.returncode == 0, r.stderr
    assert "model.layers.0.mlp.up_proj" in r.stdout and "wrote 12 quantized" in r.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "model.layers.1.mlp.down_proj" in config["quantization_config"]["ignore"]
    logits(out)  # loads


BAD = {
    "no config.json": (["int4", 128], "has no config.json: not a Hugging Face model directory"),
    "group crosses rows": (["int4", 96], "tensor 'model.layers.0.mlp.down_proj.weight' [128, 256]: groups of 96 cross the rows of length 256"),
    "float-min scheme": (["int4_asym", 32], "int4_asym stores float mins (d·q + m), which compressed-tensors' integer zero points cannot represent exactly; quantize with int4_zp instead"),
    "shard missing": (["int4", 32], "model-00002-of-00003.safetensors, named by model.safetensors.index.json, is missing"),
    "output exists": (["int4", 32], "exists; pass --overwrite to replace it"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_name_the_problem_and_leave_nothing(llama: Path, tmp_path: Path, case: str) -> None:
    (scheme, group), message = BAD[case]
    src = llama
    out = tmp_path / "out"
    if case == "no config.json":
        src = tmp_path / "noconfig"
        src.mkdir()
        (src / "model.safetensors").write_bytes((llama / "model.safetensors").read_bytes())
    elif case == "shard missing":
        src = tmp_path / "sharded"
        make_llama(src, max_shard_size="300KB")
        (src / "model-00002-of-00003.safetensors").unlink()
    elif case == "output exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    with pytest.raises(aq.ArrowQuantError) as e:
        aq.convert(src, out, scheme, group, format="compressed-tensors")
    assert message in str(e.value)
    r = run_cli("convert", str(src), str(out), "--format", "compressed-tensors", "--scheme", scheme, "--group-size", str(group))
    assert r.returncode in (1, 2) and message in r.stderr, r.stderr
    # Nothing partial: no OUT (or OUT untouched) and no temporary directory beside it.
    if case == "output exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.arrowquant-")]


def test_a_q_table_exports_without_requantizing(llama: Path, tmp_path: Path) -> None:
    """import -> convert (q table) -> compressed-tensors: the same bytes as the direct path."""
    table, qtable = tmp_path / "model.parquet", tmp_path / "q.parquet"
    assert run_cli("import", str(llama), str(table)).returncode == 0
    aq.convert(table, qtable, "int4_zp", 64, exclude=["*embed*", "*lm_head*", "*norm*"])
    via_table = tmp_path / "via_table"
    written = aq.convert(qtable, via_table, config_from=llama)
    assert len(written["quantized"]) == 14
    direct = tmp_path / "direct"
    aq.convert(llama, direct, "int4_zp", 64)
    a, b = original_tensors(via_table), original_tensors(direct)
    assert sorted(a) == sorted(b)
    for name, t in b.items():
        if name.endswith(("weight_packed", "weight_scale", "weight_zero_point", "weight_shape")):
            assert torch.equal(a[name], t), name
        else:
            # Dense tensors went through the float32 weight table: the same values, widened.
            assert a[name].dtype == torch.float32 and torch.equal(a[name], t.float()), name
    assert json.loads((via_table / "config.json").read_text())["quantization_config"] == json.loads(
        (direct / "config.json").read_text()
    )["quantization_config"]
    # Without the model's config it is refused, naming the flag.
    r = run_cli("convert", str(qtable), str(tmp_path / "x"), "--format", "compressed-tensors", "--scheme", "int4")
    assert r.returncode == 2 and "--config-from MODEL_DIR" in r.stderr, r.stderr


def test_zero_point_models_load_in_transformers_dequantized(llama: Path, tmp_path: Path) -> None:
    """Asymmetric (integer zero point) files: compressed-tensors 0.20.0's model skeleton expects
    an unpacked weight_zero_point while its own compressor (and the format vLLM reads) packs it
    along the output dimension, so transformers 5.24 refuses its default load of any asymmetric
    pack-quantized checkpoint — also one written by compressed-tensors itself (reproduced with
    upstream code only). Loading with dequantize=True works, and gives our weights exactly."""
    from transformers import CompressedTensorsConfig

    out = tmp_path / "ct"
    aq.convert(llama, out, "int4_zp", 128)
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with pytest.warns(UserWarning, match="already has a `quantization_config`"):
        model = transformers.AutoModelForCausalLM.from_pretrained(
            out, dtype=torch.float32, quantization_config=CompressedTensorsConfig(dequantize=True)
        )
    original = original_tensors(llama)
    params = dict(model.named_parameters())
    for name, w in original.items():
        if name.endswith("_proj.weight"):
            assert torch.equal(params[name].detach(), our_dequantized(w, "int4_zp", 128)), name
