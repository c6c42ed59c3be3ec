# shellcheck shell=bash disable=SC2034 # (variables set here for the sourcing scripts)
# Helpers shared by the benchmark scripts (sourced, not run): bench.sh, bench-receive.sh,
# bench-mount.sh and bench-reach.sh.
#
# The sourcing script sets LOG_TAG, ROOT (the repository) and BUILD (1: cargo build --release
# first), then calls on_exit_clean_up. What it starts and creates, it records here, and the trap
# undoes it on exit, on failure, Ctrl-C or SIGTERM:
#   LIVE_PIDS   background processes it started and has not reaped yet
#   MOUNTS      mountpoints it mounts on (detached, even if busy)
#   NAMESPACES  network namespaces it created (their processes killed, then deleted)
#   SSHD_PID    the private sshd (start_sshd)
#   WORK        its temporary work dir (make_work; never removed through a mount)

declare -a LIVE_PIDS=() MOUNTS=() NAMESPACES=()
WORK=""
SSHD_PID=""
CREATED_RUN_SSHD=0
CREATED_BENCH_DIR=0
CLEANUP_GRACE=100 # tenths of a second the trap waits for LIVE_PIDS to exit after SIGTERM
CLEANUP_TREE=1    # 1: the trap sends SIGTERM to each of LIVE_PIDS and its descendants; 0: to it only

# Set by scripts/bench.sh for the section scripts it runs (see report_env); empty when run alone.
SUITE=${BENCH_SUITE_DIR:-}
ENV_MARKER='<!-- scripts/bench.sh: environment of the whole run -->'

# ---------------------------------------------------------------------------------------------
# Logging

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

