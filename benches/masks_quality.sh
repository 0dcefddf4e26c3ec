#!/usr/bin/env bash
# Masks that learn and regrow (DSnoT, MaskLLM) against the one-shot pruners, one `pare compare`
# table per model:
#   2:4  magnitude, Wanda, SparseGPT, Wanda+DSnoT, SparseGPT+DSnoT, MaskLLM (prior SparseGPT)
#        without and with the OBS reconstruction, and with it learned for compensated weights,
#        and end to end (distillation, and the causal-LM loss);
#   70%  Wanda, Wanda+DSnoT.
# stories260k uses llm-compressor's calibration ids and evaluation protocol (reference.json);
# tiny-llama 128 × 512 calibration from the TinyStories train head, KLD on the eval text.
# Needs ../shared (the models). Reports land in $OUT (default /tmp/pare-masks). About 40 minutes
# on 2 cores, most of it MaskLLM on tiny-llama (end to end: about 9 minutes per run).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/pare-masks}"
PARE="${PARE:-${CARGO_TARGET_DIR:-target}/debug/pare}"
cargo build --quiet
RECIPES=(magnitude-2of4 wanda-2of4 sparsegpt-2of4 wanda-2of4-dsnot sparsegpt-2of4-dsnot
  maskllm-2of4 maskllm-2of4-rec maskllm-2of4-comp maskllm-2of4-e2e maskllm-2of4-e2e-lm wanda-70 wanda-70-dsnot)
for model in stories260k tiny-llama; do
  args=()
  for r in "${RECIPES[@]}"; do args+=(--recipe "benches/$model/$r.yaml"); done
  "$PARE" --quiet compare --model "../shared/models/$model" "${args[@]}" --out "$OUT/$model" "$@"
  cat "$OUT/$model/comparison.md"
done
