#!/usr/bin/env python3
"""compressed-tensors' pack_to_int32 on known int2/int3/int4 codes, for the Rust packing test.

Packs a deterministic signed code matrix of shape [3, 37] (37 columns: rows end mid-word for
every width) along dim 1 (weights) and its transpose along dim 0 (zero-points), and writes the
int32 words to tests/fixtures/ct-pack/pack.json.

    pip install compressed-tensors==0.20.1 torch
    python tools/ct_pack/make_fixture.py

Made with compressed-tensors 0.20.1 (0.19.0's pack_to_int32 is the same code).
"""
import json
from pathlib import Path

import torch
import compressed_tensors
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

ROOT = Path(__file__).resolve().parents[2]
out = {"compressed_tensors": compressed_tensors.__version__, "rows": 3, "cols": 37, "cases": []}
for bits in (2, 3, 4):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = [[lo + (r * 37 + c * 7 + r) % (hi - lo + 1) for c in range(37)] for r in range(3)]
    t = torch.tensor(codes, dtype=torch.int8)
    dim1 = pack_to_int32(t, bits, packed_dim=1)
    dim0 = pack_to_int32(t.t().contiguous(), bits, packed_dim=0)
    out["cases"].append({"bits": bits, "codes": codes,
                         "packed_dim1": dim1.tolist(), "packed_dim0_of_transpose": dim0.tolist()})
p = ROOT / "tests" / "fixtures" / "ct-pack" / "pack.json"
p.parent.mkdir(parents=True, exist_ok=True)
p.write_text(json.dumps(out) + "\n")
print("wrote", p)
