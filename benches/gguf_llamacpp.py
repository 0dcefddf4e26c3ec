#!/usr/bin/env python3
"""pare's GGUF files in llama.cpp itself (llama-cpp-python), against pare's own numbers.

Not part of CI (it needs Python, llama-cpp-python built from source and ../shared). Run:

    pip install gguf llama-cpp-python torch transformers safetensors numpy
    python benches/gguf_llamacpp.py [--pare target/debug/pare] [--windows 40]

What it measures, written to benches/gguf-llamacpp.json:

1. **Logits.** For stories260k, tiny-llama and tiny-qwen3, each as `f32`, `q8_0` and `q4_0`:
   - `f32` is `pare export --to gguf --type f32` of the original checkpoint; llama.cpp's logits
     on the golden input (`golden/golden.safetensors`, 128 tokens) are compared with the golden
     logits transformers computed (which pare's engine matches within 1e-4, tests/engine_golden.rs).
   - `q8_0` / `q4_0` are `pare compress` with RTN int8-g32-sym / int4-g32-sym and
     `export: { format: gguf }`. The reference is transformers (float32) on the very weights of
     the GGUF, dequantised by gguf-py and put back in Hugging Face order; tests/gguf.rs proves
     those equal pare's checkpoint bit for bit. llama.cpp's CPU matmuls quantise activations to
     8 bits for Q8_0/Q4_0 weights, so these agree less closely; the tolerance is stated below.
   llama.cpp runs with an f32 KV cache and no flash attention (its default f16 cache alone moves
   stories260k's logits by 4e-3).
2. **Tokeniser.** llama.cpp's tokenisation of the first 4,000 characters of the eval text against
   transformers' (which pare uses).
3. **Perplexity on tiny-llama**: GPTQ int4-g32-sym vs RTN int4-g32-sym, both as Q4_0 GGUF, by
   llama.cpp on `--windows` windows of 512 tokens of TinyStories eval text, with pare's
   protocol (text tokenised once with BOS, non-overlapping windows, positions 1..511 scored),
   next to `pare eval` of the checkpoints the GGUFs were written beside.
"""
import argparse, json, math, os, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = {"stories260k": ROOT / "models" / "stories260k",
          "tiny-llama": SHARED / "models" / "tiny-llama",
          "tiny-qwen3": SHARED / "models" / "tiny-qwen3",
          "tiny-mixtral": SHARED / "models" / "tiny-mixtral"}
EVAL_TEXT = SHARED / "data" / "tinystories" / "tinystories_eval.txt"
CALIB_TEXT = SHARED / "data" / "tinystories" / "tinystories_train_head.txt"
TOL_F32 = 1e-3
# llama.cpp's Q8_0/Q4_0 matmuls quantise activations to 8 bits, so its logits differ from f32
# arithmetic on the same weights; measured, that costs the same for Q8_0 and Q4_0 weights
# (mean KLD 1e-5 to 5e-4 over the 128 golden positions), hence a bound, not a ratio.
KL_MAX = 1e-3
TOP1_MIN = 0.97


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def llama(path, n_ctx=512):
    from llama_cpp import Llama
    return Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False,
                 n_threads=os.cpu_count(), type_k=0, type_v=0, flash_attn=False)


