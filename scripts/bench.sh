#!/usr/bin/env bash
# Benchmark (not a test), two sections in one run, each printing a markdown table on stdout
# (progress goes to stderr):
#   receive: `pcp receive` against `scp` of the same data on loopback;
#   mount:   `pcp mount` against `sshfs` (default options) of the same data on loopback: cold
#            sequential read, `cp -r` of small files, random 4 KiB preads, `find` + stat of a
#            100,000-entry tree, and the mount's peak RSS while reading a 4 GiB file.
#
#   sudo scripts/bench.sh                       # defaults: 3 runs, 1 GiB file, 2,000 x 4 KiB
#   BENCH_BIG_MIB=64 BENCH_RUNS=1 scripts/bench.sh
#   BENCH_SECTIONS=mount BENCH_HUGE_MIB=256 BENCH_TREE_DIRS=10 scripts/bench.sh
#
# Needs root: it drops the page caches before every timed transfer, installs missing Debian
# packages (openssh-server, openssh-client, time, sshfs, fuse3, ...), runs a private sshd on
# 127.0.0.1 and mounts FUSE filesystems (every one is unmounted on exit, even on failure).
# All traffic stays on loopback: pcp runs with --discovery none and 127.0.0.1 addresses only.
#
# Options (environment):
#   BENCH_SECTIONS="receive mount"  which sections to run (space- or comma-separated)
#   BENCH_RUNS=3            runs per workload and tool (the median is reported)
#   BENCH_BIG_MIB=1024      size of the random big file, MiB (both sections)
#   BENCH_SMALL_FILES=2000  number of small files (both sections)
#   BENCH_SMALL_KIB=4       size of each small file, KiB
#   BENCH_HUGE_MIB=4096     mount: file read sequentially while the mount's peak RSS is measured
#   BENCH_PREADS=2000       mount: random 4 KiB preads of the big file (fixed seed)
#   BENCH_TREE_DIRS=100     mount: folders of the find/stat tree ...
#   BENCH_TREE_FILES=1000   ... and files of 16 bytes in each
#   BENCH_SSHFS_FIND_LIMIT=120  mount: seconds after which sshfs's find is abandoned (skipped)
#   BENCH_CP_DST=tmpfs      mount: where `cp -r` writes: tmpfs (a private 256 MiB tmpfs, so the
#                           local disk's file creation, ~0.2-0.5 ms per file on this VM's ext4,
#                           does not hide the mounts' own costs) or disk (under BENCH_DIR)
#   BENCH_MOUNT_DATA=$BENCH_DIR/mount-data  mount: its data set (~5 GiB with the defaults),
#                           created once and KEPT for later runs (each part is remade only when
#                           its size options change); delete it to reclaim the space
#   BENCH_DIR=/tmp/pcp-bench  parent of the temporary work dir (removed on exit)
#   BENCH_SSH_PORT=2222     first port tried for the private sshd (next free one up to +50)
#   BENCH_TIMEOUT=600       seconds before one transfer is abandoned
#   BENCH_DROP_CACHES=1     0 to skip dropping the page caches (the report says so)
#   BENCH_BUSY_LIMIT=15     CPU busy % (all cores) above which the machine is not quiet
#   BENCH_QUIET_WAIT=60     seconds to wait for a quiet machine before each timed transfer
#   BENCH_BUILD=1           0 to skip `cargo build --release` and use the binary already there
#   CARGO_TARGET_DIR        respected by the release build
set -euo pipefail
export LC_ALL=C

RUNS=${BENCH_RUNS:-3}
BIG_MIB=${BENCH_BIG_MIB:-1024}
SMALL_FILES=${BENCH_SMALL_FILES:-2000}
SMALL_KIB=${BENCH_SMALL_KIB:-4}
BENCH_DIR=${BENCH_DIR:-/tmp/pcp-bench}
SSH_PORT_FIRST=${BENCH_SSH_PORT:-2222}
TIMEOUT=${BENCH_TIMEOUT:-600}
DROP_CACHES=${BENCH_DROP_CACHES:-1}
BUILD=${BENCH_BUILD:-1}
SECTIONS=${BENCH_SECTIONS:-receive mount}
HUGE_MIB=${BENCH_HUGE_MIB:-4096}
PREADS=${BENCH_PREADS:-2000}
TREE_DIRS=${BENCH_TREE_DIRS:-100}
TREE_FILES=${BENCH_TREE_FILES:-1000}
SSHFS_FIND_LIMIT=${BENCH_SSHFS_FIND_LIMIT:-120}
CP_DST=${BENCH_CP_DST:-tmpfs}
MOUNT_DATA=${BENCH_MOUNT_DATA:-${BENCH_DIR:-/tmp/pcp-bench}/mount-data}

# Targets of the "send/receive spine" issue.
TARGET_BIG_MIBS=300      # 1 GiB at >= 300 MiB/s (and no slower than scp)
TARGET_SMALL_SECS=0.6    # 2,000 files of 4 KiB in <= 0.6 s
TARGET_RSS_MIB=100       # each side's peak RSS <= 100 MiB
# Targets of the mount issue (pcp mount against sshfs, both cold, same run).
TARGET_MNT_SEQ_X=1.5     # sequential read >= 1.5x sshfs's MiB/s
TARGET_MNT_CP_FRAC=3     # cp -r of the small files in <= 1/3 of sshfs's time
TARGET_MNT_IOPS_X=2      # random 4 KiB preads >= 2x sshfs's IOPS
TARGET_MNT_FIND_SECS=1   # find + stat of the whole tree <= 1 s
TARGET_MNT_RSS_MIB=350   # pcp mount's peak RSS reading the huge file, default cache

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=""
SSHD_PID=""
CREATED_RUN_SSHD=0
CREATED_BENCH_DIR=0
CACHES_DROPPED=0
DO_RECEIVE=0
DO_MOUNT=0
declare -a LIVE_PIDS=()   # background processes this script started and has not reaped yet
declare -a MOUNTS=()      # mountpoints this script mounts on (unmounted on exit, whatever happens)

LOG_TAG=bench
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

for v in RUNS BIG_MIB SMALL_FILES SMALL_KIB SSH_PORT_FIRST TIMEOUT HUGE_MIB PREADS TREE_DIRS \
  TREE_FILES SSHFS_FIND_LIMIT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $BENCH_DIR != *[[:space:]]* ]] || die "BENCH_DIR must not contain white space"
