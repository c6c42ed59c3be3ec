#!/usr/bin/env bash
# Benchmark (not a test): how fast `pcp receive` reaches a sender. It prints a markdown table on
# stdout (progress and diagnostics go to stderr) of the time from the start of `pcp receive` to
# the moment it prints "Found the sender on ..., authenticated (...)", the median of BENCH_RUNS
# runs, each against a freshly started `pcp send` (new code), plus every run's time:
#
#   dht:  a simulated internet: a "public" segment (a Linux bridge in its own namespace,
#         10.98.1.0/24, no uplink, no route anywhere) with BENCH_HELPERS `pcp node` helpers
#         (DHT servers), each started with --bootstrap pointing at the ones started before it;
#         sender and receiver are public hosts on that segment and run
#         `--discovery dht --bootstrap <BENCH_BOOT_PEERS of the helpers>`. Target: <= 5 s.
#   mdns: a LAN: two namespaces joined by a veth pair (10.98.2.0/24, no route out), found by
#         mDNS (`--discovery mdns` unless BENCH_LAN_DISCOVERY says otherwise). Target: <= 1 s.
#
#   sudo scripts/bench-reach.sh
#   BENCH_RUNS=3 BENCH_SECTIONS=mdns BENCH_BUILD=0 sudo -E scripts/bench-reach.sh
#
# Each run: start `pcp send -v` on a tiny file, wait until it is ready (code printed and, with
# the DHT, "Published on the DHT."), wait a delay from BENCH_SETTLE (one row per value: 0 is a
# script that starts the receiver at once, 3 a person typing the code), then start
# `pcp receive -v --yes --no-progress --out DIR CODE`. Every stderr line of the
# receiver is stamped with $EPOCHREALTIME as it is read (a FIFO and a bash loop, no fork per
# line); the start is stamped just before the receiver is forked. A run counts only if the
# receiver printed the line, exited 0 and the file arrived intact.
#
# Which helpers the peers bootstrap from (BENCH_DHT_BOOT, one table row per mode):
#   disjoint  sender and receiver bootstrap from different helpers (run r: sender from helpers
#             3r.., receiver from the next BENCH_BOOT_PEERS after those, modulo BENCH_HELPERS), so
#             the provider record must be routed through the DHT to be found;
#   shared    both bootstrap from the same helpers (run r: helpers 3r..): a rendezvous.
# `disjoint` can succeed only if the helpers really form one DHT. As of commit bfdb6a1,
# `pcp node` ignores --bootstrap (helper_node starts its Node with `bootstrap: vec![]`), so the
# helpers never meet (after 5 minutes each logs "Failed to trigger bootstrap: No known peers")
# and every disjoint run fails after BENCH_WAIT.
#
# Network rules: everything runs inside namespaces this script creates (names pcpbench-PID-*);
# the namespaces have no default route, so nothing can leave them. Bootstrap peers are always
# given explicitly (never the public IPFS ones): the first helper bootstraps from an address on
# the bridge where nobody listens. No pcp runs in the host's namespace.
#
# Needs root (network namespaces) and iproute2 (installed with apt-get if missing). A trap kills
# every process it started and every process in its namespaces, deletes the namespaces (and so
# every veth and the bridge) and its temporary folder, on success, failure, Ctrl-C or SIGTERM.
#
# Options (environment):
#   BENCH_SECTIONS="dht mdns"  which sections to run (space- or comma-separated)
#   BENCH_RUNS=5             runs per row (the median is reported)
#   BENCH_HELPERS=10         `pcp node` helpers in the simulated internet
#   BENCH_BOOT_PEERS=3       helpers each of sender and receiver bootstraps from
#   BENCH_DHT_BOOT="shared disjoint"  bootstrap modes (rows), see above
#   BENCH_LAN_DISCOVERY=mdns  --discovery of both peers on the LAN (e.g. mdns,dht: then both
#                            also get --bootstrap to a dead address on the LAN)
#   BENCH_SEND_LISTEN=""     --listen of the sender (repeatable, space-separated); empty: pcp's
#                            default (all interfaces, TCP and QUIC, IPv4 and IPv6)
#   BENCH_WAIT=15            receiver --wait, seconds (a run that finds nobody fails after it)
#   BENCH_READY_WAIT=30      seconds to wait for the sender to be ready before starting anyway
#   BENCH_SETTLE="0 1 3"     seconds between "sender ready" and starting the receiver; one
#                            row per value
#   BENCH_RUST_LOG=""        RUST_LOG for every pcp (diagnostics, e.g. mdns_sd=debug; stamped
#                            lines cost time: compare such runs only with each other)
#   BENCH_LOGS=""            a folder to copy every log into (kept); default: logs are deleted,
#                            failed runs show their tails on stderr
#   BENCH_DIR=/tmp           parent of the temporary work dir (removed on exit)
#   BENCH_BUILD=1            0 to skip `cargo build --release` and use the binary already there
#   CARGO_TARGET_DIR         respected by the release build
set -euo pipefail
export LC_ALL=C
unset PCP_BOOTSTRAP PCP_CODE PCP_CLOCK_OFFSET_SECS
if [ -n "${BENCH_RUST_LOG:-}" ]; then
  export RUST_LOG=$BENCH_RUST_LOG