def llama_logits(m, ids):
    m.reset()
    m.eval(ids)
    return np.array(m.scores[:len(ids)], dtype=np.float64)


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def hf_logits_from_gguf(model_dir, gguf_path, ids):
    """transformers (float32) on the GGUF's own weights, mapped back to Hugging Face names."""
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    r = GGUFReader(gguf_path)
    arch = next(bytes(f.parts[f.data[0]]).decode() for k, f in r.fields.items() if k == "general.architecture")
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
             "ffn_norm": "post_attention_layernorm", "attn_q_norm": "self_attn.q_norm",
             "attn_k_norm": "self_attn.k_norm"}
    hd = cfg.head_dim if getattr(cfg, "head_dim", None) else cfg.hidden_size // cfg.num_attention_heads
    sd, experts = {}, {}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(d) for d in reversed(t.shape)])
        parts = t.name.split(".")
        if t.name == "token_embd.weight":
            key = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            key = "model.norm.weight"
        elif t.name == "output.weight":
            key = "lm_head.weight"
        elif parts[2] in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
            # Mixtral in transformers 5: mlp.experts.gate_up_proj [E, 2F, H] (gate rows first)
            # and mlp.experts.down_proj [E, H, F].
            experts[(parts[1], parts[2])] = w
            continue
        elif parts[2] == "ffn_gate_inp":
            key = f"model.layers.{parts[1]}.mlp.gate.weight"
        else:
            key = f"model.layers.{parts[1]}.{names[parts[2]]}.{parts[3]}"
            if arch == "llama" and parts[2] in ("attn_q", "attn_k"):
                # Undo convert_hf_to_gguf's permute: GGUF row i*2+j of a head is HF row j*d/2+i.
                heads = w.shape[0] // hd
                w = w.reshape(heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        sd[key] = torch.from_numpy(np.ascontiguousarray(w))
    for (b, kind), w in experts.items():
        if kind == "ffn_gate_exps":
            up = experts[(b, "ffn_up_exps")]
            sd[f"model.layers.{b}.mlp.experts.gate_up_proj"] = torch.from_numpy(np.ascontiguousarray(np.concatenate([w, up], axis=1)))
        elif kind == "ffn_down_exps":
            sd[f"model.layers.{b}.mlp.experts.down_proj"] = torch.from_numpy(np.ascontiguousarray(w))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all("lm_head" in k for k in missing), missing
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def recipe(tmp, name, step, calib=None):
    p = Path(tmp) / f"{name}.yaml"
    c = f"calibration: {{ text: {calib}, samples: 128, seq_len: 512, seed: 0 }}\n" if calib else ""
    p.write_text(f"{c}steps:\n  - {step}\npropagate: compressed\nexport: {{ format: gguf, type: q4_0 }}\n"
                 if calib else f"steps:\n  - {step}\nexport: {{ format: gguf }}\n")
    return p


def ppl_of(logprobs, ids, seq=512):
    """pare's protocol: window w is ids[w·seq:(w+1)·seq], positions 1..seq-1 predicted."""
    nll, n = 0.0, 0
    for w, lp in enumerate(logprobs):
        chunk = ids[w * seq:(w + 1) * seq]
        nll -= sum(lp[i - 1, chunk[i]] for i in range(1, seq))
        n += seq - 1
    return math.exp(nll / n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pare", default=str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "pare"))
    ap.add_argument("--windows", type=int, default=40)
    a = ap.parse_args()
    pare = a.pare
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer
    out = {"logits": [], "tokenizer": [], "perplexity": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, d in MODELS.items():
            g = load_file(SHARED / "models" / name / "golden" / "golden.safetensors")
            ids = [int(x) for x in g["input_ids"]]
            ignore = ', ignore: ["blocks.*.mlp.down"]' if name == "stories260k" else ""
            for ty in ("f32", "q8_0", "q4_0"):
                if ty == "f32":
                    path = Path(tmp) / f"{name}-f32.gguf"
                    run([pare, "--quiet", "export", "--model", d, "--to", "gguf", "--type", "f32", "--out", path])
                    ref_last, ref_head = g["logits_last"].astype(np.float64), g["logprobs_head"].astype(np.float64)
                    ref = "golden (transformers, original weights)"
                    hf = None
                else:
                    bits = 8 if ty == "q8_0" else 4
                    r = recipe(tmp, f"{name}-{ty}", f"rtn: {{ format: int{bits}-g32-sym{ignore} }}")
                    ck = Path(tmp) / f"{name}-{ty}"
                    run([pare, "--quiet", "compress", "--model", d, "--recipe", r, "--out", ck])
                    path = ck / "model.gguf"
                    hf = hf_logits_from_gguf(d, path, ids)
                    ref_last, ref_head = hf[-1], log_softmax(hf[:16])
                    ref = "transformers f32 on the GGUF's dequantised weights"
                m = llama(path)
                lg = llama_logits(m, ids)
                d_last = float(np.abs(lg[-1] - ref_last).max())
                d_head = float(np.abs(log_softmax(lg[:16]) - ref_head).max())
                row = {"model": name, "type": ty, "reference": ref, "max_abs_logits_last": d_last,
                       "max_abs_logprobs_first16": d_head}
                if hf is None:
                    row["tolerance_max_abs"] = TOL_F32
                    row["pass"] = max(d_last, d_head) <= TOL_F32
                else:
                    # All 128 positions: KL(reference ‖ llama.cpp) and top-1 agreement, next to
                    # what the quantisation itself costs (KL(dense ‖ reference)).
                    pr, pl = log_softmax(hf), log_softmax(lg)
                    kl = float((np.exp(pr) * (pr - pl)).sum(-1).mean())
                    dense = log_softmax(llama_logits(dense_m, ids))
                    kl_q = float((np.exp(dense) * (dense - pr)).sum(-1).mean())
                    top1 = float((pr.argmax(-1) == pl.argmax(-1)).mean())
                    row.update({"mean_kld_reference_vs_llama_cpp": kl, "top1_agreement": top1,
                                "mean_kld_dense_vs_reference": kl_q,
                                "tolerance": f"mean KLD ≤ {KL_MAX}, top-1 ≥ {TOP1_MIN}"})
                    row["pass"] = kl <= KL_MAX and top1 >= TOP1_MIN
                out["logits"].append(row)
                extra = "" if hf is None else f"  KLD(ref‖llama.cpp) {row['mean_kld_reference_vs_llama_cpp']:.2e} vs quantisation's {row['mean_kld_dense_vs_reference']:.2e}, top-1 {row['top1_agreement']:.3f}"
                print(f"{name:12} {ty:5} logits_last {d_last:.2e}  logprobs[:16] {d_head:.2e}{extra}  {'ok' if row['pass'] else 'FAIL'}")
                if ty == "f32":
                    dense_m = m
                    continue
                del m
            text = EVAL_TEXT.read_text()[:4000]
            hf_ids = AutoTokenizer.from_pretrained(d)(text).input_ids
            del dense_m
            m = llama(Path(tmp) / f"{name}-f32.gguf", n_ctx=2048)
            ll_ids = m.tokenize(text.encode(), add_bos=True, special=False)
            same = hf_ids == ll_ids
            first = next((i for i, (x, y) in enumerate(zip(hf_ids, ll_ids)) if x != y), None)
            out["tokenizer"].append({"model": name, "tokens_hf": len(hf_ids), "tokens_llama_cpp": len(ll_ids),
                                     "identical": same, "first_difference": first})
            print(f"{name:12} tokeniser: {len(hf_ids)} vs {len(ll_ids)} tokens, identical={same}")
            del m

        # GPTQ-Q4_0 vs RTN-Q4_0, by llama.cpp (perplexity, and KLD against llama.cpp's dense f32)
        # and by pare (perplexity of the checkpoints the GGUFs were written beside).
        for name in ("tiny-llama", "stories260k"):
            d = MODELS[name]
            ids = AutoTokenizer.from_pretrained(d)(EVAL_TEXT.read_text()).input_ids
            dense_m = llama(Path(tmp) / f"{name}-f32.gguf")
            dense = [log_softmax(llama_logits(dense_m, ids[w * 512:(w + 1) * 512]))
                     for w in range(min(a.windows, len(ids) // 512))]
            del dense_m
            res = {"dense_f32_llama_cpp_ppl": ppl_of(dense, ids)}
            ignore = ', ignore: ["blocks.*.mlp.down"]' if name == "stories260k" else ""
            for method, step in (("rtn", f"rtn: {{ format: int4-g32-sym{ignore} }}"),
                                 ("gptq", f"gptq: {{ format: int4-g32-sym, block_size: 128, dampening: 0.01, actorder: static{ignore} }}")):
                r = recipe(tmp, f"{name}-{method}", step, calib=CALIB_TEXT if method == "gptq" else None)
                ck = Path(tmp) / f"{name}-ppl-{method}"
                t0 = time.time()
                run([pare, "--quiet", "compress", "--model", d, "--recipe", r, "--out", ck])
                secs = time.time() - t0
                m = llama(ck / "model.gguf")
                lps = [log_softmax(llama_logits(m, ids[w * 512:(w + 1) * 512])) for w in range(len(dense))]
                del m
                kld = float(np.mean([(np.exp(dl) * (dl - ql)).sum(-1).mean() for dl, ql in zip(dense, lps)]))
                ev = json.loads(run([pare, "--json", "--quiet", "eval", "--model", ck, "--text", EVAL_TEXT,
                                     "--seq-len", "512", "--max-windows", str(a.windows)]))
                res[method] = {"llama_cpp_q4_0_ppl": ppl_of(lps, ids), "llama_cpp_q4_0_mean_kld_vs_dense": kld,
                               "pare_eval_checkpoint_ppl": ev["quality"]["perplexity"]["ppl"],
                               "compress_seconds": secs}
                print(f"{name:12} {method:4} Q4_0: llama.cpp ppl {res[method]['llama_cpp_q4_0_ppl']:.4f} "
                      f"(dense {res['dense_f32_llama_cpp_ppl']:.4f}), KLD {kld:.3e}; pare eval of the checkpoint "
                      f"{res[method]['pare_eval_checkpoint_ppl']:.4f}")
            out["perplexity"][name] = res
    out["windows"] = a.windows
    import llama_cpp
    out["llama_cpp_python"] = llama_cpp.__version__
    (ROOT / "benches" / "gguf-llamacpp.json").write_text(json.dumps(out, indent=1) + "\n")
    print("wrote benches/gguf-llamacpp.json")
    if not all(r["pass"] for r in out["logits"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
