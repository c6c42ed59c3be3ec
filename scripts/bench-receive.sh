#!/usr/bin/env bash
# Benchmark (not a test), section "receive" of scripts/bench.sh, which runs it; it also runs
# alone. `pcp receive` against `scp` of the same data, both pulling from the sender's side across
# a veth pair between two network namespaces (MTU 1500; BENCH_NET=loopback: on 127.0.0.1): a
# markdown table on stdout (progress goes to stderr).
#
#   sudo scripts/bench-receive.sh                # defaults: 3 runs, 1 GiB file, 2,000 x 4 KiB
#   BENCH_BIG_MIB=64 BENCH_RUNS=1 sudo -E scripts/bench-receive.sh
#   scripts/bench-receive.sh --check             # only check the options
#
# Needs root: it drops the page caches before every timed transfer, installs missing Debian
# packages (openssh-server, openssh-client, time, ...), creates two network namespaces and runs a
# private sshd in the sender's (all removed on exit, even on failure). All traffic stays inside
# those namespaces (or on loopback): the big file is received with --discovery none --peer; the
# small files with pcp's default discovery (mDNS finds the sender on the veth; the namespaces
# have no default route, so the DHT part fails at once and nothing leaves the machine). With
# BENCH_NET=loopback both use --discovery none and 127.0.0.1 addresses.
#
# Options (environment):
#   BENCH_RUNS=3            runs per workload and tool (the median is reported)
#   BENCH_BIG_MIB=1024      size of the random big file, MiB
#   BENCH_SMALL_FILES=2000  number of small files
#   BENCH_SMALL_KIB=4       size of each small file, KiB
#   BENCH_SPARSE_MIB=4096   apparent size of a sparse disk image with 1/64 of it data (1 MiB
#                           at the start of every 64 MiB); 0 leaves the workload out (the
#                           default with BENCH_RECV_DST=tmpfs)
#   BENCH_DIR=/tmp/pcp-bench  parent of the temporary work dir (removed on exit)
#   BENCH_SSH_PORT=2222     first port tried for the private sshd (next free one up to +50)
#   BENCH_TIMEOUT=600       seconds before one transfer is abandoned
#   BENCH_DROP_CACHES=1     0 to skip dropping the page caches (the report says so)
#   BENCH_NET=veth          veth (two namespaces, MTU 1500) or loopback (127.0.0.1)
#   BENCH_RECV_DST=disk     where pcp and scp write: disk (under BENCH_DIR) or tmpfs (a private
#                           tmpfs, when the disk lacks room for a second copy of the big file)
#   BENCH_BUSY_LIMIT=15     CPU busy % (all cores) above which the machine is not quiet
#   BENCH_QUIET_WAIT=60     seconds to wait for a quiet machine before each timed transfer
#   BENCH_BUILD=1           0 to skip `cargo build --release` and use the binary already there
#   CARGO_TARGET_DIR        respected by the release build
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=bench
DO_MOUNT=0
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
loopback_options
RECV_DST=${BENCH_RECV_DST:-disk}
# scp writes the image's holes as zeros: not into a tmpfs sized for the big file.
SPARSE_MIB=${BENCH_SPARSE_MIB:-$([ "$RECV_DST" = tmpfs ] && echo 0 || echo 4096)}
[[ $SPARSE_MIB =~ ^[0-9]+$ ]] || die "BENCH_SPARSE_MIB must be a number of MiB (0: none)"
[[ $RECV_DST = disk || $RECV_DST = tmpfs ]] || die "BENCH_RECV_DST must be disk or tmpfs"
section_start "$@"

# Targets of issue 11 ("Speed on MTU 1500") and of the "send/receive spine" issue.
TARGET_BIG_VS_SCP=1.5    # 1 GiB at >= 1.5x scp's throughput
TARGET_SMALL_SECS=0.6    # 2,000 files of 4 KiB in <= 0.6 s, start of `pcp receive` to its exit
TARGET_RSS_MIB=100       # each side's peak RSS <= 100 MiB

# ---------------------------------------------------------------------------------------------
# One timed transfer each. Both set T (seconds); run_pcp also sets RSS_SEND and RSS_RECV (KiB).

