#!/usr/bin/env bash
# Where one cold random 4 KiB read through `pcp mount` spends its time (a diagnosis, not a
# benchmark and not a test). `pcp send` runs in one network namespace, `pcp mount` in another,
# joined by a veth pair (MTU 1500); one Python thread reads a file of random data through the
# mount at random 4 KiB-aligned offsets, page caches cold, while `perf record` keeps the
# scheduler's events (sched_switch, sched_waking) of the whole machine. Each read is then cut
# into the stages it went through, from the events the threads involved leave:
#
#   reader     the reader's wake-up to its next request waking a FUSE thread (Python, syscall)
#   fuse-wake  that FUSE thread's wake-up latency (on an idle CPU: waking a halted vCPU)
#   fuse-hop   the FUSE thread until it wakes the mount's runtime
#   req-out    the mount's runtime until the sender is woken (request sealed, TLS, TCP)
#   req-in     the sender, woken, until it waits on the disk (TLS, yamux, open, lookup)
#   disk+ans   the disk read and the answer out, until the mount's runtime is woken
#   ans-in     the mount, until the reader is woken (TLS, yamux, open, cache, FUSE reply)
#   back       the reader's wake-up latency
#
# and the median and 90th percentile of each are printed, with the IOPS of an untraced pass for
# scale. Reads the sender answered from its page cache (no disk wait) are counted and left out.
# The stages are cut at wake-ups (sched_waking, recorded in the waker's context), at a task
# leaving its CPU, and at a FUSE thread getting one. On the Firecracker VMs this was written on,
# perf keeps only about one in eight of the switches that put pcp's runtime threads back on a
# CPU, so "req-in" holds the sender's wake-up latency and its work together.
#
#   sudo scripts/read-path.sh
#
# Options (environment):
#   BENCH_READS=2000      random 4 KiB preads in each pass
#   BENCH_READ_MIB=512    size of the file read (random data, made in the work dir)
#   BENCH_BUILD=1         0: use the release binary already built
#   BENCH_DIR=/tmp/pcp-bench  parent of the temporary work dir (removed on exit)
# Needs root (namespaces, mounts, dropping caches), perf, python3, fuse3.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOG_TAG=read-path
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
loopback_options
READS=${BENCH_READS:-2000}
READ_MIB=${BENCH_READ_MIB:-512}
positive_ints READS READ_MIB
[ "$NET" = veth ] || die "this runs on the veth pair only (BENCH_NET=veth)"
need_root
on_exit_clean_up

ensure_tools perf=linux-perf python3=python3 fusermount3=fuse3 nsenter=util-linux ip=iproute2
record_commit
build_pcp
make_work read-path
mkdir -p "$WORK/log" "$WORK/share" "$WORK/mnt"
net_setup
log "writing $READ_MIB MiB of random data"
head -c "$((READ_MIB << 20))" /dev/urandom >"$WORK/share/data.bin"

cat >"$WORK/pread.py" <<'EOF'
import os, random, sys, time
path, n, seed, pidfile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with open(pidfile, "w") as f:
    f.write(f"{os.getpid()}\n")
