#!/usr/bin/env python3
"""Reference GGUF fixtures for tests/gguf.rs, made once with llama.cpp's own converter.

For each (model, type) below this runs llama.cpp's `convert_hf_to_gguf.py` on the Hugging Face
checkpoint and records what it wrote: every metadata key with its value (long arrays as length +
FNV-1a 64 of their JSON), and every tensor's name, ggml type, dims and FNV-1a 64 of its data bytes.
tests/gguf.rs converts the same checkpoints with `pare export --to gguf` and compares.

Types convert_hf_to_gguf cannot write are derived from its f32 output with llama.cpp's own
quantisers (gguf-py `gguf.quants`, bit-exact with ggml-quants.c), following pare's documented
rule for them: `q4_0` quantises every matrix but token_embd/output to Q4_0 and those two to Q8_0
(rows that are not a multiple of 32 fall back to F16), norms/biases/router stay F32.

Two documented differences are recorded, not hidden: for SentencePiece-style vocabularies
convert_hf_to_gguf writes -1000 as every token score (pare writes -merge rank), and for byte-level
BPE vocabularies whose pre-tokenizer hash it does not know it refuses; this script then patches
its `get_vocab_base_pre` to "gpt-2", the name pare derives from the `ByteLevel` pre-tokenizer.

Usage (llama.cpp sources: the llama-cpp-python sdist vendors them; torch, transformers, numpy,
safetensors installed):

    LLAMA_CPP=/path/to/llama.cpp python tools/gguf_fixture/make_fixtures.py

Writes tests/golden/gguf/<model>-<type>.json. Made with llama-cpp-python 0.3.36's vendored
llama.cpp (convert_hf_to_gguf.py and gguf-py), torch 2.x, transformers 5.x.
"""
import json, os, subprocess, sys, tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "models"
LLAMA_CPP = Path(os.environ.get("LLAMA_CPP", ""))
sys.path.insert(0, str(LLAMA_CPP / "gguf-py"))
import gguf  # noqa: E402

CASES = [
    ("stories260k", "f32"), ("stories260k", "q8_0"), ("stories260k", "q4_0"),
    ("tiny-qwen3", "bf16"), ("tiny-qwen3", "q8_0"),
    ("tiny-llama", "f16"),
    ("tiny-mixtral", "q8_0"),
]

SHIM = r'''
import sys, runpy
sys.path.insert(0, {gguf_py!r})
sys.path.insert(0, {root!r})
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
sys.argv = ["convert_hf_to_gguf.py"] + {args!r}
runpy.run_path({script!r}, run_name="__main__")
'''


def fnv1a64(data: bytes) -> str:
    """FNV-1a 64 (what the `fnv` crate computes): change detection, not security."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def convert(model: Path, outtype: str, out: Path):
    args = [str(model), "--outtype", outtype, "--outfile", str(out)]
    code = SHIM.format(gguf_py=str(LLAMA_CPP / "gguf-py"), root=str(LLAMA_CPP), args=args,
                       script=str(LLAMA_CPP / "convert_hf_to_gguf.py"))
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)


def value_of(field):
    t = field.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        et = field.types[1]
        if et == gguf.GGUFValueType.STRING:
            items = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        else:
            items = [field.parts[i].tolist()[0] for i in field.data]
        if et == gguf.GGUFValueType.FLOAT32:
            items = [float(np.float32(x)) for x in items]
        return {"array": et.name, "len": len(items),
                "fnv1a64": fnv1a64(json.dumps(items, ensure_ascii=False).encode())}
    if t == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    v = field.parts[field.data[0]].tolist()[0]
    if t == gguf.GGUFValueType.FLOAT32:
        return {"f32": float(np.float32(v))}
    if t == gguf.GGUFValueType.BOOL:
        return bool(v)
    return v


def describe(path: Path, requant=None):
    r = gguf.GGUFReader(path)
    kv = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        kv[name] = value_of(field)
    tensors = []
    for t in r.tensors:
        data = np.asarray(t.data)
        ttype = t.tensor_type
        dims = [int(d) for d in t.shape]  # ggml order (ne0 first)
        if requant is not None:
            ttype, data = requant(t.name, ttype, data, dims)
            kv["general.file_type"] = 2
        tensors.append({"name": t.name, "type": ttype.name.lower(), "dims": dims,
                        "fnv1a64": fnv1a64(data.tobytes())})
    return {"metadata": kv, "tensors": tensors}


def q4_0_rule(name, ttype, data, dims):
    """pare's q4_0 rule applied to convert_hf_to_gguf's f32 tensors."""
    Q = gguf.GGMLQuantizationType
    if ttype != Q.F32 or len(dims) < 2 or name.endswith("_norm.weight") or "ffn_gate_inp" in name:
        return ttype, data
    head = name in ("token_embd.weight", "output.weight")
    want = Q.Q8_0 if head else Q.Q4_0
    if dims[0] % 32 != 0:
        return Q.F16, data.astype(np.float16)
    return want, gguf.quants.quantize(data.astype(np.float32), want)


def main():
    out_dir = ROOT / "tests" / "golden" / "gguf"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for model, ty in CASES:
            src = SHARED / model
            f = Path(tmp) / f"{model}-{ty}.gguf"
            if ty == "q4_0":
                convert(src, "f32", f)
                d = describe(f, q4_0_rule)
            else:
                convert(src, ty, f)
                d = describe(f)
            d["made_with"] = ("tools/gguf_fixture/make_fixtures.py: llama.cpp convert_hf_to_gguf.py "
                              f"--outtype {'f32 + gguf.quants (q4_0 rule)' if ty == 'q4_0' else ty}")
            (out_dir / f"{model}-{ty}.json").write_text(json.dumps(d, indent=1, ensure_ascii=False) + "\n")
            print("wrote", out_dir / f"{model}-{ty}.json", len(d["tensors"]), "tensors")


if __name__ == "__main__":
    main()
