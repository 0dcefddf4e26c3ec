#!/usr/bin/env bash
# MoE compression quality on tiny-mixtral (trained, 8 experts, top-2): magnitude, Wanda and
# SparseGPT at 50%, RTN and GPTQ at int4, with 128 × 512 calibration tokens from the TinyStories
# train head, evaluated on the first 100 windows of 512 of the eval text (KLD against the dense
# model), through one `pare compare`. The data-driven methods run three times: `auto` (the
# default: routed tokens for an expert routed at least its input width, all tokens otherwise),
# calibrating all experts (`true`) and routed-only (`false`). About 20 minutes on 2 cores.
# Reports land in $OUT (default /tmp/pare-moe-quality).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/pare-moe-quality}"
PARE="${PARE:-${CARGO_TARGET_DIR:-target}/debug/pare}"
[ -n "${PARE_NO_BUILD:-}" ] || cargo build --quiet
args=()
for r in magnitude-50 wanda-50 wanda-50-all wanda-50-routed sparsegpt-50 sparsegpt-50-all sparsegpt-50-routed rtn-int4 gptq-int4 gptq-int4-all gptq-int4-routed; do
  args+=(--recipe "benches/tiny-mixtral/$r.yaml")
done
"$PARE" --quiet compare --model ../shared/models/tiny-mixtral "${args[@]}" --out "$OUT" "$@"
cat "$OUT/comparison.md"