fd = os.open(path, os.O_RDONLY)
rng = random.Random(seed)
offs = [rng.randrange(os.fstat(fd).st_size // 4096) * 4096 for _ in range(n)]
t = time.perf_counter()
for o in offs:
    if len(os.pread(fd, 4096, o)) != 4096:
        sys.exit(f"short read at {o}")
print(f"{n / (time.perf_counter() - t):.0f}")
EOF

start_pcp_send "$WORK/share" rp
MP=$WORK/mnt/pcp
mkdir -p "$MP"
MOUNTS+=("$MP")
PCP_CODE=$SEND_CODE "${IN_B[@]}" "$PCP" mount --no-progress --discovery none --peer "$SEND_ADDR" - "$MP" \
  >"$WORK/log/mount.out" 2>"$WORK/log/mount.err" </dev/null &
MNT_PID=$!
LIVE_PIDS+=("$MNT_PID")
deadline=$((SECONDS + 60))
until is_mounted "$MP" && grep -q '^Mounted ' "$WORK/log/mount.err"; do
  kill -0 "$MNT_PID" 2>/dev/null || die "pcp mount exited: $(tail -n 5 "$WORK/log/mount.err")"
  ((SECONDS < deadline)) || die "pcp mount did not mount within 60 s"
  sleep 0.05
done
# The pcp processes themselves (nsenter execs them; /usr/bin/time and timeout wrap the sender).
SENDER=""
for p in $(pgrep -f -- " $WORK/share\$" || true); do
  [ "$(cat "/proc/$p/comm" 2>/dev/null)" = pcp ] && SENDER=$p
done
MOUNTER=$MNT_PID
[ -n "$SENDER" ] && [ "$(cat "/proc/$MOUNTER/comm" 2>/dev/null)" = pcp ] ||
  die "cannot find the pcp processes (sender: ${SENDER:-none}, mount $MOUNTER: $(cat "/proc/$MOUNTER/comm" 2>/dev/null))"
tids() { ls "/proc/$1/task" 2>/dev/null | tr '\n' ' '; }
fuse_tids() {
  local t
  for t in /proc/"$1"/task/*; do
    case $(cat "$t/comm" 2>/dev/null) in fuser-*) printf '%s ' "${t##*/}" ;; esac
  done
}

drop_caches
untraced=$(python3 "$WORK/pread.py" "$MP/data.bin" "$READS" 1 "$WORK/pid0")
drop_caches
S_TIDS=$(tids "$SENDER") M_TIDS=$(tids "$MOUNTER") F_TIDS=$(fuse_tids "$MOUNTER")
perf record -q -e sched:sched_switch -e sched:sched_waking -a -o "$WORK/sched.data" -- \
  python3 "$WORK/pread.py" "$MP/data.bin" "$READS" 2 "$WORK/pid" >"$WORK/log/traced" 2>"$WORK/log/perf.err" ||
  die "perf record failed: $(tail -n 3 "$WORK/log/perf.err")"
S_TIDS+=" $(tids "$SENDER")" M_TIDS+=" $(tids "$MOUNTER")"
perf script -i "$WORK/sched.data" -F comm,tid,time,event,trace >"$WORK/sched.txt" 2>/dev/null

log "pcp mount of $READ_MIB MiB, $READS random 4 KiB preads, caches cold, tree $BUILT_COMMIT"
echo "untraced: $untraced IOPS; traced: $(cat "$WORK/log/traced") IOPS"
python3 - "$WORK/sched.txt" "$(cat "$WORK/pid")" "$F_TIDS" "$M_TIDS" "$S_TIDS" <<'EOF'
import re, statistics, sys
text, reader = sys.argv[1], int(sys.argv[2])
fuse, mount, sender = ({int(t) for t in a.split()} for a in sys.argv[3:6])
mount -= fuse
line = re.compile(r"^\s*(.*?)\s+(\d+)\s+([\d.]+):\s+sched:(\w+):\s+(.*)$")
field = lambda name, s: re.search(name + r"=(\S+)", s).group(1)
STAGES = ["reader", "fuse-wake", "fuse-hop", "req-out", "req-in", "disk+ans", "ans-in", "back"]
marks, cycles, cached = None, [], 0
for raw in open(text):
    m = line.match(raw)
    if not m:
        continue
    tid, t, ev, rest = int(m.group(2)), float(m.group(3)) * 1e6, m.group(4), m.group(5)
    if ev == "sched_switch":
        nxt, prev = int(field("next_pid", rest)), int(field("prev_pid", rest))
        if nxt == reader and (marks is None or "reply" in marks):
            if marks is not None:
                keys = ["in", "fuse_waking", "fuse_run", "rt_waking", "sender_waking", "disk", "answer", "reply"]
                if all(k in marks for k in keys):
                    ts = [marks[k] for k in keys] + [t]
                    if all(a <= b for a, b in zip(ts, ts[1:])):
                        cycles.append([b - a for a, b in zip(ts, ts[1:])])
                elif "disk" not in marks:
                    cached += 1
            marks = {"in": t}
        elif marks is not None:
            if nxt in fuse and "fuse_waking" in marks:
                marks.setdefault("fuse_run", t)
            if prev in sender and field("prev_state", rest).startswith("D") and "sender_waking" in marks:
                marks.setdefault("disk", t)
    elif ev == "sched_waking" and marks is not None:
        wakee = int(field("pid", rest))
        if tid == reader and wakee in fuse:
            marks.setdefault("fuse_waking", t)
        elif tid in fuse and wakee in mount and "fuse_run" in marks:
            marks.setdefault("rt_waking", t)
        elif wakee in sender and "rt_waking" in marks:
            marks.setdefault("sender_waking", t)
        elif tid in sender and wakee in mount and "disk" in marks:
            marks.setdefault("answer", t)
        elif tid in mount and wakee == reader and "answer" in marks:
            marks.setdefault("reply", t)
if not cycles:
    sys.exit("no read could be followed through the trace (perf lost events?)")
total = [sum(c) for c in cycles]
p90 = lambda xs: sorted(xs)[int(0.9 * (len(xs) - 1))]
medians = [statistics.median(c[i] for c in cycles) for i in range(len(STAGES))]
print(f"{len(cycles)} reads followed ({cached} answered from the sender's page cache, left out)")
print(f"{'stage':<10} {'median us':>10} {'p90 us':>8} {'share of the medians':>21}")
for i, s in enumerate(STAGES):
    print(f"{s:<10} {medians[i]:>10.1f} {p90([c[i] for c in cycles]):>8.1f} "
          f"{100 * medians[i] / sum(medians):>20.0f}%")
print(f"{'total':<10} {statistics.median(total):>10.1f} {p90(total):>8.1f}   "
      f"(median read: {1e6 / statistics.median(total):.0f} IOPS)")

EOF
kill -TERM "$MNT_PID" 2>/dev/null || true