else
  unset RUST_LOG
fi

RUNS=${BENCH_RUNS:-5}
HELPERS=${BENCH_HELPERS:-10}
BOOT_PEERS=${BENCH_BOOT_PEERS:-3}
DHT_BOOT=${BENCH_DHT_BOOT:-shared disjoint}
LAN_DISCOVERY=${BENCH_LAN_DISCOVERY:-mdns}
SEND_LISTEN=${BENCH_SEND_LISTEN:-}
WAIT=${BENCH_WAIT:-15}
READY_WAIT=${BENCH_READY_WAIT:-30}
SETTLES=${BENCH_SETTLE:-0 1 3}
LOGS=${BENCH_LOGS:-}
BENCH_DIR=${BENCH_DIR:-/tmp}
BUILD=${BENCH_BUILD:-1}
SECTIONS=${BENCH_SECTIONS:-dht mdns}

TARGET_DHT_SECS=5
TARGET_MDNS_SECS=1

# 10.98.1.0/24: the public segment; 10.98.2.0/24: the LAN. The tests use 10.99.x and 10.77.0.
PUB_NET=10.98.1
LAN_NET=10.98.2
# A well-formed peer ID that belongs to nobody, for bootstrap addresses where nobody listens.
DEAD_PEER=12D3KooWJWV4U5hgva9axVdo9i1jcpNdrFTf1nerEr7D1dGetmyQ

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=pcpbench-$$
declare -a RESULT_ROWS=() # summary table rows
declare -a RUN_ROWS=()    # per-run table rows

LOG_TAG=bench-reach
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

positive_ints RUNS HELPERS BOOT_PEERS WAIT READY_WAIT
for v in ${SETTLES//,/ }; do
  [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_SETTLE must list numbers of seconds (got '$SETTLES')"
done
[ -n "${SETTLES//[ ,]/}" ] || die "BENCH_SETTLE is empty"
((HELPERS <= 60)) || die "BENCH_HELPERS must be at most 60"
[[ $BENCH_DIR != *[[:space:]]* ]] || die "BENCH_DIR must not contain white space"
pick_sections "$SECTIONS" dht mdns
for m in ${DHT_BOOT//,/ }; do
  case $m in
    disjoint) ((2 * BOOT_PEERS <= HELPERS)) ||
      die "disjoint bootstrap sets need BENCH_HELPERS >= 2 * BENCH_BOOT_PEERS" ;;
    shared) ((BOOT_PEERS <= HELPERS)) || die "BENCH_BOOT_PEERS > BENCH_HELPERS" ;;
    *) die "BENCH_DHT_BOOT: unknown mode '$m' (known: disjoint, shared)" ;;
  esac
done
[[ $LAN_DISCOVERY =~ ^(mdns|dht|none)(,(mdns|dht|none))*$ ]] ||
  die "BENCH_LAN_DISCOVERY must be a list of mdns, dht, none (got '$LAN_DISCOVERY')"
