#!/usr/bin/env bash
# MoE compression time over one plain forward of the same calibration set, measured in one
# `pare bench compress` run: Wanda 50% and GPTQ int4-g32 on tiny-mixtral (8 experts, top-2)
# with 128 × 512 calibration tokens: `auto` (the default), all experts and routed-only.
#
#   benches/moe_speed.sh        # several minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
PARE="${PARE:-$TARGET/debug/pare}"
SHARED="$(cd .. && pwd)/shared"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
[ -n "${PARE_NO_BUILD:-}" ] || cargo build --quiet
args=()
for r in wanda-50 wanda-50-all wanda-50-routed gptq-int4 gptq-int4-all gptq-int4-routed; do
  sed -e "s#\.\./\.\./\.\./shared/#$SHARED/#g" -e '/^eval:/d' "benches/tiny-mixtral/$r.yaml" >"$DIR/$r.yaml"
  args+=(--recipe "$DIR/$r.yaml")
done
"$PARE" --quiet bench compress --model "$SHARED/models/tiny-mixtral" --samples 128 --seq-len 512 "${args[@]}" "$@"
