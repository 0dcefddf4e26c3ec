#!/usr/bin/env bash
# Forward throughput of pare against transformers (PyTorch, float32) on the same model, tokens
# and thread count, measured in one run: pare's block-by-block forward (`pare bench forward`,
# weights streamed from disk) and transformers' with its default attention (SDPA) and with
# `eager`, at batch 1 (as a user runs it) and at pare's batch (8).
#
#   benches/vs_pytorch.sh [MODEL_DIR]          # default ../shared/models/tiny-llama
#   PYTHON=/path/to/venv/bin/python THREADS=2 SEQ=512 SEQUENCES=16 benches/vs_pytorch.sh
#   BIG=1 benches/vs_pytorch.sh                # also a generated 1B-shaped checkpoint (2.4 GB)
#
# Needs a Python with torch and transformers; without one it says so and exits 0. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
PARE="${PARE:-$TARGET/debug/pare}"
PY="${PYTHON:-python3}"
THREADS="${THREADS:-2}"
SEQ="${SEQ:-512}"
SEQUENCES="${SEQUENCES:-16}"
if ! "$PY" -c "import torch, transformers" 2>/dev/null; then
  echo "vs_pytorch: no torch/transformers in $PY; set PYTHON to a Python that has them" >&2
  exit 0
fi
[ -n "${PARE_NO_BUILD:-}" ] || cargo build --quiet

models=("${1:-../shared/models/tiny-llama}")
BIGDIR=/tmp/pare-1b-checkpoint
if [ -n "${BIG:-}" ]; then
  if [ ! -f "$BIGDIR/config.json" ]; then
    PARE_BIG_CHECKPOINT="$BIGDIR" cargo test --quiet --test streaming generate_big_checkpoint \
      -- --ignored --exact >&2
  fi
  models+=("$BIGDIR")
fi

for m in "${models[@]}"; do
  seqs=$SEQUENCES
  [ "$m" = "$BIGDIR" ] && seqs=8
  pare_json=$("$PARE" --quiet --json --threads "$THREADS" bench forward --model "$m" \
    --seq-len "$SEQ" --sequences "$seqs")
  torch_runs=()
  for attn in sdpa eager; do
    for batch in 1 8; do
      torch_runs+=("$("$PY" benches/vs_pytorch.py --model "$m" --seq-len "$SEQ" \
        --sequences "$seqs" --batch "$batch" --threads "$THREADS" --attn "$attn")")
    done
  done
  "$PY" - "$m" "$pare_json" "${torch_runs[@]}" <<'EOF'
import json, sys
model, pare = sys.argv[1], json.loads(sys.argv[2])
runs = [json.loads(r) for r in sys.argv[3:]]
p = pare["tokens_per_second"]
print(f"\n{model}: {pare['sequences']} x {pare['seq_len']} tokens, {runs[0]['threads']} threads "
      f"(torch {runs[0]['torch']}, transformers {runs[0]['transformers']})")
print(f"  pare (streamed, batch {min(pare['sequences'], 8)})  {p:9.0f} tokens/s  "
      f"(GEMM ratio {pare['ratio']:.2f}, peak RSS {pare['peak_rss_bytes'] / 2**20:.0f} MiB)")
for r in runs:
    t = r["tokens_per_second"]
    print(f"  transformers {r['attn']:<5} batch {r['batch']}  {t:9.0f} tokens/s   pare / it = {p / t:5.2f}")
EOF
done
if [ -n "${BIG:-}" ] && [ -z "${KEEP:-}" ]; then rm -rf "$BIGDIR"; fi
