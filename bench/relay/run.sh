#!/usr/bin/env bash
# RTP relay benchmark: Ringfort's relay (bench/relay/relay_bench.rs) and, interleaved in
# the same run, rtpengine (userspace, no kernel module) under the same paced load from
# rtp_blast.c (copied from the shared peers): each call = 2 legs x 50 pps x 172-byte
# packets (G.711 20 ms), i.e. 100 pps into the relay and 100 pps out. Loopback only.
#
#   bench/relay/run.sh                     # 50 200 500 1000 calls, 10 s each
#   SECS=6 bench/relay/run.sh 50 500       # own durations and call counts
#   PEERS=ringfort bench/relay/run.sh      # without rtpengine
#
# Per step: relayed pps (what the blaster received back), loss %, CPU of the relay process
# (% of one core, from /proc utime+stime), CPU % per 1000 relayed pps, RSS per call and,
# for Ringfort, heap allocations per relayed packet in the steady-state window (counting
# global allocator; must be 0). Knobs: SECS, PEERS, THREADS (relay worker threads, and
# rtpengine --num-threads), RESULTS_DIR, PEERS_DIR.
set -u
cd "$(dirname "$0")"
HERE=$(pwd)
ROOT=$(cd ../.. && pwd)
SECS=${SECS:-10}
CALLS="${*:-50 200 500 1000}"
PEERS=${PEERS:-ringfort rtpengine}
THREADS=${THREADS:-2}
PEERS_DIR=${PEERS_DIR:-/work/shared/peers}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
W=$(mktemp -d /tmp/relay_bench.XXXXXX)
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/relay_$(date +%Y%m%d_%H%M%S).txt"
ulimit -n 65536 2>/dev/null || true
[ "$SECS" -ge 5 ] || { echo "SECS must be >= 5"; exit 2; }

RP=""
cleanup() { [ -n "$RP" ] && kill "$RP" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

gcc -O2 -o "$W/rtp_blast" "$HERE/rtp_blast.c" || exit 1
(cd "$ROOT" && cargo build --release --example relay_bench) || exit 1
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/relay_bench"
if [[ " $PEERS " == *" rtpengine "* ]] && ! command -v rtpengine >/dev/null; then
  echo "rtpengine not installed (apt-get install rtpengine-daemon) - run with PEERS=ringfort"; exit 1
fi

# utime+stime ticks (100/s) of a process (the relays are single processes)
ticks() { local f; f=$(cat /proc/$1/stat 2>/dev/null) || { echo 0; return; }; f=${f##*) }; set -- $f; echo $((${12} + ${13})); }
rss_kb() { awk '/^VmRSS/{print $2}' /proc/$1/status 2>/dev/null || echo 0; }
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }

# blast PID_OF_RELAY -> runs the load, sets BLAST (blaster summary), CPU, OTHER; signals
# USR1/USR2 around the steady-state window when MARK=1.
blast() {
  local rp=$1 r0 r1 b0 b1 t0 t1 bp
  r0=$(ticks "$rp"); b0=$(busy); t0=$(date +%s.%N)
  "$W/rtp_blast" "$W/map.txt" "$SECS" >"$W/blast.out" 2>"$W/blast.err" &
  bp=$!
  sleep 2; [ "${MARK:-0}" = 1 ] && kill -USR1 "$rp"
  sleep $((SECS - 3)); [ "${MARK:-0}" = 1 ] && kill -USR2 "$rp"
  RSS=$(rss_kb "$rp")
  wait "$bp"
  t1=$(date +%s.%N); r1=$(ticks "$rp"); b1=$(busy)
  BLAST=$(cat "$W/blast.out")
  CPU=$(python3 -c "print(round(($r1-$r0)/($t1-$t0),1))")
  OTHER=$(python3 -c "print(round(($b1-$b0)/($t1-$t0)-($r1-$r0)/($t1-$t0),1))")
}

field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

row() { # peer calls
  local tx_pps rx_pps loss per1k rsscall
  tx_pps=$(field tx_pps "$BLAST"); rx_pps=$(field rx_pps "$BLAST"); loss=$(field loss_pct "$BLAST")
  per1k=$(python3 -c "print(round($CPU/max($rx_pps,1)*1000,3))")
  rsscall=$(python3 -c "print(round(($RSS-$RSS0)/$2,1))")
  printf "%-10s %6s %11s %11s %8s %8s %11s %8s %7s %s\n" "$1" "$2" "$tx_pps" "$rx_pps" "$loss" "$CPU" "$per1k" "$rsscall" "$OTHER" "${3:-}" | tee -a "$OUT"
}

{
  echo "# relay bench $(date -Is) $(nproc) cores secs=$SECS threads=$THREADS; 172-byte RTP, 50 pps per leg per direction"
  echo "# offered_pps = packets/s the blaster sent (the blaster is the limit when < 100 x calls)"
  echo "# relayed_pps = packets/s the blaster got back (= relayed out); cpu% of one core; kb/call = (RSS under load - RSS before setup)/calls"
  printf "%-10s %6s %11s %11s %8s %8s %11s %8s %7s %s\n" peer calls offered_pps relayed_pps loss% cpu% cpu%/1kpps kb/call other% allocs/pkt
} | tee "$OUT"

for N in $CALLS; do
  for P in $PEERS; do
    case $P in
      ringfort)
        rm -f "$W/map.txt"
        "$BIN" "$N" "$W/map.txt" "$THREADS" >"$W/rf.out" 2>"$W/rf.err" &
        RP=$!
        for _ in $(seq 100); do grep -q ready "$W/rf.out" 2>/dev/null && break; sleep 0.1; done
        grep -q ready "$W/rf.out" || { echo "relay_bench did not start:"; cat "$W/rf.err"; exit 1; }
        MARK=1 blast "$RP"
        kill -TERM "$RP"; wait "$RP" 2>/dev/null; RP=""
        REPORT=$(grep relayed_pkts "$W/rf.out")
        RSS0=$(field rss_base_kb "$REPORT")   # measured by the process before its setup
        row ringfort "$N" "$(field allocs_per_pkt "$REPORT") ($(field window_allocs "$REPORT") allocs / $(field window_pps "$REPORT") pps window)"
        ;;
      rtpengine)
        rtpengine --config-file=none --table=-1 --interface=127.0.0.1 --listen-ng=127.0.0.1:2223 \
          --foreground --log-stderr --log-level=4 --port-min=20000 --port-max=39999 \
          --num-threads="$THREADS" >"$W/rtpengine.log" 2>&1 &
        RP=$!; sleep 1
        RSS0=$(rss_kb "$RP")
        python3 "$PEERS_DIR/rtpengine/ng_client.py" setup "$N" "$W/map.txt" >/dev/null || { echo "ng setup failed"; exit 1; }
        MARK=0 blast "$RP"
        python3 "$PEERS_DIR/rtpengine/ng_client.py" delete "$N" >/dev/null
        kill "$RP"; wait "$RP" 2>/dev/null; RP=""
        row rtpengine "$N"
        ;;
    esac
    sleep 1
  done
done
echo "results in $OUT"
