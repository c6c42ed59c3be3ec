#!/usr/bin/env bash
# Benchmark (not a test) for the send/receive spine: `pcp receive` against `scp` of the same data
# on loopback, in one run, and prints a markdown table on stdout (progress goes to stderr).
#
#   sudo scripts/bench.sh                       # defaults: 3 runs, 1 GiB file, 2,000 x 4 KiB
#   BENCH_BIG_MIB=64 BENCH_RUNS=1 scripts/bench.sh
#
# Needs root: it drops the page caches before every timed transfer, installs missing Debian
# packages (openssh-server, openssh-client, time, ...) and runs a private sshd on 127.0.0.1.
# All traffic stays on loopback: pcp runs with --discovery none and 127.0.0.1 addresses only.
#
# Options (environment):
#   BENCH_RUNS=3            runs per workload and tool (the median is reported)
#   BENCH_BIG_MIB=1024      size of the random big file, MiB
#   BENCH_SMALL_FILES=2000  number of small files
#   BENCH_SMALL_KIB=4       size of each small file, KiB
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

# Targets of the "send/receive spine" issue.
TARGET_BIG_MIBS=300      # 1 GiB at >= 300 MiB/s (and no slower than scp)
TARGET_SMALL_SECS=0.6    # 2,000 files of 4 KiB in <= 0.6 s
TARGET_RSS_MIB=100       # each side's peak RSS <= 100 MiB

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=""
SSHD_PID=""
CREATED_RUN_SSHD=0
CREATED_BENCH_DIR=0
CACHES_DROPPED=0
declare -a LIVE_PIDS=()   # background processes this script started and has not reaped yet

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

for v in RUNS BIG_MIB SMALL_FILES SMALL_KIB SSH_PORT_FIRST TIMEOUT; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $BENCH_DIR != *[[:space:]]* ]] || die "BENCH_DIR must not contain white space"
[ "$(id -u)" = 0 ] || die "run as root: it drops page caches, installs packages and runs sshd"

# ---------------------------------------------------------------------------------------------
# Process and cleanup helpers

# Kills a process and its descendants, children first, by pid.
kill_tree() {
  local pid=$1 child
  for child in $(pgrep -P "$pid" 2>/dev/null || true); do
    kill_tree "$child"
  done
  kill "$pid" 2>/dev/null || true
}

