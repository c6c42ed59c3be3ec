#!/usr/bin/env bash
# Benchmark (not a test), two sections in one run, each printing a markdown table on stdout
# (progress goes to stderr). Both run across a veth pair (MTU 1500, like an Ethernet LAN)
# between two network namespaces they create: the sender and a private sshd in one, the
# receiver, the mounts, scp and sshfs in the other (BENCH_NET=loopback: all on 127.0.0.1).
#   receive: `pcp receive` against `scp` of the same data (scripts/bench-receive.sh); the
#            small files with pcp's default discovery (mDNS on the veth, no --peer);
#   mount:   `pcp mount` against `sshfs` (default options) of the same data: cold
#            sequential read, `cp -r` of small files, random 4 KiB preads, `find` + stat of a
#            100,000-entry tree, and the mount's peak RSS while reading a 4 GiB file
#            (scripts/bench-mount.sh).
#
#   sudo scripts/bench.sh                       # defaults: 3 runs, 1 GiB file, 2,000 x 4 KiB
#   BENCH_BIG_MIB=64 BENCH_RUNS=1 scripts/bench.sh
#   BENCH_NET=loopback scripts/bench.sh         # the same on 127.0.0.1 (MTU 65536)
#   BENCH_SECTIONS=mount BENCH_HUGE_MIB=256 BENCH_TREE_DIRS=10 scripts/bench.sh
#
# It checks the options of every section, builds the release binary once, runs the section
# scripts one after the other (receive first) and then prints their tables in that order; the
# environment bullets of each table, pcp's warnings and the run time cover the whole run.
#
# Needs root: the sections drop the page caches before every timed transfer, install missing
# Debian packages (openssh-server, openssh-client, time, sshfs, fuse3, ...), create network
# namespaces, run a private sshd and mount FUSE filesystems (every mount is undone and every
# namespace deleted on exit, even on failure). All traffic stays inside those namespaces, which
# have no default route (with BENCH_NET=loopback: on 127.0.0.1, pcp with --discovery none).
#
# Options (environment):
#   BENCH_SECTIONS="receive mount"  which sections to run (space- or comma-separated)
#   BENCH_BUILD=1           0 to skip `cargo build --release` and use the binary already there
#   CARGO_TARGET_DIR        respected by the release build
#   Every other option goes to the section scripts, which document it in their headers:
#   BENCH_RUNS, BENCH_BIG_MIB, BENCH_SMALL_FILES, BENCH_SMALL_KIB, BENCH_DIR, BENCH_SSH_PORT,
#   BENCH_TIMEOUT, BENCH_DROP_CACHES, BENCH_NET, BENCH_BUSY_LIMIT and BENCH_QUIET_WAIT (both
#   sections); BENCH_RECV_DST (receive);
#   BENCH_HUGE_MIB, BENCH_PREADS, BENCH_TREE_DIRS, BENCH_TREE_FILES, BENCH_SSHFS_FIND_LIMIT,
#   BENCH_CP_DST and BENCH_MOUNT_DATA (mount).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=bench
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
SUITE="" # the environment bullets are this script's to write
loopback_options
pick_sections "${BENCH_SECTIONS:-receive mount}" receive mount
SECTIONS=("${PICKED[@]}")
DO_MOUNT=0
[[ " ${SECTIONS[*]} " != *" mount "* ]] || DO_MOUNT=1
need_root
for sec in "${SECTIONS[@]}"; do
  "$ROOT/scripts/bench-$sec.sh" --check
done

# A section cleans up after itself: on exit, only ask it to stop, and give it time.
CLEANUP_TREE=0
CLEANUP_GRACE=600
on_exit_clean_up

# Prints a section's report with the environment bullets in place of their marker.
print_section() {
  local line
  while IFS= read -r line; do
    if [ "$line" = "$ENV_MARKER" ]; then
      report_env
    else
      printf '%s\n' "$line"
    fi
  done <"$1"
}

main() {
  if [ "$DO_MOUNT" = 1 ]; then
    ensure_tools "${SSH_TOOLS[@]}" "${MOUNT_TOOLS[@]}"
  else
    ensure_tools "${SSH_TOOLS[@]}"
  fi
  record_commit
  build_pcp
  make_work suite
  WARNINGS=$WORK/pcp-warnings
  for sec in "${SECTIONS[@]}"; do
    BENCH_SUITE_DIR=$WORK BENCH_BUILD=0 "$ROOT/scripts/bench-$sec.sh" >"$WORK/$sec.md" &
    reap $! || exit
  done
  state_load "$WORK/state"
  for sec in "${SECTIONS[@]}"; do
    [ "$sec" = "${SECTIONS[0]}" ] || echo
    print_section "$WORK/$sec.md"
  done
  report_end
}

main "$@"
