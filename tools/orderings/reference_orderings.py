#!/usr/bin/env python3
"""Independent Python reference: Wanda / SparseGPT on stories260k under two
calibration orderings inside a decoder block.

Orderings
  block   dense block b is run once on its 128 calibration inputs with hooks on
          all 7 linears (q,k,v,o,gate,up,down); all 7 are pruned from those
          statistics; the pruned block is re-run to give block b+1's inputs
          (the llm-compressor / Wanda-reference ordering).
  linear  true-sequential: within block b the groups [q,k,v] -> [o] ->
          [gate,up] -> [down] are calibrated and pruned one after another, each
          group's statistics coming from a forward pass with the groups before
          it already pruned. Block b+1's inputs come from the fully pruned block.

Only linears inside decoder blocks are pruned (never the tied lm_head/embedding).
SparseGPT unstructured prunes exactly floor(rows*blockwidth*p) weights per block;
the extra key `perplexity_llmc_threshold` repeats sparsegpt-50/-70 with
llm-compressor 0.14's `r <= sorted(r)[k]` rule (k+1 per block).
Perplexity protocol (see models/stories260k/reference.json): the validation text
is tokenised once (BOS once at the start), cut into non-overlapping 256-token
windows, first 200 windows, ppl = exp(mean NLL over the 255 predicted tokens of
each window). CPU, float32.

Usage:  python tools/orderings/reference_orderings.py [--shared /work/shared]
            [--out tests/golden/orderings-stories260k.json]
"""
import argparse, json, math, os, platform, sys, time

import torch
import transformers
import safetensors
from safetensors.torch import load_file
from transformers import AutoTokenizer, LlamaForCausalLM

SEQ, N_EVAL, BLOCKSIZE, DAMP, CHUNK = 256, 200, 128, 0.01, 16
GROUPS = [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
          ["self_attn.o_proj"], ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
ALL_LINEARS = [n for g in GROUPS for n in g]
RECIPES = {"wanda-50": ("wanda", 0.5, None), "sparsegpt-50": ("sparsegpt", 0.5, None),
           "wanda-2of4": ("wanda", 0.5, (2, 4)), "sparsegpt-2of4": ("sparsegpt", 0.5, (2, 4)),
           "wanda-70": ("wanda", 0.7, None), "sparsegpt-70": ("sparsegpt", 0.7, None)}
# llm-compressor 0.14 picks the SparseGPT unstructured mask as `r <= sorted(r)[k]`,
# i.e. k+1 weights (more on ties) per 128-column block instead of exactly k.
# These extra runs reproduce that behaviour; they go under a separate key.
LLMC_RECIPES = {"sparsegpt-50": ("sparsegpt", 0.5, None, "llmc"),
                "sparsegpt-70": ("sparsegpt", 0.7, None, "llmc")}


# ----------------------------------------------------------------- evaluation
def perplexity(model, eval_ids):
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, eval_ids.shape[0], 50):
            x = eval_ids[i:i + 50]
            logits = model(input_ids=x).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1)
            tok = lp.gather(-1, x[:, 1:, None]).squeeze(-1)
            nll -= tok.double().sum().item()
            count += tok.numel()
    return math.exp(nll / count)


# ------------------------------------------------------------- block forward
def causal_mask(t):
    m = torch.full((t, t), torch.finfo(torch.float32).min).triu(1)
    return m[None, None]


def run_block(model, layer, hidden):
    """Run one decoder block over `hidden` [N, T, D] in chunks; returns outputs."""
    t = hidden.shape[1]
    pos = torch.arange(t)[None]
    mask = causal_mask(t)
    outs = []
    with torch.no_grad():
        for i in range(0, hidden.shape[0], CHUNK):
            h = hidden[i:i + CHUNK]
            pe = model.model.rotary_emb(h, pos)
            o = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=pe)
            outs.append(o[0] if isinstance(o, tuple) else o)
    return torch.cat(outs)