# Checks that DIR holds FILES regular files of BYTES bytes in all, and no leftover part files.
check_copy() {
  local dir=$1 files=$2 bytes=$3 what=$4 got
  got=$(find "$dir" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%.0f %.0f", n, s }')
  [ "$got" = "$files $bytes" ] || die "$what: received $got (files bytes), expected $files $bytes"
  if [ -n "$(find "$dir" -name '.pcp-*.part' -print -quit)" ]; then
    die "$what: part files left behind"
  fi
}

# run_pcp SRC DST FILES BYTES TAG DISCOVERY: DISCOVERY "none" (--discovery none --peer ADDR on
# both sides) or "default" (pcp's default discovery on both sides, no --peer: mDNS on the veth).
run_pcp() {
  local src=$1 dst=$2 files=$3 bytes=$4 tag=$5 discovery=$6
  local lg=$WORK/log/$tag
  rm -rf "$dst"
  mkdir -p "$dst"
  start_pcp_send "$src" "$tag" "$discovery"
  local spid=$SEND_PID code=$SEND_CODE addr=$SEND_ADDR i
  local -a how=(--discovery none --peer "$addr")
  [ "$discovery" != default ] || how=()

  before_timed
  local t0 t1 rc=0
  t0=$EPOCHREALTIME
  PCP_CODE=$code /usr/bin/time -f %M -o "$lg.recv.rss" timeout --foreground -k 5 "$TIMEOUT" \
    "${IN_B[@]}" "$PCP" receive --yes --no-progress "${how[@]}" --out "$dst" --wait 60s \
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
  timeout --foreground -k 5 "$TIMEOUT" "${IN_B[@]}" scp -q -r -P "$SSH_PORT" "${SSH_OPTS[@]}" \
    "root@$SRV_IP:$src" "$dst/" >"$lg.scp.out" 2>"$lg.scp.err" </dev/null &
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
declare -A W_TARGET_MIBS=() W_TARGET_VS_SCP=() W_TARGET_SECS=() W_DISCOVERY=()
declare -A R_PCP_T=() R_SCP_T=() R_RSS_SEND=() R_RSS_RECV=()

# add_transfer_workload NAME LABEL SRC [min MiB/s] [min throughput over scp's, e.g. 1.5]
#   [max seconds] [pcp's discovery: none (--peer, the default) or default (mDNS)]
add_transfer_workload() {
  local name=$1
  WORKLOADS+=("$name")
  W_LABEL[$name]=$2
  W_SRC[$name]=$3
  W_TARGET_MIBS[$name]=${4:-}
  W_TARGET_VS_SCP[$name]=${5:-}
  W_TARGET_SECS[$name]=${6:-}
  W_DISCOVERY[$name]=${7:-none}
  W_FILES[$name]=$(find "$3" -type f | wc -l)
  W_BYTES[$name]=$(find "$3" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }')
}

make_data() {
  local src=$WORK/src
  mkdir -p "$src/small"
  log "writing $BIG_MIB MiB of random data and $SMALL_FILES random files of $SMALL_KIB KiB"
  head -c "$((BIG_MIB << 20))" /dev/urandom >"$src/big.bin"
  random_files "$src/small" "$SMALL_FILES" "$((SMALL_KIB << 10))"
  if ((SPARSE_MIB >= 64)); then
    # A virtual machine's disk image: 1 MiB of data at the start of every 64 MiB, holes between.
    log "writing a sparse image of $SPARSE_MIB MiB with $((SPARSE_MIB / 64)) MiB of data"
    truncate -s "$((SPARSE_MIB << 20))" "$src/disk.img"
    local at
    for ((at = 0; at < SPARSE_MIB; at += 64)); do
      head -c 1M /dev/urandom | dd of="$src/disk.img" bs=1M seek="$at" conv=notrunc status=none
    done
  fi
  sync
}

# The disk space the sparse image took on the receiving side, after pcp's and scp's copies.
declare -A R_DU=()

# A workload of many files is received into a new folder by each run and tool, and the copies
# are deleted only once all runs are done: ext4 without a journal (this machine's) skips
# inodes freed within the last minute when it allocates one, so 2,000 files deleted before
# each run made every create of the next scan past them (70% of the receiver's CPU in the
# kernel's `recently_deleted` and `find_inode_bit`, the time of pcp and of scp growing from
# run to run); a user receiving files has not just deleted thousands.
bench_transfers() {
  local run name
  for ((run = 1; run <= RUNS; run++)); do
    for name in "${WORKLOADS[@]}"; do
      local dst=$WORK/dst/$name sdst=$WORK/dst/$name
      if ((W_FILES[$name] > 100)); then
        dst=$WORK/dst/$name-$run-pcp sdst=$WORK/dst/$name-$run-scp
      fi
      run_pcp "${W_SRC[$name]}" "$dst" "${W_FILES[$name]}" "${W_BYTES[$name]}" "$name-$run" "${W_DISCOVERY[$name]}"
      R_PCP_T[$name]+=" $T"
      R_RSS_SEND[$name]+=" $RSS_SEND"
      R_RSS_RECV[$name]+=" $RSS_RECV"
      log "run $run/$RUNS $name: pcp $T s (RSS send $((RSS_SEND / 1024)) MiB, receive $((RSS_RECV / 1024)) MiB)"
      [ "$name" != sparse ] || R_DU[pcp]=$(du -sk "$dst" | cut -f1)
      run_scp "${W_SRC[$name]}" "$sdst" "${W_FILES[$name]}" "${W_BYTES[$name]}" "$name-$run"
      [ "$name" != sparse ] || R_DU[scp]=$(du -sk "$sdst" | cut -f1)
      R_SCP_T[$name]+=" $T"
      log "run $run/$RUNS $name: scp $T s"
      [ "$dst" != "$sdst" ] || rm -rf "$dst"
    done
  done
  rm -rf "$WORK/dst"
}

# ---------------------------------------------------------------------------------------------
# Report

report_receive() {
  echo "## pcp send/receive vs scp $(net_label)"
  echo
  report_env
  echo "- median of $RUNS run(s) each, pcp and scp alternating; peak RSS is the max over runs (GNU time %M); both write $([ "$RECV_DST" = tmpfs ] && echo "into a private tmpfs (BENCH_RECV_DST=tmpfs)" || echo "to the local disk"); each copy of a workload of many files goes to a new folder, all deleted after the last run (ext4 without a journal skips inodes freed in the last minute, and deleting each copy before the next run slowed every later one)"
  echo "- pcp: \`pcp receive --yes --no-progress --discovery none --peer ADDR --out DIR\` (code in PCP_CODE), timed from its start to its exit, the sender already listening (\`pcp send --discovery none --listen /ip4/$SRV_IP/tcp/0\`); includes connect, SPAKE2, transfer and BLAKE3 verification"
  local name
  for name in "${WORKLOADS[@]}"; do
    [ "${W_DISCOVERY[$name]}" = default ] || continue
    echo "- ${W_LABEL[$name]}: both sides with pcp's default discovery instead (\`pcp send DIR\`, \`pcp receive --yes --no-progress --out DIR\`, no --peer), the way users run it: finding the sender by mDNS is part of the time (the DHT part fails at once: no default route)"
  done
  echo "- scp: \`scp -r root@$SRV_IP:SRC DIR\` $([ "$NET" = veth ] && echo "from the receiver's namespace ")through a private sshd $([ "$NET" = veth ] && echo "in the sender's namespace ")(default ciphers, SFTP protocol), whole command timed including the ssh handshake"
  echo
  table_head workload measure pcp scp pcp/scp target met
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
    if [ -n "${W_TARGET_VS_SCP[$name]}" ]; then
      target+="${target:+ and }>= ${W_TARGET_VS_SCP[$name]}x scp"
      local m2
      m2=$(yesno "$st >= ${W_TARGET_VS_SCP[$name]} * $pt")
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
  if [ -n "${R_DU[pcp]:-}" ]; then
    echo
    echo "The sparse image's throughput counts its apparent size. On the receiving disk it took $((R_DU[pcp] >> 10)) MiB after pcp (holes kept) and $((R_DU[scp] >> 10)) MiB after scp (the holes written as zeros)."
  fi
}

# ---------------------------------------------------------------------------------------------

main() {
  ensure_tools "${SSH_TOOLS[@]}"
  loopback_setup
  if [ "$RECV_DST" = tmpfs ]; then
    MOUNTS+=("$WORK/dst")
    mount -t tmpfs -o "size=$((BIG_MIB + 256))m,mode=0755" pcp-bench-dst "$WORK/dst" || die "cannot mount a tmpfs on $WORK/dst"
  fi
  make_data
  local small_discovery=none
  [ "$NET" != veth ] || small_discovery=default
  add_transfer_workload big "$(size_label "$BIG_MIB" | sed 's/ file$/ random file/')" "$WORK/src/big.bin" "" "$TARGET_BIG_VS_SCP" ""
  add_transfer_workload small "$(commas "$SMALL_FILES") files of $SMALL_KIB KiB" "$WORK/src/small" "" "" "$TARGET_SMALL_SECS" "$small_discovery"
  if ((SPARSE_MIB >= 64)); then
    add_transfer_workload sparse "$(size_label "$SPARSE_MIB" | sed 's/ file$//') sparse disk image, $((SPARSE_MIB / 64)) MiB of data" "$WORK/src/disk.img"
  fi
  bench_transfers
  report_receive
  section_end
}

main "$@"
