"""Perplexity of a pare output checkpoint under transformers, with pare's protocol: the text
tokenised whole (BOS once), cut into windows of `seq_len`, the first `max_windows` kept, NLL of
positions 1.. of each window, float32, eager attention.

Used to check that transformers loads pare's dense outputs (MoE exports, expert pruning with
fewer experts) and gives the perplexity pare reports. Writes {"ppl": .., "windows": ..,
"num_local_experts": ..} to stdout as JSON.

Run: python tools/transformers_ppl.py OUT_DIR TEXT SEQ_LEN MAX_WINDOWS
(made with torch 2.15, transformers 5.24)
"""
import json
import math
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

out, text, seq, windows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tok = AutoTokenizer.from_pretrained(out)
model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
model.eval()
ids = tok(open(text).read(), add_special_tokens=True)["input_ids"]
n = min(len(ids) // seq, windows)
nll, count = 0.0, 0
with torch.no_grad():
    for w in range(n):
        x = torch.tensor([ids[w * seq:(w + 1) * seq]])
        lp = torch.log_softmax(model(x).logits[0].double(), -1)
        nll -= lp[:-1].gather(1, x[0, 1:, None]).sum().item()
        count += seq - 1
print(json.dumps({"ppl": math.exp(nll / count), "windows": n,
                  "num_local_experts": getattr(model.config, "num_local_experts", None)}))
