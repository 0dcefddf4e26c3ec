#!/usr/bin/env python3
"""The memory bound of `pare compress`, term by term, and a measured peak RSS against it.

Used by benches/compress_rss.sh and benches/scale_7b.sh. Every term is f32 in memory (pare
computes in f32 whatever the checkpoint's dtype), in bytes:

  floor            measured: peak RSS of `pare eval` on one window of 16 tokens of the same
                   checkpoint: the runtime (binary, libraries, tokeniser, thread stacks), the
                   embeddings and head, one block, and nothing that grows with calibration
  activation cache samples × seq × hidden: the residual stream between blocks; twice that with
                   `sequential: linear` (every batch's staged state also holds its stage input)
  forward batch    one batch's live activations inside a block: batch tokens × (3·hidden +
                   3·ffn) (residual, normed input, fused gate|up, SiLU·up)
  statistics       the block's Hessian accumulators [in, in] (Hessian methods): every tap point
                   at once in block mode, the widest stage in linear mode
  error rows       the calibration rows kept per tap point for the reported ‖WX − W′X‖
                   (1/16 of the calibration tokens, clamped to 128–1,024)
  one linear       the linear being compressed: original, current and output [out, in], plus
                   for OBS methods (SparseGPT, GPTQ) the factorisation's working set at
                   [in, in]: the f64 Cholesky factor and the f32 U (12·in² bytes) up to 4,096
                   columns, the f32 factor and U (8·in² bytes) beyond (src/compress/kit/obs.rs)

usage: rss_bound.py CONFIG.json --samples N --seq S --mode block|linear --method M
                    --floor-kb KB --peak-kb KB [--batch 4] [--label NAME]
"""
import argparse
import json

MIB = 2**20
F32 = 4
ERROR_TOKENS, MIN_ERROR_TOKENS, ERROR_SHARE = 1024, 128, 16


def error_tokens(tokens):
    # src/pipeline/compress/mod.rs: error_tokens
    return min(max(tokens // ERROR_SHARE, MIN_ERROR_TOKENS), ERROR_TOKENS, tokens)
HESSIAN = {"sparsegpt", "gptq"}


def bound(cfg, samples, seq, batch, mode, method, floor):
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    nh = cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or h // nh
    kv = cfg.get("num_key_value_heads") or nh
    q = nh * hd
    linear_mode = mode == "linear"
    # Tap points and their widths: attention input, o input, MLP input, down input.
    widths = [h, q, h, f]
    terms = {"floor (measured: eval of one 16-token window)": floor}
    terms["activation cache" + (" (x2, linear mode)" if linear_mode else "")] = (
        F32 * samples * seq * h * (2 if linear_mode else 1)
    )
    terms["forward batch"] = F32 * min(batch, samples) * seq * (3 * h + 3 * f)
    if method in HESSIAN:
        hess = [w * w for w in widths]
        terms["statistics (Hessians)"] = F32 * (max(hess) if linear_mode else sum(hess))
    rows = max(widths) if linear_mode else sum(widths)
    terms["error rows"] = F32 * error_tokens(samples * seq) * rows
    # The largest linear: gate/up [f, h] or down [h, f] (same size), or a fused q|k|v.
    largest = max(f * h, (q + 2 * kv * hd) * h)
    one = 3 * F32 * largest
    if method in HESSIAN:
        d = max(widths)
        one += (12 if d <= 4096 else 8) * d**2
    terms["one linear being compressed"] = one
    return terms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--mode", choices=["block", "linear"], required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--floor-kb", type=int, required=True)
    p.add_argument("--peak-kb", type=int, required=True)
    p.add_argument("--label", default="")
    a = p.parse_args()
    cfg = json.load(open(a.config))
    terms = bound(cfg, a.samples, a.seq, a.batch, a.mode, a.method, a.floor_kb * 1024)
    total = sum(terms.values())
    peak = a.peak_kb * 1024
    print(f"{a.label or a.method} ({a.mode} mode, {a.samples} x {a.seq}): peak RSS "
          f"{peak / MIB:.0f} MiB = {peak / total:.2f} x bound {total / MIB:.0f} MiB")
    for k, v in terms.items():
        print(f"   {k:<48} {v / MIB:9.1f} MiB")


if __name__ == "__main__":
    main()
