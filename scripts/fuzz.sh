#!/usr/bin/env bash
# Runs every cargo-fuzz target for a while: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Default: 600 s each, all targets (frame, envelope, opening, resume, manifest, code). The cargo-fuzz
# crate is tests/fuzz (not part of the main workspace). Seeds come from tests/fuzz/seeds/<target>
# (the golden vectors); new inputs go to tests/fuzz/corpus/<target> (not committed), crashes to
# tests/fuzz/artifacts/<target>. Memory is capped (-rss_limit_mb) and each
# input must finish within 10 s, so unbounded allocation and hangs count as failures.
# cargo-fuzz needs nightly features; on a stable toolchain RUSTC_BOOTSTRAP=1 enables them.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame envelope opening resume manifest code)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
dir=tests/fuzz
for t in "${targets[@]}"; do
  mkdir -p "$dir/corpus/$t"
  echo "== $t: ${secs}s"
  start=$(date +%s)
  cargo fuzz run --fuzz-dir "$dir" "$t" "$dir/corpus/$t" "$dir/seeds/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=1024 -malloc_limit_mb=256 -timeout=10 -print_final_stats=1 2>&1 |
    grep -E "^(#[0-9]+.*(DONE|pulse)|Done|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|ERROR|panicked)" || true
  rc=${PIPESTATUS[0]}
  echo "== $t: exit $rc after $(( $(date +%s) - start ))s"
  [ "$rc" = 0 ] || exit "$rc"
done