[[ $CP_DST = tmpfs || $CP_DST = disk ]] || die "BENCH_CP_DST must be tmpfs or disk"
[[ $MOUNT_DATA = /* && $MOUNT_DATA != *[[:space:]]* ]] ||
  die "BENCH_MOUNT_DATA must be an absolute path without white space (got '$MOUNT_DATA')"
for sec in ${SECTIONS//,/ }; do
  case $sec in
    receive) DO_RECEIVE=1 ;;
    mount) DO_MOUNT=1 ;;
    *) die "BENCH_SECTIONS: unknown section '$sec' (known: receive, mount)" ;;
  esac
done
((DO_RECEIVE + DO_MOUNT > 0)) || die "BENCH_SECTIONS names no section (known: receive, mount)"
[ "$(id -u)" = 0 ] || die "run as root: it drops page caches, installs packages and runs sshd"

# ---------------------------------------------------------------------------------------------
# Process and cleanup helpers


is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; }

# Detaches a mount at once, even if busy or if its FUSE process is gone or stuck.
force_unmount() {
  local mp=$1
  is_mounted "$mp" || return 0
  fusermount3 -uz "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
}



# Waits for a background process started just before (timed commands run in the background so
# that a signal to this script is handled at once) and returns its exit status.
reap() {
  local pid=$1 rc=0
  LIVE_PIDS+=("$pid")
  wait "$pid" || rc=$?
  forget_pid "$pid"
  return "$rc"
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  local pid mp i
  # SIGTERM first: a pcp mount or sshfs then unmounts itself; then detach every mount anyway
  # (a FUSE process that is stuck or gone leaves its mountpoint behind otherwise).
  for pid in "${LIVE_PIDS[@]}"; do
    kill_tree "$pid"
  done
  for mp in "${MOUNTS[@]}"; do
    force_unmount "$mp"
  done
  for ((i = 0; i < 100; i++)); do
    any_live || break
    sleep 0.1
  done
  for pid in "${LIVE_PIDS[@]}"; do
    kill_tree "$pid" KILL
  done
  for mp in "${MOUNTS[@]}"; do
    force_unmount "$mp"
  done
  if [ -n "$SSHD_PID" ]; then
    kill "$SSHD_PID" 2>/dev/null
  fi
  wait 2>/dev/null
  if [ -n "$WORK" ]; then
    # Never delete through a mount (sshfs is writable: it would delete the data set).
    if awk -v w="$WORK/" 'index($2 "/", w) == 1 { f = 1 } END { exit !f }' /proc/self/mounts; then
      log "error: mounts left under $WORK; not removing it: $(awk -v w="$WORK/" 'index($2 "/", w) == 1 { printf "%s ", $2 }' /proc/self/mounts)"
      rc=1
    else
      rm -rf --one-file-system "$WORK"
    fi
  fi
  [ "$CREATED_BENCH_DIR" = 1 ] && rmdir "$BENCH_DIR" 2>/dev/null
  [ "$CREATED_RUN_SSHD" = 1 ] && rmdir /run/sshd 2>/dev/null
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Tools

ensure_tools() {
  # command -> Debian package
  local -A need=(
    [/usr/sbin/sshd]=openssh-server [ssh]=openssh-client [scp]=openssh-client
    [ssh-keygen]=openssh-client [/usr/bin/time]=time [pgrep]=procps [ss]=iproute2
  )
  if [ "$DO_MOUNT" = 1 ]; then
    need+=([sshfs]=sshfs [fusermount3]=fuse3 [python3]=python3)
  fi
  local -a missing=()
  local cmd
  for cmd in "${!need[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
  done
  [ ${#missing[@]} = 0 ] && return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing ${missing[*]}"
  # Keep the package scripts from starting a system-wide sshd.
  local guard=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    guard=1
  fi
  local ok=1
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2 || ok=0
  [ "$guard" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$ok" = 1 ] || die "apt-get install ${missing[*]} failed"
}

BUILT_COMMIT=""
record_commit() {
  # Other work may be committed while this runs: report the tree the binary was built from.
  BUILT_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] || BUILT_COMMIT+=" (+ local changes)"
  [ "$BUILD" = 1 ] || BUILT_COMMIT="unknown (BENCH_BUILD=0: the binary already there; tree at $BUILT_COMMIT)"
}

# ---------------------------------------------------------------------------------------------
# Page cache

drop_caches() {
  [ "$DROP_CACHES" = 1 ] || return 0
  sync
  if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    CACHES_DROPPED=1
  else
    die "cannot write /proc/sys/vm/drop_caches (set BENCH_DROP_CACHES=0 to run with warm caches)"
  fi
  # Only the data should be cold: read the programs and their libraries back in.
  local f
  for f in "${WARM_FILES[@]}"; do
    cat "$f" >/dev/null 2>&1 || true
  done
}

# Called right before each timed transfer.
before_timed() {
  wait_for_quiet
  drop_caches
  record_busy
}

# Other processes on this small machine (a build, a test suite) skew every figure. Before each
# timed transfer, when nothing of ours runs, wait a while for the CPUs to be quiet, then record
# how busy they were; the report says when they were not quiet.
BUSY_LIMIT=${BENCH_BUSY_LIMIT:-15}   # percent of all CPUs
QUIET_WAIT=${BENCH_QUIET_WAIT:-60}   # seconds
[[ $BUSY_LIMIT =~ ^[0-9]+$ ]] || die "BENCH_BUSY_LIMIT must be a whole number (got '$BUSY_LIMIT')"
[[ $QUIET_WAIT =~ ^[0-9]+$ ]] || die "BENCH_QUIET_WAIT must be a whole number (got '$QUIET_WAIT')"
BUSY_MAX=0
BUSY_COUNT=0
BUSY_SAMPLES=0

# Percent of all CPUs busy over 0.3 s.
cpu_busy_pct() {
  # shellcheck disable=SC2016 # an awk program
  local prog='/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }'
  local a b
  a=$(awk "$prog" /proc/stat)
  sleep 0.3
  b=$(awk "$prog" /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2];
    printf "%.0f", (d > 0) ? 100 * (y[1] - x[1]) / d : 0 }'
}

busiest() { ps -eo pcpu=,comm= --sort=-pcpu | head -n 2 | awk '{ printf "%s %s%% ", $2, $1 }'; }

wait_for_quiet() {
  local deadline=$((SECONDS + QUIET_WAIT)) said=0
  while (($(cpu_busy_pct) > BUSY_LIMIT)) && ((SECONDS < deadline)); do
    if [ "$said" = 0 ]; then
      log "CPUs busy ($(busiest)); waiting up to ${QUIET_WAIT} s for them to be quiet"
      said=1
    fi
    sleep 1
  done
}

record_busy() {
  local pct
  pct=$(cpu_busy_pct)
  BUSY_SAMPLES=$((BUSY_SAMPLES + 1))
  ((pct > BUSY_MAX)) && BUSY_MAX=$pct
  if ((pct > BUSY_LIMIT)); then
    BUSY_COUNT=$((BUSY_COUNT + 1))
    log "warning: CPUs ${pct}% busy right before a timed transfer: $(busiest)"
  fi
  return 0
}

collect_warm_files() {
  WARM_FILES=()
  local b
  for b in "$PCP" "$(command -v scp)" "$(command -v ssh)" /usr/sbin/sshd /usr/lib/openssh/sftp-server \
    /usr/bin/time "$(command -v timeout)" "$(command -v sshfs)" "$(command -v fusermount3)" \
    "$(command -v dd)" "$(command -v cp)" "$(command -v find)" "${PY:-}"; do
    [ -e "$b" ] || continue
    WARM_FILES+=("$b")
    mapfile -t -O "${#WARM_FILES[@]}" WARM_FILES < <(ldd "$b" 2>/dev/null | awk '$3 ~ /^\// {print $3}')
  done
}

# ---------------------------------------------------------------------------------------------
# Private sshd on 127.0.0.1 with temporary keys

SSH_OPTS=()

start_sshd() {
  local dir=$WORK/ssh
  mkdir -p "$dir"
  chmod 700 "$dir"
  ssh-keygen -q -t ed25519 -N '' -C pcp-bench-host -f "$dir/host_key"
  ssh-keygen -q -t ed25519 -N '' -C pcp-bench-client -f "$dir/client_key"
  cp "$dir/client_key.pub" "$dir/authorized_keys"
  if [ ! -d /run/sshd ]; then
    mkdir -p /run/sshd
    chmod 755 /run/sshd
    CREATED_RUN_SSHD=1
  fi
  local port
  for ((port = SSH_PORT_FIRST; port <= SSH_PORT_FIRST + 50; port++)); do
    [ -z "$(ss -Hltn "sport = :$port" 2>/dev/null)" ] && break
  done
  ((port <= SSH_PORT_FIRST + 50)) || die "no free port in $SSH_PORT_FIRST..$((SSH_PORT_FIRST + 50))"
  SSH_PORT=$port
  cat >"$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel ERROR
EOF
  /usr/sbin/sshd -t -f "$dir/sshd_config" || die "sshd rejects its temporary configuration"
  /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
  SSHD_PID=$!
  SSH_OPTS=(-F /dev/null -i "$dir/client_key" -o IdentitiesOnly=yes -o BatchMode=yes
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$SSHD_PID" 2>/dev/null || die "sshd exited: $(cat "$dir/sshd.log")"
    if ssh "${SSH_OPTS[@]}" -p "$port" root@127.0.0.1 true 2>/dev/null; then
      log "sshd on 127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  die "sshd on 127.0.0.1:$port does not accept the temporary key: $(cat "$dir/sshd.log")"
}

# ---------------------------------------------------------------------------------------------
# One timed transfer each. Both set T (seconds); run_pcp also sets RSS_SEND and RSS_RECV (KiB).

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }

# Checks that DIR holds FILES regular files of BYTES bytes in all, and no leftover part files.
check_copy() {
  local dir=$1 files=$2 bytes=$3 what=$4 got
  got=$(find "$dir" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%.0f %.0f", n, s }')
  [ "$got" = "$files $bytes" ] || die "$what: received $got (files bytes), expected $files $bytes"
  if [ -n "$(find "$dir" -name '.pcp-*.part' -print -quit)" ]; then
    die "$what: part files left behind"
  fi
}

# Starts `pcp send SRC` on 127.0.0.1 and waits for its code and address: sets SEND_PID,
# SEND_CODE and SEND_ADDR. Logs go to $WORK/log/TAG.send.*.
start_pcp_send() {
  local src=$1 tag=$2
  local lg=$WORK/log/$tag
  : >"$lg.send.out"
  : >"$lg.send.err"
  /usr/bin/time -f %M -o "$lg.send.rss" timeout --foreground -k 5 "$TIMEOUT" \
    "$PCP" -v --no-progress --discovery none send --listen /ip4/127.0.0.1/tcp/0 "$src" \
    >"$lg.send.out" 2>"$lg.send.err" </dev/null &
  SEND_PID=$!
  LIVE_PIDS+=("$SEND_PID")
  SEND_CODE="" SEND_ADDR=""
  local deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    SEND_CODE=$(sed -n 's/^Code is: //p;T;q' "$lg.send.out")
    SEND_ADDR=$(sed -n 's#^Listening on \(/ip4/127\.0\.0\.1/tcp/[0-9][0-9]*\)#\1#p;T;q' "$lg.send.err")
    [ -n "$SEND_CODE" ] && [ -n "$SEND_ADDR" ] && break
    kill -0 "$SEND_PID" 2>/dev/null || die "$tag: pcp send exited early: $(tail -n 20 "$lg.send.err")"
    sleep 0.05
  done
  [[ -n $SEND_CODE && -n $SEND_ADDR ]] ||
    die "$tag: pcp send printed no code/address within 60 s: $(tail -n 20 "$lg.send.err")"
}

# Anything pcp warned about (in the given logs) goes into the report.
collect_warnings() {
  local tag=$1
  shift
  sed 's/\x1b\[[0-9;]*m//g' "$@" 2>/dev/null |
    grep -i -E '(^|[^a-z])(warn|warning|error)([^a-z]|$)' |
    sed "s|^|$tag: |" >>"$WORK/log/pcp-warnings" || true
}

run_pcp() {
  local src=$1 dst=$2 files=$3 bytes=$4 tag=$5
  local lg=$WORK/log/$tag
  rm -rf "$dst"
  mkdir -p "$dst"
  start_pcp_send "$src" "$tag"
  local spid=$SEND_PID code=$SEND_CODE addr=$SEND_ADDR i

  before_timed
  local t0 t1 rc=0
  t0=$EPOCHREALTIME
  PCP_CODE=$code /usr/bin/time -f %M -o "$lg.recv.rss" timeout --foreground -k 5 "$TIMEOUT" \
    "$PCP" receive --yes --no-progress --discovery none --peer "$addr" --out "$dst" --wait 60s \
    >"$lg.recv.out" 2>"$lg.recv.err" </dev/null &
  reap $! || rc=$?
  t1=$EPOCHREALTIME
  [ "$rc" = 0 ] || die "$tag: pcp receive exited $rc: $(tail -n 20 "$lg.recv.err")
  sender: $(tail -n 20 "$lg.send.err")"

  for ((i = 0; i < 300; i++)); do
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$spid" 2>/dev/null; then
    kill_tree "$spid"
    die "$tag: pcp send did not exit 30 s after the receiver finished: $(tail -n 20 "$lg.send.err")"
  fi
  rc=0
  reap "$spid" || rc=$?
  [ "$rc" = 0 ] || die "$tag: pcp send exited $rc: $(tail -n 20 "$lg.send.err")"

  check_copy "$dst" "$files" "$bytes" "$tag"
  T=$(elapsed "$t0" "$t1")
  RSS_SEND=$(tail -n 1 "$lg.send.rss")
  RSS_RECV=$(tail -n 1 "$lg.recv.rss")
  collect_warnings "$tag" "$lg.send.err" "$lg.recv.err"
}

run_scp() {
  local src=$1 dst=$2 files=$3 bytes=$4 tag=$5
  local lg=$WORK/log/$tag
  rm -rf "$dst"
  mkdir -p "$dst"
  before_timed
  local t0 t1 rc=0
  t0=$EPOCHREALTIME
  timeout --foreground -k 5 "$TIMEOUT" scp -q -r -P "$SSH_PORT" "${SSH_OPTS[@]}" "$src" "root@127.0.0.1:$dst/" \
    >"$lg.scp.out" 2>"$lg.scp.err" </dev/null &
  reap $! || rc=$?
  t1=$EPOCHREALTIME
  [ "$rc" = 0 ] || die "$tag: scp exited $rc: $(tail -n 20 "$lg.scp.err")"
  check_copy "$dst" "$files" "$bytes" "$tag"
  T=$(elapsed "$t0" "$t1")
}

# ---------------------------------------------------------------------------------------------
# Workloads. A transfer workload is a source path sent whole by pcp and by scp; its targets are
# checked in the report. Register more with add_transfer_workload in main.

declare -a WORKLOADS=()
declare -A W_LABEL=() W_SRC=() W_FILES=() W_BYTES=()
declare -A W_TARGET_MIBS=() W_TARGET_VS_SCP=() W_TARGET_SECS=()
declare -A R_PCP_T=() R_SCP_T=() R_RSS_SEND=() R_RSS_RECV=()

# add_transfer_workload NAME LABEL SRC [min MiB/s] [1 = no slower than scp] [max seconds]
add_transfer_workload() {
  local name=$1
  WORKLOADS+=("$name")
  W_LABEL[$name]=$2
  W_SRC[$name]=$3
  W_TARGET_MIBS[$name]=${4:-}
  W_TARGET_VS_SCP[$name]=${5:-}
  W_TARGET_SECS[$name]=${6:-}
  W_FILES[$name]=$(find "$3" -type f | wc -l)
  W_BYTES[$name]=$(find "$3" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }')
}

make_data() {
  local src=$WORK/src
  mkdir -p "$src/small"
  log "writing $BIG_MIB MiB of random data and $SMALL_FILES random files of $SMALL_KIB KiB"
  head -c "$((BIG_MIB << 20))" /dev/urandom >"$src/big.bin"
  local width=${#SMALL_FILES}
  ((width >= 4)) || width=4
  head -c "$((SMALL_FILES * SMALL_KIB << 10))" /dev/urandom |
    (cd "$src/small" && split -b "$((SMALL_KIB << 10))" -d -a "$width" - f)
  sync
}

bench_transfers() {
  local run name
  for ((run = 1; run <= RUNS; run++)); do
    for name in "${WORKLOADS[@]}"; do
      local dst=$WORK/dst/$name
      run_pcp "${W_SRC[$name]}" "$dst" "${W_FILES[$name]}" "${W_BYTES[$name]}" "$name-$run"
      R_PCP_T[$name]+=" $T"
      R_RSS_SEND[$name]+=" $RSS_SEND"
      R_RSS_RECV[$name]+=" $RSS_RECV"
      log "run $run/$RUNS $name: pcp $T s (RSS send $((RSS_SEND / 1024)) MiB, receive $((RSS_RECV / 1024)) MiB)"
      run_scp "${W_SRC[$name]}" "$dst" "${W_FILES[$name]}" "${W_BYTES[$name]}" "$name-$run"
      R_SCP_T[$name]+=" $T"
      log "run $run/$RUNS $name: scp $T s"
      rm -rf "$dst"
    done
  done
}

# ---------------------------------------------------------------------------------------------
# `pcp mount` vs sshfs. Every timed workload gets a fresh mount of each tool (and a fresh
# `pcp send`, since a mount that ends also ends its share), so neither has anything in its own
# cache; the page caches are dropped after mounting, right before the workload.

PY=""                       # python3 for the pread workload
MNT_PID=""                  # the current mount's FUSE process (pcp mount, or sshfs -f)
MOUNT_SECS=""               # from starting the mount command to a usable mount
VAL=""                      # a workload's measure ("" if it failed, "skip" if abandoned)
PREAD_SEED=42
PREAD_DIGEST=""
SSHFS_FIND_SKIPPED=0
declare -a MOUNT_WORKLOADS=(seq cp pread find rss)
declare -A MW_PART=([seq]=seq [cp]=small [pread]=seq [find]=tree [rss]=huge)
declare -A M_RES=() M_FAILS=() M_MOUNT_SECS=() M_HUGE_MIBS=()   # keys: "TOOL WORKLOAD"
declare -A M_UNMOUNT_SECS=()  # key: TOOL; from SIGTERM (pcp) or fusermount3 -u (sshfs) to exit

problem() {
  log "problem: $*"
  printf '%s\n' "$*" >>"$WORK/log/mount-problems"
}

# The data set lives in $MOUNT_DATA and is kept between runs. Each part is one folder, remade
# only when it is missing or was made with other sizes; its stamp beside it is written last.
part_stale() {
  local name=$1 spec=$2
  if [ -d "$MOUNT_DATA/$name" ] && [ "$(cat "$MOUNT_DATA/.$name.made" 2>/dev/null)" = "$spec" ]; then
    return 1
  fi
  rm -f "$MOUNT_DATA/.$name.made"
  rm -rf --one-file-system "${MOUNT_DATA:?}/$name"
  mkdir -p "$MOUNT_DATA/$name"
}
part_made() {
  sync
  printf '%s\n' "$2" >"$MOUNT_DATA/.$1.made"
}

make_mount_data() {
  mkdir -p "$MOUNT_DATA"
  # Two benchmarks at once would skew each other, and must not remake the data under each other.
  exec 9>"$MOUNT_DATA/.lock"
  flock -n 9 || die "another benchmark is using $MOUNT_DATA"
  local spec width d
  spec="big.bin: $BIG_MIB MiB random"
  if part_stale seq "$spec"; then
    log "mount data: writing $BIG_MIB MiB of random data"
    head -c "$((BIG_MIB << 20))" /dev/urandom >"$MOUNT_DATA/seq/big.bin"
    part_made seq "$spec"
  fi
  spec="$SMALL_FILES files of $SMALL_KIB KiB random"
  if part_stale small "$spec"; then
    log "mount data: writing $SMALL_FILES random files of $SMALL_KIB KiB"
    width=${#SMALL_FILES}
    ((width >= 4)) || width=4
    head -c "$((SMALL_FILES * SMALL_KIB << 10))" /dev/urandom |
      (cd "$MOUNT_DATA/small" && split -b "$((SMALL_KIB << 10))" -d -a "$width" - f)
    part_made small "$spec"
  fi
  spec="$TREE_DIRS folders of $TREE_FILES files of 16 bytes"
  if part_stale tree "$spec"; then
    log "mount data: writing a tree of $TREE_DIRS folders of $TREE_FILES files"
    width=${#TREE_FILES}
    ((width >= 4)) || width=4
    for ((d = 0; d < TREE_DIRS; d++)); do
      mkdir "$MOUNT_DATA/tree/$(printf 'd%04d' "$d")"
      head -c "$((TREE_FILES * 16))" /dev/urandom |
        (cd "$MOUNT_DATA/tree/$(printf 'd%04d' "$d")" && split -b 16 -d -a "$width" - f)
    done
    part_made tree "$spec"
  fi
  spec="huge.bin: $HUGE_MIB MiB random"
  if part_stale huge "$spec"; then
    log "mount data: writing $HUGE_MIB MiB of random data"
    head -c "$((HUGE_MIB << 20))" /dev/urandom >"$MOUNT_DATA/huge/huge.bin"
    part_made huge "$spec"
  fi
  log "mount data set in $MOUNT_DATA (kept for later runs)"
}

# Random 4 KiB preads at fixed-seed 4 KiB-aligned offsets, one thread; prints the seconds the
# reads took (open excluded) and a digest of the bytes read, to check them against the source.
write_pread_script() {
  cat >"$WORK/pread.py" <<'PYEOF'
import hashlib, os, random, sys, time
path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
blocks = os.fstat(fd).st_size // 4096
rng = random.Random(seed)
offsets = [rng.randrange(blocks) * 4096 for _ in range(n)]
got = []
t0 = time.perf_counter()
for off in offsets:
    b = os.pread(fd, 4096, off)
    if len(b) != 4096:
        sys.exit(f"short read at {off}: {len(b)} bytes")
    got.append(b)
t = time.perf_counter() - t0
h = hashlib.blake2b()
for b in got:
    h.update(b)
print(f"{t:.6f} {h.hexdigest()}")
PYEOF
  local out
  out=$("$PY" "$WORK/pread.py" "$MOUNT_DATA/seq/big.bin" "$PREADS" "$PREAD_SEED") ||
    die "the pread script fails on the source file"
  PREAD_DIGEST=${out#* }
}

# Mounts folder SRC with TOOL (pcp or sshfs) at $WORK/mnt/TOOL: sets MNT_PID and MOUNT_SECS.
mount_with() {
  local tool=$1 src=$2 tag=$3
  local mp=$WORK/mnt/$tool lg=$WORK/log/$tag.$tool t0
  mkdir -p "$mp"
  [[ " ${MOUNTS[*]} " = *" $mp "* ]] || MOUNTS+=("$mp")
  ! is_mounted "$mp" || die "$mp is still mounted"
  case $tool in
    pcp)
      start_pcp_send "$src" "$tag"
      t0=$EPOCHREALTIME
      PCP_CODE=$SEND_CODE "$PCP" mount --no-progress --discovery none --peer "$SEND_ADDR" - "$mp" \
        >"$lg.out" 2>"$lg.err" </dev/null &
      ;;
    sshfs)
      t0=$EPOCHREALTIME
      sshfs -f -p "$SSH_PORT" -o "ssh_command=ssh ${SSH_OPTS[*]}" "root@127.0.0.1:$src" "$mp" \
        >"$lg.out" 2>"$lg.err" </dev/null &
      ;;
  esac
  MNT_PID=$!
  LIVE_PIDS+=("$MNT_PID")
  local deadline=$((SECONDS + TIMEOUT))
  until is_mounted "$mp" && { [ "$tool" != pcp ] || grep -q '^Mounted ' "$lg.err"; }; do
    kill -0 "$MNT_PID" 2>/dev/null || die "$tag: $tool exited before mounting: $(tail -n 20 "$lg.err")"
    ((SECONDS < deadline)) || die "$tag: $tool did not mount within $TIMEOUT s: $(tail -n 20 "$lg.err")"
    sleep 0.02
  done
  MOUNT_SECS=$(elapsed "$t0" "$EPOCHREALTIME")
}

# Unmounts the way a user would (pcp: SIGTERM; sshfs: fusermount3 -u) and checks that the
# processes exit and leave no mount; whatever goes wrong is a problem for the report.
unmount_with() {
  local tool=$1 tag=$2
  local mp=$WORK/mnt/$tool lg=$WORK/log/$tag.$tool rc=0 i terms=1 killed=0 t0=$EPOCHREALTIME secs
  if [ "$tool" = pcp ]; then
    kill -TERM "$MNT_PID" 2>/dev/null
  elif ! fusermount3 -u "$mp" 2>>"$lg.err"; then
    problem "$tag: fusermount3 -u of the sshfs mount failed: $(tail -n 1 "$lg.err")"
    force_unmount "$mp"
  fi
  # sshfs can take a while to exit after a big tree (its node table); pcp should be quick.
  # Polled every 10 ms, so the time to exit is measured to within 10 ms.
  local wait_polls=3000
  [ "$tool" = sshfs ] && wait_polls=9000
  local holders=""
  for ((i = 1; i <= wait_polls; i++)); do
    kill -0 "$MNT_PID" 2>/dev/null || break
    # A FUSE process exits only when the kernel ends its connection, which waits for every
    # copy of the mount: a mount namespace created while it was mounted (unshare, ip netns
    # exec, containers) keeps one. Say who, when the exit is slow.
    ((i == 200)) && holders=$(mount_holders "$mp")
    # pcp remembers a signal from its start (SEMANTICS.md); a repeat shows up as a problem.
    if [ "$tool" = pcp ] && ((i % 200 == 0)); then
      kill -TERM "$MNT_PID" 2>/dev/null
      terms=$((terms + 1))
    fi
    sleep 0.01
  done
  if kill -0 "$MNT_PID" 2>/dev/null; then
    if [ "$tool" = pcp ]; then
      problem "$tag: pcp mount did not exit within 30 s of SIGTERM ($terms sent, 2 s apart); killed it"
    else
      problem "$tag: sshfs (not pcp) had not exited 90 s after fusermount3 -u; killed it"
    fi
    kill_tree "$MNT_PID" KILL
    killed=1
  fi
  secs=$(elapsed "$t0" "$EPOCHREALTIME")
  reap "$MNT_PID" || rc=$?
  M_UNMOUNT_SECS[$tool]+=" $secs"
  if [ "$killed" = 0 ] && [ "$rc" != 0 ]; then
    problem "$tag: $tool exited $rc on unmount: $(tail -n 5 "$lg.err" | tr '\n' ' ')"
  fi
  if [ "$tool" = pcp ] && ((terms > 1 && !killed)); then
    problem "$tag: pcp mount took $secs s to exit after the first SIGTERM ($terms SIGTERMs sent, 2 s apart)"
  fi
  if [ -n "$holders" ]; then
    problem "$tag: 2 s after the unmount, other mount namespaces still held $tool's mount: $holders"
  fi
  if is_mounted "$mp"; then
    problem "$tag: $tool left its mount behind after exiting; detached it"
    force_unmount "$mp"
  fi
  if [ "$tool" = pcp ]; then
    for ((i = 0; i < 300; i++)); do
      kill -0 "$SEND_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SEND_PID" 2>/dev/null; then
      problem "$tag: pcp send still ran 30 s after the mount ended; killed it"
      kill_tree "$SEND_PID"
    fi
    rc=0
    reap "$SEND_PID" || rc=$?
    [ "$rc" = 0 ] || problem "$tag: pcp send exited $rc: $(tail -n 3 "$WORK/log/$tag.send.err" | tr '\n' ' ')"
    collect_warnings "$tag" "$WORK/log/$tag.send.err" "$lg.err"
  fi
}

# Processes of other mount namespaces whose mount table still has MOUNTPOINT (one per namespace).
mount_holders() {
  local mp=$1 f pid ns self
  self=$(readlink /proc/self/ns/mnt)
  for f in /proc/[0-9]*/mountinfo; do
    pid=${f#/proc/}
    pid=${pid%/mountinfo}
    ns=$(readlink "/proc/$pid/ns/mnt" 2>/dev/null) || continue
    [ "$ns" != "$self" ] || continue
    awk -v m="$mp" '$5 == m { f = 1 } END { exit !f }' "$f" 2>/dev/null || continue
    printf '%s %s(%s)\n' "$ns" "$(cat "/proc/$pid/comm" 2>/dev/null)" "$pid"
  done | sort -u -k1,1 | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1 } END { if (NR) printf " (%d namespaces)", NR }' | head -c 400
}

# A workload failed: no figure from this run.
wl_failed() {
  problem "$*"
  VAL=""
}

# Each workload runs between mount_with and unmount_with and sets VAL.
wl_seq() { # MiB/s of a cold sequential read of the big file
  local tool=$1 tag=$2 mp=$3 lg=$WORK/log/$2.$1 t0 t1 rc=0
  before_timed
  t0=$EPOCHREALTIME
  timeout --foreground -k 5 "$TIMEOUT" dd if="$mp/big.bin" of=/dev/null bs=1M 2>"$lg.dd" </dev/null &
  reap $! || rc=$?
  t1=$EPOCHREALTIME
  [ "$rc" = 0 ] || { wl_failed "$tag: dd from $tool exited $rc: $(tail -n 2 "$lg.dd" | tr '\n' ' ')"; return 0; }
  grep -q "^$((BIG_MIB << 20)) bytes" "$lg.dd" || { wl_failed "$tag: dd from $tool read $(tail -n 1 "$lg.dd")"; return 0; }
  VAL=$(calc "printf \"%.1f\", $BIG_MIB / $(elapsed "$t0" "$t1")")
}

wl_cp() { # seconds for cp -r of the small files out of the mount
  local tool=$1 tag=$2 mp=$3 lg=$WORK/log/$2.$1 t0 t1 rc=0 got
  local dst=$WORK/dst/cp-$tool
  if [ "$CP_DST" = tmpfs ]; then
    dst=$WORK/cp-tmpfs/cp-$tool
    if ! is_mounted "$WORK/cp-tmpfs"; then
      mkdir -p "$WORK/cp-tmpfs"
      MOUNTS+=("$WORK/cp-tmpfs")
      mount -t tmpfs -o size=256m,mode=0755 pcp-bench-cp "$WORK/cp-tmpfs" || die "cannot mount a tmpfs for cp -r"
    fi
  fi
  rm -rf "$dst"
  mkdir -p "$(dirname "$dst")"
  before_timed
  t0=$EPOCHREALTIME
  timeout --foreground -k 5 "$TIMEOUT" cp -r "$mp" "$dst" >"$lg.cp" 2>&1 </dev/null &
  reap $! || rc=$?
  t1=$EPOCHREALTIME
  [ "$rc" = 0 ] || { wl_failed "$tag: cp -r from $tool exited $rc: $(tail -n 2 "$lg.cp" | tr '\n' ' ')"; return 0; }
  got=$(find "$dst" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%.0f %.0f", n, s }')
  if [ "$got" != "$SMALL_FILES $((SMALL_FILES * SMALL_KIB << 10))" ]; then
    wl_failed "$tag: cp -r from $tool copied $got (files bytes)"
  elif ! diff -r -q "$MOUNT_DATA/small" "$dst" >"$lg.diff" 2>&1; then
    wl_failed "$tag: cp -r from $tool copied wrong bytes: $(head -n 2 "$lg.diff" | tr '\n' ' ')"
  else
    VAL=$(elapsed "$t0" "$t1")
  fi
  rm -rf "$dst"
}

wl_pread() { # IOPS of one thread of random 4 KiB preads of the big file
  local tool=$1 tag=$2 mp=$3 lg=$WORK/log/$2.$1 rc=0 secs digest
  before_timed
  timeout --foreground -k 5 "$TIMEOUT" "$PY" "$WORK/pread.py" "$mp/big.bin" "$PREADS" "$PREAD_SEED" \
    >"$lg.pread" 2>&1 </dev/null &
  reap $! || rc=$?
  [ "$rc" = 0 ] || { wl_failed "$tag: preads from $tool exited $rc: $(tail -n 2 "$lg.pread" | tr '\n' ' ')"; return 0; }
  read -r secs digest <"$lg.pread"
  [ "$digest" = "$PREAD_DIGEST" ] || { wl_failed "$tag: preads from $tool returned wrong bytes"; return 0; }
  VAL=$(calc "printf \"%.0f\", $PREADS / $secs")
}

wl_find() { # seconds for find + lstat of every entry of the tree
  local tool=$1 tag=$2 mp=$3 lg=$WORK/log/$2.$1 t0 t1 rc=0 n limit=$TIMEOUT
  [ "$tool" = sshfs ] && limit=$SSHFS_FIND_LIMIT
  before_timed
  t0=$EPOCHREALTIME
  # %s, %m and %T@ make find lstat() every entry.
  timeout --foreground -k 5 "$limit" find "$mp" -printf '%y %m %s %T@ %p\n' >"$lg.find" 2>"$lg.find.err" </dev/null &
  reap $! || rc=$?
  t1=$EPOCHREALTIME
  if [ "$tool" = sshfs ] && { [ "$rc" = 124 ] || [ "$rc" = 137 ]; }; then
    log "$tag: sshfs's find took over $limit s: abandoned, no more runs of it"
    VAL=skip
    SSHFS_FIND_SKIPPED=1
    return 0
  fi
  [ "$rc" = 0 ] || { wl_failed "$tag: find in $tool exited $rc: $(tail -n 2 "$lg.find.err" | tr '\n' ' ')"; return 0; }
  n=$(wc -l <"$lg.find")
  [ "$n" = "$((1 + TREE_DIRS + TREE_DIRS * TREE_FILES))" ] ||
    { wl_failed "$tag: find in $tool listed $n entries, expected $((1 + TREE_DIRS + TREE_DIRS * TREE_FILES))"; return 0; }
  VAL=$(elapsed "$t0" "$t1")
}

wl_rss() { # MiB: the FUSE process's peak RSS after a sequential read of the huge file
  local tool=$1 tag=$2 mp=$3 lg=$WORK/log/$2.$1 t0 t1 rc=0
  before_timed
  t0=$EPOCHREALTIME
  timeout --foreground -k 5 "$TIMEOUT" dd if="$mp/huge.bin" of=/dev/null bs=1M 2>"$lg.dd" </dev/null &
  reap $! || rc=$?
  t1=$EPOCHREALTIME
  [ "$rc" = 0 ] || { wl_failed "$tag: dd of the huge file from $tool exited $rc: $(tail -n 2 "$lg.dd" | tr '\n' ' ')"; return 0; }
  grep -q "^$((HUGE_MIB << 20)) bytes" "$lg.dd" || { wl_failed "$tag: dd from $tool read $(tail -n 1 "$lg.dd")"; return 0; }
  VAL=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$MNT_PID/status")
  M_HUGE_MIBS["$tool"]+=" $(calc "printf \"%.1f\", $HUGE_MIB / $(elapsed "$t0" "$t1")")"
}

# Each workload, each run: pcp, sshfs, and the same workload on the local source folder (cold
# too) as the floor that neither tool can go below, for the notes.
bench_mount() {
  local run w tool tag
  for ((run = 1; run <= RUNS; run++)); do
    for w in "${MOUNT_WORKLOADS[@]}"; do
      for tool in pcp sshfs local; do
        if [ "$w" = find ] && [ "$tool" = sshfs ] && [ "$SSHFS_FIND_SKIPPED" = 1 ]; then
          continue
        fi
        [ "$w $tool" = "rss local" ] && continue
        tag=mnt-$w-$run
        VAL=""
        if [ "$tool" = local ]; then
          MOUNT_SECS=0
          "wl_$w" "$tool" "$tag" "$MOUNT_DATA/${MW_PART[$w]}"
        else
          mount_with "$tool" "$MOUNT_DATA/${MW_PART[$w]}" "$tag"
          M_MOUNT_SECS["$tool $w"]+=" $MOUNT_SECS"
          "wl_$w" "$tool" "$tag" "$WORK/mnt/$tool"
          unmount_with "$tool" "$tag"
        fi
        case $VAL in
          "") M_FAILS["$tool $w"]=$((${M_FAILS["$tool $w"]:-0} + 1)) ;;
          skip) ;;
          *) M_RES["$tool $w"]+=" $VAL" ;;
        esac
        log "run $run/$RUNS mount $w: $tool ${VAL:-failed} (mounted in $MOUNT_SECS s)"
      done
    done
  done
}

