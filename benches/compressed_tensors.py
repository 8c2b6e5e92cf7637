"""The one command, Hugging Face model directory -> compressed-tensors W4A16, against its floor
and against what a user runs today (llm-compressor's data-free ``oneshot``), in one run.

    python benches/compressed_tensors.py [--gb 2.2] [--dir /tmp/aq-ct-bench] [--llmcompressor PYTHON]

Generates a Llama-shaped bf16 model of about ``--gb`` GB in two shards (random weights written
directly as safetensors), then times, each as a separate process with its peak RSS:

- floor: read every input shard (64 MiB reads) and write as many bytes as arrowquant's output,
  fsync'd — the I/O that any converter must do;
- arrowquant: ``arrowquant convert MODEL OUT --scheme int4 --group-size 128``;
- llm-compressor (when ``--llmcompressor`` names a Python that has it; llmcompressor 0.14 pins
  torch/transformers/compressed-tensors versions other than this project's, so it lives in its
  own venv): ``oneshot(model, recipe=QuantizationModifier(targets="Linear", scheme="W4A16",
  ignore=["lm_head"]))`` + ``save_pretrained(save_compressed=True)`` on CPU.

The input is read once before timing, so every contender finds it in the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HIDDEN, INTER, HEADS, KV_HEADS, VOCAB = 2048, 5632, 16, 4, 32000


def tensors_of_layer(i: int) -> list[tuple[str, tuple[int, ...]]]:
    kv = HIDDEN // HEADS * KV_HEADS
    p = f"model.layers.{i}."
    return [
        (p + "input_layernorm.weight", (HIDDEN,)),
        (p + "mlp.down_proj.weight", (HIDDEN, INTER)),
        (p + "mlp.gate_proj.weight", (INTER, HIDDEN)),
        (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
        (p + "post_attention_layernorm.weight", (HIDDEN,)),
        (p + "self_attn.k_proj.weight", (kv, HIDDEN)),
        (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
        (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
        (p + "self_attn.v_proj.weight", (kv, HIDDEN)),
    ]


def write_shard(path: Path, tensors: list[tuple[str, tuple[int, ...]]], rng: np.random.Generator) -> None:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in tensors:
            n = int(np.prod(shape))
            if name.endswith("norm.weight"):
                bits = np.full(n, 0x3F80, np.uint16)  # 1.0
            else:
                x = rng.standard_normal(n, dtype=np.float32) * 0.02
                bits = (x.view(np.uint32) >> 16).astype(np.uint16)
            f.write(bits.tobytes())


def make_model(path: Path, gb: float) -> None:
    per_layer = sum(int(np.prod(s)) * 2 for _, s in tensors_of_layer(0))
    layers = max(1, round((gb * 1e9 - 2 * VOCAB * HIDDEN * 2) / per_layer))
    path.mkdir(parents=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": INTER, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": layers, "vocab_size": VOCAB, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False, "dtype": "bfloat16",
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    all_tensors = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(layers):
        all_tensors += tensors_of_layer(i)
    all_tensors += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    half = len(all_tensors) // 2
    shards = [all_tensors[:half], all_tensors[half:]]
    rng = np.random.default_rng(0)
    weight_map = {}
    for k, ts in enumerate(shards):
        name = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        write_shard(path / name, ts, rng)
        weight_map.update({t: name for t, _ in ts})
    index = {"metadata": {"total_size": sum(int(np.prod(s)) * 2 for _, s in all_tensors)}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command, from GNU time."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return wall, int(r.stderr.strip().splitlines()[-1]) / 1024


FLOOR = r"""
import os, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
buf = bytearray(64 << 20)
for f in sorted(os.listdir(src)):
    if f.endswith(".safetensors"):
        with open(os.path.join(src, f), "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
with open(dst, "wb") as out:
    while n > 0:
        k = min(n, len(buf))
        out.write(memoryview(buf)[:k])
        n -= k
    out.flush()
    os.fsync(out.fileno())
"""

LLMC = r"""
import sys, torch
from transformers import AutoModelForCausalLM
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
oneshot(model=model, recipe=QuantizationModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"]))
model.save_pretrained(sys.argv[2], save_compressed=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=2.2)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/aq-ct-bench"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--llmcompressor", help="a Python interpreter with llmcompressor installed")
    args = ap.parse_args()
    model = args.dir / f"llama-{args.gb}gb"
    if not model.exists():
        print(f"generating {model} ...", flush=True)
        make_model(model, args.gb)
    size = dir_bytes(model)
    warm = args.dir / "warm.bin"
    subprocess.run([sys.executable, "-c", FLOOR, str(model), str(warm), "0"], check=True)  # warm the cache
    warm.unlink()
    out = args.dir / "out-arrowquant"
    rows = []
    for _ in range(args.reps):
        wall, rss = timed([sys.executable, "-m", "arrowquant", "convert", str(model), str(out),
                           "--scheme", "int4", "--group-size", "128", "--overwrite"])
        rows.append(("arrowquant convert --scheme int4 --group-size 128", wall, rss))
    out_bytes = dir_bytes(out)
    floor_file = args.dir / "floor.bin"
    for _ in range(args.reps):
        wall, rss = timed([sys.executable, "-c", FLOOR, str(model), str(floor_file), str(out_bytes)])
        rows.append(("floor: read the shards, write the output bytes", wall, rss))
    floor_file.unlink(missing_ok=True)
    if args.llmcompressor:
        llmc_out = args.dir / "out-llmcompressor"
        shutil.rmtree(llmc_out, ignore_errors=True)
        wall, rss = timed([args.llmcompressor, "-c", LLMC, str(model), str(llmc_out)])
        rows.append(("llm-compressor oneshot W4A16 (CPU)", wall, rss))
    best = {}
    for name, wall, rss in rows:
        if name not in best or wall < best[name][0]:
            best[name] = (wall, max(rss, best.get(name, (0, 0))[1]))
    floor = best["floor: read the shards, write the output bytes"][0]
    ours = best["arrowquant convert --scheme int4 --group-size 128"][0]
    print(f"\nmodel: {size / 1e9:.2f} GB bf16 in 2 shards -> {out_bytes / 1e9:.2f} GB; best of {args.reps} (llm-compressor: 1 run)\n")
    print(f"| {'what':<50} | {'seconds':>8} | {'GB/s in':>7} | {'peak RSS MB':>11} | {'vs floor':>8} | {'vs arrowquant':>13} |")
    print(f"|{'-' * 52}|{'-' * 10}:|{'-' * 9}:|{'-' * 13}:|{'-' * 10}:|{'-' * 15}:|")
    for name, (wall, rss) in best.items():
        print(f"| {name:<50} | {wall:8.2f} | {size / 1e9 / wall:7.2f} | {rss:11.0f} | {wall / floor:7.2f}x | {wall / ours:12.2f}x |")


if __name__ == "__main__":
    main()
