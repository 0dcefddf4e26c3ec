#!/usr/bin/env bash
# MC-MoE online dynamic pruning on tiny-mixtral: PMQ at 2.5 average expert bits with ODP
# skipping 0, 5, 10, 15, 20 and 30% of the expert calls (β per block chosen on 128 × 512
# calibration tokens), evaluated on the first 100 windows of 512 of the TinyStories eval text
# (mean KLD against the dense model), in one `pare compare`; comparison.html plots KLD against
# the skipped fraction. Reports land in $OUT (default /tmp/pare-mc-moe-odp).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/pare-mc-moe-odp}"
PARE="${PARE:-${CARGO_TARGET_DIR:-target}/debug/pare}"
[ -n "${PARE_NO_BUILD:-}" ] || cargo build --quiet
args=()
for s in 0 5 10 15 20 30; do
  args+=(--recipe "benches/tiny-mixtral/mc-moe-2.5-odp-$s.yaml")
done
"$PARE" --quiet compare --model ../shared/models/tiny-mixtral "${args[@]}" --out "$OUT" "$@"
cat "$OUT/comparison.md"
