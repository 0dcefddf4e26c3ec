#!/usr/bin/env bash
# The fuzz bench: a million mutated inputs per parser (safetensors header, shard index,
# config.json, recipe, task file), seeded with the real files; prints inputs, time and crashes
# per parser. A crash fails the run and leaves the input under the target folder
# (fuzz-crashes/); add it to `crash_regressions` in tests/fuzz.rs once fixed.
#
#   benches/fuzz.sh            # PARE_FUZZ_INPUTS=N for another count
set -euo pipefail
cd "$(dirname "$0")/.."
PARE_FUZZ_INPUTS="${PARE_FUZZ_INPUTS:-1000000}" cargo test --quiet --locked --test fuzz \
  parsers_survive_mutated_real_files -- --nocapture 2>&1 | grep -E "inputs|panicked|FAILED|test result"
