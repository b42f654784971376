#!/usr/bin/env bash
# Calls with G.711 RTP through Ringfort (B2BUA + relay) and, in the same run, through
# Kamailio 5.6 + rtpengine 10.5 (userspace), interleaved step by step, all on 127.0.0.1:
#
#   SIPp UAC (INVITE, 407, INVITE with credentials; plays G.711 RTP)
#     -> Ringfort | Kamailio+rtpengine -> SIPp UAS (registered first; -rtp_echo)
#
# usage: bench/calls/run.sh               (defaults: about 10 minutes)
#
# Two sweeps, each step run once per system, the order alternating from step to step:
#   1. concurrency: N calls (CONC) started at CONC_RATE calls/s, each held until all N are up
#      plus FULL_SECS, with RTP both ways (50 pps per direction) from its answer until 2 s
#      before its BYE; RTP counted on the wire; the most concurrent calls with 0 RTP loss,
#      CPU and RSS per relayed call, CPU per relayed packet.
#   2. call rate: RATE calls/s for RATE_SECS (short calls, no RTP, held RATE_HOLD_MS); the
#      highest rate with < MAX_FAIL_PCT % failed, p50/p99 call setup time.
#
# Environment (all optional):
#   CONC="250 500 750 1000 1250"  concurrency steps (calls held at once)
#   CONC_RATE=100 FULL_SECS=8   calls start at CONC_RATE/s (kept below the call-rate limits,
#                               so the step measures concurrency, not setup rate); each is held
#                               N/CONC_RATE + FULL_SECS s and plays 2 s less of RTP
#   RTP_PLAY=stream             how SIPp plays it: "stream" = rtp_stream (an A-law WAV made with
#                               sox, sent by a pool of SIPp threads, RTP_THREADTASKS calls each),
#                               "pcap" = play_pcap_audio (a pcap made from SIPp's own
#                               g711a.pcap, re-cut to 20 ms by make_pcap.py; one thread and a
#                               raw socket per call: the runs before 2026-11-26 08:00)
#   RTP_THREADTASKS=20          SIPp -rtp_threadtasks (stream only)
#   RATES="100 200 300 400 600" call-rate steps (calls/s)
#   RATE_SECS=10 RATE_HOLD_MS=1000
#   PEERS="ringfort kamailio"   systems to run ("kamailio" = Kamailio + rtpengine)
#   SKIP_AFTER=2                a system that failed this many steps of a sweep in a row
#                               skips the larger ones (its figures are known by then)
#   MAX_FAIL_PCT=0.1 MIN_RATE_FRAC=0.8   rate-step pass: fail% < 0.1 and achieved >= 0.8 x rate
#   PASSWORD=benchsecret        password of the caller (100) and callee (200); Kamailio's
#                               static one (it authenticates REGISTER and INVITE like Ringfort)
#   KAM_QOP=1                   Kamailio challenges with qop="auth" as Ringfort does
#   RTPE_THREADS=2              rtpengine --num-threads
#   RTPE_DELETE_DELAY=0         rtpengine --delete-delay (its default 30 keeps a call's ports
#                               and memory 30 s after the BYE; Ringfort frees them at once)
#   RF_BIN=...                  Ringfort binary (default: cargo build --release --bin ringfort,
#                               then ${CARGO_TARGET_DIR:-<repo>/target}/release/ringfort)
#   RF_LOG=warn                 Ringfort's log level for the run
#   NOISY_PCT=40                a step during which other users' processes took more than this
#                               (% of one core: the other% column) is run once more, and the
#                               noisy one kept in the TSV as a "#noisy" line
#   SETTLE_MAX=60 PAUSE=2       after a step wait (at most SETTLE_MAX s) until the system is
#                               idle, then PAUSE s
#   RESULTS_DIR=bench/calls/results   KEEP_TMP=1 keeps the temp dir
#   ports (UDP, 127.0.0.1): RF_PORT=15170 KAM_PORT=15270 NG_PORT=15299, SIPp: UAS SIP
#     port +1, UAC SIP port +10; RTP: SIPp UAC 16000 (Ringfort) / 16200 (Kamailio), SIPp UAS
#     16100 / 16300; relays: Ringfort 20000-39999, rtpengine 40000-59999
#
# RTP loss is counted in the kernel: an iptables chain of counting rules (no verdict) on
# the OUTPUT hook of lo, created for the run and removed at exit, counts per system the
# packets SIPp's UAC sent (source port = UAC media port), the relay sent to the UAS
# (destination = UAS media port), the UAS echoed (source = UAS media port) and the relay
# sent back to the UAC (destination = UAC media port). relay loss = packets into the relay
# that did not come out (both directions); e2e loss = UAC sent vs got back.
# Needs root (iptables; SIPp's raw socket for pcap play) and: sipp (sip-tester), sox, kamailio,
# rtpengine (rtpengine-daemon), iptables, python3. Everything is cleaned up on exit.
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

