#!/usr/bin/env python3
"""One-off check: do pare's sparse-bitmask / sparse-24-bitmask outputs decode, with the
last compressed-tensors release that still has those compressors (0.14.0.1), to exactly
the weights pare writes with `export: { format: dense }`? And what do transformers 5.x
users see when they load pare's outputs?

It runs pare four times on stories260k (wanda 50% unstructured and wanda 2:4, each
exported sparse and dense), then, each step in its own interpreter:

  legacy   (compressed-tensors 0.14.0.1, transformers 4.x):
           ModelCompressor.from_pretrained(<sparse out>) -> sparsity_compressor
           .decompress(<model.safetensors>); every tensor must equal the dense output's
           (bitwise). Then ModelCompressor.decompress(<dir>, model) on pare's config.json
           and on a copy with the canonical config block, and
           AutoModelForCausalLM.from_pretrained(<sparse out>) + greedy 20 tokens.
  hf       (transformers 5.x, no compressed-tensors): load the dense outputs,
           generate 20 tokens from "Once upon a time".
           Also tries the sparse outputs: the ImportError it raises.
  hf+ct019 (transformers 5.x + compressed-tensors 0.19.0): the same; the sparse outputs
           then load WITHOUT an exception (sparsity_config is ignored, every linear is
           MISSING and randomly initialised), which is reported with the load report.

Usage (defaults match the venvs described in README.md):
  python tools/ct_legacy/check_pare_outputs.py all \
      [--pare /tmp/pare-new] [--work /tmp/ctcheck] \
      [--legacy-py /tmp/ct014venv/bin/python] [--hf-py /tmp/ordvenv/bin/python] \
      [--hf-ct019-py /tmp/ct019venv/bin/python]
Subcommands `legacy DIR` and `hf DIR` run one step in the current interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import traceback

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(REPO, "models", "stories260k")
CALIB = os.path.join(REPO, "calibration", "tinystories-train-head.txt")
RUNS = {
    # name: (step, export format)
    "wanda50-bitmask": ("wanda: { sparsity: 0.5 }", "sparse-bitmask"),
    "wanda50-dense": ("wanda: { sparsity: 0.5 }", "dense"),
    "wanda24-bitmask": ('wanda: { pattern: "2:4" }', "sparse-24-bitmask"),
    "wanda24-dense": ('wanda: { pattern: "2:4" }', "dense"),
}
PAIRS = [("wanda50-bitmask", "wanda50-dense"), ("wanda24-bitmask", "wanda24-dense")]
PROMPT = "Once upon a time"
NEW_TOKENS = 20


def run_pare(pare: str, work: str) -> None:
    os.makedirs(work, exist_ok=True)
    for name, (step, fmt) in RUNS.items():
        recipe = os.path.join(work, f"{name}.yaml")
        with open(recipe, "w") as f:
            f.write(f"calibration: {{ text: {CALIB}, samples: 16, seq_len: 128 }}\n"
                    f"steps:\n  - {step}\nexport: {{ format: {fmt} }}\n")
        cmd = [pare, "--quiet", "compress", "--model", MODEL, "--recipe", recipe,
               "--out", os.path.join(work, name), "--force"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        print(f"pare {name}: rc={r.returncode} {r.stdout.strip().splitlines()[-1:] or ''}")
        if r.returncode != 0:
            print(r.stderr)
            raise SystemExit(1)


# --------------------------------------------------------------------------- helpers

def _bits(t):
    import torch
    view = {torch.bfloat16: torch.int16, torch.float16: torch.int16,
            torch.float32: torch.int32, torch.float64: torch.int64}.get(t.dtype)
    return t.contiguous().view(view) if view is not None else t


def _load_st(path):
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _generate(model_dir: str, **kw):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    model, info = AutoModelForCausalLM.from_pretrained(model_dir, output_loading_info=True, **kw)
    model.eval()
    enc = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                             max_new_tokens=NEW_TOKENS, do_sample=False,
                             pad_token_id=tok.eos_token_id)
    new = out[0, enc.input_ids.shape[1]:].tolist()
    return model, new, tok.decode(out[0], skip_special_tokens=True), info


def _canonical_copy(work: str, sparse: str) -> str:
    """A copy of a pare sparse output whose config.json `quantization_config` is exactly
    what compressed-tensors 0.14.0.1 `ModelCompressor.update_config` writes for a
    sparsity-only model (no top-level format / quantization_status / config_groups)."""
    import shutil
    src, dst = os.path.join(work, sparse), os.path.join(work, f"canonical-{sparse}")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    with open(os.path.join(dst, "config.json")) as f:
        cfg = json.load(f)
    q = cfg["quantization_config"]
    cfg["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "sparsity_config": dict(q["sparsity_config"], registry_requires_subclass=False),
        "transform_config": {},
        "version": "0.14.0.1",
    }
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    return dst


def _last_error_line(e: BaseException) -> str:
    return f"{type(e).__module__}.{type(e).__name__}: {e}".splitlines()[0]


# --------------------------------------------------------------------------- steps

def step_legacy(work: str) -> int:
    import compressed_tensors
    import torch
    import transformers
    from compressed_tensors.compressors import ModelCompressor
    print(f"[legacy] compressed-tensors {compressed_tensors.__version__}, "
          f"transformers {transformers.__version__}, torch {torch.__version__}")
    ok = True
    for sparse, dense in PAIRS:
        sdir, ddir = os.path.join(work, sparse), os.path.join(work, dense)
        mc = ModelCompressor.from_pretrained(sdir)
        print(f"[legacy] {sparse}: ModelCompressor.from_pretrained -> sparsity "
              f"{type(mc.sparsity_compressor).__name__}({mc.sparsity_config.format}), "
              f"quantization_compressor="
              f"{ {k: type(v).__name__ for k, v in (mc.quantization_compressor or {}).items()} }")
        got = dict(mc.sparsity_compressor.decompress(os.path.join(sdir, "model.safetensors")))
        ref = _load_st(os.path.join(ddir, "model.safetensors"))
        missing, extra = sorted(set(ref) - set(got)), sorted(set(got) - set(ref))
        bit_bad, val_bad, n_lin = [], [], 0
        for k in sorted(set(ref) & set(got)):
            a, b = got[k], ref[k]
            if k.endswith("_proj.weight"):
                n_lin += 1
            if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(_bits(a), _bits(b)):
                bit_bad.append(k)
            if a.shape != b.shape or not torch.equal(a.to(b.dtype), b):
                val_bad.append(k)
        print(f"[legacy] {sparse} vs {dense}: {len(ref)} tensors ({n_lin} block linears), "
              f"missing={missing} extra={extra} bitwise-mismatch={bit_bad} "
              f"value-mismatch={val_bad}")
        ok &= not (missing or extra or bit_bad)

        # The other direction: the library compresses pare's dense output; its tensors
        # must be byte-identical to the ones pare wrote.
        scfg = mc.sparsity_config
        own = {k: v for k, v in ref.items() if k.endswith("_proj.weight")}
        lib = mc.sparsity_compressor.compress(
            own, compression_targets={k[: -len(".weight")] for k in own})
        pare_sd = _load_st(os.path.join(sdir, "model.safetensors"))
        diff = [k for k in lib if k not in pare_sd or lib[k].dtype != pare_sd[k].dtype
                or lib[k].shape != pare_sd[k].shape
                or not torch.equal(_bits(lib[k]), _bits(pare_sd[k]))]
        print(f"[legacy] {sparse}: library {scfg.format} compress of {dense}'s "
              f"{len(own)} linears -> {len(lib)} tensors; byte-identical to pare's: "
              f"{not diff} {diff[:3]}")
        ok &= not diff

        # ModelCompressor.decompress(path, model): the library's documented disk path,
        # on pare's config.json and on the canonical one.
        for label, path in (("pare config", sdir), ("canonical config",
                                                     _canonical_copy(work, sparse))):
            try:
                from transformers import AutoModelForCausalLM
                model = AutoModelForCausalLM.from_pretrained(ddir, dtype=torch.float32)
                with torch.no_grad():
                    for n, prm in model.named_parameters():
                        if n.endswith("_proj.weight"):
                            prm.zero_()
                ModelCompressor.from_pretrained(path).decompress(path, model)
                sd = model.state_dict()
                bad = [k for k in ref if k in sd and not torch.equal(_bits(sd[k]), _bits(ref[k]))]
                print(f"[legacy] {sparse} ({label}): ModelCompressor.decompress(dir, model) OK, "
                      f"linears restored bitwise: {not bad} {bad[:3]}")
                ok &= not bad
            except Exception as e:  # noqa: BLE001
                print(f"[legacy] {sparse} ({label}): ModelCompressor.decompress(dir, model) "
                      f"FAILED: {_last_error_line(e)}")
                if label == "canonical config":
                    ok = False

        # The full user path of that era: transformers 4.x + compressed-tensors 0.14.0.1.
        # (transformers 4.x loads compressed-tensors models as float16 unless told.)
        try:
            m_s, new_s, text_s, _ = _generate(sdir, dtype=torch.float32)
            m_d, new_d, text_d, _ = _generate(ddir, dtype=torch.float32)
            sd_s, sd_d = m_s.state_dict(), m_d.state_dict()
            same_w = all(torch.equal(_bits(sd_s[k]), _bits(sd_d[k])) for k in sd_d)
            print(f"[legacy] AutoModelForCausalLM.from_pretrained({sparse}, dtype=float32) OK; "
                  f"weights bitwise equal to the dense output's: {same_w}; greedy "
                  f"{NEW_TOKENS} tokens equal: {new_s == new_d}")
            print(f"[legacy]   {sparse}: {text_s!r}")
        except Exception as e:  # noqa: BLE001
            tb = traceback.extract_tb(e.__traceback__)[-1]
            print(f"[legacy] AutoModelForCausalLM.from_pretrained({sparse}) FAILED: "
                  f"{_last_error_line(e)}  (raised at {os.path.basename(tb.filename)}:"
                  f"{tb.lineno} in {tb.name})")
    print("[legacy] RESULT (library decompression of pare's sparse outputs == pare's dense "
          "outputs, bitwise):", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


def step_hf(work: str) -> int:
    import torch
    import transformers
    try:
        import compressed_tensors
        ct = compressed_tensors.__version__
    except ImportError:
        ct = None
    tag = f"[hf tf={transformers.__version__} ct={ct}]"
    print(f"{tag} torch {torch.__version__}")
    gens = {}
    for d in ("wanda50-dense", "wanda24-dense"):
        try:
            _, new, text, info = _generate(os.path.join(work, d))
            gens[d] = new
            print(f"{tag} {d}: load OK (missing={len(info['missing_keys'])}, "
                  f"unexpected={len(info['unexpected_keys'])}), generate OK "
                  f"({len(new)} new tokens): {text!r}")
        except Exception as e:  # noqa: BLE001
            print(f"{tag} {d}: FAILED: {_last_error_line(e)}")
    for d in ("wanda50-bitmask", "wanda24-bitmask"):
        dd = d.replace("bitmask", "dense")
        try:
            m, new, text, info = _generate(os.path.join(work, d))
            ref = _load_st(os.path.join(work, dd, "model.safetensors"))
            sd = m.state_dict()
            same = all(torch.equal(sd[k], ref[k]) for k in ref)
            print(f"{tag} {d}: NO exception; load report: missing={len(info['missing_keys'])} "
                  f"(e.g. {sorted(info['missing_keys'])[:1]}), "
                  f"unexpected={len(info['unexpected_keys'])}; weights equal {dd}: {same}; "
                  f"generation equals {dd}: {new == gens.get(dd)}: {text!r}")
        except Exception as e:  # noqa: BLE001
            tb = traceback.extract_tb(e.__traceback__)
            where = f" (raised at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
            print(f"{tag} {d}: load FAILED: {_last_error_line(e)}{where}")
    print(json.dumps({"tag": tag, "generations": gens}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["all", "legacy", "hf"])
    ap.add_argument("--work", default="/tmp/ctcheck")
    ap.add_argument("--pare", default="/tmp/pare-new")
    ap.add_argument("--legacy-py", default="/tmp/ct014venv/bin/python")
    ap.add_argument("--hf-py", default="/tmp/ordvenv/bin/python")
    ap.add_argument("--hf-ct019-py", default="/tmp/ct019venv/bin/python")
    args = ap.parse_args()
    if args.cmd == "legacy":
        return step_legacy(args.work)
    if args.cmd == "hf":
        return step_hf(args.work)

    run_pare(args.pare, args.work)
    rc = 0
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1")
    for py, sub in ((args.legacy_py, "legacy"), (args.hf_py, "hf"), (args.hf_ct019_py, "hf")):
        if not os.path.exists(py):
            print(f"skip {sub} with {py}: not found")
            continue
        r = subprocess.run([py, os.path.abspath(__file__), sub, "--work", args.work],
                           capture_output=True, text=True, env=env)
        lines = [l for l in r.stdout.splitlines() if not l.startswith("{")]
        print("\n".join(lines))
        if r.returncode != 0:
            print(f"{sub} ({py}) rc={r.returncode}\n{r.stderr[-3000:]}")
        rc |= r.returncode if sub == "legacy" else 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
