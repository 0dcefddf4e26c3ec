#!/usr/bin/env bash
# Compression time of DSnoT and MaskLLM over one plain forward of the same calibration set
# (tiny-llama, 128 × 512), in one `pare bench compress` run, with Wanda 2:4 and SparseGPT 2:4 as
# the baselines, and MaskLLM at 100, 500 and 2000 iterations to show how its time grows (each
# iteration is one [rows, d] × [d, d] GEMM plus the Gumbel-softmax per linear).
#
#   benches/masks_speed.sh           # about 40 minutes on 2 cores, most of it MaskLLM at 2000
#   ITERS="100 2000" benches/masks_speed.sh   # the run in the README (about 25 minutes)
#   ITERS="100 500" benches/masks_speed.sh
# MaskLLM end to end runs E2E_ITERS iterations (default 20) of 4 sequences: each is a forward and
# a backward of the whole model on them plus the Gumbel-softmax of every linear, so its time over
# one forward grows linearly from the prior's profile pass.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
PARE="${PARE:-$TARGET/debug/pare}"
SHARED="$(cd .. && pwd)/shared"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
[ -n "${PARE_NO_BUILD:-}" ] || cargo build --quiet
recipe() { # name, steps...
  local name=$1; shift
  sed -e "s#\.\./\.\./\.\./shared/#$SHARED/#g" -e '/^eval:/d' -e '/^  - /d' -e '/^steps:/q' \
    benches/tiny-llama/wanda-2of4.yaml >"$DIR/$name.yaml"
  for s in "$@"; do echo "  - $s" >>"$DIR/$name.yaml"; done
  echo "propagate: compressed" >>"$DIR/$name.yaml"
  args+=(--recipe "$DIR/$name.yaml")
}
args=()
recipe wanda-2of4 'wanda: { pattern: "2:4" }'
recipe wanda-2of4-dsnot 'wanda: { pattern: "2:4" }' 'dsnot: {}'
recipe wanda-70-dsnot 'wanda: { sparsity: 0.7 }' 'dsnot: {}'
recipe sparsegpt-2of4 'sparsegpt: { pattern: "2:4" }'
for it in ${ITERS:-100 500 2000}; do
  recipe "maskllm-2of4-it$it" "maskllm: { pattern: \"2:4\", iterations: $it }"
done
for it in ${E2E_ITERS:-20}; do
  recipe "maskllm-2of4-e2e-it$it" "maskllm: { pattern: \"2:4\", mode: end-to-end, iterations: $it }"
done
"$PARE" --quiet bench compress --model "$SHARED/models/tiny-llama" --samples 128 --seq-len 512 "${args[@]}" "$@"