def blockwise_logits(model, ids):
    h = model.model.embed_tokens(ids)
    for layer in model.model.layers:
        h = run_block(model, layer, h)
    return model.lm_head(model.model.norm(h))


def gather_stats(model, layer, hidden, names):
    """Forward `hidden` through `layer`; per named linear accumulate sum x^2 and X^T X."""
    stats, hooks = {}, []
    for name in names:
        mod = layer.get_submodule(name)
        d = mod.in_features
        stats[name] = {"sq": torch.zeros(d), "xtx": torch.zeros(d, d)}

        def hook(m, args, st=stats[name]):
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            st["sq"] += (x * x).sum(0)
            st["xtx"] += x.t() @ x
        hooks.append(mod.register_forward_pre_hook(hook))
    try:
        run_block(model, layer, hidden)
    finally:
        for h in hooks:
            h.remove()
    return stats


# ------------------------------------------------------------------- pruning
def stable_smallest(scores, k):
    """Indices (last dim) of the k smallest scores, ties broken by position."""
    return torch.sort(scores, dim=-1, stable=True).indices[..., :k]


def wanda(W, sq, n_seqs, p, nm):
    score = W.abs() * torch.sqrt(sq / n_seqs)[None, :]
    rows, cols = W.shape
    prune = torch.zeros_like(W, dtype=torch.bool)
    if nm is None:
        prune.scatter_(1, stable_smallest(score, int(cols * p)), True)
    else:
        n, m = nm  # keep n of every m -> prune m - n lowest
        g = score.reshape(rows, cols // m, m)
        pg = torch.zeros_like(g, dtype=torch.bool)
        pg.scatter_(2, stable_smallest(g, m - n), True)
        prune = pg.reshape(rows, cols)
    return W.masked_fill(prune, 0.0)


def sparsegpt(W, xtx, n_seqs, p, nm, llmc=False):
    W = W.clone().float()
    rows, cols = W.shape
    H = (2.0 / n_seqs) * xtx.double()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += DAMP * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    U = torch.linalg.cholesky(Hinv, upper=True).float()  # Hinv = U^T U
    for b0 in range(0, cols, BLOCKSIZE):
        b1 = min(b0 + BLOCKSIZE, cols)
        W1, U1 = W[:, b0:b1].clone(), U[b0:b1, b0:b1]
        d = torch.diag(U1)
        Err = torch.zeros_like(W1)
        mask = torch.zeros_like(W1, dtype=torch.bool)
        if nm is None:
            r = (W1 ** 2 / d[None, :] ** 2).flatten()
            k = int(rows * (b1 - b0) * p)
            if llmc:
                mask = (r <= torch.sort(r).values[k]).view_as(W1)
            else:
                mask.view(-1)[stable_smallest(r, k)] = True
        for j in range(b1 - b0):
            if nm is not None and j % nm[1] == 0:
                r = W1[:, j:j + nm[1]] ** 2 / d[None, j:j + nm[1]] ** 2
                mask[:, j:j + nm[1]].scatter_(1, stable_smallest(r, nm[1] - nm[0]), True)
            w = W1[:, j]
            q = w.masked_fill(mask[:, j], 0.0)
            err = (w - q) / U1[j, j]
            W1[:, j:] -= err[:, None] * U1[j, j:][None, :]
            W1[:, j] = q
            Err[:, j] = err
        W[:, b0:b1] = W1
        W[:, b1:] -= Err @ U[b0:b1, b1:]
    return W


def prune_group(layer, names, stats, n_seqs, recipe):
    method, p, nm = recipe[:3]
    llmc = len(recipe) > 3
    for name in names:
        mod = layer.get_submodule(name)
        W = mod.weight.data.float()
        if method == "wanda":
            new = wanda(W, stats[name]["sq"], n_seqs, p, nm)
        else:
            new = sparsegpt(W, stats[name]["xtx"], n_seqs, p, nm, llmc)
        mod.weight.data.copy_(new.to(mod.weight.dtype))


def compress(model, calib_ids, recipe, ordering):
    n_seqs = calib_ids.shape[0]
    with torch.no_grad():
        hidden = model.model.embed_tokens(calib_ids)
    for layer in model.model.layers:
        groups = [ALL_LINEARS] if ordering == "block" else GROUPS
        for names in groups:
            stats = gather_stats(model, layer, hidden, names)
            prune_group(layer, names, stats, n_seqs, recipe)
        hidden = run_block(model, layer, hidden)  # pruned block -> next inputs


# ---------------------------------------------------------------------- main
def load_model(mdir):
    m = LlamaForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager")
    return m.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="/work/shared")
    ap.add_argument("--out", default="tests/golden/orderings-stories260k.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    mdir = os.path.join(args.shared, "models/stories260k")
    ref = json.load(open(os.path.join(mdir, "reference.json")))
    calib = load_file(os.path.join(mdir, "reference.calib_ids.safetensors"))["input_ids"].long()
    assert calib.shape == (128, 256), calib.shape

    tok = AutoTokenizer.from_pretrained(mdir)
    text = open(os.path.join(args.shared, "data/tinystories/tinystories_valid_head.txt")).read()
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1, "expected BOS once"
    eval_ids = torch.tensor(ids[:N_EVAL * SEQ]).reshape(N_EVAL, SEQ)

    t0 = time.time()
    model = load_model(mdir)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    dense = perplexity(model, eval_ids)
    print(f"dense ppl {dense:.10f} (reference {ref['dense_perplexity']:.10f})", flush=True)
    assert abs(dense - ref["dense_perplexity"]) / ref["dense_perplexity"] < 1e-5, "dense ppl mismatch"
    with torch.no_grad():
        full = model(input_ids=calib[:8]).logits
        mine = blockwise_logits(model, calib[:8])
    diff = (full - mine).abs().max().item()
    print(f"block-by-block vs full logits max |diff| {diff:.2e}", flush=True)
    assert diff < 1e-5, "block-wise forward does not reproduce the model"

    result = {"block": {}, "linear": {}}
    result_llmc = {"block": {}, "linear": {}}
    runs = [(o, n, r, result) for o in ("block", "linear") for n, r in RECIPES.items()]
    runs += [(o, n, r, result_llmc) for o in ("block", "linear") for n, r in LLMC_RECIPES.items()]
    for ordering, name, recipe, table in runs:
        model = load_model(mdir)
        emb_before = model.model.embed_tokens.weight.detach().clone()
        compress(model, calib, recipe, ordering)
        assert torch.equal(model.model.embed_tokens.weight, emb_before), "embedding touched"
        ppl = perplexity(model, eval_ids)
        table[ordering][name] = ppl
        refp = ref["perplexity"].get(name)
        extra = f"  (llm-compressor {refp:.4f})" if ordering == "block" and refp else ""
        tag = name + ("/llmc" if table is result_llmc else "")
        print(f"{ordering:6s} {tag:19s} ppl {ppl:.6f}{extra}  [{time.time() - t0:.0f}s]", flush=True)

    out = {
        "produced_by": f"python {platform.python_version()}, torch {torch.__version__}, "
                       f"transformers {transformers.__version__}, safetensors {safetensors.__version__} "
                       f"(CPU, float32, 2 threads)",
        "script": "tools/orderings/reference_orderings.py",
        "dense_perplexity": dense,
        "perplexity": result,
        "perplexity_llmc_threshold": result_llmc,
        "note": "perplexity: SparseGPT unstructured prunes exactly floor(rows*blockwidth*p) per "
                "block. perplexity_llmc_threshold: mask r <= sorted(r)[k] as llm-compressor 0.14 "
                "does (k+1 per block), which reproduces reference.json's sparsegpt-50.",
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
