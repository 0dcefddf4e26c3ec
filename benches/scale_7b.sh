#!/usr/bin/env bash
# Scale proof: a Llama-2-7B-shaped checkpoint (random bf16 weights, 32 blocks, hidden 4096,
# FFN 11008, 13.5 GB in two hub-style shards) compressed by `pare compress` with Wanda 50% and
# with GPTQ int4 on 16 × 256 calibration tokens, on this machine (2 cores, 24 GB). For each:
# peak RSS against the streaming bound, wall time over one plain forward of the same tokens,
# and that the output loads (`pare inspect`, `pare eval` on two windows of 128). The generated
# files are deleted at the end unless KEEP=1.
#
#   benches/scale_7b.sh                 # about an hour on 2 cores; needs ~30 GB of free disk
#   DIR=/big/disk/pare-7b benches/scale_7b.sh
#   LAYERS=4 benches/scale_7b.sh        # the same shape with 4 blocks: a ~10-minute profile run
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
PARE="${PARE:-$TARGET/debug/pare}"
DIR="${DIR:-/tmp/pare-7b}"
WORK="$DIR-work"
SAMPLES="${SAMPLES:-16}"
SEQ="${SEQ:-256}"
cleanup() { if [ -z "${KEEP:-}" ]; then rm -rf "$DIR" "$WORK"; fi; }
trap cleanup EXIT
# The checkpoint generator is a test binary; name the shared folder explicitly, since a binary
# reused from a shared target folder may have been built from another checkout path.
export PARE_SHARED="${PARE_SHARED:-$(cd .. && pwd)/shared}"
[ -n "${PARE_NO_BUILD:-}" ] || cargo build --quiet
mkdir -p "$WORK"
if [ ! -f "$DIR/config.json" ]; then
  echo "generating $DIR ..." >&2
  PARE_BIG_CHECKPOINT="$DIR" PARE_BIG_SHAPE=7b PARE_BIG_LAYERS="${LAYERS:-}" cargo test --quiet --test streaming \
    generate_big_checkpoint -- --ignored --exact >&2
fi
echo "checkpoint: $(du -sb "$DIR" | cut -f1) bytes in $(ls "$DIR"/*.safetensors | wc -l) shard(s)"

# One plain forward of the same number of tokens (random ids), block by block.
"$PARE" --quiet --json bench forward --model "$DIR" --seq-len "$SEQ" --sequences "$SAMPLES" \
  >"$WORK/forward.json"
# The bound's measured floor: runtime + embeddings + head + one block (benches/rss_bound.py).
/usr/bin/time -v "$PARE" --quiet eval --model "$DIR" --text calibration/tinystories-valid-head.txt \
  --seq-len 16 --max-windows 1 >/dev/null 2>"$WORK/floor.time"
peak_kb() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }
wall_s() { awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$1" \
  | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }'; }

run() { # name method mode step export
  printf 'calibration: { text: %s, samples: %s, seq_len: %s, seed: 0 }\nsteps:\n  - %s\nexport: { format: %s }\n' \
    "$(pwd)/calibration/tinystories-train-head.txt" "$SAMPLES" "$SEQ" "$4" "$5" >"$WORK/$1.yaml"
  /usr/bin/time -v "$PARE" --quiet compress --model "$DIR" --recipe "$WORK/$1.yaml" \
    --out "$WORK/$1" --force >"$WORK/$1.out" 2>"$WORK/$1.time"
  python3 benches/rss_bound.py "$DIR/config.json" --samples "$SAMPLES" --seq "$SEQ" --mode "$3" \
    --method "$2" --floor-kb "$(peak_kb "$WORK/floor.time")" --peak-kb "$(peak_kb "$WORK/$1.time")" \
    --label "$1"
  python3 -c '
import json, sys
fwd = json.load(open(sys.argv[1])); wall = float(sys.argv[2])
s, tps = fwd["seconds"], fwd["tokens_per_second"]
print(f"   wall {wall:.0f} s = {wall / s:.2f} x one forward ({s:.0f} s, {tps:.0f} tokens/s)")' "$WORK/forward.json" "$(wall_s "$WORK/$1.time")"
  "$PARE" --quiet inspect "$WORK/$1" | head -12
  "$PARE" --quiet eval --model "$WORK/$1" --text calibration/tinystories-valid-head.txt \
    --seq-len 128 --max-windows 2 | grep -i -m3 "perplexity\|windows"
  rm -rf "${WORK:?}/${1:?}"
}
run wanda-50 wanda block "wanda: { sparsity: 0.5 }" dense
run gptq-int4 gptq linear "gptq: { format: int4-g128-sym }" pack-quantized
