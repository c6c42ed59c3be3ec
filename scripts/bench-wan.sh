#!/usr/bin/env bash
# Benchmark (not a test) of issue 13: pcp across emulated internet paths against scp and sshfs
# on the same link. ../shared/tools/wan-link.sh (or WAN_LINK) builds two network namespaces
# joined by a user-space wire with a one-way delay, a rate and random loss; the sender (and a
# private sshd) run in TAGa (10.241.0.1), the receiver, the mount and sshfs in TAGb
# (10.241.0.2). Mounts enter only TAGb's network namespace (nsenter --net), so they show in
# this shell's mount table and dd/cp run here. A markdown table on stdout, progress on stderr.
#
#   sudo scripts/bench-wan.sh
#   BENCH_WAN_PATHS=fast BENCH_RUNS=1 sudo -E scripts/bench-wan.sh
#
# Workloads, per path (wall time of whole commands, cold page caches, medians of BENCH_RUNS):
#   receive   `pcp receive` of one big file, from its start to its exit; vs `scp` of it, and
#             vs one plain TCP flow of as many bytes (scripts/tcp-flow.py: the path's ceiling
#             for any one-connection tool)
#   ready     from `pcp mount --peer` start to a listed tree (the "Mounted" line and `ls`)
#   dd        `dd bs=1M` of the big file through a fresh mount; vs sshfs (default options)
#   cp        `cp -r` of the small files out of a freshly mounted tree; vs sshfs
#   first     the first 4 KiB of a cold file right after the mount is ready
#   logs      `pcp receive --compress` of a text log as big as the big file; vs `scp -C`
# Figures are given as % of the link rate and in round trips (RTT = 2 x one-way delay). pcp's
# workloads run once per transport (the sender listens on TCP or on QUIC and the receiver is
# given that address): `--peer` picks TCP first, a sender found through the DHT is usually
# reached over QUIC (its handshake finishes first; so is a hole-punched connection).
#
# Options (environment):
#   BENCH_WAN_PATHS="fast lossy"   which paths: fast = 25 ms one way (50 ms RTT), 200 Mbit/s,
#                           no loss, 128 MiB, 300 small files; lossy = 60 ms (120 ms RTT),
#                           100 Mbit/s, 1% loss, 64 MiB, 200 small files
#   BENCH_WAN_TRANSPORTS="tcp quic"  pcp's transports, one column each
#   BENCH_RUNS=3            runs of each pcp workload (the median is reported)
#   BENCH_BASE_RUNS=3       runs of each scp/sshfs workload (sshfs cp -r takes ~40-90 s a run);
#                           0 skips scp and sshfs (pcp figures only, for quick iterations)
#   BENCH_SMALL_KIB=4       size of each small file, KiB
#   BENCH_CP_DST=tmpfs      where `cp -r` writes: tmpfs (a private 64 MiB tmpfs, so creating
#                           the files on this VM's busy ext4 disk, 0.1-2 ms each, does not hide
#                           the path) or disk (under BENCH_DIR)
#   BENCH_DIR=/tmp/pcp-bench  parent of the temporary work dir (removed on exit)
#   BENCH_TIMEOUT=300       seconds before one command is abandoned
#   BENCH_BUILD=1           0 to use the release binary already built
#   BENCH_PCP               this pcp binary instead (no build), e.g. an older one to compare
#   WAN_LINK                path of wan-link.sh (default ../shared/tools/wan-link.sh)
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=bench-wan
DO_MOUNT=1
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
PATHS=${BENCH_WAN_PATHS:-fast lossy}
TRANSPORTS=${BENCH_WAN_TRANSPORTS:-tcp quic}
for t in $TRANSPORTS; do
  [[ $t = tcp || $t = quic ]] || die "BENCH_WAN_TRANSPORTS: unknown transport '$t' (known: tcp, quic)"