CONC=${CONC:-"250 500 750 1000 1250"}
CONC_RATE=${CONC_RATE:-100}
FULL_SECS=${FULL_SECS:-8}
RATES=${RATES:-"100 200 300 400 600"}
RATE_SECS=${RATE_SECS:-10}
RATE_HOLD_MS=${RATE_HOLD_MS:-1000}
PEERS=${PEERS:-"ringfort kamailio"}
SKIP_AFTER=${SKIP_AFTER:-2}
MAX_FAIL_PCT=${MAX_FAIL_PCT:-0.1}
MIN_RATE_FRAC=${MIN_RATE_FRAC:-0.8}
PASSWORD=${PASSWORD:-benchsecret}
KAM_QOP=${KAM_QOP:-1}
RTPE_THREADS=${RTPE_THREADS:-2}
RTPE_DELETE_DELAY=${RTPE_DELETE_DELAY:-0}
RF_LOG=${RF_LOG:-warn}
SETTLE_MAX=${SETTLE_MAX:-60}
NOISY_PCT=${NOISY_PCT:-40}
PAUSE=${PAUSE:-2}
RF_PORT=${RF_PORT:-15170}
KAM_PORT=${KAM_PORT:-15270}
NG_PORT=${NG_PORT:-15299}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
SRC_PCAP=${SRC_PCAP:-/usr/share/sip-tester/g711a.pcap}
RTP_PLAY=${RTP_PLAY:-stream}
RTP_THREADTASKS=${RTP_THREADTASKS:-20}
CALLER=100
CALLEE=200
HZ=$(getconf CLK_TCK)

# shellcheck source=../lib.sh
. "$HERE/../lib.sh"

# ---------------------------------------------------------------- cleanup (runs on any exit)
TMP=""; SIPP_PID=""; SAMPLER_PID=""; CHAIN=""
declare -A PID=()          # process name -> PID (ringfort, kamailio, rtpengine, uas-<sys>)

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$SAMPLER_PID" ] && stop_tree "$SAMPLER_PID"
  [ -n "$SIPP_PID" ] && stop_tree "$SIPP_PID"
  for p in "${!PID[@]}"; do stop_tree "${PID[$p]}"; done
  if [ -n "$CHAIN" ]; then
    iptables -w -D OUTPUT -o lo -p udp -j "$CHAIN" 2>/dev/null
    iptables -w -F "$CHAIN" 2>/dev/null; iptables -w -X "$CHAIN" 2>/dev/null \
      || log "warning: could not remove iptables chain $CHAIN"
  fi
  remove_tmp "$TMP"
  exit $rc
}
on_exit cleanup

# ---------------------------------------------------------------- prerequisites
[ "$(id -u)" = 0 ] || die "needs root (iptables counters, SIPp's raw socket for pcap play)"
need_apt=()
command -v sipp >/dev/null || need_apt+=(sip-tester)
command -v sox >/dev/null || need_apt+=(sox)
command -v kamailio >/dev/null || need_apt+=(kamailio)
command -v rtpengine >/dev/null || need_apt+=(rtpengine-daemon)
command -v iptables >/dev/null || need_apt+=(iptables)
apt_install "${need_apt[@]}"
for t in sipp kamailio kamcmd rtpengine iptables python3 ss timeout; do
  command -v $t >/dev/null || die "$t not found"
done
case "$RTP_PLAY" in
  stream) ;;
  pcap) [ -r "$SRC_PCAP" ] || die "no $SRC_PCAP (dpkg -L sip-tester lists the pcaps SIPp ships)" ;;
  *) die "RTP_PLAY must be stream or pcap" ;;
esac
[ "$FULL_SECS" -ge 4 ] || die "FULL_SECS must be >= 4"

port_free() { [ -z "$(ss -Hlun "( sport = :$1 )" 2>/dev/null)" ]; }

# per system: SIP port, UAS SIP port, UAC SIP port, UAC and UAS media ports
declare -A SIP UAS_PORT UAC_PORT UAC_MP UAS_MP
SIP[ringfort]=$RF_PORT;  UAS_PORT[ringfort]=$((RF_PORT + 1));  UAC_PORT[ringfort]=$((RF_PORT + 10))
SIP[kamailio]=$KAM_PORT; UAS_PORT[kamailio]=$((KAM_PORT + 1)); UAC_PORT[kamailio]=$((KAM_PORT + 10))
UAC_MP[ringfort]=16000; UAS_MP[ringfort]=16100; UAC_MP[kamailio]=16200; UAS_MP[kamailio]=16300
SYSTEMS=()
for s in $PEERS; do
  case $s in ringfort|kamailio) SYSTEMS+=("$s");; *) die "unknown peer $s";; esac
