#!/usr/bin/env python3
"""Converts a random-weight Qwen2 GGUF (scripts/engine/random_gguf.py) into a Hugging Face model
folder that `transformers serve` loads, so two engines serve the same weights and tokenizer.

llama.cpp's converter goes HF -> GGUF only for real vocabularies; transformers reads GGUF
(`from_pretrained(..., gguf_file=)`, with the `gguf` package installed), but refuses to
`save_pretrained` a model it considers quantized. So the loaded weights are copied into a plain
model built from the same config, saved with the tokenizer, reloaded, and checked to give the
same logits.

  python3 gguf_to_hf.py model.gguf OUT_DIR
"""
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    gguf_path, out = sys.argv[1], sys.argv[2]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf_path))
    start = time.time()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float16)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    result = plain.load_state_dict(loaded.state_dict(), strict=False)
    if result.missing_keys:
        sys.exit(f"weights missing after the copy: {result.missing_keys[:5]}")
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    again = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float16)
    ids = torch.tensor([tok("hello world, a short check")["input_ids"]])
    with torch.no_grad():
        same = torch.equal(loaded(ids).logits, again(ids).logits)
    if not same:
        sys.exit("the saved model's logits differ from the GGUF's")
    params = sum(p.numel() for p in again.parameters())
    print(f"{out}: {type(again).__name__}, {params / 1e6:.1f}M params, tokenizer of {len(tok)}, "
          f"identical logits; {time.time() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
