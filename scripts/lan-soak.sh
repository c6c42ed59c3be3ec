#!/usr/bin/env bash
# Soak test (not part of the suite): N receives in a row between two network namespaces joined
# by a veth pair (MTU 1500), each from a freshly started `pcp send` with default discovery (mDNS
# and DHT on; the namespaces have no route anywhere, so nothing leaves the machine), every one
# checked byte for byte. Prints the failure count and keeps the logs of failed runs.
#
#   sudo scripts/lan-soak.sh            # 500 runs, debug or release binary as PCP says
#   RUNS=50 PCP=target/release/pcp sudo -E scripts/lan-soak.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-500}
PCP=${PCP:-$ROOT/target/release/pcp}
[ "$(id -u)" = 0 ] || { echo "lan-soak: run as root (network namespaces)" >&2; exit 1; }
[ -x "$PCP" ] || { echo "lan-soak: no binary at $PCP (cargo build --release, or set PCP)" >&2; exit 1; }
A=pcpsoaka$$ B=pcpsoakb$$
WORK=$(mktemp -d)
cleanup() {
  ip netns pids "$A" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns pids "$B" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
ip link add vA netns "$A" type veth peer name vB netns "$B"
ip -n "$A" addr add 10.79.0.1/24 dev vA; ip -n "$B" addr add 10.79.0.2/24 dev vB
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set vA up; ip -n "$B" link set vB up
mkdir -p "$WORK/src/d" "$WORK/failed"; printf 'abc' > "$WORK/src/d/f"
fail=0
for i in $(seq 1 "$RUNS"); do
  rm -rf "$WORK/out" "$WORK/send.out" "$WORK/send.err"; mkdir "$WORK/out"
  ip netns exec "$A" "$PCP" send --no-progress "$WORK/src/d" >"$WORK/send.out" 2>"$WORK/send.err" &
  spid=$!
  code=
  for _ in $(seq 1 100); do
    code=$(sed -n 's/^Code is: //p' "$WORK/send.out" | head -n 1)
    [ -n "$code" ] && break; sleep 0.05
  done
  ok=1
  if ! PCP_CODE=$code timeout 60 ip netns exec "$B" "$PCP" receive --yes --no-progress --wait 30s \
       --out "$WORK/out" 2>"$WORK/recv.err"; then ok=0; fi
  if ! wait "$spid"; then ok=0; fi
  cmp -s "$WORK/src/d/f" "$WORK/out/d/f" || ok=0
  [ "$(grep -c 'Receiver authenticated' "$WORK/send.err")" = 1 ] || ok=0
  if [ "$ok" = 0 ]; then
    fail=$((fail + 1))
    cat "$WORK/send.err" "$WORK/recv.err" > "$ROOT/lan-soak-failed-$i.log"
  fi
done
echo "lan-soak: $RUNS runs, $fail failed"
[ "$fail" = 0 ]