# ---------------------------------------------------------------------------------------------
# Report

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
maximum() { printf '%s\n' "$@" | sort -g | tail -n 1; }
calc() { awk "BEGIN { $1 }"; }
yesno() { calc "print (($1) ? \"yes\" : \"**no**\")"; }

# Bullets common to both sections.
report_env() {
  echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), commit $BUILT_COMMIT, $("$PCP" --version), $(ssh -V 2>&1 | cut -d, -f1)$([ "$DO_MOUNT" = 1 ] && echo ", $(sshfs --version 2>&1 | grep -m 1 "^SSHFS version")")"
  echo "- $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r); loopback only (127.0.0.1)"
  if [ "$CACHES_DROPPED" = 1 ]; then
    echo "- page caches dropped before every timed transfer or workload (\`sync; echo 3 > /proc/sys/vm/drop_caches\`): source reads are cold; the programs and their libraries were read back in"
  else
    echo "- **page caches NOT dropped** (BENCH_DROP_CACHES=0): source reads come from the page cache"
  fi
  if ((BUSY_COUNT > 0)); then
    echo "- **the machine was busy**: other processes kept the CPUs over ${BUSY_LIMIT}% busy right before $BUSY_COUNT of $BUSY_SAMPLES timed transfers or workloads (max ${BUSY_MAX}%) despite waiting up to ${QUIET_WAIT} s: these figures are skewed, run again on a quiet machine"
  else
    echo "- machine quiet: CPUs at most ${BUSY_MAX}% busy right before each timed transfer or workload (checked over 0.3 s)"
  fi
}

