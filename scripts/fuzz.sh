#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/fuzz_targets/) for a while each. Not part of CI: too slow.
# Usage: scripts/fuzz.sh [target|all] [seconds per target, default 120]
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer, coverage instrumentation); on a stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks them (set here). The sanitizer defaults to none: the
# crate has no unsafe code, the fuzzers look for panics and wrong answers; set
# FUZZ_SANITIZER=address for ASan. Crashes land in fuzz/artifacts/TARGET/; the corpus grows in
# fuzz/corpus/TARGET/ (ignored by git), seeded from the committed fuzz/seeds/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-all}
seconds=${2:-120}
sanitizer=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing: cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

mapfile -t all < <(cargo fuzz list --fuzz-dir fuzz)
if [[ $target == all ]]; then
  targets=("${all[@]}")
else
  printf '%s\n' "${all[@]}" | grep -qx "$target" || {
    echo "scripts/fuzz.sh: no target $target; targets: ${all[*]}" >&2
    exit 2
  }
  targets=("$target")
fi

for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus"
  if [[ -d fuzz/seeds/$t ]]; then
    cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  fi
  echo "== fuzzing $t for ${seconds}s (sanitizer $sanitizer)"
  # -timeout: one input taking over 10 s is a hang worth an artifact.
  cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$t" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1
done
