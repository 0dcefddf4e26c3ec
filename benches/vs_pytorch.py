#!/usr/bin/env python3
"""transformers' forward throughput on a checkpoint, for benches/vs_pytorch.sh.

Runs AutoModelForCausalLM (float32) on `--sequences` random token windows of `--seq-len`
tokens, `--batch` at a time, with `torch.set_num_threads(--threads)`, after one warm-up batch,
and prints one JSON line: {"attn": ..., "tokens_per_second": ..., ...}. The weights stay
resident (transformers has no streamed mode); no KV cache, no sampling: one forward per batch,
logits included, as `pare bench forward` does.
"""
import argparse
import json
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:N] (gpu_check.sh)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = AutoConfig.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(
        a.model, dtype=torch.float32, attn_implementation=a.attn
    )
    model.eval()
    model.to(a.device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (a.sequences, a.seq_len), generator=g).to(a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        model(ids[: a.batch], use_cache=False)
        sync()
        t0 = time.perf_counter()
        for i in range(0, a.sequences, a.batch):
            model(ids[i : i + a.batch], use_cache=False)
        sync()
        dt = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "attn": a.attn,
                "batch": a.batch,
                "threads": a.threads,
                "device": a.device,
                "seconds": dt,
                "tokens_per_second": a.sequences * a.seq_len / dt,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
