"""Golden gradients of stories260k for pare's streamed gradient pass (GBLM, ALGORITHMS.md §4).

For the first SEQS sequences of llm-compressor's calibration ids (reference.calib_ids.safetensors,
256 tokens each), transformers' LlamaForCausalLM in float32 (eager attention) computes the loss
with labels = input_ids (mean next-token cross-entropy, batch 1) and autograd its gradient for
every block linear, as GBLM's gradient_computation.py does (model.train(); stories260k has no
dropout). Written to tests/golden/gradients-stories260k.{json,safetensors}:

  json: per sequence its loss and, for sequence 0, the Frobenius norm of every linear's gradient;
        per linear the Frobenius norm of the artefact G = sqrt(sum_n (100 g_n)^2) over SEQS
        sequences;
  safetensors: G in full for two linears (block 0 q_proj, block 4 down_proj).

Run: python tools/gradients/make_golden.py ../shared/models/stories260k
(made with torch 2.15.0, transformers 5.24.0, CPU)
"""
import json
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

SEQS = 4
ALPHA = 100.0
FULL = ["model.layers.0.self_attn.q_proj.weight", "model.layers.4.mlp.down_proj.weight"]

model_dir = sys.argv[1]
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
model.train()
ids = load_file(f"{model_dir}/reference.calib_ids.safetensors")["input_ids"][:SEQS]
linears = {f"{n}.weight": m for n, m in model.named_modules()
           if isinstance(m, torch.nn.Linear) and n.startswith("model.layers.")}
acc = {n: torch.zeros_like(m.weight, dtype=torch.float64) for n, m in linears.items()}
losses, first = [], {}
for i in range(SEQS):
    model.zero_grad(set_to_none=True)
    x = ids[i:i + 1]
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    losses.append(loss.item())
    for n, m in linears.items():
        g = m.weight.grad.detach().double()
        if i == 0:
            first[n] = g.norm().item()
        acc[n] += (ALPHA * g) ** 2
artefact = {n: a.sqrt() for n, a in acc.items()}
out = "tests/golden/gradients-stories260k"
json.dump({
    "made_by": "tools/gradients/make_golden.py (torch %s, transformers %s, float32, eager, CPU)"
               % (torch.__version__, __import__("transformers").__version__),
    "calibration": "first %d sequences of reference.calib_ids.safetensors (256 tokens)" % SEQS,
    "alpha": ALPHA,
    "losses": losses,
    "grad_norm_seq0": first,
    "artefact_norm": {n: a.norm().item() for n, a in artefact.items()},
    "full": FULL,
}, open(out + ".json", "w"), indent=1, sort_keys=True)
save_file({n: artefact[n].float().contiguous() for n in FULL}, out + ".safetensors")
print("losses", losses)
