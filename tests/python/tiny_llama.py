#!/usr/bin/env python3
"""Write a tiny random-weight LLaMA GGUF (all F32) that llama.cpp can load.

    python tests/python/tiny_llama.py                         # tiny-f32.gguf, n_embd 256
    python tests/python/tiny_llama.py --n-embd 320 -o tiny320-f32.gguf
    python tests/python/tiny_llama.py --n-head-kv 2 --tied -o tiny-gqa-tied-f32.gguf

Needs: numpy, gguf==0.19.0 (gguf-py).  No network.
"""
import argparse

import numpy as np
import gguf


def build_vocab(extra_normal=True):
    """Byte-level SentencePiece ("llama") vocabulary: <unk> <s> </s>, the 256
    byte tokens <0x00>..<0xFF>, then a handful of normal pieces."""
    tokens, scores, types = [], [], []

    def add(tok, score, ttype):
        tokens.append(tok.encode("utf-8"))
        scores.append(float(score))
        types.append(int(ttype))

    add("<unk>", 0.0, gguf.TokenType.UNKNOWN)     # 2
    add("<s>", 0.0, gguf.TokenType.CONTROL)       # 3
    add("</s>", 0.0, gguf.TokenType.CONTROL)      # 3
    for b in range(256):
        add(f"<0x{b:02X}>", 0.0, gguf.TokenType.BYTE)   # 6
    if extra_normal:
        # a few SPM pieces ("\u2581" is the SPM space marker) so that common text
        # does not tokenize to bytes only; scores = log-prob-like, higher = preferred
        pieces = ["\u2581", "\u2581the", "\u2581a", "e", "t", "a", "o", "n", "s", "h",
                  "\u2581t", "he", "in", "er", "\u2581Once", "\u2581upon", "\u2581time"]
        for i, p in enumerate(pieces):
            add(p, -1.0 - i, gguf.TokenType.NORMAL)    # 1
    return tokens, scores, types


def write_tiny_llama(out, n_embd=256, n_layer=8, n_head=4, n_head_kv=4, n_ff=512, n_ctx=128,
                     tied=False, seed=0):
    """Writes the model to `out` (a path); returns nothing."""
    a = argparse.Namespace(out=str(out), n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                           n_head_kv=n_head_kv, n_ff=n_ff, n_ctx=n_ctx, tied=tied, seed=seed)
    _write(a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", default="tiny-f32.gguf")
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=8)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-head-kv", type=int, default=4)
    ap.add_argument("--n-ff", type=int, default=512)
    ap.add_argument("--n-ctx", type=int, default=128)
    ap.add_argument("--tied", action="store_true", help="omit output.weight (tied embeddings)")
    ap.add_argument("--seed", type=int, default=0)
    print(_write(ap.parse_args()))


def _write(a):
    E, L, H, HKV, F = a.n_embd, a.n_layer, a.n_head, a.n_head_kv, a.n_ff
    assert E % H == 0
    hd = E // H
    tokens, scores, types = build_vocab()
    V = len(tokens)
    rng = np.random.default_rng(a.seed)

    def w(*np_shape):
        # numpy shape is (rows, cols) = reversed GGUF dims: GGUF stores ne = [cols, rows]
        return rng.normal(0.0, 0.02, size=np_shape).astype(np.float32)

    def ones(n):
        return np.ones((n,), dtype=np.float32)

    wr = gguf.GGUFWriter(a.out, "llama")
    # general.architecture is written by the constructor
    wr.add_name("tiny-random-llama")
    wr.add_file_type(int(gguf.LlamaFileType.ALL_F32))         # general.file_type = 0
    wr.add_context_length(a.n_ctx)                            # llama.context_length
    wr.add_embedding_length(E)                                # llama.embedding_length
    wr.add_block_count(L)                                     # llama.block_count
    wr.add_feed_forward_length(F)                             # llama.feed_forward_length
    wr.add_head_count(H)                                      # llama.attention.head_count
    wr.add_head_count_kv(HKV)                                 # llama.attention.head_count_kv
    wr.add_rope_dimension_count(hd)                           # llama.rope.dimension_count
    wr.add_rope_freq_base(10000.0)                            # llama.rope.freq_base
    wr.add_layer_norm_rms_eps(1e-5)                           # llama.attention.layer_norm_rms_epsilon
    wr.add_vocab_size(V)                                      # llama.vocab_size
    # tokenizer
    wr.add_tokenizer_model("llama")                           # tokenizer.ggml.model (SPM)
    wr.add_tokenizer_pre("default")
    wr.add_token_list(tokens)
    wr.add_token_scores(scores)
    wr.add_token_types(types)
    wr.add_unk_token_id(0)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    wr.add_add_bos_token(True)
    wr.add_add_eos_token(False)

    # tensors (numpy shape -> GGUF ne reversed)
    wr.add_tensor("token_embd.weight", w(V, E))               # ne [E, V]
    wr.add_tensor("output_norm.weight", ones(E))              # ne [E]
    if not a.tied:
        wr.add_tensor("output.weight", w(V, E))               # ne [E, V]
    for i in range(L):
        p = f"blk.{i}."
        wr.add_tensor(p + "attn_norm.weight", ones(E))
        wr.add_tensor(p + "attn_q.weight", w(H * hd, E))      # ne [E, H*hd]
        wr.add_tensor(p + "attn_k.weight", w(HKV * hd, E))    # ne [E, HKV*hd]
        wr.add_tensor(p + "attn_v.weight", w(HKV * hd, E))    # ne [E, HKV*hd]
        wr.add_tensor(p + "attn_output.weight", w(E, H * hd)) # ne [H*hd, E]
        wr.add_tensor(p + "ffn_norm.weight", ones(E))
        wr.add_tensor(p + "ffn_gate.weight", w(F, E))         # ne [E, F]
        wr.add_tensor(p + "ffn_up.weight", w(F, E))           # ne [E, F]
        wr.add_tensor(p + "ffn_down.weight", w(E, F))         # ne [F, E]

    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return f"wrote {a.out}: n_vocab={V} n_embd={E} n_layer={L} n_head={H} n_head_kv={HKV} n_ff={F} tied={a.tied}"


if __name__ == "__main__":
    main()
