#!/usr/bin/env bash
# The `sequential: block | linear` table: every pruning method at 50/60/70/80 %, 2:4 and 4:8, and
# GPTQ int4, in both orderings, on stories260k (llm-compressor's calibration ids and evaluation
# protocol, as tests/parity/), and 50 %, 70 %, 2:4 and GPTQ int4 on tiny-llama (128 × 512
# calibration from the TinyStories train head; mean KLD against the dense model on 50 windows of
# 512, since it is under-trained).
# Runs two `pare compare`s, prints the table and writes it to benches/sequential-modes.json,
# which a test reads to check that each method family's default ordering is the better one.
#
#   benches/sequential_modes.sh            # about 25 minutes on 2 cores
#   SKIP_STORIES=1 or SKIP_TINY=1 benches/sequential_modes.sh   # one model (keeps the other's results)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/pare-sequential}"
TARGET="${CARGO_TARGET_DIR:-target}"
PARE="${PARE:-$TARGET/debug/pare}"
SHARED="$(cd .. && pwd)/shared"
cargo build --quiet
mkdir -p "$OUT/recipes/stories260k" "$OUT/recipes/tiny-llama"

step() { # method level → a recipe step
  local m=$1 l=$2
  case $m in
    gptq) echo "gptq: { format: $l, block_size: 128, dampening: 0.01, actorder: static }" ;;
    *) case $l in
         2:4|4:8) echo "$m: { pattern: \"$l\" }" ;;
         *) echo "$m: { sparsity: 0.$l }" ;;
       esac ;;
  esac
}

recipes() { # model calibration eval gptq-format levels… → recipe files, prints their paths
  local model=$1 cal=$2 ev=$3 gptq=$4
  shift 4
  local runs=("magnitude 50")
  for m in wanda sparsegpt; do
    for l in "$@"; do runs+=("$m $l"); done
  done
  runs+=("gptq $gptq")
  for run in "${runs[@]}"; do
    set -- $run
    for mode in block linear; do
      local name="$1-${2//:/of}-$mode"
      name="${name//int4-*-sym/int4}"
      cat >"$OUT/recipes/$model/$name.yaml" <<EOF
calibration: $cal
steps:
  - $(step "$1" "$2")
sequential: $mode
export: { format: dense }
eval: $ev
EOF
      echo "--recipe $OUT/recipes/$model/$name.yaml"
    done
  done
}

if [ -z "${SKIP_STORIES:-}" ]; then
  # shellcheck disable=SC2046
  "$PARE" --quiet compare --model "$SHARED/models/stories260k" --force --out "$OUT/stories260k" \
    $(recipes stories260k \
      "{ ids: $SHARED/models/stories260k/reference.calib_ids.safetensors, samples: 128, seq_len: 256 }" \
      "{ text: $SHARED/data/tinystories/tinystories_valid_head.txt, seq_len: 256, max_windows: 200, kld: true }" \
      int4-ch-sym 50 60 70 80 2:4 4:8)
fi
if [ -z "${SKIP_TINY:-}" ]; then
  # shellcheck disable=SC2046
  "$PARE" --quiet compare --model "$SHARED/models/tiny-llama" --force --out "$OUT/tiny-llama" \
    $(recipes tiny-llama \
      "{ text: $SHARED/data/tinystories/tinystories_train_head.txt, samples: 128, seq_len: 512, seed: 0 }" \
      "{ text: $SHARED/data/tinystories/tinystories_eval.txt, seq_len: 512, max_windows: 50, kld: true }" \
      int4-g32-sym 50 70 2:4)
fi

python3 - "$OUT" benches/sequential-modes.json <<'EOF'
import json, os, sys
out, dest = sys.argv[1], sys.argv[2]
table = {"produced_by": "benches/sequential_modes.sh (pare compare)", "models": {}}
for model, metric in (("stories260k", "ppl"), ("tiny-llama", "kld_mean")):
    path = os.path.join(out, model, "comparison.json")
    if not os.path.exists(path):
        continue
    rows = {}
    for r in json.load(open(path))["runs"]:
        if r["name"] == "dense":
            continue
        run, mode = r["name"].rsplit("-", 1)
        rows.setdefault(run, {})[mode] = {"ppl": r["ppl"], "kld_mean": r["kld_mean"]}
    table["models"][model] = {"metric": metric, "runs": rows}
    print(f"\n{model} ({'perplexity' if metric == 'ppl' else 'mean KLD'}; lower is better)")
    print(f"{'run':<18} {'block':>12} {'linear':>12}  better")
    for run, m in rows.items():
        b, l = m["block"][metric], m["linear"][metric]
        best = "same" if abs(b - l) <= 1e-9 * max(abs(b), 1e-30) else ("block" if b < l else "linear")
        print(f"{run:<18} {b:>12.5g} {l:>12.5g}  {best}")
json.dump(table, open(dest, "w"), indent=1)
print(f"\nwritten {dest}")
EOF
