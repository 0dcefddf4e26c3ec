#!/usr/bin/env bash
# Compression time over one plain forward of the same calibration set, for both block orderings
# (`sequential: block | linear`), measured in one `pare bench compress` run: Wanda 50%,
# SparseGPT 50% and GPTQ int4-g32 on tiny-llama with 128 × 512 calibration tokens.
#
#   benches/compress_speed.sh        # a few minutes on 2 cores; use a release build for speed:
#   PARE=target/release/pare benches/compress_speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
PARE="${PARE:-$TARGET/debug/pare}"
SHARED="$(cd .. && pwd)/shared"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
[ -n "${PARE_NO_BUILD:-}" ] || cargo build --quiet
args=()
for r in wanda-50 sparsegpt-50 gptq-int4; do
  for mode in block linear; do
    sed -e "s#\.\./\.\./\.\./shared/#$SHARED/#g" -e '/^eval:/d' "benches/tiny-llama/$r.yaml" >"$DIR/$r-$mode.yaml"
    echo "sequential: $mode" >>"$DIR/$r-$mode.yaml"
    args+=(--recipe "$DIR/$r-$mode.yaml")
  done
done
"$PARE" --quiet bench compress --model "$SHARED/models/tiny-llama" --samples 128 --seq-len 512 "${args[@]}" "$@"
