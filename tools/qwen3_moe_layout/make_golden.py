"""A small generated Qwen3-MoE checkpoint whose block layout is not "experts everywhere", and
transformers' logits on it (tests/engine_golden.rs `qwen3_moe_layout_matches_transformers`).

Config: 4 blocks, `decoder_sparse_step: 2` and `mlp_only_layers: [3]`, so only block 1 routes
(block i routes when i is not in mlp_only_layers and (i + 1) % 2 == 0); 6 experts, top-2,
`norm_topk_prob: false` (the top-k probabilities are used as they are); hidden 32, head_dim 8,
tied embeddings, vocab 4096 (tiny-qwen3-moe's tokenizer). The expert count is written as
`num_experts`, the transformers-4 key most checkpoints in the wild carry. Weights are random
(seed 7, std 0.15 so that routing and norms matter), float32.

Written to tests/golden/qwen3-moe-layout/: config.json, model.safetensors and golden.safetensors
  input_ids  [64] int64      tokens fed (BOS then pseudo-random ids)
  positions  [6] int64       rows of the logits kept
  logits     [6, 4096] f32   transformers' logits there, eager attention and experts, float32

Run: python tools/qwen3_moe_layout/make_golden.py   (made with torch 2.15, transformers 5.24)
"""
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

root = Path(__file__).resolve().parents[2]
out = root / "tests/golden/qwen3-moe-layout"
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(7)
cfg = Qwen3MoeConfig(
    vocab_size=4096, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
    num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
    num_experts=6, num_experts_per_tok=2, decoder_sparse_step=2, mlp_only_layers=[3],
    norm_topk_prob=False, tie_word_embeddings=True, max_position_embeddings=512,
    rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, initializer_range=0.15,
)
model = Qwen3MoeForCausalLM(cfg).float().eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1.0 + 0.3 * torch.randn_like(p))
        else:
            p.copy_(0.15 * torch.randn_like(p))
model.save_pretrained(out, safe_serialization=True)
c = json.loads((out / "config.json").read_text())
c["num_experts"] = c.pop("num_local_experts")
(out / "config.json").write_text(json.dumps(c, indent=2))
for f in out.iterdir():
    if f.name not in ("config.json", "model.safetensors"):
        f.unlink()
g = torch.Generator().manual_seed(3)
ids = torch.cat([torch.tensor([1]), torch.randint(3, 4096, (63,), generator=g)])
re = Qwen3MoeForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
assert re.config.num_experts == 6 and re.config.mlp_only_layers == [3]
kinds = [type(l.mlp).__name__ for l in re.model.layers]
print("blocks:", kinds)
with torch.no_grad():
    logits = re(ids[None]).logits[0].float()
positions = torch.tensor([0, 1, 17, 40, 62, 63])
save_file({"input_ids": ids.to(torch.int64), "positions": positions,
           "logits": logits[positions].contiguous()},
          str(out / "golden.safetensors"))