forget_pid() {
  local pid=$1 i
  for i in "${!LIVE_PIDS[@]}"; do
    [ "${LIVE_PIDS[$i]}" = "$pid" ] && unset 'LIVE_PIDS[i]'
  done
  return 0
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
  local pid
  for pid in "${LIVE_PIDS[@]}"; do
    kill_tree "$pid"
  done
  if [ -n "$SSHD_PID" ]; then
    kill "$SSHD_PID" 2>/dev/null
  fi
  wait 2>/dev/null
  [ -n "$WORK" ] && rm -rf "$WORK"
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
  [ -x "$PCP" ] || die "no binary at $PCP"
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
    /usr/bin/time "$(command -v timeout)"; do
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

run_pcp() {
  local src=$1 dst=$2 files=$3 bytes=$4 tag=$5
  local lg=$WORK/log/$tag
  rm -rf "$dst"
  mkdir -p "$dst"
  : >"$lg.send.out"
  : >"$lg.send.err"
  /usr/bin/time -f %M -o "$lg.send.rss" timeout --foreground -k 5 "$TIMEOUT" \
    "$PCP" -v --no-progress --discovery none send --listen /ip4/127.0.0.1/tcp/0 "$src" \
    >"$lg.send.out" 2>"$lg.send.err" </dev/null &
  local spid=$!
  LIVE_PIDS+=("$spid")
  local code="" addr="" i
  for ((i = 0; i < 600; i++)); do
    code=$(sed -n 's/^Code is: //p;T;q' "$lg.send.out")
    addr=$(sed -n 's#^Listening on \(/ip4/127\.0\.0\.1/tcp/[0-9][0-9]*\)#\1#p;T;q' "$lg.send.err")
    [ -n "$code" ] && [ -n "$addr" ] && break
    kill -0 "$spid" 2>/dev/null || die "$tag: pcp send exited early: $(tail -n 20 "$lg.send.err")"
    sleep 0.05
  done
  [[ -n $code && -n $addr ]] || die "$tag: pcp send printed no code/address: $(tail -n 20 "$lg.send.err")"

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
  # Anything pcp warned about goes into the report.
  sed 's/\x1b\[[0-9;]*m//g' "$lg.send.err" "$lg.recv.err" |
    grep -i -E '(^|[^a-z])(warn|warning|error)([^a-z]|$)' |
    sed "s|^|$tag: |" >>"$WORK/log/pcp-warnings" || true
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

# --- Workload placeholder: `pcp mount` vs sshfs ----------------------------------------------
# To be added later (by someone else): bench_mount() — mount the share with `pcp mount` and the
# same data with sshfs through the sshd started above (127.0.0.1:$SSH_PORT, "${SSH_OPTS[@]}"),
# read it cold, and append its rows to the report. Call it from main after bench_transfers.
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Report

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
maximum() { printf '%s\n' "$@" | sort -g | tail -n 1; }
calc() { awk "BEGIN { $1 }"; }
yesno() { calc "print (($1) ? \"yes\" : \"**no**\")"; }

report() {
  local commit dirty=""
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] || dirty=" (+ local changes)"
  echo "## pcp send/receive vs scp on loopback"
  echo
  echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit$dirty, $("$PCP" --version), $(ssh -V 2>&1 | cut -d, -f1)"
  echo "- $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r); loopback only (127.0.0.1)"
  echo "- median of $RUNS run(s) each, pcp and scp alternating; peak RSS is the max over runs (GNU time %M)"
  if [ "$CACHES_DROPPED" = 1 ]; then
    echo "- page caches dropped before every timed transfer (\`sync; echo 3 > /proc/sys/vm/drop_caches\`): source reads are cold; the programs and their libraries were read back in"
  else
    echo "- **page caches NOT dropped** (BENCH_DROP_CACHES=0): source reads come from the page cache"
  fi
  if ((BUSY_COUNT > 0)); then
    echo "- **the machine was busy**: other processes kept the CPUs over ${BUSY_LIMIT}% busy right before $BUSY_COUNT of $BUSY_SAMPLES timed transfers (max ${BUSY_MAX}%) despite waiting up to ${QUIET_WAIT} s: these figures are skewed, run again on a quiet machine"
  else
    echo "- machine quiet: CPUs at most ${BUSY_MAX}% busy right before each timed transfer (checked over 0.3 s)"
  fi
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
  if [ -s "$WORK/log/pcp-warnings" ]; then
    echo
    echo "pcp printed warnings or errors:"
    echo
    sed 's/^/    /' "$WORK/log/pcp-warnings" | head -n 40
  fi
}

# ---------------------------------------------------------------------------------------------

main() {
  ensure_tools
  build_pcp
  collect_warm_files
  if [ ! -d "$BENCH_DIR" ]; then
    mkdir -p "$BENCH_DIR"
    CREATED_BENCH_DIR=1
  fi
  WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
  mkdir -p "$WORK/log" "$WORK/dst"
  start_sshd
  make_data

  local big_label small_label
  if [ "$BIG_MIB" -ge 1024 ] && [ $((BIG_MIB % 1024)) = 0 ]; then
    big_label="$((BIG_MIB / 1024)) GiB random file"
  else
    big_label="$BIG_MIB MiB random file"
  fi
  small_label="$(sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$SMALL_FILES") files of $SMALL_KIB KiB"
  add_transfer_workload big "$big_label" "$WORK/src/big.bin" "$TARGET_BIG_MIBS" 1 ""
  add_transfer_workload small "$small_label" "$WORK/src/small" "" "" "$TARGET_SMALL_SECS"

  bench_transfers
  # bench_mount   # placeholder, see above
  report
}

main "$@"
