#!/usr/bin/env bash
# Whole-model passes (issue: GBLM and OWL) against the one-shot pruners, one `pare compare` table
# per model: magnitude, Wanda, SparseGPT, GBLM, Wanda+OWL and SparseGPT+OWL at 50 %, 60 % and
# 70 % unstructured and at 2:4 (OWL's N:M variant: per-block N).
# stories260k: llm-compressor's calibration ids and evaluation protocol (reference.json);
# tiny-llama: 128 × 512 calibration from the TinyStories train head, KLD on the eval text.
# GBLM's gradients are computed once per model with `pare gradients` (the dense model, the same
# calibration) and read by every GBLM recipe. Needs ../shared. Reports land in $OUT (default
# /tmp/pare-whole-model); the recipes it runs are written to $OUT/recipes. About 25 minutes on
# 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/pare-whole-model}"
PARE="${PARE:-${CARGO_TARGET_DIR:-target}/debug/pare}"
SHARED="$(cd ../shared && pwd)"
cargo build --quiet
MODELS=(${MODELS:-stories260k tiny-llama})
for model in "${MODELS[@]}"; do
  case $model in
    stories260k)
      CAL="calibration: { ids: $SHARED/models/stories260k/reference.calib_ids.safetensors, samples: 128, seq_len: 256 }"
      EVAL="eval: { text: $SHARED/data/tinystories/tinystories_valid_head.txt, seq_len: 256, max_windows: 200, kld: true }" ;;
    tiny-llama)
      CAL="calibration: { text: $SHARED/data/tinystories/tinystories_train_head.txt, samples: 128, seq_len: 512, seed: 0 }"
      EVAL="eval: { text: $SHARED/data/tinystories/tinystories_eval.txt, seq_len: 512, max_windows: 100, kld: true }" ;;
  esac
  dir="$OUT/recipes/$model"
  mkdir -p "$dir"
  write() { printf '%s\nsteps:\n  - %s\npropagate: compressed\nexport: { format: dense }\n%s\n' "$CAL" "$2" "$EVAL" > "$dir/$1.yaml"; }
  write gradients "gblm: { sparsity: 0.5 }"
  if [[ ! -f "$dir/gradients.safetensors" ]]; then
    "$PARE" --quiet gradients --model "$SHARED/models/$model" --recipe "$dir/gradients.yaml" --out "$dir/gradients.safetensors"
  fi
  args=()
  for s in 50 60 70 2of4; do
    if [[ $s == 2of4 ]]; then p='pattern: "2:4"'; else p="sparsity: 0.$s"; fi
    write "magnitude-$s" "magnitude: { $p }"
    write "wanda-$s" "wanda: { $p }"
    write "sparsegpt-$s" "sparsegpt: { $p }"
    write "gblm-$s" "gblm: { $p, gradients: gradients.safetensors }"
    write "wanda-owl-$s" "wanda: { $p, profile: { owl: {} } }"
    write "sparsegpt-owl-$s" "sparsegpt: { $p, profile: { owl: {} } }"
    for m in magnitude wanda sparsegpt gblm wanda-owl sparsegpt-owl; do args+=(--recipe "$dir/$m-$s.yaml"); done
  done
  "$PARE" --quiet compare --model "$SHARED/models/$model" "${args[@]}" --out "$OUT/$model" "$@"
  cat "$OUT/$model/comparison.md"
done
