# Helpers shared by scripts/bench.sh and scripts/bench-reach.sh (sourced, not run).
# The sourcing script sets LOG_TAG, ROOT, BUILD (1: cargo build --release first) and declares
# the array LIVE_PIDS of the background processes it started and has not reaped yet.

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

# Kills a process and its descendants, children first, by pid (SIGTERM unless told otherwise).
kill_tree() {
  local pid=$1 sig=${2:-TERM} child
  for child in $(pgrep -P "$pid" 2>/dev/null || true); do
    kill_tree "$child" "$sig"
  done
  kill -s "$sig" "$pid" 2>/dev/null || true
}

any_live() {
  local pid
  for pid in "${LIVE_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && return 0
  done
  return 1
}

forget_pid() {
  local pid=$1 i
  for i in "${!LIVE_PIDS[@]}"; do
    [ "${LIVE_PIDS[$i]}" = "$pid" ] && unset 'LIVE_PIDS[i]'
  done
  return 0
}

# Builds the release binary (unless BUILD=0) and sets PCP to it, wherever cargo puts it.
build_pcp() {
  if [ "$BUILD" = 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) >&2 || die "cargo build --release failed"
  fi
  local target
  target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    grep -o '"target_directory":"[^"]*"' | sed 's/.*:"\(.*\)"/\1/') || true
  if [ -z "$target" ]; then
    target=${CARGO_TARGET_DIR:-target}
    [[ $target = /* ]] || target=$ROOT/$target
  fi
  PCP=$target/release/pcp
  [ -x "$PCP" ] || die "no binary at $PCP (build it, or run without BENCH_BUILD=0)"
}
