#!/usr/bin/env bash
# Benchmark (not a test), section "mount" of scripts/bench.sh, which runs it; it also runs
# alone. `pcp mount` against `sshfs` (default options) of the same data across a veth pair
# between two network namespaces (MTU 1500; BENCH_NET=loopback: on 127.0.0.1): cold
# sequential read, `cp -r` of small files, random 4 KiB preads, `find` + stat of a
# 100,000-entry tree, and the mount's peak RSS while reading a 4 GiB file. A markdown table on
# stdout (progress goes to stderr).
#
#   sudo scripts/bench-mount.sh
#   BENCH_HUGE_MIB=256 BENCH_TREE_DIRS=10 sudo -E scripts/bench-mount.sh
#   scripts/bench-mount.sh --check             # only check the options
#
# Needs root: it drops the page caches before every timed workload, installs missing Debian
# packages (openssh-server, openssh-client, time, sshfs, fuse3, ...), creates two network
# namespaces, runs a private sshd and `pcp send` in the first, `pcp mount` and sshfs in the
# second (entering only its network namespace, so the mounts show here), and mounts FUSE
# filesystems (every one is unmounted and every namespace deleted on exit, even on failure).
# All traffic stays inside those namespaces (or on loopback): pcp runs with --discovery none and
# the sender's address only.
#
# Options (environment):
#   BENCH_RUNS=3            runs per workload and tool (the median is reported)
#   BENCH_BIG_MIB=1024      size of the random big file, MiB (sequential read, preads)
#   BENCH_SMALL_FILES=2000  number of small files (cp -r)
#   BENCH_SMALL_KIB=4       size of each small file, KiB
#   BENCH_HUGE_MIB=4096     file read sequentially while the mount's peak RSS is measured
#                           (equal to BENCH_BIG_MIB: a hard link to the big file, no more disk)
#   BENCH_PREADS=2000       random 4 KiB preads of the big file (fixed seed)
#   BENCH_TREE_DIRS=100     folders of the find/stat tree ...
#   BENCH_TREE_FILES=1000   ... and files of 16 bytes in each
#   BENCH_SSHFS_FIND_LIMIT=120  seconds after which sshfs's find is abandoned (skipped)
#   BENCH_CP_DST=tmpfs      where `cp -r` writes: tmpfs (a private 256 MiB tmpfs, so the
#                           local disk's file creation, ~0.2-0.5 ms per file on this VM's ext4,
#                           does not hide the mounts' own costs) or disk (under BENCH_DIR)
#   BENCH_MOUNT_DATA=$BENCH_DIR/mount-data  its data set (~5 GiB with the defaults),
#                           created once and KEPT for later runs (each part is remade only when
#                           its size options change); delete it to reclaim the space
#   BENCH_DIR=/tmp/pcp-bench  parent of the temporary work dir (removed on exit)
#   BENCH_SSH_PORT=2222     first port tried for the private sshd (next free one up to +50)
#   BENCH_TIMEOUT=600       seconds before one mount or workload is abandoned
#   BENCH_DROP_CACHES=1     0 to skip dropping the page caches (the report says so)
#   BENCH_NET=veth          veth (two namespaces, MTU 1500) or loopback (127.0.0.1)
#   BENCH_BUSY_LIMIT=15     CPU busy % (all cores) above which the machine is not quiet
#   BENCH_QUIET_WAIT=60     seconds to wait for a quiet machine before each timed workload
#   BENCH_BUILD=1           0 to skip `cargo build --release` and use the binary already there
#   CARGO_TARGET_DIR        respected by the release build
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=bench
DO_MOUNT=1
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
loopback_options
HUGE_MIB=${BENCH_HUGE_MIB:-4096}
PREADS=${BENCH_PREADS:-2000}
TREE_DIRS=${BENCH_TREE_DIRS:-100}
TREE_FILES=${BENCH_TREE_FILES:-1000}
SSHFS_FIND_LIMIT=${BENCH_SSHFS_FIND_LIMIT:-120}
CP_DST=${BENCH_CP_DST:-tmpfs}
MOUNT_DATA=${BENCH_MOUNT_DATA:-$BENCH_DIR/mount-data}
positive_ints HUGE_MIB PREADS TREE_DIRS TREE_FILES SSHFS_FIND_LIMIT
[[ $CP_DST = tmpfs || $CP_DST = disk ]] || die "BENCH_CP_DST must be tmpfs or disk"
[[ $MOUNT_DATA = /* && $MOUNT_DATA != *[[:space:]]* ]] ||
  die "BENCH_MOUNT_DATA must be an absolute path without white space (got '$MOUNT_DATA')"
section_start "$@"

# Targets of the mount issue and of issue 11 (pcp mount against sshfs, both cold, same run).
TARGET_MNT_SEQ_X=1.5     # sequential read >= 1.5x sshfs's MiB/s
TARGET_MNT_CP_FRAC=4     # cp -r of the small files in <= 1/4 of sshfs's time
TARGET_MNT_IOPS_X=2      # random 4 KiB preads >= 2x sshfs's IOPS
TARGET_MNT_FIND_SECS=1   # find + stat of the whole tree <= 1 s
TARGET_MNT_RSS_MIB=350   # pcp mount's peak RSS reading the huge file, default cache

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
  local spec d
  spec="big.bin: $BIG_MIB MiB random"
  if part_stale seq "$spec"; then
    log "mount data: writing $BIG_MIB MiB of random data"
    head -c "$((BIG_MIB << 20))" /dev/urandom >"$MOUNT_DATA/seq/big.bin"
    part_made seq "$spec"
  fi
  spec="$SMALL_FILES files of $SMALL_KIB KiB random"
  if part_stale small "$spec"; then
    log "mount data: writing $SMALL_FILES random files of $SMALL_KIB KiB"
    random_files "$MOUNT_DATA/small" "$SMALL_FILES" "$((SMALL_KIB << 10))"
    part_made small "$spec"
  fi
  spec="$TREE_DIRS folders of $TREE_FILES files of 16 bytes"
  if part_stale tree "$spec"; then
    log "mount data: writing a tree of $TREE_DIRS folders of $TREE_FILES files"
    for ((d = 0; d < TREE_DIRS; d++)); do
      mkdir "$MOUNT_DATA/tree/$(printf 'd%04d' "$d")"
      random_files "$MOUNT_DATA/tree/$(printf 'd%04d' "$d")" "$TREE_FILES" 16
    done
    part_made tree "$spec"
  fi
  spec="huge.bin: $HUGE_MIB MiB random"
  [ "$HUGE_MIB" != "$BIG_MIB" ] || spec="huge.bin: $HUGE_MIB MiB random, a hard link to seq/big.bin"
  if part_stale huge "$spec"; then
    if [ "$HUGE_MIB" = "$BIG_MIB" ]; then
      ln "$MOUNT_DATA/seq/big.bin" "$MOUNT_DATA/huge/huge.bin"
    else
      log "mount data: writing $HUGE_MIB MiB of random data"
      head -c "$((HUGE_MIB << 20))" /dev/urandom >"$MOUNT_DATA/huge/huge.bin"
    fi
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
      PCP_CODE=$SEND_CODE "${IN_B[@]}" "$PCP" mount --no-progress --discovery none --peer "$SEND_ADDR" - "$mp" \
        >"$lg.out" 2>"$lg.err" </dev/null &
      ;;
    sshfs)
      t0=$EPOCHREALTIME
      "${IN_B[@]}" sshfs -f -p "$SSH_PORT" -o "ssh_command=ssh ${SSH_OPTS[*]}" "root@$SRV_IP:$src" "$mp" \
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

# A workload failed: no figure from this run.
wl_failed() {
  problem "$*"
  VAL=""
}

# Each workload runs between mount_with and unmount_with and sets VAL.
# timed_dd TOOL TAG FILE MIB WHAT: a cold sequential read of FILE (MIB MiB) with dd, timed (sets
# T0 and T1); fails (a problem for the report) if dd fails or reads short. WHAT names the file
# in the problem ("" or "of the huge file ").
timed_dd() {
  local tool=$1 tag=$2 file=$3 mib=$4 what=$5 lg=$WORK/log/$2.$1 rc=0
  before_timed
  T0=$EPOCHREALTIME
  timeout --foreground -k 5 "$TIMEOUT" dd if="$file" of=/dev/null bs=1M 2>"$lg.dd" </dev/null &
  reap $! || rc=$?
  T1=$EPOCHREALTIME
  [ "$rc" = 0 ] || { wl_failed "$tag: dd ${what}from $tool exited $rc: $(tail -n 2 "$lg.dd" | tr '\n' ' ')"; return 1; }
  grep -q "^$((mib << 20)) bytes" "$lg.dd" || { wl_failed "$tag: dd from $tool read $(tail -n 1 "$lg.dd")"; return 1; }
}

wl_seq() { # MiB/s of a cold sequential read of the big file
  timed_dd "$1" "$2" "$3/big.bin" "$BIG_MIB" "" || return 0
  VAL=$(calc "printf \"%.1f\", $BIG_MIB / $(elapsed "$T0" "$T1")")
}

wl_cp() { # seconds for cp -r of the small files out of the mount
  local tool=$1 tag=$2 mp=$3 lg=$WORK/log/$2.$1 t0 t1 rc=0 got
  local dst=$WORK/dst/cp-$tool
  if [ "$CP_DST" = tmpfs ]; then
    cp_tmpfs 256m
    dst=$WORK/cp-tmpfs/cp-$tool
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
  timed_dd "$1" "$2" "$3/huge.bin" "$HUGE_MIB" "of the huge file " || return 0
  VAL=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$MNT_PID/status")
  M_HUGE_MIBS["$1"]+=" $(calc "printf \"%.1f\", $HUGE_MIB / $(elapsed "$T0" "$T1")")"
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
  echo "## pcp mount vs sshfs $(net_label)"
  echo
  report_env
  echo "- median of $RUNS run(s) per workload and tool, pcp and sshfs alternating; peak RSS is the max over runs"
  echo "- every timed workload on a fresh mount, so neither tool has anything in its own cache; page caches dropped after mounting"
  echo "- pcp: \`pcp mount --no-progress --discovery none --peer ADDR - MNT\` (code in PCP_CODE; default options: 256M cache, 30s timeout) of a fresh \`pcp send --discovery none --listen /ip4/$SRV_IP/tcp/0 DIR\` sharing the one folder; unmounted with SIGTERM"
  echo "- sshfs: \`sshfs -f root@$SRV_IP:DIR MNT\`, default options, through the private sshd (ssh options only for its temporary key); unmounted with \`fusermount3 -u\`"
  echo "- pread: one python3 thread, $(commas "$PREADS") \`os.pread\` of 4 KiB at random 4 KiB-aligned offsets (seed $PREAD_SEED, the same for both), timed inside python, bytes checked; find: \`find MNT -printf '%y %m %s %T@ %p\\n'\`, which lstat()s every entry; cp: \`cp -r MNT DST\` with DST on $([ "$CP_DST" = tmpfs ] && echo "a private tmpfs (BENCH_CP_DST=disk: on the local disk)" || echo "the local disk (BENCH_CP_DST=disk)"), copy checked with \`diff -r\`"
  echo
  table_head workload measure pcp sshfs pcp/sshfs target met
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

# ---------------------------------------------------------------------------------------------

main() {
  ensure_tools "${SSH_TOOLS[@]}" "${MOUNT_TOOLS[@]}"
  PY=$(command -v python3)
  [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
  PY=$("$PY" -c 'import sys; print(sys.executable)') || die "python3 does not run"
  loopback_setup
  make_mount_data
  write_pread_script
  bench_mount
  report_mount
  section_end
}

main "$@"
