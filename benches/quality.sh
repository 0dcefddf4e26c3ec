#!/usr/bin/env bash
# Quality benchmark: every pruning and quantisation recipe on stories260k (with llm-compressor's
# calibration ids and evaluation protocol, see tests/parity/) and on tiny-llama (128 × 512
# calibration from the TinyStories train head, whole eval text at 512), through `pare compare`.
# Prints the two comparison tables; the reports land in $OUT (default /tmp/pare-quality).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/pare-quality}"
PARE="${PARE:-${CARGO_TARGET_DIR:-target}/debug/pare}"
cargo build --quiet
args=()
for r in magnitude-50 wanda-50 sparsegpt-50 wanda-2of4 sparsegpt-2of4 rtn-int8 rtn-int4 finequant-int4 gptq-int4; do
  args+=(--recipe "tests/parity/$r.yaml")
done
"$PARE" --quiet compare --model ../shared/models/stories260k "${args[@]}" \
  --tasks eval/tasks/tinystories-cloze.jsonl eval/tasks/tinystories-retrieval.jsonl \
  --out "$OUT/stories260k" "$@"
cat "$OUT/stories260k/comparison.md"
args=()
for r in magnitude-50 wanda-50 sparsegpt-50 wanda-2of4 sparsegpt-2of4 rtn-int8 rtn-int4 finequant-int4 gptq-int4; do
  args+=(--recipe "benches/tiny-llama/$r.yaml")
done
"$PARE" --quiet compare --model ../shared/models/tiny-llama "${args[@]}" --out "$OUT/tiny-llama" "$@"
cat "$OUT/tiny-llama/comparison.md"