[[ ,$LAN_DISCOVERY, = *,mdns,* ]] || die "BENCH_LAN_DISCOVERY must include mdns"
[ "$(id -u)" = 0 ] || die "run as root: it creates network namespaces"
((BASH_VERSINFO[0] >= 5)) || die "needs bash >= 5 (\$EPOCHREALTIME)"

# ---------------------------------------------------------------------------------------------
# Cleanup: lib.sh's trap kills the processes (those in the namespaces too), deletes the
# namespaces and removes the work dir

CLEANUP_GRACE=50 # tenths of a second

# Run by the trap right before the work dir is removed.
cleanup_hook() {
  if [ -n "$WORK" ] && [ -n "$LOGS" ]; then
    mkdir -p "$LOGS" && cp -r "$WORK/logs/." "$LOGS/" 2>/dev/null &&
      log "logs copied to $LOGS"
  fi
}
on_exit_clean_up

# ---------------------------------------------------------------------------------------------
# The simulated internet's segment (namespace helpers: lib.sh)

HUB=""
PORTS=0

# The public segment: a bridge br0 in the hub namespace.
make_internet() {
  HUB=$TAG-hub
  add_ns "$HUB"
  ip -n "$HUB" link add br0 type bridge
  ip -n "$HUB" link set br0 up
}

# Plugs namespace $1 into the bridge as eth0 with address $PUB_NET.$2/24.
attach() {
  local ns=$1 host=$2 port
  PORTS=$((PORTS + 1))
  port=p$PORTS
  add_veth "$ns" eth0 "$HUB" "$port"
  ip -n "$HUB" link set "$port" master br0
  link_up "$HUB" "$port"
  link_up "$ns" eth0 "$PUB_NET.$host/24"
}

# ---------------------------------------------------------------------------------------------
# Running pcp

# Stamps each line of stdin with the time it was read.
stamp() {
  local line
  while IFS= read -r line; do
    printf '%s %s\n' "$EPOCHREALTIME" "$line"
  done
}

# start_pcp NAME NS ARGS...: starts pcp in namespace NS in the background, stdout to
# $LOGDIR/NAME.out, stderr stamped line by line into $LOGDIR/NAME.err. Sets STARTED (the time
# just before the fork), PCP_PID and STAMP_PID.
start_pcp() {
  local name=$1 ns=$2
  shift 2
  rm -f "$LOGDIR/$name.fifo"
  mkfifo "$LOGDIR/$name.fifo"
  stamp <"$LOGDIR/$name.fifo" >"$LOGDIR/$name.err" &
  STAMP_PID=$!
  LIVE_PIDS+=("$STAMP_PID")
  STARTED=$EPOCHREALTIME
  # `ip netns exec` execs the command: $! is pcp itself.
  ip netns exec "$ns" "$PCP" "$@" <"/dev/null" >"$LOGDIR/$name.out" 2>"$LOGDIR/$name.fifo" &
  PCP_PID=$!
  LIVE_PIDS+=("$PCP_PID")
}

# The stamp of the first stderr line of NAME that contains TEXT (empty if none yet).
stamp_of() {
  awk -v t="$2" 'index($0, t) { print $1; exit }' "$LOGDIR/$1.err" 2>/dev/null || true
}

# Waits up to $3 seconds for a stderr line of NAME containing TEXT while pid $4 lives; prints
# its stamp (nothing if it never came).
await_line() {
  local name=$1 text=$2 secs=$3 pid=$4 deadline s
  deadline=$(awk -v n="$EPOCHREALTIME" -v s="$secs" 'BEGIN { printf "%.6f", n + s }')
  while :; do
    s=$(stamp_of "$name" "$text")
    if [ -n "$s" ]; then
      printf '%s' "$s"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    awk -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN { exit !(n < d) }' || break
    sleep 0.01
  done
  # The process may have printed the line just before it exited.
  stamp_of "$name" "$text"
}

