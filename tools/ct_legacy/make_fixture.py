#!/usr/bin/env python3
"""Build byte-level fixtures for compressed-tensors' legacy sparse formats.

compressed-tensors 0.14.0.1 is the last release that registers the
`sparse-bitmask` and `sparse-24-bitmask` compressors (0.15.0 removed
`compressors/sparse_compressors/`; the config enums stay but
`BaseCompressor.load_from_registry("sparse-bitmask")` raises KeyError).
This script must run in an environment with exactly that release; see
README.md next to it for the venv recipe.

What it writes (paths relative to the repository root), for
FMT in {bitmask, 24-bitmask} and DT in {bf16, f32}:

  tests/fixtures/ct-sparse/FMT-DT/dense.safetensors       pruned weights, dense
  tests/fixtures/ct-sparse/FMT-DT/compressed.safetensors  compressor output
  tests/fixtures/ct-sparse/FMT-DT/FIXTURE.json            versions, rule, tensors,
                                                           sparsity_config

plus two small edge-case folders (`bitmask-edge-f32`, `24-bitmask-edge-f32`)
holding a hand-made tensor with explicit zeros, -0.0, ties and 2:4 groups with
fewer than two non-zeros, which records how the library itself treats those.

Source: decoder block 0 of stories260k (float32), its 7 linears. Pruning
(done here, in float64 copies of the float32 weights, before any cast):
  bitmask:    per output row, zero the floor(d_in/2) smallest |w|; ties in |w|
              go to the lower column first (stable ascending sort).
  24-bitmask: per row and aligned group of 4 columns, keep the 2 largest |w|;
              ties keep the lower column (stable descending sort).
The pruned float32 weights are then cast to the fixture dtype (bf16: round to
nearest even, torch's `.to(torch.bfloat16)`).

Compression follows the library's own save path for a sparsity-only model
(llm-compressor 0.10.0.4 `save_pretrained_wrapper`: `ModelCompressor(...)`
-> `compress_model(model)` -> `save_pretrained` -> `update_config`), run on
a small nn.Module tree whose Linear modules carry the HF names. The state-dict
path `ModelCompressor.compress(model, state_dict)` is run too and must agree.
The compressed state dict is written with `safetensors.torch.save_file(...,
metadata={"format": "pt"})`, as transformers' `save_pretrained` does.

Round trip: `compressed.safetensors` is decompressed with the same release
(`ModelCompressor.from_compression_config(<config.json block>)`, then both
`sparsity_compressor.decompress(<file>)` — the disk path transformers uses —
and `decompress_from_state_dict`) and must equal `dense.safetensors` bit for
bit.

Usage: python tools/ct_legacy/make_fixture.py [--model DIR] [--out DIR] [--check]
  --full-f32  f32 variants with all 7 linears (default: k_proj and down_proj only)
  --check   regenerate into a temporary folder and compare byte for byte with
            the committed fixtures instead of writing them.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import sys
import tempfile

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import compressed_tensors
from compressed_tensors.compressors import BaseCompressor, ModelCompressor
from compressed_tensors.config import (
    BitmaskConfig,
    CompressionFormat,
    Sparse24BitMaskConfig,
)

EXPECTED_CT = "0.14.0.1"
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_MODEL = "/work/shared/models/stories260k"
LINEARS = [
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.self_attn.k_proj",
    "model.layers.0.self_attn.v_proj",
    "model.layers.0.self_attn.o_proj",
    "model.layers.0.mlp.gate_proj",
    "model.layers.0.mlp.up_proj",
    "model.layers.0.mlp.down_proj",
]
DTYPES = {"bf16": torch.bfloat16, "f32": torch.float32}
# The f32 variants hold a subset by default to keep the committed fixtures small
# (~0.45 MB in all): k_proj [32,64] and down_proj [64,172] (d_in not a multiple of
# 8, so the bitmask rows are padded). `--full-f32` writes all 7.
F32_SUBSET = ["model.layers.0.self_attn.k_proj", "model.layers.0.mlp.down_proj"]
ST_DTYPE = {torch.bfloat16: "BF16", torch.float32: "F32", torch.int64: "I64",
            torch.uint8: "U8", torch.bool: "BOOL"}

RULES = {
    "bitmask": (
        "per output row, zero the floor(d_in/2) smallest |w| of the float32 weight; "
        "ties in |w| are zeroed lower column first (stable ascending argsort); "
        "then cast to the fixture dtype"
    ),
    "24-bitmask": (
        "per row and aligned group of 4 columns (cols 4g..4g+3), keep the 2 largest |w| "
        "of the float32 weight, ties keep the lower column (stable descending argsort), "
        "zero the other 2; then cast to the fixture dtype"
    ),
}


# ----------------------------------------------------------------------------- pruning

def prune_unstructured(w: np.ndarray) -> tuple[np.ndarray, int]:
    """Zero floor(d_in/2) smallest |w| per row; returns (pruned, boundary_ties)."""
    out = w.copy()
    a = np.abs(w.astype(np.float64))
    k = w.shape[1] // 2
    ties = 0
    for r in range(w.shape[0]):
        order = np.argsort(a[r], kind="stable")
        out[r, order[:k]] = 0
        if 0 < k < w.shape[1] and a[r, order[k - 1]] == a[r, order[k]]:
            ties += 1
    return out, ties


def prune_24(w: np.ndarray) -> tuple[np.ndarray, int]:
    """Keep the 2 largest |w| of every aligned group of 4; returns (pruned, ties)."""
    rows, cols = w.shape
    assert cols % 4 == 0, cols
    out = np.zeros_like(w)
    a = np.abs(w.astype(np.float64))
    ties = 0
    for r in range(rows):
        for g in range(0, cols, 4):
            grp = a[r, g:g + 4]
            order = np.argsort(-grp, kind="stable")
            keep = order[:2]
            out[r, g + keep] = w[r, g + keep]
            if grp[order[1]] == grp[order[2]]:
                ties += 1
    return out, ties


# ----------------------------------------------------------------------------- helpers

def build_module(weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A bare nn.Module tree whose Linear submodules carry the HF names."""
    root = torch.nn.Module()
    for name, w in weights.items():
        mod_path = name[: -len(".weight")]
        parent = root
        parts = mod_path.split(".")
        for p in parts[:-1]:
            if not hasattr(parent, p):
                parent.add_module(p, torch.nn.Module())
            parent = getattr(parent, p)
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
        lin.weight = torch.nn.Parameter(w.clone(), requires_grad=False)
        parent.add_module(parts[-1], lin)
    return root


