#!/usr/bin/env bash
# Benchmark (not a test): one `pcp send --keep` serving several receivers at once, on a veth
# pair between two network namespaces (MTU 1500, like a LAN). Prints one receiver's throughput
# alone, then N receivers started together (each verifies the whole tree), and their combined
# throughput as a share of the single one. Target of issue 15: N=8 together at >= 80%.
#
#   sudo scripts/bench-keep.sh                     # 3 runs, 256 MiB, 8 receivers
#   BENCH_KEEP_MIB=64 BENCH_KEEP_RECEIVERS=4 BENCH_RUNS=1 sudo -E scripts/bench-keep.sh
#
# All traffic stays inside the two namespaces this script creates (deleted on exit, even on
# failure): pcp runs with --discovery none and the veth addresses only.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=bench-keep
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
RUNS=${BENCH_RUNS:-3}
MIB=${BENCH_KEEP_MIB:-256}
N=${BENCH_KEEP_RECEIVERS:-8}
BENCH_DIR=${BENCH_DIR:-/tmp/pcp-bench}
TIMEOUT=${BENCH_TIMEOUT:-600}
BUILD=${BENCH_BUILD:-1}
positive_ints RUNS MIB N TIMEOUT
need_root
on_exit_clean_up
build_pcp
make_work keep
mkdir -p "$WORK/log" "$WORK/src/share"
head -c "$((MIB << 20))" /dev/urandom >"$WORK/src/share/data"

A=pcpk-a-$$ B=pcpk-b-$$
add_ns "$A"
add_ns "$B"
add_veth "$A" va "$B" vb
link_up "$A" va 10.77.0.1/24
link_up "$B" vb 10.77.0.2/24
await_links "$A" "$B"

log "pcp send --keep in $A"
ip netns exec "$A" timeout -k 5 "$TIMEOUT" "$PCP" -v --no-progress --discovery none send --keep \
  --listen /ip4/10.77.0.1/tcp/0 "$WORK/src/share" >"$WORK/log/send.out" 2>"$WORK/log/send.err" </dev/null &
SEND_PID=$!
LIVE_PIDS+=("$SEND_PID")
CODE="" ADDR=""
for ((i = 0; i < 600; i++)); do
  CODE=$(sed -n 's/^Code is: //p;T;q' "$WORK/log/send.out")
  ADDR=$(sed -n 's#^Listening on \(/ip4/10\.77\.0\.1/tcp/[0-9][0-9]*\)#\1#p;T;q' "$WORK/log/send.err")
  [[ -n $CODE && -n $ADDR ]] && break
  kill -0 "$SEND_PID" 2>/dev/null || die "pcp send exited: $(tail -n 5 "$WORK/log/send.err")"
  sleep 0.1
done
[[ -n $CODE && -n $ADDR ]] || die "pcp send printed no code/address"

# receive_all COUNT TAG: COUNT receivers at once; prints the wall time in seconds.
receive_all() {
  local count=$1 tag=$2 k t0 t1 rc=0
  local -a pids=()
  for ((k = 0; k < count; k++)); do
    rm -rf "$WORK/out/$tag.$k"
    mkdir -p "$WORK/out/$tag.$k"
  done
  t0=$EPOCHREALTIME
  for ((k = 0; k < count; k++)); do
    PCP_CODE=$CODE ip netns exec "$B" timeout -k 5 "$TIMEOUT" "$PCP" --no-progress --discovery none \
      receive --yes --peer "$ADDR" --out "$WORK/out/$tag.$k" \
      >/dev/null 2>"$WORK/log/$tag.$k.err" </dev/null &
    pids+=($!)
    LIVE_PIDS+=($!)
  done
  for k in "${!pids[@]}"; do
    wait "${pids[$k]}" || rc=$?
    forget_pid "${pids[$k]}"
    [ "$rc" = 0 ] || die "$tag receiver $k exited $rc: $(tail -n 5 "$WORK/log/$tag.$k.err")"
    cmp -s "$WORK/src/share/data" "$WORK/out/$tag.$k/share/data" || die "$tag receiver $k: data differs"
  done
  t1=$EPOCHREALTIME
  for ((k = 0; k < count; k++)); do rm -rf "$WORK/out/$tag.$k"; done
  elapsed "$t0" "$t1"
}

declare -a one=() many=()
for ((r = 1; r <= RUNS; r++)); do
  one+=("$(receive_all 1 one$r)")
  log "run $r: 1 receiver ${one[-1]} s"
  many+=("$(receive_all "$N" many$r)")
  log "run $r: $N receivers ${many[-1]} s"
done
kill -INT "$SEND_PID"
wait "$SEND_PID" || true
forget_pid "$SEND_PID"

t1=$(median "${one[@]}")
tn=$(median "${many[@]}")
rate1=$(calc "printf \"%.1f\", $MIB / $t1")
raten=$(calc "printf \"%.1f\", $N * $MIB / $tn")
ratio=$(calc "printf \"%.0f\", 100 * ($N * $MIB / $tn) / ($MIB / $t1)")
echo "## pcp send --keep: $N receivers at once (veth pair, MTU 1500, $MIB MiB, medians of $RUNS, commit $(git_head))"
echo
echo "| receivers | wall time | combined MiB/s | of one receiver's rate | target |"
echo "|---|---|---|---|---|"
echo "| 1 | $t1 s | $rate1 | 100% | |"
echo "| $N | $tn s | $raten | $ratio% | >= 80%: $(yesno "$ratio >= 80") |"
echo
echo "Sender's last lines: $(tail -n 1 "$WORK/log/send.err")"