report_receive() {
  echo "## pcp send/receive vs scp on loopback"
  echo
  report_env
  echo "- median of $RUNS run(s) each, pcp and scp alternating; peak RSS is the max over runs (GNU time %M)"
  echo "- pcp: \`pcp receive --yes --no-progress --discovery none --peer ADDR --out DIR\` (code in PCP_CODE), timed from its start to its exit, the sender already listening (\`pcp send --discovery none --listen /ip4/127.0.0.1/tcp/0\`); includes connect, SPAKE2, transfer and BLAKE3 verification"
  echo "- scp: \`scp -r\` to root@127.0.0.1 through a private sshd (default ciphers, SFTP protocol), whole command timed including the ssh handshake"
  echo
  echo "| workload | measure | pcp | scp | pcp/scp | target | met |"
  echo "|---|---|---|---|---|---|---|"
  local name
  for name in "${WORKLOADS[@]}"; do
    local mib pt st pm sm ratio rs rr target met
    mib=$(calc "printf \"%.6f\", ${W_BYTES[$name]} / 1048576")
    # shellcheck disable=SC2086
    pt=$(median ${R_PCP_T[$name]})
    # shellcheck disable=SC2086
    st=$(median ${R_SCP_T[$name]})
    pm=$(calc "printf \"%.1f\", $mib / $pt")
    sm=$(calc "printf \"%.1f\", $mib / $st")
    ratio=$(calc "printf \"%.2fx\", $st / $pt")
    # shellcheck disable=SC2086
    rs=$(calc "printf \"%.1f\", $(maximum ${R_RSS_SEND[$name]}) / 1024")
    # shellcheck disable=SC2086
    rr=$(calc "printf \"%.1f\", $(maximum ${R_RSS_RECV[$name]}) / 1024")

    target="" met=""
    if [ -n "${W_TARGET_SECS[$name]}" ]; then
      target="<= ${W_TARGET_SECS[$name]} s"
      met=$(yesno "$pt <= ${W_TARGET_SECS[$name]}")
    fi
    printf '| %s | time, s | %.3f | %.3f | | %s | %s |\n' "${W_LABEL[$name]}" "$pt" "$st" "$target" "$met"

    target="" met=""
    if [ -n "${W_TARGET_MIBS[$name]}" ]; then
      target=">= ${W_TARGET_MIBS[$name]} MiB/s"
      met=$(yesno "$pm >= ${W_TARGET_MIBS[$name]}")
    fi
    if [ "${W_TARGET_VS_SCP[$name]}" = 1 ]; then
      target+="${target:+ and }no slower than scp"
      local m2
      m2=$(yesno "$pt <= $st")
      [ "$met" = "**no**" ] || met=$m2
    fi
    printf '| %s | throughput, MiB/s | %s | %s | %s | %s | %s |\n' "${W_LABEL[$name]}" "$pm" "$sm" "$ratio" "$target" "$met"
    printf '| %s | sender peak RSS, MiB | %s | | | <= %s MiB | %s |\n' "${W_LABEL[$name]}" "$rs" "$TARGET_RSS_MIB" "$(yesno "$rs <= $TARGET_RSS_MIB")"
    printf '| %s | receiver peak RSS, MiB | %s | | | <= %s MiB | %s |\n' "${W_LABEL[$name]}" "$rr" "$TARGET_RSS_MIB" "$(yesno "$rr <= $TARGET_RSS_MIB")"
  done
  echo
  echo "pcp/scp is pcp's throughput over scp's (above 1: pcp faster). Times of each run, s:"
  echo
  for name in "${WORKLOADS[@]}"; do
    echo "- ${W_LABEL[$name]}: pcp${R_PCP_T[$name]}; scp${R_SCP_T[$name]}"
  done
}