def bits(t: torch.Tensor) -> torch.Tensor:
    view = {torch.bfloat16: torch.int16, torch.float16: torch.int16,
            torch.float32: torch.int32, torch.float64: torch.int64}.get(t.dtype)
    return t.view(view) if view is not None else t


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def load_st(path: str) -> dict[str, torch.Tensor]:
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_config(fmt: str, global_sparsity: float, targets, ignore):
    if fmt == "bitmask":
        return BitmaskConfig(global_sparsity=global_sparsity, targets=targets, ignore=ignore)
    return Sparse24BitMaskConfig(global_sparsity=global_sparsity, targets=targets, ignore=ignore)


def compress_like_library(dense: dict[str, torch.Tensor], fmt: str, targets, ignore):
    """Returns (compressed_state_dict, quantization_config block for config.json)."""
    zeros = sum(int((t == 0).sum()) for t in dense.values())
    total = sum(t.numel() for t in dense.values())
    cfg = make_config(fmt, zeros / total, targets, ignore)

    # Path 1: what llm-compressor's save_pretrained wrapper runs (in-memory).
    model = build_module(dense)
    mc = ModelCompressor(sparsity_config=copy.deepcopy(cfg))
    mc.compress_model(model)
    sd_model = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}

    # Path 2: the state-dict path `ModelCompressor.compress(model, state_dict)`.
    model2 = build_module(dense)
    mc2 = ModelCompressor(sparsity_config=copy.deepcopy(cfg))
    sd_state = mc2.compress(model2, state_dict={k: v.clone() for k, v in dense.items()})
    sd_state = {k: v.detach().contiguous() for k, v in sd_state.items()}

    assert sorted(sd_model) == sorted(sd_state), (sorted(sd_model), sorted(sd_state))
    for k in sd_model:
        assert bit_equal(sd_model[k], sd_state[k]), k

    # The config.json block, exactly as `update_config` writes it.
    with tempfile.TemporaryDirectory() as tmp:
        mc.update_config(tmp)
        with open(os.path.join(tmp, "config.json")) as f:
            qblock = json.load(f)["quantization_config"]
    return sd_model, qblock, mc


def roundtrip(compressed_path: str, dense: dict[str, torch.Tensor], qblock: dict) -> list[str]:
    """Decompress with the library (disk path and state-dict path); check bitwise."""
    mc = ModelCompressor.from_compression_config(qblock)
    assert mc is not None and mc.sparsity_compressor is not None
    msgs = []
    disk = dict(mc.sparsity_compressor.decompress(compressed_path))
    sd = load_st(compressed_path)
    mem = dict(mc.sparsity_compressor.decompress_from_state_dict(sd))
    for label, got in (("decompress(file)", disk), ("decompress_from_state_dict", mem)):
        assert sorted(got) == sorted(dense), (label, sorted(got), sorted(dense))
        bad = [k for k in dense if not bit_equal(got[k].contiguous(), dense[k])]
        val_bad = [k for k in dense if not torch.equal(got[k].to(dense[k].dtype), dense[k])]
        msgs.append(f"{label}: {len(dense)} tensors, bitwise-equal={len(dense) - len(bad)}"
                    f", value-equal={len(dense) - len(val_bad)}")
        if bad:
            msgs.append(f"  bitwise differences: {bad}")
    return msgs