# pick_sections SPEC KNOWN...: the sections that SPEC (BENCH_SECTIONS: space- or
# comma-separated) names, into PICKED, in the order of KNOWN; dies on an unknown one, or none.
pick_sections() {
  local spec=$1 sec known
  shift
  known=$(printf '%s, ' "$@")
  known=${known%, }
  PICKED=()
  for sec in ${spec//,/ }; do
    [[ " $* " = *" $sec "* ]] || die "BENCH_SECTIONS: unknown section '$sec' (known: $known)"
  done
  for sec in "$@"; do
    [[ " ${spec//,/ } " != *" $sec "* ]] || PICKED+=("$sec")
  done
  ((${#PICKED[@]} > 0)) || die "BENCH_SECTIONS names no section (known: $known)"
}

# positive_ints NAME...: dies unless each variable named holds a positive integer.
positive_ints() {
  local v
  for v in "$@"; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
  done
}

# ---------------------------------------------------------------------------------------------
# Processes

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

# Waits for a background process started just before (timed commands run in the background so
# that a signal to this script is handled at once) and returns its exit status.
reap() {
  local pid=$1 rc=0
  LIVE_PIDS+=("$pid")
  wait "$pid" || rc=$?
  forget_pid "$pid"
  return "$rc"
}

# Stops one process this script started (SIGTERM, SIGKILL after 5 s) and reaps it.
stop_pid() {
  local pid=$1 i
  if kill -0 "$pid" 2>/dev/null; then
    kill_tree "$pid"
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill_tree "$pid" KILL
  fi
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

# ---------------------------------------------------------------------------------------------
# Mounts

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; }

# Mounts a private tmpfs of SIZE at $WORK/cp-tmpfs for `cp -r` destinations, once (it is
# detached on exit with the other MOUNTS), so the local disk's file creation does not hide what
# a benchmark measures.
cp_tmpfs() {
  local size=$1
  is_mounted "$WORK/cp-tmpfs" && return 0
  mkdir -p "$WORK/cp-tmpfs"
  MOUNTS+=("$WORK/cp-tmpfs")
  mount -t tmpfs -o "size=$size,mode=0755" pcp-bench-cp "$WORK/cp-tmpfs" || die "cannot mount a tmpfs for cp -r"
}

# Detaches a mount at once, even if busy or if its FUSE process is gone or stuck.
force_unmount() {
  local mp=$1
  is_mounted "$mp" || return 0
  fusermount3 -uz "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
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

# ---------------------------------------------------------------------------------------------
# Network namespaces and veth pairs

# Creates namespace NAME with lo up, recorded in NAMESPACES (deleted on exit).
add_ns() {
  local name=$1
  ip netns add "$name" || die "ip netns add $name failed"
  NAMESPACES+=("$name")
  # No duplicate address detection on the links to come (it keeps new IPv6 addresses
  # "tentative" for a second or two); the setting belongs to this namespace only.
  ip netns exec "$name" sh -c 'echo 0 >/proc/sys/net/ipv6/conf/default/accept_dad' 2>/dev/null || true
  ip -n "$name" link set lo up
}

# add_veth NS1 IF1 NS2 IF2: a veth pair, IF1 in NS1 and IF2 in NS2.
add_veth() { ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"; }

# link_up NS IF [ADDRESS/PREFIX]: gives IF the address, if any, and brings it up.
link_up() {
  [ -z "${3:-}" ] || ip -n "$1" addr add "$3" dev "$2"
  ip -n "$1" link set "$2" up
}

# Waits until every link of the namespaces named (default: all created so far) is up and no
# IPv6 address is still tentative. A pcp started before that can miss the interface: mdns-sd
# then sees only lo, and rescans interfaces only every 5 s.
await_links() {
  local deadline=$((SECONDS + 15)) ns busy
  local -a which=("$@")
  [ $# -gt 0 ] || which=("${NAMESPACES[@]}")
  while :; do
    busy=""
    for ns in "${which[@]}"; do
      if ip -n "$ns" -o link show | grep -v ' lo:' | grep -Eq 'state (DOWN|LOWERLAYERDOWN|UNKNOWN)|NO-CARRIER' ||
        ip -n "$ns" -o -6 addr show tentative | grep -q .; then
        busy+=" $ns"
      fi
    done
    [ -z "$busy" ] && return 0
    if ((SECONDS >= deadline)); then
      log "warning: links still not ready after 15 s in:$busy"
      return 0
    fi
    sleep 0.1
  done
}

# Kills every process left in the namespaces this script created (all of them are its own).
kill_namespaced() {
  local ns pid
  for ns in "${NAMESPACES[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
      kill -s "${1:-KILL}" "$pid" 2>/dev/null || true
    done
  done
}

# Deletes the namespaces (and so their veths and bridges), last created first.
delete_namespaces() {
  local i ns rc=0
  for ((i = ${#NAMESPACES[@]} - 1; i >= 0; i--)); do
    ns=${NAMESPACES[$i]}
    ip netns del "$ns" 2>/dev/null
    if ip netns list 2>/dev/null | awk -v n="$ns" '$1 == n { f = 1 } END { exit !f }'; then
      log "error: could not delete network namespace $ns"
      rc=1
    fi
  done
  return "$rc"
}

# ---------------------------------------------------------------------------------------------
# The network of the receive and mount benchmarks (BENCH_NET)
#   veth      (default) two namespaces joined by a veth pair (MTU 1500, like every Ethernet LAN):
#             the sender and the sshd in NS_A on 10.251.0.1, the receiver, the mounts, scp and
#             sshfs in NS_B on 10.251.0.2. Neither has a default route: a pcp with default
#             discovery finds the other by mDNS on the veth, and its DHT dials fail at once
#             ("network unreachable") without a packet leaving the machine.
#   loopback  everything in this namespace on 127.0.0.1 (MTU 65536); pcp only with
#             --discovery none (mDNS ignores loopback, and must not run in the host's namespace).
# Mounts enter only NS_B's network namespace (nsenter --net), so they show in this shell's mount
# table and the workloads run here.

NS_A="" NS_B=""
SRV_IP=127.0.0.1
declare -a IN_A=() IN_B=()
in_a() { "${IN_A[@]}" "$@"; }
in_b() { "${IN_B[@]}" "$@"; }

net_setup() {
  [ "$NET" = veth ] || return 0
  NS_A=pcpb$$a NS_B=pcpb$$b
  add_ns "$NS_A"
  add_ns "$NS_B"
  add_veth "$NS_A" vA "$NS_B" vB
  link_up "$NS_A" vA 10.251.0.1/24
  link_up "$NS_B" vB 10.251.0.2/24
  await_links "$NS_A" "$NS_B"
  SRV_IP=10.251.0.1
  IN_A=(nsenter "--net=/run/netns/$NS_A")
  IN_B=(nsenter "--net=/run/netns/$NS_B")
  log "veth pair: $NS_A 10.251.0.1 <-> $NS_B 10.251.0.2, MTU $(ip -n "$NS_B" -o link show vB | sed -n 's/.* mtu \([0-9]*\).*/\1/p')"
}

# A phrase for the reports.
net_label() {
  if [ "$NET" = veth ]; then echo "on a veth pair between two network namespaces (MTU 1500)"; else echo "on loopback"; fi
}

# ---------------------------------------------------------------------------------------------
# Cleanup

# Removes WORK, but never through a mount (sshfs is writable: it would delete the data set).
remove_work() {
  [ -n "$WORK" ] || return 0
  if awk -v w="$WORK/" 'index($2 "/", w) == 1 { f = 1 } END { exit !f }' /proc/self/mounts; then
    log "error: mounts left under $WORK; not removing it: $(awk -v w="$WORK/" 'index($2 "/", w) == 1 { printf "%s ", $2 }' /proc/self/mounts)"
    return 1
  fi
  rm -rf --one-file-system "$WORK"
}

# The EXIT trap. A script may define cleanup_hook, run right before WORK is removed.
cleanup() {
  local rc=$?
  set +e
  # A second signal must not cut the cleanup short.
  trap '' INT TERM HUP
  trap - EXIT
  local pid mp i
  # SIGTERM first: a pcp mount or sshfs then unmounts itself; then detach every mount anyway
  # (a FUSE process that is stuck or gone leaves its mountpoint behind otherwise).
  for pid in "${LIVE_PIDS[@]}"; do
    if [ "$CLEANUP_TREE" = 1 ]; then kill_tree "$pid"; else kill -TERM "$pid" 2>/dev/null; fi
  done
  for mp in "${MOUNTS[@]}"; do
    force_unmount "$mp"
  done
  kill_namespaced TERM
  for ((i = 0; i < CLEANUP_GRACE; i++)); do
    any_live || break
    sleep 0.1
  done
  for pid in "${LIVE_PIDS[@]}"; do
    kill_tree "$pid" KILL
  done
  for mp in "${MOUNTS[@]}"; do
    force_unmount "$mp"
  done
  kill_namespaced KILL
  if [ -n "$SSHD_PID" ]; then
    kill "$SSHD_PID" 2>/dev/null
  fi
  wait 2>/dev/null
  delete_namespaces || rc=1
  if declare -F cleanup_hook >/dev/null; then
    cleanup_hook
  fi
  remove_work || rc=1
  [ "$CREATED_BENCH_DIR" = 1 ] && rmdir "$BENCH_DIR" 2>/dev/null
  [ "$CREATED_RUN_SSHD" = 1 ] && rmdir /run/sshd 2>/dev/null
  exit "$rc"
}

on_exit_clean_up() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
}

# Creates WORK, a fresh folder PREFIX.XXXXXX under BENCH_DIR (created too, if missing, and then
# removed on exit if empty).
make_work() {
  if [ ! -d "$BENCH_DIR" ]; then
    mkdir -p "$BENCH_DIR"
    CREATED_BENCH_DIR=1
  fi
  WORK=$(mktemp -d "$BENCH_DIR/$1.XXXXXX")
}

# ---------------------------------------------------------------------------------------------
# Tools and build

# The commands (and their Debian packages) of the loopback benchmarks (receive, mount), and
# those the mount benchmark needs too.
SSH_TOOLS=(/usr/sbin/sshd=openssh-server ssh=openssh-client scp=openssh-client
  ssh-keygen=openssh-client /usr/bin/time=time pgrep=procps ss=iproute2 ip=iproute2
  nsenter=util-linux)
MOUNT_TOOLS=(sshfs=sshfs fusermount3=fuse3 python3=python3)

# ensure_tools COMMAND=PACKAGE...: installs the Debian packages of the commands missing.
ensure_tools() {
  local -a missing=()
  local pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
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

git_head() { git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown; }
tree_dirty() { [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; }

BUILT_COMMIT=""
record_commit() {
  # Other work may be committed while this runs: report the tree the binary was built from.
  BUILT_COMMIT=$(git_head)
  ! tree_dirty || BUILT_COMMIT+=" (+ local changes)"
  [ "$BUILD" = 1 ] || BUILT_COMMIT="unknown (BENCH_BUILD=0: the binary already there; tree at $BUILT_COMMIT)"
}

# ---------------------------------------------------------------------------------------------
# Options of the loopback benchmarks (receive, mount: see their headers)

loopback_options() {
  RUNS=${BENCH_RUNS:-3}
  BIG_MIB=${BENCH_BIG_MIB:-1024}
  SMALL_FILES=${BENCH_SMALL_FILES:-2000}
  SMALL_KIB=${BENCH_SMALL_KIB:-4}
  BENCH_DIR=${BENCH_DIR:-/tmp/pcp-bench}
  SSH_PORT_FIRST=${BENCH_SSH_PORT:-2222}
  TIMEOUT=${BENCH_TIMEOUT:-600}
  DROP_CACHES=${BENCH_DROP_CACHES:-1}
  NET=${BENCH_NET:-veth}
  BUILD=${BENCH_BUILD:-1}
  BUSY_LIMIT=${BENCH_BUSY_LIMIT:-15} # percent of all CPUs
  QUIET_WAIT=${BENCH_QUIET_WAIT:-60} # seconds
  positive_ints RUNS BIG_MIB SMALL_FILES SMALL_KIB SSH_PORT_FIRST TIMEOUT
  [[ $BENCH_DIR != *[[:space:]]* ]] || die "BENCH_DIR must not contain white space"
  [[ $NET = veth || $NET = loopback ]] || die "BENCH_NET must be veth or loopback (got '$NET')"
  [[ $BUSY_LIMIT =~ ^[0-9]+$ ]] || die "BENCH_BUSY_LIMIT must be a whole number (got '$BUSY_LIMIT')"
  [[ $QUIET_WAIT =~ ^[0-9]+$ ]] || die "BENCH_QUIET_WAIT must be a whole number (got '$QUIET_WAIT')"
}

need_root() { [ "$(id -u)" = 0 ] || die "run as root: it drops page caches, installs packages and runs sshd"; }

# The start of a loopback section once its options are read: with --check (scripts/bench.sh,
# before it builds), only the options are checked; otherwise the trap is set.
section_start() {
  need_root
  [ "${1:-}" != --check ] || exit 0
  on_exit_clean_up
}

# ---------------------------------------------------------------------------------------------
# Page cache and a quiet machine

CACHES_DROPPED=0
declare -a WARM_FILES=()

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
# timed transfer, when nothing of ours runs, wait a while for the CPUs to be quiet (BUSY_LIMIT %,
# QUIET_WAIT s), then record how busy they were; the report says when they were not quiet.
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

# The figures of the environment report that span all sections of a run of scripts/bench.sh:
# each section adds to them (state_load at its start, state_save at its end).
state_save() {
  printf 'BUSY_MAX=%s\nBUSY_COUNT=%s\nBUSY_SAMPLES=%s\nCACHES_DROPPED=%s\n' \
    "$BUSY_MAX" "$BUSY_COUNT" "$BUSY_SAMPLES" "$CACHES_DROPPED" >"$1"
}
state_load() {
  [ -f "$1" ] || return 0
  # shellcheck disable=SC1090 # written by state_save
  source "$1"
}

# ---------------------------------------------------------------------------------------------
# Private sshd on SRV_IP (in NS_A, if any) with temporary keys (under WORK)

SSH_OPTS=()
SSH_PORT=""

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
    [ -z "$(in_a ss -Hltn "sport = :$port" 2>/dev/null)" ] && break
  done
  ((port <= SSH_PORT_FIRST + 50)) || die "no free port in $SSH_PORT_FIRST..$((SSH_PORT_FIRST + 50))"
  SSH_PORT=$port
  cat >"$dir/sshd_config" <<EOF
Port $port
ListenAddress $SRV_IP
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
  # The array, not the function: $! must be sshd itself (nsenter execs it) for the trap to stop it.
  "${IN_A[@]}" /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
  SSHD_PID=$!
  SSH_OPTS=(-F /dev/null -i "$dir/client_key" -o IdentitiesOnly=yes -o BatchMode=yes
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$SSHD_PID" 2>/dev/null || die "sshd exited: $(cat "$dir/sshd.log")"
    if in_b ssh "${SSH_OPTS[@]}" -p "$port" "root@$SRV_IP" true 2>/dev/null; then
      log "sshd on $SRV_IP:$port"
      return 0
    fi
    sleep 0.1
  done
  die "sshd on $SRV_IP:$port does not accept the temporary key: $(cat "$dir/sshd.log")"
}

# The start of both loopback sections, after ensure_tools: the binary, the programs to keep
# warm, WORK (with log/ and dst/), the sshd, and the figures of the sections run before.
loopback_setup() {
  record_commit
  build_pcp
  collect_warm_files
  make_work run
  mkdir -p "$WORK/log" "$WORK/dst"
  WARNINGS=${SUITE:-$WORK/log}/pcp-warnings
  net_setup
  start_sshd
  [ -z "$SUITE" ] || state_load "$SUITE/state"
}

# ---------------------------------------------------------------------------------------------
# pcp send (in the sender's namespace, or on loopback)

# Starts `pcp send SRC` (in NS_A, if any) and waits for its code and address: sets SEND_PID,
# SEND_CODE and SEND_ADDR. Logs go to $WORK/log/TAG.send.*. DISCOVERY "none" (the default):
# `--discovery none --listen /ip4/SRV_IP/tcp/0`; "default": pcp's defaults (mDNS and DHT, every
# interface, TCP and QUIC), only in namespaces.
start_pcp_send() {
  local src=$1 tag=$2 discovery=${3:-none}
  local lg=$WORK/log/$tag
  local -a how=(--discovery none send --listen "/ip4/$SRV_IP/tcp/0")
  if [ "$discovery" = default ]; then
    [ -n "$NS_A" ] || die "pcp with default discovery runs only in namespaces (BENCH_NET=veth)"
    how=(send)
  fi
  : >"$lg.send.out"
  : >"$lg.send.err"
  /usr/bin/time -f %M -o "$lg.send.rss" timeout --foreground -k 5 "$TIMEOUT" \
    "${IN_A[@]}" "$PCP" -v --no-progress "${how[@]}" "$src" \
    >"$lg.send.out" 2>"$lg.send.err" </dev/null &
  SEND_PID=$!
  LIVE_PIDS+=("$SEND_PID")
  SEND_CODE="" SEND_ADDR=""
  local deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    SEND_CODE=$(sed -n 's/^Code is: //p;T;q' "$lg.send.out")
    SEND_ADDR=$(sed -n "s#^Listening on \\(/ip4/${SRV_IP//./\\.}/tcp/[0-9][0-9]*\\)#\\1#p;T;q" "$lg.send.err")
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
    sed "s|^|$tag: |" >>"$WARNINGS" || true
}

# ---------------------------------------------------------------------------------------------
# Data, timing and numbers

# random_files DIR COUNT BYTES: COUNT files of BYTES random bytes each in DIR, named f0000...
random_files() {
  local dir=$1 count=$2 bytes=$3 width=${#2}
  ((width >= 4)) || width=4
  head -c "$((count * bytes))" /dev/urandom | (cd "$dir" && split -b "$bytes" -d -a "$width" - f)
}

# elapsed START END [FORMAT]: seconds between two $EPOCHREALTIME stamps (default %.4f).
elapsed() { awk -v a="$1" -v b="$2" -v f="${3:-%.4f}" 'BEGIN { printf f, b - a }'; }

# Median of the numbers on stdin ("" if none): awk's default format, or printf FORMAT.
median_lines() {
  sort -g | awk -v f="${1:-}" '{ v[NR] = $1 } END {
    if (NR == 0) { print ""; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    if (f == "") print m; else printf f, m }'
}
median() { printf '%s\n' "$@" | median_lines ""; }
maximum() { printf '%s\n' "$@" | sort -g | tail -n 1; }
calc() { awk "BEGIN { $1 }"; }
yesno() { calc "print (($1) ? \"yes\" : \"**no**\")"; }

size_label() { # MiB -> "1 GiB file" or "64 MiB file"
  if [ "$1" -ge 1024 ] && [ $(($1 % 1024)) = 0 ]; then
    echo "$(($1 / 1024)) GiB file"
  else
    echo "$1 MiB file"
  fi
}
commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }

# ---------------------------------------------------------------------------------------------
# Report

# table_head COLUMN...: the head of a markdown table.
table_head() {
  printf '|'
  printf ' %s |' "$@"
  printf '\n|'
  printf -- '---|%.0s' "$@"
  printf '\n'
}

# The environment bullets of a loopback section. In a section run by scripts/bench.sh, a marker
# line stands in their place: bench.sh writes them at the end, over all its sections (DO_MOUNT:
# a mount section runs, so sshfs's version belongs in them).
report_env() {
  if [ -n "$SUITE" ]; then
    echo "$ENV_MARKER"
    return 0
  fi
  echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), commit $BUILT_COMMIT, $("$PCP" --version), $(ssh -V 2>&1 | cut -d, -f1)$([ "$DO_MOUNT" = 1 ] && echo ", $(sshfs --version 2>&1 | grep -m 1 "^SSHFS version")")"
  if [ "$NET" = veth ]; then
    echo "- $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r); a veth pair (MTU 1500) between two network namespaces, like two hosts on one Ethernet segment sharing these cores: sender and sshd in one (10.251.0.1), receiver, mounts, scp and sshfs in the other (10.251.0.2); BENCH_NET=loopback runs on 127.0.0.1 instead"
  else
    echo "- $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r); loopback only (127.0.0.1, MTU 65536; BENCH_NET=loopback)"
  fi
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

# The end of a report: pcp's warnings, if any, and the run time.
report_end() {
  if [ -s "$WARNINGS" ]; then
    echo
    echo "pcp printed warnings or errors:"
    echo
    sed 's/^/    /' "$WARNINGS" | head -n 40
  fi
  echo
  echo "Benchmark run time: $((SECONDS / 60)) min $((SECONDS % 60)) s."
}

# The end of a loopback section: alone, the end of its report; under scripts/bench.sh, its
# figures for the sections after it and for bench.sh's report.
section_end() {
  if [ -n "$SUITE" ]; then
    state_save "$SUITE/state"
  else
    report_end
  fi
}
