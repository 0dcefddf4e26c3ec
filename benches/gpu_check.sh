#!/usr/bin/env bash
# The one GPU check of issue 17, for a single device call on the lent GPU machine (which has no
# Rust toolchain: everything is built here and carried).
#
#   benches/gpu_check.sh prepare [MODEL...]   # here: build with --features vulkan (dev profile,
#                                             # optimised), strip, pack .gpu.tar.xz (binaries,
#                                             # models, eval text) and .gl (Vulkan loader debs);
#                                             # default models: stories260k tiny-qwen3. 64 MiB
#                                             # travel per call, the tracked tree included: the four
#                                             # binaries are ~43 MB packed, so one more model at most
#                                             # (tiny-qwen3-moe alone in a second pack)
#   benches/gpu_check.sh run                  # there: device `run` with carry [".gpu.tar.xz", ".gl"]
#                                             # (.gl: the Vulkan loader packages, see the device
#                                             # README). Here on lavapipe, steps 1 and 3 run;
#                                             # step 2 crashes in burn's shared-memory kernels
#                                             # (a cubecl-spirv bug, kernels/README.md)
#
# `run` prints, in order:
#   1. the kernels against their CPU references (kernels/tests/gpu.rs);
#   2. the golden tests on the GPU for the packed models (logits within 1e-3, perplexity to 4
#      significant digits);
#   3. int4 dequant-GEMM bandwidth over a copy's, 2:4 sparse over dense, 7B down_proj shape;
#   4. forward tokens/s of a generated 1B-shaped model: pare on Vulkan against transformers
#      (SDPA and eager) on CUDA, same tokens;
#   5. SparseGPT 50% and GPTQ int4 of one 7B-shaped block, timed.
set -uo pipefail
cd "$(dirname "$0")/.."
G=.gpu
case "${1:-run}" in
prepare)
  set -e
  shift
  models=("$@")
  [ ${#models[@]} -gt 0 ] || models=(stories260k tiny-qwen3)
  for e in /.gpu/ /.gpu.tar.xz /.gl/; do
    grep -qx "$e" .git/info/exclude 2>/dev/null || echo "$e" >>.git/info/exclude
  done
  rm -rf "$G" && mkdir -p "$G/bin" "$G/shared/models" "$G/shared/data/tinystories"
  exe() { # cargo args... → the built test/example executable
    cargo "$@" --message-format=json 2>/dev/null \
      | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -1
  }
  cargo build --features vulkan --bin pare   # the dev profile is optimised (opt-level 2, dependencies 3)
  T="${CARGO_TARGET_DIR:-target}/debug"
  cp "$T/pare" "$G/bin/pare"
  cp "$(exe test --features vulkan --no-run --test engine_golden)" "$G/bin/engine_golden"
  cp "$(exe test --features vulkan --no-run -p pare-kernels --test gpu)" "$G/bin/kernels_gpu"
  cp "$(exe build --features vulkan -p pare-kernels --example gpu_bench)" "$G/bin/gpu_bench"
  strip "$G"/bin/*
  for m in "${models[@]}"; do cp -r "../shared/models/$m" "$G/shared/models/"; done
  cp ../shared/data/tinystories/tinystories_eval.txt "$G/shared/data/tinystories/"
  # The Vulkan loader the GPU machine may lack (the device README): Debian's packages, carried.
  if ! ls .gl/*.deb >/dev/null 2>&1; then
    mkdir -p .gl /tmp/amd64/partial
    o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
    apt-get "${o[@]}" update -qq
    (cd .gl && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  fi
  tar -cf - "$G" | xz -T0 -6 >"$G.tar.xz"
  du -sh "$G"/bin/* "$G.tar.xz" .gl | sed 's/^/  /'
  tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  total=$(( $(stat -c %s "$G.tar.xz") + $(du -sb .gl | cut -f1) + tree ))
  echo "travels: $((total / 1048576)) MiB of 64 (pack, loaders and the tracked tree)"
  if [ "$total" -gt $((64 << 20)) ]; then
    echo "over the 64 MiB a device call carries: name fewer models" >&2; exit 2
  fi
  echo 'device run: command "benches/gpu_check.sh run", carry [".gpu.tar.xz", ".gl"]'
  ;;
run)
  if [ ! -d "$G/bin" ] && [ -f "$G.tar.xz" ]; then   # python's lzma: no xz binary needed there
    python3 -c 'import tarfile; tarfile.open(".gpu.tar.xz").extractall(".")'
  fi
  [ -d "$G/bin" ] || { echo "no $G/bin: run 'benches/gpu_check.sh prepare' first" >&2; exit 2; }
  if ls .gl/*.deb >/dev/null 2>&1; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
  if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  fi
  export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"   # wgpu's Vulkan instance asks for it
  DEV="${DEV:-vulkan}"
  B="$G/bin"
  W="$(mktemp -d)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  echo "== 1. kernels vs CPU references"
  "$B/kernels_gpu" --test-threads 1 2>&1 | grep -E "^test |test result|panicked"
  echo "== 2. golden tests on $DEV"
  filters=()
  for m in "$G"/shared/models/*/; do
    m="$(basename "$m")"; filters+=("${m//-/_}_matches_golden")
  done
  for f in "${filters[@]}"; do
    PARE_TEST_DEVICE="$DEV" PARE_SHARED="$G/shared" "$B/engine_golden" --exact "$f" \
      --nocapture --test-threads 1 2>&1 | grep -E "ppl|test result|panicked|differs"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || echo "$f: exit $rc (139: a crash in the Vulkan driver)"
  done
  echo "== 3. kernel bandwidth (7B down_proj 4096x11008)"
  # shellcheck disable=SC2086  # BENCH_ARGS: e.g. "512x1024 --weights 2 --reps 3" on lavapipe
  "$B/gpu_bench" ${BENCH_ARGS:-4096x11008}
  echo "== 4. forward, generated 1B-shaped model"
  tok="$(ls -d "$G"/shared/models/* | head -1)"
  if python3 -c "import torch, transformers, safetensors" 2>/dev/null; then
    python3 benches/gen_llama.py "$W/1b" --shape 1b --tokenizer "$tok"
    "$B/pare" --quiet --json --device "$DEV" bench forward --model "$W/1b" --seq-len 512 \
      --sequences 16 | python3 -c 'import json,sys; d=json.load(sys.stdin); print("pare", d["tokens_per_second"], "tokens/s")'
    dev=cpu; python3 -c "import torch; exit(0 if torch.cuda.is_available() else 1)" && dev=cuda
    for attn in sdpa eager; do
      python3 benches/vs_pytorch.py --model "$W/1b" --seq-len 512 --sequences 16 --batch 8 \
        --attn "$attn" --device "$dev"
    done
    rm -rf "$W/1b"
    echo "== 5. one 7B-shaped block: SparseGPT 50% and GPTQ int4 (16 x 256 calibration)"
    python3 benches/gen_llama.py "$W/7b" --shape 7b --layers 1 --tokenizer "$tok"
    for step in "sparsegpt: { sparsity: 0.5 }" "gptq: { format: int4-g128-sym }"; do
      printf 'calibration: { text: %s, samples: 16, seq_len: 256, seed: 0 }\nsteps:\n  - %s\nexport: { format: dense }\n' \
        "$(pwd)/calibration/tinystories-train-head.txt" "$step" >"$W/r.yaml"
      s=$(date +%s.%N)
      "$B/pare" --quiet --device "$DEV" compress --model "$W/7b" --recipe "$W/r.yaml" --out "$W/out" --force >/dev/null \
        && echo "$step: $(python3 -c "import time; print(f'{time.time() - $s:.1f} s')")" || echo "$step: failed"
      rm -rf "$W/out"
    done
  else
    echo "no torch/transformers/safetensors here: steps 4 and 5 skipped"
  fi
  rm -rf "$W"
  ;;
*) echo "usage: benches/gpu_check.sh prepare [MODEL...] | run" >&2; exit 2 ;;
esac