def describe(sd: dict[str, torch.Tensor]) -> list[dict]:
    return [{"name": k, "dtype": ST_DTYPE.get(v.dtype, str(v.dtype)), "shape": list(v.shape)}
            for k, v in sorted(sd.items())]


def write_fixture(folder: str, dense, compressed, fixture_json) -> None:
    os.makedirs(folder, exist_ok=True)
    save_file(dense, os.path.join(folder, "dense.safetensors"), metadata={"format": "pt"})
    save_file(compressed, os.path.join(folder, "compressed.safetensors"),
              metadata={"format": "pt"})
    for fn in ("dense.safetensors", "compressed.safetensors"):
        fixture_json.setdefault("sha256", {})[fn] = sha256(os.path.join(folder, fn))
    with open(os.path.join(folder, "FIXTURE.json"), "w") as f:
        json.dump(fixture_json, f, indent=2, sort_keys=True)
        f.write("\n")


def versions() -> dict:
    import transformers  # noqa: F401  (compressed_tensors imports it; record it)
    import safetensors
    return {
        "compressed-tensors": compressed_tensors.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------------- edge case

def edge_tensor() -> torch.Tensor:
    """[2, 16] float32: rows of hand-picked 4-groups (each holds <= 2 non-zeros)."""
    rows = [
        # all zero | one non-zero (last) | one non-zero (2nd) | two equal non-zeros
        [0, 0, 0, 0, 0, 0, 0, 5, 0, 3, 0, 0, 1, 0, 0, 1],
        # -0.0 with one non-zero | two non-zeros | -0.0 only | 2 non-zeros with |a|==|b|
        [-0.0, 0, 7, 0, 2, 0, 0, -3, 0, -0.0, 0, 0, 0, -4, 4, 0],
    ]
    return torch.tensor(rows, dtype=torch.float32)


def make_edge(fmt: str, ver: dict) -> tuple[dict, dict, dict, list[str]]:
    name = "edge.weight"
    dense = {name: edge_tensor()}
    comp, qblock, mc = compress_like_library(dense, fmt, ["Linear"], [])
    notes = []
    if fmt == "24-bitmask":
        mask = np.unpackbits(comp["edge.bitmask"].numpy(), axis=-1, count=16,
                             bitorder="little").reshape(2, 16)
        for r in range(2):
            groups = [f"{list(dense[name][r, g:g+4].tolist())}->kept cols "
                      f"{[g + i for i in range(4) if mask[r, g + i]]}" for g in range(0, 16, 4)]
            notes.append(f"row {r}: " + "; ".join(groups))
    else:
        notes.append("bitmask = (w != 0): -0.0 is not stored and decompresses to +0.0")
    fj = {
        "what": f"edge case for compressed-tensors {fmt}: explicit zeros, -0.0, ties",
        "versions": ver,
        "format": qblock["sparsity_config"]["format"],
        "input": "hand-made [2,16] float32 tensor, see make_fixture.py:edge_tensor()",
        "tensors_dense": describe(dense),
        "tensors_compressed": describe(comp),
        "config_json_quantization_config": qblock,
        "sparsity_config": qblock["sparsity_config"],
        "library_behaviour": notes,
    }
    return dense, comp, fj, notes


# ----------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "ct-sparse"))
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp dir and compare with --out byte for byte")
    ap.add_argument("--allow-other-version", action="store_true")
    ap.add_argument("--full-f32", action="store_true",
                    help="f32 variants with all 7 linears (default: k_proj, down_proj)")
    args = ap.parse_args()

    if compressed_tensors.__version__ != EXPECTED_CT and not args.allow_other_version:
        print(f"need compressed-tensors=={EXPECTED_CT}, have {compressed_tensors.__version__}",
              file=sys.stderr)
        return 2
    reg = BaseCompressor.registered_names()
    for f in (CompressionFormat.sparse_bitmask.value, CompressionFormat.sparse_24_bitmask.value):
        assert f in reg, f"{f} not registered in this compressed-tensors ({reg})"

    ver = versions()
    print("versions:", json.dumps(ver))
    out_root = tempfile.mkdtemp(prefix="ct-sparse-") if args.check else args.out

    src = load_st(os.path.join(args.model, "model.safetensors"))
    src_w = {f"{m}.weight": src[f"{m}.weight"] for m in LINEARS}
    for k, v in src_w.items():
        assert v.dtype == torch.float32, (k, v.dtype)

    pruned = {}
    for fmt, fn in (("bitmask", prune_unstructured), ("24-bitmask", prune_24)):
        pruned[fmt] = {}
        ties = 0
        for k, v in src_w.items():
            p, t = fn(v.numpy())
            pruned[fmt][k] = torch.from_numpy(p)
            ties += t
        print(f"{fmt}: pruned; |w| ties at the keep/zero boundary: {ties}")

    ok = True
    for fmt in ("bitmask", "24-bitmask"):
        for dname, dt in DTYPES.items():
            keep = LINEARS if (dt == torch.bfloat16 or args.full_f32) else F32_SUBSET
            dense = {f"{m}.weight": pruned[fmt][f"{m}.weight"].to(dt).contiguous()
                     for m in keep}
            comp, qblock, _ = compress_like_library(dense, fmt, ["Linear"], [])
            folder = os.path.join(out_root, f"{fmt}-{dname}")
            fj = {
                "what": (f"compressed-tensors {qblock['sparsity_config']['format']} output for "
                         "the 7 linears of stories260k decoder block 0, pruned by `rule`"),
                "versions": ver,
                "source": {"model": "stories260k model.safetensors (float32)",
                           "sha256": sha256(os.path.join(args.model, "model.safetensors")),
                           "tensors": [f"{m}.weight" for m in keep]},
                "rule": RULES[fmt],
                "dtype": ST_DTYPE[dt],
                "code_path": ("ModelCompressor(sparsity_config=...).compress_model(module) "
                              "(== ModelCompressor.compress(module, state_dict)); "
                              "save_file(..., metadata={'format': 'pt'})"),
                "tensors_dense": describe(dense),
                "tensors_compressed": describe(comp),
                "config_json_quantization_config": qblock,
                "sparsity_config": qblock["sparsity_config"],
                "sparsity_config_note": (
                    "compressed-tensors only serialises the config it is given; "
                    "global_sparsity/targets/ignore are what llm-compressor 0.10.0.4 "
                    "(SparsityConfigMetadata.from_pretrained) would infer for a model made "
                    "of just these 7 Linear modules: zero fraction over all params, "
                    "targets=['Linear'] (every Linear is sparse), ignore=[]"),
            }
            write_fixture(folder, dense, comp, fj)
            msgs = roundtrip(os.path.join(folder, "compressed.safetensors"),
                             load_st(os.path.join(folder, "dense.safetensors")), qblock)
            print(f"[{fmt}-{dname}] roundtrip:")
            for m in msgs:
                print("   ", m)
                ok &= "bitwise differences" not in m

    for fmt in ("bitmask", "24-bitmask"):
        dense, comp, fj, notes = make_edge(fmt, ver)
        folder = os.path.join(out_root, f"{fmt}-edge-f32")
        write_fixture(folder, dense, comp, fj)
        msgs = roundtrip(os.path.join(folder, "compressed.safetensors"), dense,
                         fj["config_json_quantization_config"])
        print(f"[{fmt}-edge-f32] library behaviour:")
        for n in notes:
            print("   ", n)
        print(f"[{fmt}-edge-f32] roundtrip:")
        for m in msgs:
            print("   ", m)
        # Value-exact; bitwise it differs exactly where the input held -0.0.
        mc = ModelCompressor.from_compression_config(fj["config_json_quantization_config"])
        got = dict(mc.sparsity_compressor.decompress(
            os.path.join(folder, "compressed.safetensors")))["edge.weight"]
        x = dense["edge.weight"]
        negz = (x == 0) & torch.signbit(x)
        same_bits = bits(got) == bits(x)
        assert torch.equal(got, x) and torch.equal(~same_bits, negz), "edge round trip"
        print(f"    value-equal; bitwise-different exactly at the {int(negz.sum())} "
              "-0.0 inputs (decompressed as +0.0)")

    if args.check:
        import filecmp
        diffs = []
        for d in sorted(os.listdir(out_root)):
            for fn in ("dense.safetensors", "compressed.safetensors"):
                a, b = os.path.join(out_root, d, fn), os.path.join(args.out, d, fn)
                if not (os.path.exists(b) and filecmp.cmp(a, b, shallow=False)):
                    diffs.append(f"{d}/{fn}")
        print("check:", "identical" if not diffs else f"DIFFER: {diffs}")
        ok &= not diffs

    total = 0
    for d in sorted(os.listdir(out_root)):
        for fn in sorted(os.listdir(os.path.join(out_root, d))):
            sz = os.path.getsize(os.path.join(out_root, d, fn))
            total += sz
            print(f"  {d}/{fn}: {sz} bytes")
    print(f"total: {total} bytes in {out_root}")
    print("ROUNDTRIP OK (bitwise) for all block-0 fixtures" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