# Waits up to $2 seconds for pid $1 (a child of this shell) to exit and sets EXIT_RC to its
# exit status, or to "timeout" (then kills it). Not for a command substitution: only this shell
# can wait for its children.
await_exit() {
  local pid=$1 secs=$2 i
  EXIT_RC=0
  for ((i = 0; i < secs * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$pid" 2>/dev/null; then
    stop_pid "$pid"
    EXIT_RC=timeout
    return 0
  fi
  wait "$pid" 2>/dev/null || EXIT_RC=$?
  forget_pid "$pid"
}

# Waits for the stamping loop of a process that has exited (it ends at EOF).
reap_stamp() {
  local pid=$1 i
  for ((i = 0; i < 40; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  stop_pid "$pid"
}

bootstrap_args() {
  local a
  for a in "$@"; do
    printf -- '--bootstrap\n%s\n' "$a"
  done
}

# Shows the last lines of a run's logs on stderr.
show_tails() {
  local f
  for f in "$@"; do
    [ -s "$LOGDIR/$f" ] || continue
    printf '[bench-reach] --- %s (last 15 lines):\n' "$f" >&2
    tail -n 15 "$LOGDIR/$f" | sed 's/^/    /' >&2
  done
}

# ---------------------------------------------------------------------------------------------
# The simulated internet's helpers

declare -a HELPER_TCP=()  # one TCP multiaddr (with /p2p/) per helper
declare -a HELPER_ALL=()  # every address the helpers printed

start_helpers() {
  local i ns host a out deadline pid
  for ((i = 0; i < HELPERS; i++)); do
    ns=$TAG-node$i
    host=$((11 + i))
    add_ns "$ns"
    attach "$ns" "$host"
    a=$PUB_NET.$host
    local -a boot=()
    if ((i == 0)); then
      boot=("/ip4/$PUB_NET.99/tcp/4001/p2p/$DEAD_PEER")
    else
      boot=("${HELPER_ALL[@]}")
    fi
    local -a args=(node -v)
    mapfile -t -O 2 args < <(bootstrap_args "${boot[@]}")
    args+=(--listen "/ip4/$a/tcp/4001" --listen "/ip4/$a/udp/4001/quic-v1")
    await_links "$ns"
    start_pcp "node$i" "$ns" "${args[@]}"
    pid=$PCP_PID
    out=$LOGDIR/node$i.out
    deadline=$((SECONDS + 20))
    while :; do
      if grep -q "^/ip4/$a/tcp/4001/p2p/" "$out" 2>/dev/null &&
        grep -q "^/ip4/$a/udp/4001/quic-v1/p2p/" "$out" 2>/dev/null; then
        break
      fi
      if ! kill -0 "$pid" 2>/dev/null; then
        show_tails "node$i.out" "node$i.err"
        die "pcp node $i exited before printing its addresses"
      fi
      if ((SECONDS >= deadline)); then
        show_tails "node$i.out" "node$i.err"
        die "pcp node $i printed no TCP and QUIC address on $a within 20 s"
      fi
      sleep 0.02
    done
    HELPER_TCP+=("$(grep -m1 "^/ip4/$a/tcp/4001/p2p/" "$out")")
    mapfile -t -O "${#HELPER_ALL[@]}" HELPER_ALL < <(grep "^/ip4/$a/.*/p2p/" "$out")
  done
  log "$HELPERS helpers up on $PUB_NET.11-$((10 + HELPERS))"
}

# The TCP addresses of BOOT_PEERS helpers starting at index $1 (modulo HELPERS).
helper_set() {
  local first=$1 j
  for ((j = 0; j < BOOT_PEERS; j++)); do
    printf '%s\n' "${HELPER_TCP[$(((first + j) % HELPERS))]}"
  done
}

helper_numbers() {
  local first=$1 j s=""
  for ((j = 0; j < BOOT_PEERS; j++)); do
    s+="${s:+,}$(((first + j) % HELPERS))"
  done
  printf '%s' "$s"
}

# ---------------------------------------------------------------------------------------------
# One run

# one_run ROW RUN SENDER_NS RECEIVER_NS READY_TEXT SENDER_ARGS... -- RECEIVER_ARGS...
# Sets RUN_SECS (empty on failure), RUN_NOTE (how it was found, or why it failed), RUN_READY
# (sender start to ready, seconds).
one_run() {
  local row=$1 r=$2 sns=$3 rns=$4 ready_text=$5
  shift 5
  local -a sargs=() rargs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    sargs+=("$1")
    shift
  done
  shift
  rargs=("$@")
  local s="$row-$r-send" v="$row-$r-recv" spid sstamp rpid rstamp t_send t_code t_ready t_recv t_found
  local code out rc
  RUN_SECS=""
  RUN_NOTE=""
  RUN_READY=""
  out=$WORK/out/$row-$r
  mkdir -p "$out"

  start_pcp "$s" "$sns" send -v --no-progress "${sargs[@]}" "$WORK/src/tiny.txt"
  spid=$PCP_PID sstamp=$STAMP_PID t_send=$STARTED
  code=""
  local deadline=$((SECONDS + 20))
  while [ -z "$code" ]; do
    # (The file may not exist yet: the background shell creates it.)
    code=$(sed -n 's/^Code is: //p' "$LOGDIR/$s.out" 2>/dev/null | head -n 1) || true
    [ -n "$code" ] && break
    if ! kill -0 "$spid" 2>/dev/null || ((SECONDS >= deadline)); then
      RUN_NOTE="sender printed no code"
      show_tails "$s.out" "$s.err"
      stop_pid "$spid"
      reap_stamp "$sstamp"
      return 0
    fi
    sleep 0.02
  done
  t_code=$EPOCHREALTIME
  t_ready=$(await_line "$s" "$ready_text" "$READY_WAIT" "$spid")
  if [ -z "$t_ready" ]; then
    if ! kill -0 "$spid" 2>/dev/null; then
      RUN_NOTE="sender exited before it was ready"
      show_tails "$s.out" "$s.err"
      reap_stamp "$sstamp"
      return 0
    fi
    log "$row run $r: sender not ready (no '$ready_text') after $READY_WAIT s; starting the receiver anyway"
    RUN_READY="not ready"
  else
    RUN_READY=$(elapsed "$t_send" "$t_ready" %.3f)
  fi
  sleep "$SETTLE"

  start_pcp "$v" "$rns" receive -v --yes --no-progress --wait "${WAIT}s" --out "$out" \
    "${rargs[@]}" "$code"
  rpid=$PCP_PID rstamp=$STAMP_PID t_recv=$STARTED
  t_found=$(await_line "$v" "Found the sender on" $((WAIT + 15)) "$rpid")
  await_exit "$rpid" 30
  rc=$EXIT_RC
  reap_stamp "$rstamp"
  # The sender exits by itself once the receiver has everything.
  local src=stopped
  if [ "$rc" = 0 ]; then
    await_exit "$spid" 10
    src=$EXIT_RC
  else
    stop_pid "$spid"
  fi
  reap_stamp "$sstamp"

  if [ -z "$t_found" ]; then
    RUN_NOTE="not found (receiver exit $rc)"
  elif [ "$rc" != 0 ]; then
    RUN_NOTE="receiver exit $rc"
  elif ! cmp -s "$WORK/src/tiny.txt" "$out/tiny.txt"; then
    RUN_NOTE="file missing or different"
  else
    RUN_SECS=$(elapsed "$t_recv" "$t_found" %.3f)
    RUN_NOTE=$(awk -v t="Found the sender on" 'index($0, t) { $1 = ""; sub(/^ /, ""); print; exit }' \
      "$LOGDIR/$v.err")
    # "the local network (mDNS), direct TCP via /ip4/10.98.2.1/tcp/40223" (no peer ID)
    RUN_NOTE=$(printf '%s' "${RUN_NOTE#Found the sender on }" |
      sed -e 's/, authenticated (/, /' -e 's/)\.$//' -e 's#/p2p/[1-9A-HJ-NP-Za-km-z]*##g')
    [ "$src" = 0 ] || RUN_NOTE+=" (sender exit $src)"
  fi
  if [ -z "$RUN_SECS" ]; then
    log "$row run $r FAILED: $RUN_NOTE"
    show_tails "$v.err" "$s.err"
  else
    log "$row run $r: $RUN_SECS s (sender ready after $RUN_READY s): $RUN_NOTE"
  fi
  : "$t_code"
}

# record LABEL TARGET_SECS TIMES_FILE NOTES_FILE: a summary row and per-run rows (for the
# current $SETTLE).
record() {
  local label=$1 target=$2 times=$3 notes=$4 ok med met runs delay="$SETTLE s later"
  [[ $SETTLE =~ ^0*(\.0*)?$ ]] && delay="at once"
  ok=$(grep -c . "$times" || true)
  med=$(median_lines %.3f <"$times")
  runs=$(awk -F'\037' '{ printf "%s%s", (NR > 1 ? ", " : ""), ($1 == "" ? "fail" : $1) }' "$notes")
  if [ -z "$med" ]; then
    met="no (nothing found)"
    med="—"
  elif ((ok < RUNS)); then
    met="no ($((RUNS - ok)) of $RUNS runs failed)"
    med="$med s"
  elif awk -v m="$med" -v t="$target" 'BEGIN { exit !(m <= t) }'; then
    met=yes
    med="$med s"
  else
    met=no
    med="$med s"
  fi
  RESULT_ROWS+=("| $label | $delay | $med | $ok/$RUNS | $runs | ≤ $target s | $met |")
  local i=0 line t n rd
  # (Fields are separated by \x1f, not a tab: read would merge an empty first field.)
  while IFS=$'\x1f' read -r t rd n; do
    i=$((i + 1))
    RUN_ROWS+=("| $label | $delay | $i | ${t:-fail} | $rd | $n |")
  done <"$notes"
}

# ---------------------------------------------------------------------------------------------
# Sections

bench_dht() {
  make_internet
  start_helpers
  local snd=$TAG-snd rcv=$TAG-rcv
  add_ns "$snd"
  attach "$snd" 21
  add_ns "$rcv"
  attach "$rcv" 22
  await_links
  local -a listen=()
  local l
  for l in $SEND_LISTEN; do
    listen+=(--listen "$l")
  done
  local mode r first rfirst
  for mode in ${DHT_BOOT//,/ }; do
    for SETTLE in ${SETTLES//,/ }; do
      local times=$WORK/dht-$mode-$SETTLE.times notes=$WORK/dht-$mode-$SETTLE.notes
      : >"$times"
      : >"$notes"
      log "DHT, bootstrap mode $mode, receiver $SETTLE s after the sender is ready: $RUNS runs"
      for ((r = 1; r <= RUNS; r++)); do
        first=$(((3 * (r - 1)) % HELPERS))
        if [ "$mode" = disjoint ]; then
          rfirst=$(((first + BOOT_PEERS) % HELPERS))
        else
          rfirst=$first
        fi
        local -a sboot=() rboot=()
        mapfile -t sboot < <(helper_set "$first")
        mapfile -t sboot < <(bootstrap_args "${sboot[@]}")
        mapfile -t rboot < <(helper_set "$rfirst")
        mapfile -t rboot < <(bootstrap_args "${rboot[@]}")
        log "run $r: sender bootstraps from helpers $(helper_numbers "$first"), receiver from $(helper_numbers "$rfirst")"
        one_run "dht-$mode-$SETTLE" "$r" "$snd" "$rcv" "Published on the DHT." \
          --discovery dht "${sboot[@]}" "${listen[@]}" -- --discovery dht "${rboot[@]}"
        [ -n "$RUN_SECS" ] && printf '%s\n' "$RUN_SECS" >>"$times"
        printf '%s\x1f%s\x1f%s\n' "$RUN_SECS" "$RUN_READY" \
          "helpers $(helper_numbers "$first") / $(helper_numbers "$rfirst"): $RUN_NOTE" >>"$notes"
      done
      local what="both from the same helpers"
      [ "$mode" = disjoint ] && what="from different helpers"
      record "DHT: $HELPERS helpers, public peers bootstrapping from $BOOT_PEERS helpers each, $what" \
        "$TARGET_DHT_SECS" "$times" "$notes"
    done
  done
  # Helpers still alive? (a crash would explain failures)
  local i
  for ((i = 0; i < HELPERS; i++)); do
    if ! ip netns pids "$TAG-node$i" 2>/dev/null | grep -q .; then
      log "warning: pcp node $i is no longer running"
      show_tails "node$i.err"
    fi
  done
}

bench_mdns() {
  local a=$TAG-lana b=$TAG-lanb
  add_ns "$a"
  add_ns "$b"
  add_veth "$a" vA "$b" vB
  link_up "$a" vA "$LAN_NET.1/24"
  link_up "$b" vB "$LAN_NET.2/24"
  await_links
  local -a extra=(--discovery "$LAN_DISCOVERY")
  if [[ ,$LAN_DISCOVERY, = *,dht,* ]]; then
    # Never the default (public) bootstrap peers: an address on the LAN where nobody listens.
    extra+=(--bootstrap "/ip4/$LAN_NET.99/tcp/4001/p2p/$DEAD_PEER")
  fi
  local -a listen=()
  local l
  for l in $SEND_LISTEN; do
    listen+=(--listen "$l")
  done
  local times notes r
  for SETTLE in ${SETTLES//,/ }; do
    times=$WORK/mdns-$SETTLE.times
    notes=$WORK/mdns-$SETTLE.notes
    : >"$times"
    : >"$notes"
    log "mDNS on a veth LAN (--discovery $LAN_DISCOVERY), receiver $SETTLE s after the sender is ready: $RUNS runs"
    for ((r = 1; r <= RUNS; r++)); do
      # The sender's first stderr line ("Sharing ...") comes right after its code: ready.
      one_run "mdns-$SETTLE" "$r" "$a" "$b" "Sharing " "${extra[@]}" "${listen[@]}" -- "${extra[@]}"
      [ -n "$RUN_SECS" ] && printf '%s\n' "$RUN_SECS" >>"$times"
      printf '%s\x1f%s\x1f%s\n' "$RUN_SECS" "$RUN_READY" "$RUN_NOTE" >>"$notes"
    done
    record "mDNS: two namespaces on a veth pair, --discovery $LAN_DISCOVERY" "$TARGET_MDNS_SECS" \
      "$times" "$notes"
  done
}

# ---------------------------------------------------------------------------------------------

ensure_tools ip=iproute2 pgrep=procps
build_pcp
make_work pcp-bench-reach
LOGDIR=$WORK/logs
mkdir -p "$LOGDIR" "$WORK/src" "$WORK/out"
# Run a copy: a rebuild of the target folder during the benchmark must not change the binary
# between runs.
cp "$PCP" "$WORK/pcp"
BINARY=$PCP
PCP=$WORK/pcp
printf 'reach\n' >"$WORK/src/tiny.txt"
log "binary: $BINARY (run from a copy, sha256 $(sha256sum "$PCP" | cut -c1-16)...); work dir: $WORK; namespaces: $TAG-*"

for sec in "${PICKED[@]}"; do
  "bench_$sec"
done

version=$("$PCP" --version 2>/dev/null || echo pcp)
if [ "$BUILD" = 1 ]; then
  commit=$(git_head)
  ! tree_dirty || commit+=" plus uncommitted changes"
  built="built from $commit"
else
  built="prebuilt binary of $(date -u -r "$BINARY" '+%Y-%m-%d %H:%M UTC')"
fi
echo
echo "### Reach: \`pcp receive\` start to \"Found the sender on ..., authenticated\""
echo
echo "$version ($built), $(nproc) cores, $(date -u +%Y-%m-%d). Median of $RUNS runs, each against a fresh sender (new code); the receiver starts at once or some seconds after the sender is ready (code printed; with the DHT, published)."
echo
table_head path "receiver started" median ok "runs (s)" target met
printf '%s\n' "${RESULT_ROWS[@]}"
echo
table_head path "receiver started" run s "sender ready after (s)" "found on"
printf '%s\n' "${RUN_ROWS[@]}"