done
[ -n "$TRANSPORTS" ] || die "BENCH_WAN_TRANSPORTS is empty"
T=tcp # transport of the pcp workload running now
RUNS=${BENCH_RUNS:-3}
BASE_RUNS=${BENCH_BASE_RUNS:-3}
[[ $BASE_RUNS =~ ^[0-9]+$ ]] || die "BENCH_BASE_RUNS must be a whole number"
SMALL_KIB=${BENCH_SMALL_KIB:-4}
CP_DST=${BENCH_CP_DST:-tmpfs}
[[ $CP_DST = tmpfs || $CP_DST = disk ]] || die "BENCH_CP_DST must be tmpfs or disk"
BENCH_DIR=${BENCH_DIR:-/tmp/pcp-bench}
TIMEOUT=${BENCH_TIMEOUT:-300}
BUILD=${BENCH_BUILD:-1}
DROP_CACHES=1
BUSY_LIMIT=${BENCH_BUSY_LIMIT:-15}
QUIET_WAIT=${BENCH_QUIET_WAIT:-30}
WAN_LINK=${WAN_LINK:-$ROOT/../shared/tools/wan-link.sh}
SSH_PORT_FIRST=2222
positive_ints RUNS SMALL_KIB TIMEOUT
[ -x "$WAN_LINK" ] || die "no wan-link.sh at $WAN_LINK (set WAN_LINK)"
need_root
on_exit_clean_up

# name: one-way delay ms, rate Mbit/s, loss %, big file MiB, small files
declare -A PATH_SPEC=([fast]="25 200 0 128 300" [lossy]="60 100 1 64 200")
for p in $PATHS; do
  [ -n "${PATH_SPEC[$p]:-}" ] || die "BENCH_WAN_PATHS: unknown path '$p' (known: fast, lossy)"
done

TAGS=()
cleanup_hook() {
  local t
  for t in "${TAGS[@]}"; do
    "$WAN_LINK" down "$t" >/dev/null 2>&1 || true
  done
}

ensure_tools "${SSH_TOOLS[@]}" "${MOUNT_TOOLS[@]}" nsenter=util-linux python3=python3
record_commit
if [ -n "${BENCH_PCP:-}" ]; then
  PCP=$BENCH_PCP
  BUILT_COMMIT="unknown (BENCH_PCP=$PCP)"
else
  build_pcp
fi
collect_warm_files
make_work wan
mkdir -p "$WORK/log" "$WORK/dst" "$WORK/mnt"
WARNINGS=$WORK/log/pcp-warnings

# ---------------------------------------------------------------------------------------------
# The link, the sshd and the processes in it

A="" B=""        # namespaces of the current path
in_a() { nsenter --net="/run/netns/$A" "$@"; }
in_b() { nsenter --net="/run/netns/$B" "$@"; }

link_up_path() {
  local tag=$1 delay=$2 rate=$3 loss=$4
  TAGS+=("$tag")
  "$WAN_LINK" up "$tag" "$delay" "$rate" "$loss" >&2 || die "wan-link.sh up $tag failed"
  A=${tag}a B=${tag}b
  NAMESPACES+=("$A" "$B")
}

