#!/usr/bin/env bash
# MC-MoE PMQ against uniform GPTQ on tiny-mixtral (trained, 8 experts, top-2), in one
# `pare compare`: PMQ at 2.5 and 3.0 average expert bits vs every expert at int2, int3 and int4
# (groups of 128, asymmetric; attention and router at int4 in all five). 128 × 512 calibration
# tokens from the TinyStories train head; mean KLD against the dense model and perplexity on the
# first 100 windows of 512 of the eval text. Reports land in $OUT (default /tmp/pare-mc-moe).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/pare-mc-moe}"
PARE="${PARE:-${CARGO_TARGET_DIR:-target}/debug/pare}"
[ -n "${PARE_NO_BUILD:-}" ] || cargo build --quiet
args=()
for r in gptq-experts-int2 mc-moe-2.5 gptq-experts-int3 mc-moe-3.0 gptq-experts-int4; do
  args+=(--recipe "benches/tiny-mixtral/$r.yaml")
done
"$PARE" --quiet compare --model ../shared/models/tiny-mixtral "${args[@]}" --out "$OUT" "$@"
cat "$OUT/comparison.md"
