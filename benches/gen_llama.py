#!/usr/bin/env python3
"""A random bf16 Llama checkpoint of a given shape, for benches/gpu_check.sh on the GPU machine
(which has torch and safetensors but no Rust toolchain, so tests/streaming.rs's generator cannot
run there). Weights ~ N(0, 0.02²), norms 1; tokenizer.json copied from --tokenizer.

  python3 benches/gen_llama.py OUT --shape 1b|7b [--layers N] --tokenizer DIR
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

SHAPES = {
    "1b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32,
               num_key_value_heads=4, intermediate_size=5632),
    "7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, intermediate_size=11008),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shape", choices=SHAPES, required=True)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--tokenizer", required=True, help="a model folder with tokenizer.json")
    a = ap.parse_args()
    s = dict(SHAPES[a.shape])
    if a.layers:
        s["num_hidden_layers"] = a.layers
    h, f, L = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"]
    kv = h // s["num_attention_heads"] * s["num_key_value_heads"]
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=32000,
               rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096,
               hidden_act="silu", tie_word_embeddings=False, torch_dtype="bfloat16",
               bos_token_id=1, eos_token_id=2, **s)
    os.makedirs(a.out, exist_ok=True)
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=1)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(a.tokenizer, name)
        if os.path.exists(src):
            shutil.copy(src, a.out)
    g = torch.Generator().manual_seed(11)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    t = {"model.embed_tokens.weight": rnd(32000, h), "lm_head.weight": rnd(32000, h),
         "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}
    for i in range(L):
        p = f"model.layers.{i}."
        t.update({
            p + "self_attn.q_proj.weight": rnd(h, h), p + "self_attn.k_proj.weight": rnd(kv, h),
            p + "self_attn.v_proj.weight": rnd(kv, h), p + "self_attn.o_proj.weight": rnd(h, h),
            p + "mlp.gate_proj.weight": rnd(f, h), p + "mlp.up_proj.weight": rnd(f, h),
            p + "mlp.down_proj.weight": rnd(h, f),
            p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
        })
    save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    main()
