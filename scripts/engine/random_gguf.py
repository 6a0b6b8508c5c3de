#!/usr/bin/env python3
"""Writes a random-weight Qwen2 GGUF model whose tokenizer is real.

An engine's timing depends on a model's architecture and sizes, not on its weight values, and
no model can be downloaded here. So the weights are drawn at random, and every `tokenizer.*`
key (vocabulary, merges, chat template) is copied from one of llama.cpp's vocabulary-only files
(`models/ggml-vocab-qwen2.gguf` in its source tree): llama-server then tokenizes, applies the
chat template and detokenizes exactly as it would for the real model, so prompt and output token
counts are real.

  python3 random_gguf.py --gguf-py llama.cpp/gguf-py --vocab llama.cpp/models/ggml-vocab-qwen2.gguf \\
      --shape tiny -o tiny.gguf
  python3 random_gguf.py ... --shape qwen2.5-0.5b -o qwen2.5-0.5b-random.gguf   # for the GPU

Shapes (tied embeddings, the vocabulary's size):
  tiny           hidden 64,  2 layers,  4 heads / 2 KV heads, ffn 256   (~10M params, ~20 MB f16)
  qwen2.5-0.5b   hidden 896, 24 layers, 14 heads / 2 KV heads, ffn 4864 (Qwen2.5-0.5B, ~1 GB f16)

Tensors are drawn and written one at a time, so memory holds one tensor.
"""
import argparse
import sys
import time

SHAPES = {
    # name: (hidden, layers, heads, kv_heads, ffn, context)
    "tiny": (64, 2, 4, 2, 256, 32768),
    "qwen2.5-0.5b": (896, 24, 14, 2, 4864, 32768),
}


def tensors(n_vocab, hidden, layers, kv_dim, ffn):
    """(name, numpy shape, kind) of a Qwen2 model with tied embeddings, in file order."""
    yield "token_embd.weight", (n_vocab, hidden), "weight"
    yield "output_norm.weight", (hidden,), "norm"
    for i in range(layers):
        b = f"blk.{i}."
        yield b + "attn_norm.weight", (hidden,), "norm"
        for n, rows in (("attn_q", hidden), ("attn_k", kv_dim), ("attn_v", kv_dim)):
            yield b + n + ".weight", (rows, hidden), "weight"
            yield b + n + ".bias", (rows,), "bias"
        yield b + "attn_output.weight", (hidden, hidden), "weight"
        yield b + "ffn_norm.weight", (hidden,), "norm"
        yield b + "ffn_gate.weight", (ffn, hidden), "weight"
        yield b + "ffn_up.weight", (ffn, hidden), "weight"
        yield b + "ffn_down.weight", (hidden, ffn), "weight"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf-py", required=True, help="llama.cpp's gguf-py folder")
    p.add_argument("--vocab", required=True, help="a vocabulary-only GGUF")
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    sys.path.insert(0, a.gguf_py)
    import numpy as np
    import gguf

    hidden, layers, heads, kv_heads, ffn, ctx = SHAPES[a.shape]
    kv_dim = hidden // heads * kv_heads
    vocab = gguf.GGUFReader(a.vocab)
    n_vocab = len(vocab.fields["tokenizer.ggml.tokens"].data)

    w = gguf.GGUFWriter(a.output, "qwen2")
    w.add_name(f"random-qwen2-{a.shape}")
    w.add_context_length(ctx)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for f in vocab.fields.values():
        if f.name.startswith("tokenizer."):
            t = f.types[0]
            sub = f.types[-1] if t == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(f.name, f.contents(), t, sub_type=sub)

    plan = list(tensors(n_vocab, hidden, layers, kv_dim, ffn))
    for name, shape, kind in plan:
        dtype = np.float16 if kind == "weight" else np.float32
        w.add_tensor_info(name, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    start = time.time()
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(a.seed)
    for name, shape, kind in plan:
        if kind == "norm":
            t = np.ones(shape, dtype=np.float32)
        else:
            t = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
            t = t.astype(np.float16 if kind == "weight" else np.float32)
        w.write_tensor_data(t)
    w.close()
    params = sum(int(np.prod(s)) for _, s, _ in plan)
    print(f"{a.output}: qwen2 {a.shape}, {params / 1e6:.1f}M params, vocabulary of {n_vocab}, "
          f"written in {time.time() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