# Median of a tool's figures for a workload, or "" when every run failed.
m_median() {
  local v=${M_RES["$1 $2"]:-}
  # shellcheck disable=SC2086
  [ -n "$v" ] && median $v
  return 0
}

m_max() {
  local v=${M_RES["$1 $2"]:-}
  # shellcheck disable=SC2086
  [ -n "$v" ] && maximum $v
  return 0
}

m_cell() { # a figure, or why there is none
  local tool=$1 w=$2 v=$3 fmt=$4
  if [ -n "$v" ]; then
    calc "printf \"$fmt\", $v"
  elif [ "$tool $w" = "sshfs find" ] && [ "$SSHFS_FIND_SKIPPED" = 1 ]; then
    printf 'skipped (> %s s)' "$SSHFS_FIND_LIMIT"
  elif [ -n "${M_FAILS["$tool $w"]:-}" ]; then
    printf 'failed'
  fi
}

# shellcheck disable=SC2016 # backquotes are markdown here
report_mount() {
  local big_label small_label tree_label
  big_label=$(size_label "$BIG_MIB")
  small_label="$(commas "$SMALL_FILES") files of $SMALL_KIB KiB"
  tree_label="$(commas $((TREE_DIRS * TREE_FILES + TREE_DIRS))) entries ($(commas "$TREE_DIRS") folders x $(commas "$TREE_FILES") files)"
  echo "## pcp mount vs sshfs on loopback"
  echo
  report_env
  echo "- median of $RUNS run(s) per workload and tool, pcp and sshfs alternating; peak RSS is the max over runs"
  echo "- every timed workload on a fresh mount, so neither tool has anything in its own cache; page caches dropped after mounting"
  echo "- pcp: \`pcp mount --no-progress --discovery none --peer ADDR - MNT\` (code in PCP_CODE; default options: 256M cache, 30s timeout) of a fresh \`pcp send --discovery none --listen /ip4/127.0.0.1/tcp/0 DIR\` sharing the one folder; unmounted with SIGTERM"
  echo "- sshfs: \`sshfs -f root@127.0.0.1:DIR MNT\`, default options, through the private sshd (ssh options only for its temporary key); unmounted with \`fusermount3 -u\`"
  echo "- pread: one python3 thread, $(commas "$PREADS") \`os.pread\` of 4 KiB at random 4 KiB-aligned offsets (seed $PREAD_SEED, the same for both), timed inside python, bytes checked; find: \`find MNT -printf '%y %m %s %T@ %p\\n'\`, which lstat()s every entry; cp: \`cp -r MNT DST\` with DST on $([ "$CP_DST" = tmpfs ] && echo "a private tmpfs (BENCH_CP_DST=disk: on the local disk)" || echo "the local disk (BENCH_CP_DST=disk)"), copy checked with \`diff -r\`"
  echo
  echo "| workload | measure | pcp | sshfs | pcp/sshfs | target | met |"
  echo "|---|---|---|---|---|---|---|"
  local p s ratio met
  p=$(m_median pcp seq) s=$(m_median sshfs seq)
  ratio="" met="**no**"
  [ -n "$p" ] && [ -n "$s" ] && ratio=$(calc "printf \"%.2fx\", $p / $s") && met=$(yesno "$p >= $TARGET_MNT_SEQ_X * $s")
  printf '| sequential read of a %s (`dd if=MNT/file of=/dev/null bs=1M`) | throughput, MiB/s | %s | %s | %s | >= %sx sshfs | %s |\n' \
    "$big_label" "$(m_cell pcp seq "$p" %.1f)" "$(m_cell sshfs seq "$s" %.1f)" "$ratio" "$TARGET_MNT_SEQ_X" "$met"

  p=$(m_median pcp cp) s=$(m_median sshfs cp)
  ratio="" met="**no**"
  [ -n "$p" ] && [ -n "$s" ] && ratio=$(calc "printf \"%.2fx\", $p / $s") && met=$(yesno "$p * $TARGET_MNT_CP_FRAC <= $s")
  printf '| `cp -r` of %s out of the mount | time, s | %s | %s | %s | <= 1/%s of sshfs'"'"'s time | %s |\n' \
    "$small_label" "$(m_cell pcp cp "$p" %.3f)" "$(m_cell sshfs cp "$s" %.3f)" "$ratio" "$TARGET_MNT_CP_FRAC" "$met"

  p=$(m_median pcp pread) s=$(m_median sshfs pread)
  ratio="" met="**no**"
  [ -n "$p" ] && [ -n "$s" ] && ratio=$(calc "printf \"%.2fx\", $p / $s") && met=$(yesno "$p >= $TARGET_MNT_IOPS_X * $s")
  printf '| random 4 KiB pread, one thread, %s reads of the %s | IOPS | %s | %s | %s | >= %sx sshfs | %s |\n' \
    "$(commas "$PREADS")" "$big_label" "$(m_cell pcp pread "$p" %.0f)" "$(m_cell sshfs pread "$s" %.0f)" "$ratio" "$TARGET_MNT_IOPS_X" "$met"

  p=$(m_median pcp find) s=$(m_median sshfs find)
  ratio="" met="**no**"
  [ -n "$p" ] && [ -n "$s" ] && ratio=$(calc "printf \"%.2fx\", $p / $s")
  [ -n "$p" ] && met=$(yesno "$p <= $TARGET_MNT_FIND_SECS")
  printf '| `find MNT -printf ...` + lstat of a tree of %s | time, s | %s | %s | %s | <= %s s | %s |\n' \
    "$tree_label" "$(m_cell pcp find "$p" %.3f)" "$(m_cell sshfs find "$s" %.3f)" "$ratio" "$TARGET_MNT_FIND_SECS" "$met"

  p=$(m_max pcp rss) s=$(m_max sshfs rss)
  met="**no**"
  [ -n "$p" ] && met=$(yesno "$p <= $TARGET_MNT_RSS_MIB")
  printf '| receiver peak RSS (VmHWM of the FUSE process) after a sequential read of a %s, default cache | MiB | %s | %s | | <= %s MiB | %s |\n' \
    "$(size_label "$HUGE_MIB")" "$(m_cell pcp rss "$p" %.1f)" "$(m_cell sshfs rss "$s" %.1f)" "$TARGET_MNT_RSS_MIB" "$met"

  echo
  echo "pcp/sshfs is pcp's figure over sshfs's (throughput and IOPS: above 1 is pcp faster; time: below 1 is pcp faster). sshfs's RSS is its own process's, without ssh. Each run (\"local disk\": the same workload on the source folder, cold, no network: the floor for both):"
  echo
  local w tool line
  for w in "${MOUNT_WORKLOADS[@]}"; do
    line="- $w ($(case $w in seq) echo MiB/s ;; cp | find) echo s ;; pread) echo IOPS ;; rss) echo MiB ;; esac)):"
    for tool in pcp sshfs local; do
      [ "$w $tool" = "rss local" ] && continue
      if [ "$tool" = local ]; then line+=" local disk"; else line+=" $tool"; fi
      line+="${M_RES["$tool $w"]:- -}"
      [ -n "${M_FAILS["$tool $w"]:-}" ] && line+=" (${M_FAILS["$tool $w"]} failed)"
      line+=";"
    done
    echo "${line%;}"
  done
  echo "- sequential read of the $(size_label "$HUGE_MIB") during the RSS runs, MiB/s: pcp${M_HUGE_MIBS[pcp]:- -}; sshfs${M_HUGE_MIBS[sshfs]:- -}"
  line="- time to mount (command start to usable mount; pcp's includes the manifest), median, s:"
  for w in "${MOUNT_WORKLOADS[@]}"; do
    # shellcheck disable=SC2086
    line+=" $w pcp $(calc "printf \"%.3f\", $(median ${M_MOUNT_SECS["pcp $w"]:-0})") / sshfs $(calc "printf \"%.3f\", $(median ${M_MOUNT_SECS["sshfs $w"]:-0})");"
  done
  echo "${line%;}"
  # shellcheck disable=SC2086
  echo "- time to unmount and exit (pcp: from SIGTERM; sshfs: from \`fusermount3 -u\`), median / max, s: pcp $(calc "printf \"%.3f\", $(median ${M_UNMOUNT_SECS[pcp]:-0})") / $(calc "printf \"%.3f\", $(maximum ${M_UNMOUNT_SECS[pcp]:-0})"); sshfs $(calc "printf \"%.3f\", $(median ${M_UNMOUNT_SECS[sshfs]:-0})") / $(calc "printf \"%.3f\", $(maximum ${M_UNMOUNT_SECS[sshfs]:-0})")"
  if [ -s "$WORK/log/mount-problems" ]; then
    echo
    echo "Problems seen during the mount runs:"
    echo
    sed 's/^/    /' "$WORK/log/mount-problems" | head -n 40
  fi
}