# A private sshd in namespace A on 10.241.0.1 with temporary keys (SSH_OPTS, SSH_PORT).
start_sshd_a() {
  local dir=$WORK/ssh
  mkdir -p "$dir"
  chmod 700 "$dir"
  [ -f "$dir/host_key" ] || {
    ssh-keygen -q -t ed25519 -N '' -C pcp-bench-host -f "$dir/host_key"
    ssh-keygen -q -t ed25519 -N '' -C pcp-bench-client -f "$dir/client_key"
    cp "$dir/client_key.pub" "$dir/authorized_keys"
  }
  if [ ! -d /run/sshd ]; then
    mkdir -p /run/sshd
    chmod 755 /run/sshd
    CREATED_RUN_SSHD=1
  fi
  SSH_PORT=$SSH_PORT_FIRST
  cat >"$dir/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 10.241.0.1
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
  in_a /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
  LIVE_PIDS+=("$!")
  SSH_OPTS=(-F /dev/null -i "$dir/client_key" -o IdentitiesOnly=yes -o BatchMode=yes
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
  local i
  for ((i = 0; i < 100; i++)); do
    in_b ssh "${SSH_OPTS[@]}" -p "$SSH_PORT" root@10.241.0.1 true 2>/dev/null && return 0
    sleep 0.1
  done
  die "sshd in $A does not answer: $(cat "$dir/sshd.log")"
}

# Starts `pcp send SRC` in namespace A listening on transport $T: sets SEND_PID, SEND_CODE,
# SEND_ADDR.
start_send() {
  local src=$1 lg=$WORK/log/$2 listen=/ip4/10.241.0.1/tcp/0 addr='tcp/[0-9][0-9]*'
  [ "$T" = tcp ] || listen=/ip4/10.241.0.1/udp/0/quic-v1 addr='udp/[0-9][0-9]*/quic-v1'
  : >"$lg.send.out"
  : >"$lg.send.err"
  in_a "$PCP" -v --no-progress --discovery none send --listen "$listen" "$src" \
    >"$lg.send.out" 2>"$lg.send.err" </dev/null &
  SEND_PID=$!
  LIVE_PIDS+=("$SEND_PID")
  SEND_CODE="" SEND_ADDR=""
  local deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    SEND_CODE=$(sed -n 's/^Code is: //p;T;q' "$lg.send.out")
    SEND_ADDR=$(sed -n "s#^Listening on \\(/ip4/10\\.241\\.0\\.1/$addr\\)#\\1#p;T;q" "$lg.send.err")
    [ -n "$SEND_CODE" ] && [ -n "$SEND_ADDR" ] && return 0
    kill -0 "$SEND_PID" 2>/dev/null || die "$2: pcp send exited early: $(tail -n 20 "$lg.send.err")"
    sleep 0.05
  done
  die "$2: pcp send printed no code/address within 60 s: $(tail -n 20 "$lg.send.err")"
}

end_send() {
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$SEND_PID" 2>/dev/null || break
    sleep 0.1
  done
  stop_pid "$SEND_PID"
  collect_warnings "$1" "$WORK/log/$1.send.err"
}

# ---------------------------------------------------------------------------------------------
# Workloads. Each sets VAL (seconds) or dies.

run_timed() { # run_timed LOG CMD...: runs CMD in the background, timed into VAL
  local lg=$1 t0 rc=0
  shift
  t0=$EPOCHREALTIME
  timeout --foreground -k 5 "$TIMEOUT" "$@" >"$lg" 2>&1 </dev/null &
  reap $! || rc=$?
  VAL=$(elapsed "$t0" "$EPOCHREALTIME")
  [ "$rc" = 0 ] || die "$* exited $rc: $(tail -n 5 "$lg")"
}

wl_receive() { # wl_receive TAG [FILE [OPTION...]]: the big file, or FILE with pcp receive's OPTIONs
  local tag=$1 src=${2:-$DATA/big/big.bin} dst=$WORK/dst/$1
  shift $(($# < 2 ? $# : 2))
  rm -rf "$dst"
  mkdir -p "$dst"
  start_send "$src" "$tag"
  before_timed
  run_timed "$WORK/log/$tag.recv" env PCP_CODE="$SEND_CODE" nsenter --net="/run/netns/$B" \
    "$PCP" receive --yes --no-progress --discovery none --peer "$SEND_ADDR" --out "$dst" --wait 60s "$@"
  cmp -s "$src" "$dst/${src##*/}" || die "$tag: pcp received wrong bytes"
  end_send "$tag"
  collect_warnings "$tag" "$WORK/log/$tag.recv"
  rm -rf "$dst"
}

wl_scp() { # wl_scp TAG [FILE [OPTION...]]: the big file, or FILE with scp's OPTIONs
  local tag=$1 src=${2:-$DATA/big/big.bin} dst=$WORK/dst/$1
  shift $(($# < 2 ? $# : 2))
  rm -rf "$dst"
  mkdir -p "$dst"
  before_timed
  run_timed "$WORK/log/$tag.scp" nsenter --net="/run/netns/$B" \
    scp -q "$@" -P "$SSH_PORT" "${SSH_OPTS[@]}" "root@10.241.0.1:$src" "$dst/"
  cmp -s "$src" "$dst/${src##*/}" || die "$tag: scp copied wrong bytes"
  rm -rf "$dst"
}

# One plain TCP flow of the same size over the same link (scripts/tcp-flow.py): what a single
# connection gets from this path with no handshake, no encryption and no files.
wl_tcp() {
  local tag=$1 port=5601 i
  in_a python3 "$ROOT/scripts/tcp-flow.py" serve 10.241.0.1 "$port" "$BIG" >"$WORK/log/$tag.tcp-serve" 2>&1 &
  LIVE_PIDS+=("$!")
  for i in $(seq 1 100); do grep -q listening "$WORK/log/$tag.tcp-serve" && break; sleep 0.05; done
  before_timed
  run_timed "$WORK/log/$tag.tcp" nsenter --net="/run/netns/$B" \
    python3 "$ROOT/scripts/tcp-flow.py" fetch 10.241.0.1 "$port"
  [ "$(cat "$WORK/log/$tag.tcp")" = "$((BIG << 20))" ] || die "$tag: the TCP flow moved $(cat "$WORK/log/$tag.tcp") bytes"
}

MNT_PID="" READY=""
# mount_tool TOOL SRC TAG: mounts SRC at $WORK/mnt/TOOL, sets READY (seconds from the start of
# the command to a listed tree).
mount_tool() {
  local tool=$1 src=$2 tag=$3 mp=$WORK/mnt/$1 lg=$WORK/log/$3.$1 t0
  mkdir -p "$mp"
  [[ " ${MOUNTS[*]} " = *" $mp "* ]] || MOUNTS+=("$mp")
  ! is_mounted "$mp" || die "$mp is still mounted"
  if [ "$tool" = pcp ]; then
    start_send "$src" "$tag"
    before_timed
    t0=$EPOCHREALTIME
    PCP_CODE=$SEND_CODE nsenter --net="/run/netns/$B" "$PCP" mount --no-progress --discovery none \
      --peer "$SEND_ADDR" - "$mp" >"$lg.out" 2>"$lg.err" </dev/null &
  else
    before_timed
    t0=$EPOCHREALTIME
    nsenter --net="/run/netns/$B" sshfs -f -p "$SSH_PORT" -o "ssh_command=ssh ${SSH_OPTS[*]}" \
      "root@10.241.0.1:$src" "$mp" >"$lg.out" 2>"$lg.err" </dev/null &
  fi
  MNT_PID=$!
  LIVE_PIDS+=("$MNT_PID")
  local deadline=$((SECONDS + TIMEOUT))
  # Ready: mounted and the tree lists (ls of the root shows its entries).
  until is_mounted "$mp" && [ -n "$(ls -A "$mp" 2>/dev/null)" ]; do
    kill -0 "$MNT_PID" 2>/dev/null || die "$tag: $tool exited before mounting: $(tail -n 20 "$lg.err")"
    ((SECONDS < deadline)) || die "$tag: $tool did not mount within $TIMEOUT s"
    sleep 0.005
  done
  READY=$(elapsed "$t0" "$EPOCHREALTIME")
}

unmount_tool() {
  local tool=$1 tag=$2 mp=$WORK/mnt/$1 i
  if [ "$tool" = pcp ]; then
    kill -TERM "$MNT_PID" 2>/dev/null || true
  else
    fusermount3 -u "$mp" 2>/dev/null || force_unmount "$mp"
  fi
  for ((i = 0; i < 300; i++)); do
    kill -0 "$MNT_PID" 2>/dev/null || break
    sleep 0.05
  done
  stop_pid "$MNT_PID"
  force_unmount "$mp"
  if [ "$tool" = pcp ]; then
    end_send "$tag"
    collect_warnings "$tag" "$WORK/log/$tag.pcp.err"
  fi
}

# The small files: mount, then cp -r right away (sets READY and VAL).
wl_cp() {
  local tool=$1 tag=$2 dst=$WORK/dst/cp-$1 got
  if [ "$CP_DST" = tmpfs ]; then
    cp_tmpfs 64m
    dst=$WORK/cp-tmpfs/cp-$tool
  fi
  rm -rf "$dst"
  mount_tool "$tool" "$DATA/small" "$tag"
  run_timed "$WORK/log/$tag.cp" cp -r "$WORK/mnt/$tool" "$dst"
  got=$(find "$dst" -type f | wc -l)
  [ "$got" = "$SMALL" ] || die "$tag: cp -r from $tool copied $got files, not $SMALL"
  diff -r -q "$DATA/small" "$dst" >/dev/null || die "$tag: cp -r from $tool copied wrong bytes"
  rm -rf "$dst"
  unmount_tool "$tool" "$tag"
}

# The big file: mount, the first 4 KiB of a cold file (FIRST), then dd of the big one (VAL).
FIRST=""
wl_dd() {
  local tool=$1 tag=$2 mp=$WORK/mnt/$1
  mount_tool "$tool" "$DATA/big" "$tag"
  run_timed "$WORK/log/$tag.first" dd if="$mp/cold.bin" of=/dev/null bs=4096 count=1
  FIRST=$VAL
  drop_caches
  run_timed "$WORK/log/$tag.dd" dd if="$mp/big.bin" of=/dev/null bs=1M
  grep -q "^$((BIG << 20)) bytes" "$WORK/log/$tag.dd" || die "$tag: dd from $tool read $(tail -n 1 "$WORK/log/$tag.dd")"
  unmount_tool "$tool" "$tag"
}

# ---------------------------------------------------------------------------------------------

make_data() {
  DATA=$WORK/data/$1
  mkdir -p "$DATA/big" "$DATA/small"
  head -c "$((BIG << 20))" /dev/urandom >"$DATA/big/big.bin"
  head -c 1048576 /dev/urandom >"$DATA/big/cold.bin"
  # A web server's access log, as big as the big file (zstd -1 makes it about a sixth).
  mkdir -p "$DATA/log"
  python3 - "$DATA/log/access.log" "$((BIG << 20))" <<'PY'
import random, sys
random.seed(7)
paths = ["/", "/index.html", "/api/v1/items", "/static/app.js", "/static/style.css", "/login"]
agents = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "Go-http-client/2.0"]
out, want = open(sys.argv[1], "w"), int(sys.argv[2])
n = i = 0
while n < want:
    line = (f"10.{i % 256}.{i * 7 % 256}.{i * 13 % 256} - - [30/Nov/2026:21:{i // 60 % 60:02d}:{i % 60:02d} +0000] "
            f"\"GET {random.choice(paths)}?id={random.randrange(10**6)} HTTP/1.1\" {random.choice((200, 200, 200, 304, 404))} "
            f"{random.randrange(100, 90000)} \"-\" \"{random.choice(agents)}\"\n")
    line = line[: want - n]
    out.write(line)
    n += len(line)
    i += 1
PY
  random_files "$DATA/small" "$SMALL" "$((SMALL_KIB << 10))"
  sync
}

declare -A RES=()
# Formats of a median in seconds ("" when not measured): % of the link, round trips, seconds.
pct() { if [ -z "$1" ]; then echo "-"; else calc "printf \"%.1f%%\", 100 * $BIG / $1 / $LINK_MIBS"; fi; }
rtts() { if [ -z "$1" ]; then echo "-"; else calc "printf \"%.1f\", $1 * 1000 / $RTT_MS"; fi; }
secs() { if [ -z "$1" ]; then echo "not run"; else calc "printf \"%.2f s\", $1"; fi; }
collect() { # collect KEY: median of the runs V into RES[KEY]
  RES[$1]=""
  ((${#V[@]} == 0)) || RES[$1]=$(median "${V[@]}")
}

report_path() {
  local p=$1
  echo
  echo "### $p: RTT $RTT_MS ms, $RATE Mbit/s ($(calc "printf \"%.1f\", $LINK_MIBS") MiB/s), loss $LOSS%"
  echo
  local t heads=() recv="" logs="" dd="" ready="" cp="" first=""
  for t in $TRANSPORTS; do
    heads+=("pcp over ${t^^}")
    recv+=" $(secs "${RES[$p recv $t]}") ($(pct "${RES[$p recv $t]}") of link) |"
    logs+=" $(secs "${RES[$p logs $t]}") ($(pct "${RES[$p logs $t]}")) |"
    dd+=" $(secs "${RES[$p pdd $t]}") ($(pct "${RES[$p pdd $t]}")) |"
    ready+=" $(secs "${RES[$p pready $t]}") ($(rtts "${RES[$p pready $t]}") RTT) |"
    cp+=" $(secs "${RES[$p pcp $t]}") ($(rtts "${RES[$p pcp $t]}") RTT) |"
    first+=" $(secs "${RES[$p pfirst $t]}") ($(rtts "${RES[$p pfirst $t]}") RTT) |"
  done
  table_head work "${heads[@]}" "scp / sshfs" "link limit" target
  echo "| receive $BIG MiB (whole command) |$recv scp $(secs "${RES[$p scp]}") ($(pct "${RES[$p scp]}")) | $(secs "$(calc "print $BIG / $LINK_MIBS")"); one plain TCP flow $(secs "${RES[$p tcp]}") ($(pct "${RES[$p tcp]}")) | $([ "$p" = fast ] && echo '>= 92%' || echo '>= 75%') |"
  echo "| receive $BIG MiB of text logs, \`--compress\` (scp -C) |$logs scp -C $(secs "${RES[$p scp_c]}") ($(pct "${RES[$p scp_c]}")) | $(secs "$(calc "print $BIG / $LINK_MIBS")") uncompressed | |"
  echo "| dd $BIG MiB through the mount |$dd sshfs $(secs "${RES[$p sdd]}") ($(pct "${RES[$p sdd]}")) | | $([ "$p" = fast ] && echo '>= 92%' || echo '>= 70%') |"
  echo "| mount start to a listed tree |$ready sshfs $(secs "${RES[$p sready]}") ($(rtts "${RES[$p sready]}") RTT) | | <= 6 RTT |"
  echo "| cp -r $SMALL x $SMALL_KIB KiB, fresh mount |$cp sshfs $(secs "${RES[$p scp_r]}") ($(rtts "${RES[$p scp_r]}") RTT) | | <= 6 RTT |"
  echo "| first 4 KiB of a cold file, right after ready |$first sshfs $(secs "${RES[$p sfirst]}") ($(rtts "${RES[$p sfirst]}") RTT) | | <= 2 RTT |"
}

# mount_runs TOOL N TAG CP READY DD FIRST: N runs of the small-files and the big-file mount
# workloads with TOOL; their medians go to RES[CP], RES[READY], RES[DD] and RES[FIRST].
mount_runs() {
  local tool=$1 n=$2 tag=$3 r
  V=() W=()
  for ((r = 1; r <= n; r++)); do
    wl_cp "$tool" "$tag-cp-$r"
    V+=("$VAL") W+=("$READY")
    log "$tag: $tool mount ready $READY s, cp -r $VAL s"
  done
  collect "$4"
  V=("${W[@]}")
  collect "$5"
  V=() W=()
  for ((r = 1; r <= n; r++)); do
    wl_dd "$tool" "$tag-dd-$r"
    V+=("$VAL") W+=("$FIRST")
    log "$tag: $tool first 4 KiB $FIRST s, dd $VAL s"
  done
  collect "$6"
  V=("${W[@]}")
  collect "$7"
}

REPORT=$WORK/report.md
: >"$REPORT"
for p in $PATHS; do
  read -r DELAY RATE LOSS BIG SMALL <<<"${PATH_SPEC[$p]}"
  RTT_MS=$((2 * DELAY))
  LINK_MIBS=$(calc "print $RATE * 1000000 / 8 / 1048576")
  make_data "$p"
  log "$p: link up (RTT $RTT_MS ms, $RATE Mbit/s, loss $LOSS%)"
  link_up_path "pw$p" "$DELAY" "$RATE" "$LOSS"
  ((BASE_RUNS == 0)) || start_sshd_a
  declare -a V=() W=()
  for T in $TRANSPORTS; do
    V=()
    for ((r = 1; r <= RUNS; r++)); do wl_receive "$p-$T-recv-$r"; V+=("$VAL"); log "$p receive over $T, run $r: $VAL s"; done
    collect "$p recv $T"
  done
  V=()
  for ((r = 1; r <= BASE_RUNS; r++)); do wl_scp "$p-scp-$r"; V+=("$VAL"); log "$p scp run $r: $VAL s"; done
  collect "$p scp"
  V=()
  for ((r = 1; r <= BASE_RUNS; r++)); do wl_tcp "$p-tcp-$r"; V+=("$VAL"); log "$p plain TCP run $r: $VAL s"; done
  collect "$p tcp"
  for T in $TRANSPORTS; do
    V=()
    for ((r = 1; r <= RUNS; r++)); do
      wl_receive "$p-$T-logs-$r" "$DATA/log/access.log" --compress
      V+=("$VAL")
      log "$p receive --compress of the log over $T, run $r: $VAL s"
    done
    collect "$p logs $T"
  done
  V=()
  for ((r = 1; r <= BASE_RUNS; r++)); do
    wl_scp "$p-scp-c-$r" "$DATA/log/access.log" -C
    V+=("$VAL")
    log "$p scp -C of the log, run $r: $VAL s"
  done
  collect "$p scp_c"
  for T in $TRANSPORTS; do
    mount_runs pcp "$RUNS" "$p-$T" "$p pcp $T" "$p pready $T" "$p pdd $T" "$p pfirst $T"
  done
  mount_runs sshfs "$BASE_RUNS" "$p-sshfs" "$p scp_r" "$p sready" "$p sdd" "$p sfirst"
  report_path "$p" >>"$REPORT"
  # Next path: its own namespaces (the trap deletes these too).
  kill_namespaced KILL
  "$WAN_LINK" down "pw$p" >/dev/null 2>&1 || true
done

echo "## pcp across emulated internet paths (scripts/bench-wan.sh)"
echo
echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), commit $BUILT_COMMIT, $("$PCP" --version), $(ssh -V 2>&1 | cut -d, -f1), $(sshfs --version 2>&1 | grep -m 1 "^SSHFS version")"
echo "- $(nproc) cores; link emulated by wan-link.sh (user-space wire, MTU 1500); sender and sshd in TAGa, receiver, mount and sshfs in TAGb; pcp with \`--discovery none --peer\` given the sender's TCP or QUIC address"
echo "- wall time of whole commands, page caches dropped before each, medians of $RUNS pcp run(s) and $BASE_RUNS scp/sshfs run(s); receive is timed from \`pcp receive\` start to exit (connect, handshake, transfer, BLAKE3 check); mount figures from the start of \`pcp mount\` (or sshfs) until \`ls\` of the root lists it; cp -r starts right after that and writes into $([ "$CP_DST" = tmpfs ] && echo "a private tmpfs (BENCH_CP_DST=disk: the local disk)" || echo "the local disk (BENCH_CP_DST=disk)")"
if ((BUSY_COUNT > 0)); then
  echo "- **busy machine**: CPUs over ${BUSY_LIMIT}% right before $BUSY_COUNT of $BUSY_SAMPLES timed commands (max ${BUSY_MAX}%)"
else
  echo "- machine quiet before each timed command (at most ${BUSY_MAX}% busy)"
fi
cat "$REPORT"
report_end
