#!/usr/bin/env bash
# Peak RSS of `pare compress` against its memory bound, term by term (benches/rss_bound.py), on
# tiny-llama with 128 × 512 calibration tokens: SparseGPT 50% and Wanda 50% (block mode, their
# default) and GPTQ int4 (linear mode, the default of a quantisation-only recipe).
#
#   benches/compress_rss.sh          # about two minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
PARE="${PARE:-$TARGET/debug/pare}"
SHARED="$(cd .. && pwd)/shared"
MODEL="$SHARED/models/tiny-llama"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
[ -n "${PARE_NO_BUILD:-}" ] || cargo build --quiet
peak_kb() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }

/usr/bin/time -v "$PARE" --quiet eval --model "$MODEL" --text calibration/tinystories-valid-head.txt \
  --seq-len 16 --max-windows 1 >/dev/null 2>"$DIR/floor.time"
FLOOR=$(peak_kb "$DIR/floor.time")

for spec in "sparsegpt-50 sparsegpt block" "wanda-50 wanda block" "gptq-int4 gptq linear"; do
  set -- $spec
  sed -e "s#\.\./\.\./\.\./shared/#$SHARED/#g" -e '/^eval:/d' "benches/tiny-llama/$1.yaml" >"$DIR/$1.yaml"
  /usr/bin/time -v "$PARE" --quiet compress --model "$MODEL" --recipe "$DIR/$1.yaml" \
    --out "$DIR/$1" --force >/dev/null 2>"$DIR/$1.time"
  python3 benches/rss_bound.py "$MODEL/config.json" --samples 128 --seq 512 --mode "$3" \
    --method "$2" --floor-kb "$FLOOR" --peak-kb "$(peak_kb "$DIR/$1.time")" --label "$1"
  rm -rf "$DIR/$1"
done
