"""Golden outputs of a sliding-window model, made with transformers (tests/misleading_inputs.rs).

The model is tiny-llama's weights under `MistralForCausalLM` with `sliding_window: 64`: the
same tensors, a Mistral config. transformers runs it in float32 with eager attention on the
first 512 tokens of calibration/tinystories-valid-head.txt (BOS first). Written to
tests/golden/sliding-window.safetensors:

  input_ids   [512] int64   the window
  positions   [P] int64     rows of the logits kept
  logits      [P, vocab]    float32 logits at those positions
  mean_nll    [1] float32   mean next-token NLL over the window's 511 predictions
  full_nll    [1] float32   the same with full causal attention (LlamaForCausalLM), for contrast

Run: python tools/sliding_window/make_golden.py ../shared/models/tiny-llama
(made with torch 2.15, transformers 5.24).
"""
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

WINDOW = 64
SEQ = 512
POSITIONS = [0, 63, 64, 65, 300, 511]

root = Path(__file__).resolve().parents[2]
src = Path(sys.argv[1])
tok = AutoTokenizer.from_pretrained(src)
text = (root / "calibration/tinystories-valid-head.txt").read_text()
ids = tok(text, add_special_tokens=True)["input_ids"][:SEQ]
assert len(ids) == SEQ and ids[0] == tok.bos_token_id
x = torch.tensor([ids])


def run(dir_):
    m = AutoModelForCausalLM.from_pretrained(dir_, dtype=torch.float32, attn_implementation="eager")
    m.eval()
    with torch.no_grad():
        logits = m(x).logits[0].float()
    lp = torch.log_softmax(logits.double(), -1)
    nll = -lp[:-1].gather(1, x[0, 1:, None]).mean().item()
    return logits, nll


with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    for f in src.iterdir():
        if f.is_file():
            shutil.copy(f, d / f.name)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["MistralForCausalLM"]
    cfg["model_type"] = "mistral"
    cfg["sliding_window"] = WINDOW
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    logits, nll = run(d)
_, full = run(src)
print(f"sliding window {WINDOW}: mean NLL {nll:.6f} (ppl {torch.tensor(nll).exp():.4f}); "
      f"full causal {full:.6f}")
save_file(
    {
        "input_ids": torch.tensor(ids, dtype=torch.int64),
        "positions": torch.tensor(POSITIONS, dtype=torch.int64),
        "logits": logits[POSITIONS].contiguous(),
        "mean_nll": torch.tensor([nll], dtype=torch.float32),
        "full_nll": torch.tensor([full], dtype=torch.float32),
    },
    str(root / "tests/golden/sliding-window.safetensors"),
)