done
[ ${#SYSTEMS[@]} -gt 0 ] || die "no peers to run (PEERS=$PEERS)"
for s in "${SYSTEMS[@]}"; do
  for p in ${SIP[$s]} ${UAS_PORT[$s]} ${UAC_PORT[$s]} ${UAC_MP[$s]} ${UAS_MP[$s]}; do
    port_free "$p" || die "UDP port $p is in use (set RF_PORT/KAM_PORT)"
  done
done
[[ " ${SYSTEMS[*]} " == *" kamailio "* ]] && { port_free "$NG_PORT" || die "UDP port $NG_PORT is in use (NG_PORT)"; }

if [[ " ${SYSTEMS[*]} " == *" ringfort "* ]]; then
  if [ -z "${RF_BIN:-}" ]; then
    log "cargo build --release --bin ringfort"
    (cd "$REPO" && cargo build --release -q --bin ringfort) || die "cargo build failed"
    RF_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/ringfort"
  fi
  [ -x "$RF_BIN" ] || die "no ringfort binary at $RF_BIN"
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null
TMP=$(mktemp -d /tmp/ringfort-bench-calls.XXXXXX)
mkdir -p "$RESULTS_DIR"
STAMP=$(date +%Y%m%d_%H%M%S)
OUT="$RESULTS_DIR/calls_${STAMP}.txt"
CSTEPS="$RESULTS_DIR/calls_${STAMP}.conc.tsv"
RSTEPS="$RESULTS_DIR/calls_${STAMP}.rate.tsv"

# ---------------------------------------------------------------- packet counters
CHAIN="RFBC_$$"
iptables -w -N "$CHAIN" || { CHAIN=""; die "cannot create iptables chain"; }
iptables -w -I OUTPUT -o lo -p udp -j "$CHAIN" || die "cannot hook iptables chain into OUTPUT"
for s in "${SYSTEMS[@]}"; do   # 4 rules per system, in this order: see count_pkts
  for r in "--sport ${UAC_MP[$s]}" "--dport ${UAS_MP[$s]}" "--sport ${UAS_MP[$s]}" "--dport ${UAC_MP[$s]}"; do
    iptables -w -A "$CHAIN" -p udp $r -j RETURN || die "iptables rule failed"
  done
done
count_pkts() {             # count_pkts SYSTEM -> "uac_sent to_uas uas_sent to_uac" (packets)
  local i
  for i in "${!SYSTEMS[@]}"; do [ "${SYSTEMS[$i]}" = "$1" ] && break; done
  iptables -w -L "$CHAIN" -n -v -x 2>/dev/null | awk -v a=$((i * 4 + 1)) \
    '/RETURN/ { n++; if (n >= a && n < a + 4) printf "%s ", $1 } END { print "" }'
}

# ---------------------------------------------------------------- systems
register_callee() {        # register_callee SYSTEM: REGISTER (401, with credentials) from the UAS port
  local s=$1 d="$TMP/$1"
  timeout 30 sipp -sf "$HERE/register.xml" -i 127.0.0.1 -p "${UAS_PORT[$s]}" -s $CALLEE \
    -au $CALLEE -ap "$PASSWORD" -set expires 3600 -m 1 -nostdin -timeout 20s \
    -trace_err -error_file "$d/register.err" "127.0.0.1:${SIP[$s]}" >"$d/register.log" 2>&1 \
    || { cat "$d/register.log" "$d/register.err" >&2 2>/dev/null; die "$s: the callee could not register"; }
  sipp -sf "$HERE/uas_echo.xml" -i 127.0.0.1 -p "${UAS_PORT[$s]}" -mi 127.0.0.1 -mp "${UAS_MP[$s]}" \
    -rtp_echo -nostdin -trace_err -error_file "$d/uas.err" -trace_stat -stf "$d/uas.csv" -fd 5 \
    >"$d/uas.log" 2>&1 &
  PID[uas-$s]=$!
  sleep 0.5
  kill -0 "${PID[uas-$s]}" 2>/dev/null || { cat "$d/uas.log" >&2; die "$s: the SIPp UAS did not start"; }
  log "$s: callee $CALLEE registered, SIPp UAS pid ${PID[uas-$s]} on udp ${UAS_PORT[$s]}, RTP echo on ${UAS_MP[$s]}"
}

start_ringfort() {
  local d="$TMP/ringfort"; mkdir -p "$d/data"
  cat >"$d/ringfort.toml" <<EOF
[node]
id = "bench-calls"
data_dir = "$d/data"

[sip]
udp_listen = ["127.0.0.1:$RF_PORT"]
tcp_listen = []

[http]
listen = "127.0.0.1:$((RF_PORT + 3000))"

[log]
level = "$RF_LOG"

[media]
rtp_port_min = 20000
rtp_port_max = 39999
address = "127.0.0.1"
EOF
  for n in $CALLER $CALLEE; do
    "$RF_BIN" --config "$d/ringfort.toml" extension add $n --password "$PASSWORD" --name "bench $n" \
      >>"$d/cli.log" 2>&1 || { cat "$d/cli.log" >&2; die "ringfort extension add $n failed"; }
  done
  "$RF_BIN" --config "$d/ringfort.toml" serve >"$d/node.log" 2>&1 &
  PID[ringfort]=$!
  for _ in $(seq 100); do
    port_free "$RF_PORT" || { log "ringfort up, pid ${PID[ringfort]}, udp 127.0.0.1:$RF_PORT"; return 0; }
    kill -0 "${PID[ringfort]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$d/node.log" >&2; die "ringfort failed to start"
}

start_kamailio() {         # rtpengine (userspace) first, then Kamailio pointing at its NG port
  local d="$TMP/kamailio"; mkdir -p "$d"
  rtpengine --config-file=none --table=-1 --interface=127.0.0.1 --listen-ng="127.0.0.1:$NG_PORT" \
    --foreground --log-stderr --log-level=4 --port-min=40000 --port-max=59999 \
    --num-threads="$RTPE_THREADS" --delete-delay="$RTPE_DELETE_DELAY" >"$d/rtpengine.log" 2>&1 &
  PID[rtpengine]=$!
  for _ in $(seq 50); do port_free "$NG_PORT" || break; sleep 0.1; done
  port_free "$NG_PORT" && { cat "$d/rtpengine.log" >&2; die "rtpengine failed to start"; }
  sed -e "s|@RUNDIR@|$d|g" -e "s|@PORT@|$KAM_PORT|g" -e "s|@PASSWORD@|$PASSWORD|g" \
    -e "s|@NG@|127.0.0.1:$NG_PORT|g" "$HERE/kamailio.cfg" >"$d/kamailio.cfg"
  local def=(-A WITH_AUTH); [ "$KAM_QOP" = 1 ] && def+=(-A WITH_QOP)
  kamailio -f "$d/kamailio.cfg" -DD -E -m 256 -M 8 -P "$d/kam.pid" "${def[@]}" >"$d/kamailio.log" 2>&1 &
  PID[kamailio]=$!
  for _ in $(seq 50); do
    kamcmd -s "unix:$d/ctl" core.version >/dev/null 2>&1 && {
      log "kamailio up, pid ${PID[kamailio]}, udp 127.0.0.1:$KAM_PORT; rtpengine pid ${PID[rtpengine]}, NG 127.0.0.1:$NG_PORT"
      return 0; }
    kill -0 "${PID[kamailio]}" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "$d/kamailio.log" >&2; die "kamailio failed to start"
}

for s in "${SYSTEMS[@]}"; do
  mkdir -p "$TMP/$s"
  start_$s
  register_callee "$s"
done

# ---------------------------------------------------------------- measurement helpers
ticks_of() {               # utime+stime (clock ticks) of the given PIDs and their descendants
  local t=0 f p q
  for q in "$@"; do
    for p in $(descendants "$q"); do
      f=$(cat /proc/$p/stat 2>/dev/null) || continue
      f=${f##*) }
      set -- $f            # $12=utime $13=stime
      t=$((t + ${12} + ${13}))
    done
  done
  echo $t
}
kthread_ticks() {          # utime+stime of the kernel's threads (ksoftirqd, kworkers: packet work)
  local f t=0
  for f in /proc/[0-9]*/stat; do
    read -r l <"$f" 2>/dev/null || continue
    l=${l##*) }; set -- $l
    [ "$2" = 2 ] && t=$((t + ${12} + ${13}))
  done
  echo $t
}
udp_errs() { awk '/^Udp: [0-9]/{print $3, $6}' /proc/net/snmp; }   # "NoPorts RcvbufErrors" (whole machine)
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $8}' /proc/stat; }   # "busy softirq"
CHILD_SECS=0
child_secs() {             # user+sys s of this shell's reaped children (the SIPp UACs)
  times >"$TMP/times"
  CHILD_SECS=$(tail -1 "$TMP/times" | awk '{ for (i=1;i<=2;i++) { split($i,a,/[ms]/); s+=a[1]*60+a[2] } print s }')
}
# the relay processes of a system: "relay" = what is charged per relayed call/packet
relay_pids() { if [ "$1" = ringfort ]; then echo "${PID[ringfort]}"; else echo "${PID[kamailio]} ${PID[rtpengine]}"; fi; }
alive() { local p; for p in $(relay_pids "$1") "${PID[uas-$1]}"; do kill -0 "$p" 2>/dev/null || return 1; done; }

settle() {                 # settle SYSTEM: wait until its relay processes are idle
  local s=$1 a b t=0
  a=$(ticks_of $(relay_pids "$s"))
  while [ $t -lt "$SETTLE_MAX" ]; do
    sleep 1; t=$((t + 1))
    b=$(ticks_of $(relay_pids "$s"))
    [ $(( (b - a) * 100 / HZ )) -lt 5 ] && break
    a=$b
  done
  [ $t -gt 2 ] && log "$s: busy for ${t} s after its step ended (backlog)"
  return 0
}

# memory sampler: every 0.5 s, "name rss_kb pss_kb" per process tree; run.sh takes the max
sampler() {                # sampler OUTFILE name=pid ...
  local out=$1; shift
  python3 - "$out" "$@" <<'PY' &
import os, sys, time
out, specs = sys.argv[1], [a.split('=') for a in sys.argv[2:]]
def tree(p):
    ps = [p]
    try:
        for t in os.listdir(f'/proc/{p}/task'):
            with open(f'/proc/{p}/task/{t}/children') as f:
                for c in f.read().split():
                    ps += tree(c)
    except OSError:
        pass
    return ps
def mem(p):
    r = s = 0
    try:
        with open(f'/proc/{p}/smaps_rollup') as f:
            for line in f:
                if line.startswith('Rss:'): r = int(line.split()[1])
                elif line.startswith('Pss:'): s = int(line.split()[1])
    except OSError:
        pass
    return r, s
trees = {name: tree(pid) for name, pid in specs}
with open(out, 'w', buffering=1) as f:
    while True:
        for name, ps in trees.items():
            rs = [mem(p) for p in ps]
            f.write(f'{name} {sum(r for r, _ in rs)} {sum(s for _, s in rs)}\n')
        time.sleep(0.5)
PY
  SAMPLER_PID=$!
}
mem_now() {                # mem_now PID -> "rss pss" (kB) of its tree, once
  local f="$TMP/mem1"
  sampler "$f" "x=$1"; sleep 0.3; stop_tree "$SAMPLER_PID"; SAMPLER_PID=""
  head -1 "$f" | awk '{print $2, $3}'
}

declare -A RSS0 PSS0        # idle memory at the start (name -> kB), the base of kB per call
for s in "${SYSTEMS[@]}"; do
  for n in $( [ "$s" = ringfort ] && echo ringfort || echo kamailio rtpengine ); do
    read -r RSS0[$n] PSS0[$n] < <(mem_now "${PID[$n]}")
  done
done

# ---------------------------------------------------------------- one step
printf 'sweep\tsystem\tload\tm\twall_s\tcreated\tok\tfailed\tunfinished\tfail_pct\tachieved_per_s\tpeak_calls\tsetup_n\tsetup_p50_ms\tsetup_p99_ms\tsetup_max_ms\tuac_sent\tto_uas\tuas_sent\tto_uac\trelay_cpu_s\trtpe_cpu_s\trelay_rss_kb\trelay_pss_kb\trtpe_rss_kb\trelay_rss0_kb\trelay_pss0_kb\trtpe_rss0_kb\tuac_cpu_pct\tuas_cpu_pct\tsoftirq_cpu_pct\tkthread_cpu_pct\tother_cpu_pct\tsipp_rc\tudp_noports\tudp_rcvbuf_errors\n' \
  | tee "$CSTEPS" >"$RSTEPS"

run_step() {               # run_step conc|rate SYSTEM LOAD
  local sweep=$1 s=$2 L=$3 d="$TMP/$2" kt0 kt1 np0 np1 rb0 rb1 si0 si1 st m r lim hold to hard scen extra=() c0 c1 p0 p1 k0 k1 e0 e1 u0 u1 b0 b1 t0 t1 sc0 sc1 rc
  st="$d/${sweep}_$L"; mkdir -p "$st"
  if [ "$sweep" = conc ]; then
    local ramp=$(( (L + CONC_RATE - 1) / CONC_RATE )) play
    m=$L; lim=$L; r=$CONC_RATE; hold=$(( (ramp + FULL_SECS) * 1000 ))
    if [ "$RTP_PLAY" = pcap ]; then
      python3 "$HERE/make_pcap.py" "$SRC_PCAP" $((ramp + FULL_SECS - 2)) "$TMP/rtp_$L.pcap" >/dev/null \
        || die "make_pcap.py failed"
      play="play_pcap_audio=\"$TMP/rtp_$L.pcap\""
    else
      # SIPp takes no keyword in rtp_stream's file name: the path goes into the scenario.
      sox -q -n -r 8000 -c 1 -e a-law "$TMP/rtp_$L.wav" synth $((ramp + FULL_SECS - 2)) sine 440 vol 0.5 \
        || die "sox failed"
      play="rtp_stream=\"$TMP/rtp_$L.wav,1,8\""
      extra=(-rtp_threadtasks "$RTP_THREADTASKS")
    fi
    sed "s#@PLAY@#$play#" "$HERE/uac_rtp.xml" >"$st/uac_rtp.xml" || die "scenario"
    scen="$st/uac_rtp.xml"
    to=$((ramp * 3 + FULL_SECS + 40))
  else
    m=$((L * RATE_SECS)); r=$L; lim=$((L * (RATE_HOLD_MS / 1000 + 5) + 100)); hold=$RATE_HOLD_MS
    scen="$HERE/uac_short.xml"
    to=$((RATE_SECS * 2 + RATE_HOLD_MS / 1000 + 40))
  fi
  hard=$((to + 15))
  local rn=ringfort; [ "$s" = kamailio ] && rn=kamailio
  alive "$s" || { log "$s: a process died; step skipped"; return 1; }
  p0=$(count_pkts "$s"); read -r np0 rb0 < <(udp_errs); kt0=$(kthread_ticks)
  local rp=($(relay_pids "$s"))
  k0=$(ticks_of "${rp[@]}"); e0=0; [ "$s" = kamailio ] && e0=$(ticks_of "${PID[rtpengine]}")
  u0=$(ticks_of "${PID[uas-$s]}"); read -r b0 si0 < <(busy_ticks); child_secs; sc0=$CHILD_SECS; t0=$(date +%s.%N)
  if [ "$s" = ringfort ]; then sampler "$st/mem" "relay=${PID[ringfort]}"
  else sampler "$st/mem" "relay=${PID[kamailio]}" "rtpe=${PID[rtpengine]}"; fi
  ( cd "$st" && exec timeout -k 5 $hard sipp -sf "$scen" -i 127.0.0.1 -p "${UAC_PORT[$s]}" \
      -mi 127.0.0.1 -mp "${UAC_MP[$s]}" -s $CALLEE -au $CALLER -ap "$PASSWORD" -set caller $CALLER \
      "${extra[@]}" -r "$r" -m "$m" -l "$lim" -d "$hold" -timeout "${to}s" -recv_timeout 32000 \
      -nostdin -trace_stat -stf "$st/stat.csv" -fd 1 -trace_rtt -rtt_freq 1 \
      -trace_err -error_file "$st/errors.log" "127.0.0.1:${SIP[$s]}" >"$st/sipp.log" 2>&1 ) &
  SIPP_PID=$!
  wait "$SIPP_PID"; rc=$?; SIPP_PID=""
  sleep 0.5                # the last echoes are on their way back
  child_secs; sc1=$CHILD_SECS; t1=$(date +%s.%N); read -r b1 si1 < <(busy_ticks)
  k1=$(ticks_of "${rp[@]}"); e1=0; [ "$s" = kamailio ] && e1=$(ticks_of "${PID[rtpengine]}")
  u1=$(ticks_of "${PID[uas-$s]}"); p1=$(count_pkts "$s"); read -r np1 rb1 < <(udp_errs); kt1=$(kthread_ticks)
  stop_tree "$SAMPLER_PID"; SAMPLER_PID=""
  local sum; sum=$(python3 "$HERE/stat_summary.py" "$st/stat.csv" "$st"/*_rtt.csv)
  python3 - "$sweep" "$s" "$L" "$m" "$t0" "$t1" "$k0" "$k1" "$e0" "$e1" "$u0" "$u1" "$b0" "$b1" "$si0" "$si1" "$((np1 - np0))" "$((rb1 - rb0))" "$((kt1 - kt0))" \
    "$sc0" "$sc1" "$p0" "$p1" "$st/mem" "${RSS0[$rn]}" "${PSS0[$rn]}" "${RSS0[rtpengine]:-0}" "$rc" "$HZ" "$hold" "$sum" >>"$( [ $sweep = conc ] && echo "$CSTEPS" || echo "$RSTEPS")" <<'PY'
import sys
(sweep, s, L, m, t0, t1, k0, k1, e0, e1, u0, u1, b0, b1, si0, si1, noports, rcvbuf, kthr, sc0, sc1, p0, p1, memf, rss0, pss0, rtpe0,
 rc, hz, hold_ms, summ) = sys.argv[1:]
d = dict(kv.split('=', 1) for kv in summ.split())
m, hz = int(m), int(hz)
wall = float(t1) - float(t0)
cpu = (int(k1) - int(k0)) / hz
rtpe = (int(e1) - int(e0)) / hz
uas = (int(u1) - int(u0)) / hz
uac = float(sc1) - float(sc0)
busy = (int(b1) - int(b0)) / hz
si = (int(si1) - int(si0)) / hz
kthr = int(kthr) / hz
pk = [int(b) - int(a) for a, b in zip(p0.split(), p1.split())] or [0, 0, 0, 0]
mx = {}
for line in open(memf):
    n, r, p = line.split()
    mx[n] = (max(mx.get(n, (0, 0))[0], int(r)), max(mx.get(n, (0, 0))[1], int(p)))
ok, fail = int(d['successful']), int(d['failed'])
unfinished = max(0, m - ok - fail)
el = float(d['elapsed_s'])
# calls/s achieved: successful calls over the time SIPp was starting them (its elapsed time
# minus the hold of the last calls)
hold_s = 0 if sweep == 'conc' else float(hold_ms) / 1000
send_s = max(el - hold_s, 1e-9)
row = [sweep, s, L, m, round(wall, 2), d['created'], ok, fail, unfinished,
       round((fail + unfinished) * 100 / m, 4), round(ok / send_s, 1) if el else 0,
       d['peak_concurrent'], d['setup_n'], d['setup_p50_ms'], d['setup_p99_ms'], d['setup_max_ms'],
       *pk, round(cpu, 2), round(rtpe, 2), mx.get('relay', (0, 0))[0], mx.get('relay', (0, 0))[1],
       mx.get('rtpe', (0, 0))[0], rss0, pss0, rtpe0,
       round(uac * 100 / wall, 1), round(uas * 100 / wall, 1),
       round(si * 100 / wall, 1), round(kthr * 100 / wall, 1),
       round((busy - cpu - uac - uas - kthr) * 100 / wall, 1), rc, noports, rcvbuf]
print('\t'.join(str(x) for x in row))
PY
  local f; f=$( [ "$sweep" = conc ] && echo "$CSTEPS" || echo "$RSTEPS"); CSTEPS_LAST=$f
  tail -1 "$f" | awk -F'\t' '{
    rl = ($17 - $18) + ($19 - $20); inn = $17 + $19
    printf "%-8s %-4s %-5s ok=%-6s fail=%-4s unfin=%-4s peak=%-5s setup p50/p99=%s/%s ms  rtp: sent=%s relay_loss=%s echo_loss=%s  cpu=%.1f s (rtpe %.1f)  rss=%.0f MB  uac%%=%s uas%%=%s si%%=%s kthr%%=%s other%%=%s rc=%s udp_noports=%s\n",
      $2, $1, $3, $7, $8, $9, $12, $14, $15, $17, rl, $18 - $19, $21, $22, $23/1024, $29, $30, $31, $32, $33, $34, $35 }' >&2
  if [ -s "$st/errors.log" ]; then
    log "$s $sweep $L: SIPp error log, events by kind:"
    grep -oE "[0-9]{10}\.[0-9]{6}: [^']{1,100}" "$st/errors.log" | cut -d' ' -f2- \
      | sed -E 's/Call-I[dD]: [^ ,]+,? ?//; s/(received|Discarding message).*/\1 .../' \
      | sort | uniq -c | sort -rn | head -4 | sed 's/^/    /' >&2
  fi
  # pass? (for SKIP_AFTER)
  tail -1 "$f" | awk -F'\t' -v sw="$sweep" -v mf="$MAX_FAIL_PCT" -v fr="$MIN_RATE_FRAC" '{
    if (sw == "conc") ok = ($8 + $9 == 0 && $17 - $18 == 0 && $19 - $20 == 0 && $17 > 0)
    else ok = ($10 < mf && $11 >= fr * $3)
    exit !ok }'
}

# ---------------------------------------------------------------- the sweeps
{
  echo "# calls bench: systems=${SYSTEMS[*]} conc=[$CONC] at ${CONC_RATE}/s, held N/${CONC_RATE}+${FULL_SECS} s, RTP 20 ms G.711 until 2 s before the BYE; rates=[$RATES] rate_secs=$RATE_SECS rate_hold_ms=$RATE_HOLD_MS"
  echo "# $(date -Is) host=$(hostname) cores=$(nproc) $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1) $(kamailio -v 2>/dev/null | head -1 | awk '{print "kamailio", $3}') rtpengine $(rtpengine --version 2>&1 | awk '{print $2}') ringfort=$( [ -n "${RF_BIN:-}" ] && "$RF_BIN" --version 2>/dev/null | awk '{print $2}') git=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo +dirty)"
  echo "# auth: both challenge REGISTER (401) and every new INVITE (407) with digest MD5$( [ "$KAM_QOP" = 1 ] && echo ', qop=auth'); Ringfort checks the stored HA1 of the extension, Kamailio one static password (no user lookup). rtpengine: userspace (--table=-1), --num-threads=$RTPE_THREADS --delete-delay=$RTPE_DELETE_DELAY"
} | tee "$OUT" >&2

steps_file() { [ "$1" = conc ] && echo "$CSTEPS" || echo "$RSTEPS"; }
last_other() { tail -1 "$CSTEPS_LAST" | awk -F'\t' '{print $33}'; }
noisy() { awk -v n="$NOISY_PCT" 'BEGIN { exit !(ARGV[1] + 0 > n) }' "$(last_other)" 2>/dev/null; }
drop_last_row() {          # keep the noisy row, commented out, for the record
  local f; f=$(steps_file "$1"); { head -n -1 "$f"; tail -1 "$f" | sed 's/^/#noisy\t/'; } >"$f.tmp" && mv "$f.tmp" "$f"
}
sweep() {                  # sweep conc|rate LOADS...
  local sw=$1; shift
  local order=("${SYSTEMS[@]}") L s rev i rc
  declare -A fails=()
  for L in "$@"; do
    for s in "${order[@]}"; do
      if [ "${fails[$s]:-0}" -ge "$SKIP_AFTER" ]; then log "$s: $sw $L skipped ($SKIP_AFTER failed steps in a row)"; continue; fi
      run_step "$sw" "$s" "$L"; rc=$?
      if noisy; then       # someone else used the machine during the step: once more
        log "$s: $sw $L: other users took $(last_other) % of a core during the step (> NOISY_PCT=$NOISY_PCT): running it again"
        settle "$s"; sleep "$PAUSE"
        drop_last_row "$sw"; mv "$TMP/$s/${sw}_$L" "$TMP/$s/${sw}_$L.noisy"
        run_step "$sw" "$s" "$L"; rc=$?
      fi
      if [ $rc = 0 ]; then fails[$s]=0; else fails[$s]=$(( ${fails[$s]:-0} + 1 )); fi
      settle "$s"
      sleep "$PAUSE"
    done
    rev=(); for ((i=${#order[@]}-1; i>=0; i--)); do rev+=("${order[$i]}"); done; order=("${rev[@]}")
  done
}

log "concurrency sweep: $CONC calls"
sweep conc $CONC
log "call-rate sweep: $RATES calls/s"
sweep rate $RATES

# ---------------------------------------------------------------- report
for s in "${SYSTEMS[@]}"; do
  for p in $(relay_pids "$s"); do kill -0 "$p" 2>/dev/null || echo "# $s: process $p DIED during the run"; done
  if [ "$s" = ringfort ]; then pat='.'; fs="$TMP/ringfort/node.log"
  else pat='WARNING|ERROR|CRITICAL|ALERT|BUG'; fs="$TMP/kamailio/kamailio.log $TMP/kamailio/rtpengine.log"; fi
  for f in $fs; do
    n=$(grep -cE "$pat" "$f" 2>/dev/null); n=${n:-0}
    if [ "$n" -gt 0 ]; then
      echo "# $(basename "$f"): $n lines at warn or above, first and last ones:"
      { grep -E "$pat" "$f" | head -3; echo "..."; grep -E "$pat" "$f" | tail -3; } \
        | sed -E 's/\x1b\[[0-9;]*m//g' | cut -c1-300 | sed 's/^/#   /'
    fi
  done
done >>"$OUT"
python3 "$HERE/report.py" "$CSTEPS" "$RSTEPS" "$MAX_FAIL_PCT" "$MIN_RATE_FRAC" "$HZ" >>"$OUT"
echo
cat "$OUT"
L="$RESULTS_DIR/calls_${STAMP}.logs"; mkdir -p "$L"
for s in "${SYSTEMS[@]}"; do
  for f in "$TMP/$s"/*.log; do [ -f "$f" ] && cp "$f" "$L/${s}_$(basename "$f")"; done
  for st in "$TMP/$s"/conc_* "$TMP/$s"/rate_*; do
    [ -d "$st" ] || continue
    for f in sipp.log errors.log; do [ -s "$st/$f" ] && cp "$st/$f" "$L/${s}_$(basename "$st")_$f"; done
  done
done
echo
echo "results: $OUT (steps: $CSTEPS $RSTEPS, logs: $L/)"