report_warnings() {
  if [ -s "$WORK/log/pcp-warnings" ]; then
    echo
    echo "pcp printed warnings or errors:"
    echo
    sed 's/^/    /' "$WORK/log/pcp-warnings" | head -n 40
  fi
}

report() {
  if [ "$DO_RECEIVE" = 1 ]; then
    report_receive
  fi
  if [ "$DO_MOUNT" = 1 ]; then
    [ "$DO_RECEIVE" = 1 ] && echo
    report_mount
  fi
  report_warnings
  echo
  echo "Benchmark run time: $((SECONDS / 60)) min $((SECONDS % 60)) s."
}

# ---------------------------------------------------------------------------------------------

size_label() { # MiB -> "1 GiB file" or "64 MiB file"
  if [ "$1" -ge 1024 ] && [ $(($1 % 1024)) = 0 ]; then
    echo "$(($1 / 1024)) GiB file"
  else
    echo "$1 MiB file"
  fi
}
commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }

main() {
  ensure_tools
  record_commit
  build_pcp
  if [ "$DO_MOUNT" = 1 ]; then
    PY=$(command -v python3)
    [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
    PY=$("$PY" -c 'import sys; print(sys.executable)') || die "python3 does not run"
  fi
  collect_warm_files
  if [ ! -d "$BENCH_DIR" ]; then
    mkdir -p "$BENCH_DIR"
    CREATED_BENCH_DIR=1
  fi
  WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
  mkdir -p "$WORK/log" "$WORK/dst"
  start_sshd

  if [ "$DO_RECEIVE" = 1 ]; then
    make_data
    add_transfer_workload big "$(size_label "$BIG_MIB" | sed 's/ file$/ random file/')" "$WORK/src/big.bin" "$TARGET_BIG_MIBS" 1 ""
    add_transfer_workload small "$(commas "$SMALL_FILES") files of $SMALL_KIB KiB" "$WORK/src/small" "" "" "$TARGET_SMALL_SECS"
    bench_transfers
  fi
  if [ "$DO_MOUNT" = 1 ]; then
    make_mount_data
    write_pread_script
    bench_mount
  fi
  report
}

main "$@"
