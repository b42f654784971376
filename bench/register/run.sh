#!/usr/bin/env bash
# REGISTER-with-digest-auth rate sweep: Ringfort (SQLite and/or PostgreSQL) against
# Kamailio 5.6 in the same run, interleaved per rate step, with SIPp as the load generator.
#
# usage: bench/register/run.sh [RATE ...]   (default: $RATES, else 500 1000 2000 4000 8000)
#        RATES= MEM_PHONES=50000 bench/register/run.sh   (the memory phase alone, no sweep)
#
# Environment (all optional):
#   RATES="500 1000 ..." the sweep's rates when none are given as arguments; RATES= (set and
#                        empty) runs no sweep (with MEM_PHONES: the memory phase alone)
#   UNTIL_FAIL=0         1 = after the given rates, add steps at 1.5x the last rate (rounded
#                        to 1000s, capped at MAX_RATE) while at least one peer passed its
#                        previous step; a peer that failed its previous step sits out the
#                        next ones (UNTIL_FAIL_ALL=1: every peer runs every step). Bounded:
#   MAX_RATE=24000       highest rate tried; UNTIL_FAIL_MAX_STEPS=12 added steps at most;
#   UNTIL_FAIL_MAX_S=3600 no added step starts later than this many s after the first one
#   MEM_PHONES=0         > 0: the memory phase after the sweep (see README.md): per peer a
#                        fresh instance with MEM_PHONES users (Ringfort: imported), memory
#                        when idle, then every user registers once (Expires 3600, MEM_RATE/s,
#                        one contact each), MEM_WAIT s later memory again, growth per binding
#   MEM_RATE=2000 MEM_WAIT=35   (35 s: completed transactions expire, Timer J is 32 s)
#   RF_WORKERS=          sets Ringfort's [sip] workers (signalling shards); unset = its default
#                        (one per core)
#   SECS=10              sending time per step: each step sends RATE*SECS REGISTER dialogs
#                        (SIPp -m), SIPp gives up after 2*SECS+10 s, hard `timeout` 2*SECS+20 s
#   BACKENDS="sqlite pg" Ringfort database backends to run ("sqlite", "pg" or both)
#   PEERS="kamailio ringfort"   which peers to run
#   USERS=10000          number of users u100000... (SIPp cycles through them in order)
#   PASSWORD=benchsecret password of every user (>= 8 chars for Ringfort; Kamailio's static one)
#   PG_BASE_URL=postgres://postgres@127.0.0.1:5432/test   PostgreSQL (trust auth)
#   KAM_PORT=15060 RF_SQLITE_PORT=15070 RF_PG_PORT=15072   UDP ports of the peers (127.0.0.1)
#                        (each Ringfort's admin HTTP port: its UDP port + 3000, TCP)
#   SIPP_PORT=15080      SIPp's local UDP port for the first peer, +1 for the next ones (each
#                        peer answers its own port, so a late answer never lands in the next
#                        peer's step)
#   SETTLE_MAX=60        after a step, wait (at most this many s) until the peer is idle
#                        (< 5 % of a core over 1 s) before the next step starts
#   KAM_QOP=1            challenge with qop="auth" in Kamailio too (-A WITH_QOP), as Ringfort does;
#                        0 = Kamailio's plain RFC 2069-style challenge
#   PAUSE=2              seconds of idle between steps
#   MAX_FAIL_PCT=0.1 MIN_RATE_FRAC=0.8   pass criteria of a step (see README.md)
#   RF_BIN=...           use this binary instead of building (default: cargo build --release,
#                        then ${CARGO_TARGET_DIR:-<repo>/target}/release/ringfort). Not
#                        RINGFORT_*: ringfort refuses unknown RINGFORT_* variables.
#   IMPORT_MAX=900       time limit (s) of `ringfort extension import`
#   RESULTS_DIR=bench/register/results   where the table, step TSV and logs are kept
#   KEEP_TMP=1           keep the temp dir (configs, SIPp logs, node logs) for inspection
#
# Needs root-free tools only except for the install step: installs sip-tester and kamailio with
# apt-get when missing (as root). PostgreSQL must accept trust auth on 127.0.0.1 (see
# scripts/pg-test-setup.sh); the script creates fresh schemas bench_reg_<pid>_<rand> (one per
# Ringfort instance) and drops them at exit. Everything (peers, SIPp, schema, temp dir) is cleaned up on exit and on Ctrl-C.
# The machine should be otherwise idle; the "other%" column shows how much it was not.
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

SECS=${SECS:-10}
if [ $# -gt 0 ]; then RATES="$*"; else RATES=${RATES-"500 1000 2000 4000 8000"}; fi
UNTIL_FAIL=${UNTIL_FAIL:-0}
UNTIL_FAIL_ALL=${UNTIL_FAIL_ALL:-0}
MAX_RATE=${MAX_RATE:-24000}
UNTIL_FAIL_MAX_STEPS=${UNTIL_FAIL_MAX_STEPS:-12}
UNTIL_FAIL_MAX_S=${UNTIL_FAIL_MAX_S:-3600}
MEM_PHONES=${MEM_PHONES:-0}
MEM_RATE=${MEM_RATE:-2000}
MEM_WAIT=${MEM_WAIT:-35}
RF_WORKERS=${RF_WORKERS:-}
IMPORT_MAX=${IMPORT_MAX:-900}
BACKENDS=${BACKENDS:-"sqlite pg"}
PEERS=${PEERS:-"kamailio ringfort"}
USERS=${USERS:-10000}
PASSWORD=${PASSWORD:-benchsecret}
PG_BASE_URL=${PG_BASE_URL:-postgres://postgres@127.0.0.1:5432/test}
KAM_PORT=${KAM_PORT:-15060}
RF_SQLITE_PORT=${RF_SQLITE_PORT:-15070}
RF_PG_PORT=${RF_PG_PORT:-15072}
SIPP_PORT=${SIPP_PORT:-15080}
PAUSE=${PAUSE:-2}
KAM_QOP=${KAM_QOP:-1}
SETTLE_MAX=${SETTLE_MAX:-60}
MAX_FAIL_PCT=${MAX_FAIL_PCT:-0.1}
MIN_RATE_FRAC=${MIN_RATE_FRAC:-0.8}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
HZ=$(getconf CLK_TCK)

# shellcheck source=../lib.sh
. "$HERE/../lib.sh"

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in SECS MAX_RATE UNTIL_FAIL_MAX_STEPS UNTIL_FAIL_MAX_S MEM_PHONES MEM_RATE MEM_WAIT SETTLE_MAX PAUSE IMPORT_MAX; do
  is_uint "${!v}" || die "$v must be a whole number (is '${!v}')"
done
for R in $RATES; do is_uint "$R" && [ "$R" -gt 0 ] || die "bad rate '$R'"; done
[ -z "$RF_WORKERS" ] || is_uint "$RF_WORKERS" || die "RF_WORKERS must be a whole number"
[ -n "${RATES// }" ] || [ "$MEM_PHONES" -gt 0 ] || die "nothing to do: no rates and MEM_PHONES=0"
[ "$UNTIL_FAIL" != 1 ] || [ -n "${RATES// }" ] || die "UNTIL_FAIL=1 needs at least one rate to start from"
[ "$MEM_PHONES" -eq 0 ] || [ "$MEM_RATE" -gt 0 ] || die "MEM_RATE must be > 0"

# ---------------------------------------------------------------- cleanup (runs on any exit)
TMP=""; SCHEMAS=(); SIPP_PID=""
declare -A PID=()          # peer name -> main PID

cleanup() {
  local rc=$? s
  trap - EXIT INT TERM
  [ -n "$SIPP_PID" ] && stop_tree "$SIPP_PID"
  for p in "${!PID[@]}"; do stop_tree "${PID[$p]}"; done
  for s in "${SCHEMAS[@]}"; do drop_schema "$PG_BASE_URL" "$s"; done
  remove_tmp "$TMP"
  exit $rc
}
on_exit cleanup

# ---------------------------------------------------------------- prerequisites
need_apt=()
command -v sipp >/dev/null || need_apt+=(sip-tester)
command -v kamailio >/dev/null || need_apt+=(kamailio)
command -v kamcmd >/dev/null || need_apt+=(kamailio)
command -v curl >/dev/null || need_apt+=(curl)
apt_install "${need_apt[@]}"
for t in sipp kamailio kamcmd python3 ss timeout curl; do command -v $t >/dev/null || die "$t not found"; done
case " $BACKENDS " in *" pg "*) command -v psql >/dev/null || die "psql not found (BACKENDS has pg)";; esac

port_free() { [ -z "$(ss -Hlun "( sport = :$1 )" 2>/dev/null)" ]; }
for p in $KAM_PORT $RF_SQLITE_PORT $RF_PG_PORT $SIPP_PORT $((SIPP_PORT + 1)) $((SIPP_PORT + 2)); do
  port_free "$p" || die "UDP port $p is in use (set KAM_PORT/RF_*_PORT/SIPP_PORT)"
done

if [[ " $PEERS " == *" ringfort "* ]]; then
  if [ -z "${RF_BIN:-}" ]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release -q) || die "cargo build failed"
    RF_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/ringfort"
  fi
  [ -x "$RF_BIN" ] || die "no ringfort binary at $RF_BIN"
fi

TMP=$(mktemp -d /tmp/ringfort-bench-register.XXXXXX)
mkdir -p "$RESULTS_DIR"
STAMP=$(date +%Y%m%d_%H%M%S)
STEPS="$RESULTS_DIR/register_${STAMP}.steps.tsv"
MEMTSV="$RESULTS_DIR/register_${STAMP}.mem.tsv"
OUT="$RESULTS_DIR/register_${STAMP}.txt"
LOGS="$RESULTS_DIR/register_${STAMP}.logs"

if [ -n "${RATES// }" ]; then
  python3 "$HERE/gen_users.py" "$USERS" "$PASSWORD" "$TMP/users_sipp.csv" "$TMP/users_rf.csv" >/dev/null \
    || die "gen_users.py failed"
fi

# ---------------------------------------------------------------- peers
declare -A PORT=()         # peer name -> UDP port
declare -A SPORT=()        # peer name -> SIPp's local UDP port
declare -A DIR=()          # peer name -> its temp dir (config, logs)
declare -A LOGF=()         # peer name -> its log file
declare -A TOKEN=()        # Ringfort peer name -> admin API token (for /metrics)

start_kamailio() {         # start_kamailio [DIR_SUFFIX]
  local d="$TMP/kamailio${1:-}"; mkdir -p "$d"
  sed -e "s|@RUNDIR@|$d|g" -e "s|@PORT@|$KAM_PORT|g" -e "s|@PASSWORD@|$PASSWORD|g" \
    "$HERE/kamailio.cfg" >"$d/kamailio.cfg"
  local def=(-A WITH_AUTH); [ "$KAM_QOP" = 1 ] && def+=(-A WITH_QOP)
  kamailio -f "$d/kamailio.cfg" -DD -E -m 256 -M 8 -P "$d/kam.pid" "${def[@]}" \
    >"$d/kamailio.log" 2>&1 &
  PID[kamailio]=$!; PORT[kamailio]=$KAM_PORT; DIR[kamailio]=$d; LOGF[kamailio]="$d/kamailio.log"
  for _ in $(seq 50); do
    kamcmd -s "unix:$d/ctl" core.version >/dev/null 2>&1 && { log "kamailio up, pid ${PID[kamailio]}, udp 127.0.0.1:$KAM_PORT"; return 0; }
    kill -0 "${PID[kamailio]}" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "$d/kamailio.log" >&2; die "kamailio failed to start"
}

start_ringfort() {         # start_ringfort sqlite|pg USERS_CSV [DIR_SUFFIX]
  local be=$1 users=$2 name="ringfort-$1" d="$TMP/ringfort-$1${3:-}" port url="" schema workers=""
  mkdir -p "$d/data"
  if [ "$be" = pg ]; then
    port=$RF_PG_PORT
    schema="bench_reg_$$_$RANDOM"
    psql "$PG_BASE_URL" -qAtc "CREATE SCHEMA $schema" >/dev/null \
      || die "cannot create schema $schema at $PG_BASE_URL (run scripts/pg-test-setup.sh)"
    SCHEMAS+=("$schema")
    url="${PG_BASE_URL}?options=-c%20search_path%3D${schema}"
    log "created schema $schema"
  else
    port=$RF_SQLITE_PORT
  fi
  [ -n "$RF_WORKERS" ] && workers="workers = $RF_WORKERS"
  cat >"$d/ringfort.toml" <<EOT
[node]
id = "bench-$be"
data_dir = "$d/data"

[sip]
udp_listen = ["127.0.0.1:$port"]
tcp_listen = []
$workers

[database]
url = "$url"

[http]
listen = "127.0.0.1:$((port + 3000))"

[log]
level = "warn"
EOT
  local t0; t0=$(date +%s.%N)
  timeout "$IMPORT_MAX" "$RF_BIN" --config "$d/ringfort.toml" extension import "$users" \
    >"$d/import.log" 2>&1 || { cat "$d/import.log" >&2; die "$name: extension import failed (or took > IMPORT_MAX s)"; }
  log "$name: $(tail -1 "$d/import.log") in $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s"
  # an admin API token, to read registrations and transactions from /metrics
  "$RF_BIN" --config "$d/ringfort.toml" admin add bench >"$d/admin.log" 2>&1 \
    && "$RF_BIN" --config "$d/ringfort.toml" admin token bench bench >>"$d/admin.log" 2>&1 \
    || log "warning: $name: could not make an admin token: $(tail -1 "$d/admin.log")"
  TOKEN[$name]=$(awk '/^token bench for bench/ {print $NF}' "$d/admin.log")
  "$RF_BIN" --config "$d/ringfort.toml" serve >"$d/node.log" 2>&1 &
  PID[$name]=$!; PORT[$name]=$port; DIR[$name]=$d; LOGF[$name]="$d/node.log"
  for _ in $(seq 100); do
    port_free "$port" || { log "$name up, pid ${PID[$name]}, udp 127.0.0.1:$port"; return 0; }
    kill -0 "${PID[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$d/node.log" >&2; die "$name failed to start"
}

start_peer() {             # start_peer NAME USERS_CSV [DIR_SUFFIX]
  case $1 in
    kamailio) start_kamailio "${3:-}";;
    ringfort-sqlite|ringfort-pg) start_ringfort "${1#ringfort-}" "$2" "${3:-}";;
    *) die "unknown peer $1";;
  esac
}

stop_peer() {              # stop_peer NAME
  [ -n "${PID[$1]:-}" ] && stop_tree "${PID[$1]}"
  unset "PID[$1]"
}

RUN_PEERS=()
[[ " $PEERS " == *" kamailio "* ]] && RUN_PEERS+=(kamailio)
if [[ " $PEERS " == *" ringfort "* ]]; then
  for be in $BACKENDS; do
    case $be in sqlite|pg) RUN_PEERS+=("ringfort-$be");; *) die "unknown backend $be";; esac
  done
fi
[ ${#RUN_PEERS[@]} -gt 0 ] || die "no peers to run (PEERS=$PEERS)"
for i in "${!RUN_PEERS[@]}"; do SPORT[${RUN_PEERS[$i]}]=$((SIPP_PORT + i)); done

# ---------------------------------------------------------------- measurement helpers
cpu_ticks() {              # utime+stime (clock ticks) of PID and all its descendants
  local t=0 f p
  for p in $(descendants "$1"); do
    f=$(cat /proc/$p/stat 2>/dev/null) || continue
    f=${f##*) }
    set -- $f              # $12=utime $13=stime
    t=$((t + ${12} + ${13}))
  done
  echo $t
}
mem_kb() {                 # "RSS PSS" (kB) summed over PID's tree
  local r=0 s=0 p v
  for p in $(descendants "$1"); do
    v=$(awk '/^VmRSS:/{print $2}' /proc/$p/status 2>/dev/null); r=$((r + ${v:-0}))
    v=$(awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup 2>/dev/null); s=$((s + ${v:-0}))
  done
  echo "$r $s"
}
# PostgreSQL backends serving PID's connections: their CPU is Ringfort's database work, done
# outside its process tree. Prints "backend_pid ticks" lines.
pg_backend_ticks() {
  local ports port b f
  ports=$(ss -Htnp state established "( dport = :5432 )" 2>/dev/null | grep "pid=$1," \
    | awk '{ n = split($3, a, ":"); print a[n] }')
  for port in $ports; do
    for b in $(ps -eo pid=,args= | awk -v p="$port" '$2 == "postgres:" && index($0, "127.0.0.1(" p ")") {print $1}'); do
      f=$(cat /proc/$b/stat 2>/dev/null) || continue
      f=${f##*) }; set -- $f
      echo "$b $((${12} + ${13}))"
    done
  done
}
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# user+sys seconds of this shell's reaped children (SIPp, via timeout). `times` must run in
# this shell, not in a $(...) subshell whose children times start at zero.
CHILD_SECS=0
child_secs() {
  times >"$TMP/times"
  CHILD_SECS=$(tail -1 "$TMP/times" | awk '{ for (i=1;i<=2;i++) { split($i,a,/[ms]/); s+=a[1]*60+a[2] } print s }')
}

settle() {                 # settle PEER: wait until it is idle (a backlog can outlive SIPp)
  local peer=$1 a b t=0
  a=$(cpu_ticks "${PID[$peer]}")
  while [ $t -lt "$SETTLE_MAX" ]; do
    sleep 1; t=$((t + 1))
    b=$(cpu_ticks "${PID[$peer]}")
    [ $(( (b - a) * 100 / HZ )) -lt 5 ] && break
    a=$b
  done
  [ $t -gt 1 ] && log "$peer: busy for ${t} s (backlog, start-up or expiries)"
  return 0
}

# What the peer itself says: "registered=N transactions=N" (Ringfort: /metrics gauges
# ringfort_registrations and ringfort_sip_transactions; Kamailio: usrloc:location_contacts and
# tmx:active_transactions). "n/a" where it could not be read.
peer_counts() {            # peer_counts PEER
  local peer=$1 reg="n/a" tx="n/a" m
  if [ "$peer" = kamailio ]; then
    m=$(kamcmd -s "unix:${DIR[kamailio]}/ctl" stats.get_statistics all 2>/dev/null)
    reg=$(awk '$1 == "usrloc:location_contacts" {print $3}' <<<"$m")
    tx=$(awk '$1 == "tmx:active_transactions" {print $3}' <<<"$m")
  elif [ -n "${TOKEN[$peer]:-}" ]; then
    m=$(curl -s -m 10 -H "Authorization: Bearer ${TOKEN[$peer]}" \
      "http://127.0.0.1:$((PORT[$peer] + 3000))/metrics" 2>/dev/null)
    reg=$(awk '$1 == "ringfort_registrations" {printf "%d", $2}' <<<"$m")
    tx=$(awk '$1 == "ringfort_sip_transactions" {printf "%d", $2}' <<<"$m")
  fi
  echo "registered=${reg:-n/a} transactions=${tx:-n/a}"
}

# One SIPp run of reg_auth.xml against PEER: RATE/s, M registrations, users from USERS_FILE.
# SIPp runs in its own dir (its -trace_rtt file lands in the working dir). Sets ST (path
# prefix of the step's files: $ST.csv stat, $ST.err errors, $ST.log stdout, $ST.d/*_rtt.csv)
# and SIPP_RC. SIPp stops after 2*ceil(M/RATE)+10 s, a hard timeout kills it 10 s later.
sipp_run() {               # sipp_run PEER RATE M USERS_FILE TAG
  local peer=$1 R=$2 m=$3 users=$4 tag=$5 secs to hard
  secs=$(( (m + R - 1) / R )); to=$((secs * 2 + 10)); hard=$((secs * 2 + 20))
  ST="$TMP/sipp_${peer}_${tag}"
  mkdir -p "$ST.d"; cp "$HERE/reg_auth.xml" "$ST.d/reg_auth.xml"
  # -rtt_freq: SIPp writes its RTT buffer every that many calls (and at exit)
  (cd "$ST.d" && exec timeout -k 5 $hard sipp -sf reg_auth.xml -inf "$users" \
    -i 127.0.0.1 -p "${SPORT[$peer]}" -r "$R" -m "$m" -timeout ${to}s -nostdin \
    -trace_stat -stf "$ST.csv" -fd 1 -trace_err -error_file "$ST.err" \
    -trace_rtt -rtt_freq 1000 \
    "127.0.0.1:${PORT[$peer]}" >"$ST.log" 2>&1) &
  SIPP_PID=$!
  wait "$SIPP_PID"; SIPP_RC=$?; SIPP_PID=""
}
rtt_file() { local f; for f in "$1".d/reg_auth_*_rtt.csv; do [ -e "$f" ] && echo "$f"; break; done; }

sipp_errors() {            # sipp_errors PEER LABEL: what explains failures, from $ST.err
  [ -s "$ST.err" ] || return 0
  log "$1 @ $2: SIPp error log, events by kind:"
  grep -oE "[0-9]{10}\.[0-9]{6}: [^']{1,120}" "$ST.err" | cut -d' ' -f2- \
    | sed -E 's/^Dead call [^ ]+/Dead call/; s/(received|Discarding message).*/\1 .../' \
    | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /' >&2
}

printf 'peer\trate\tm\twall_s\telapsed_s\tcreated\tsuccessful\tfailed\tunfinished\tfail_pct\tachieved_per_s\tcpu_s\tcpu_pct\trss_kb\tpss_kb\tsipp_cpu_pct\tother_cpu_pct\tretrans\tp50_ms\tp99_ms\tp50_auth_ms\tp99_auth_ms\tsipp_rc\tdb_cpu_s\tpct_src\tpct_n\n' >"$STEPS"

declare -A PASSED=()       # peer -> 1 when its last step passed, else 0
run_step() {               # run_step PEER RATE
  local peer=$1 R=$2 m c0 c1 b0 b1 s0 s1 t0 t1 sum db rss pss
  m=$((R * SECS))
  PASSED[$peer]=0
  kill -0 "${PID[$peer]}" 2>/dev/null || { log "$peer is not running any more"; return 1; }
  pg_backend_ticks "${PID[$peer]}" >"$TMP/pgb0"
  c0=$(cpu_ticks "${PID[$peer]}"); b0=$(busy_ticks); t0=$(date +%s.%N); child_secs; s0=$CHILD_SECS
  sipp_run "$peer" "$R" "$m" "$TMP/users_sipp.csv" "$R"
  child_secs; s1=$CHILD_SECS; t1=$(date +%s.%N); c1=$(cpu_ticks "${PID[$peer]}"); b1=$(busy_ticks)
  pg_backend_ticks "${PID[$peer]}" >"$TMP/pgb1"
  # backend ticks spent during the step (a backend born during the step started at 0)
  db=$(awk 'NR==FNR { t0[$1] = $2; next } { d += $2 - ($1 in t0 ? t0[$1] : 0) } END { print d + 0 }' "$TMP/pgb0" "$TMP/pgb1")
  read -r rss pss < <(mem_kb "${PID[$peer]}")
  sum=$(python3 "$HERE/stat_summary.py" "$ST.csv" "$(rtt_file "$ST")")
  # appends the step's row to $STEPS, prints a line to stderr and "pass" / "fail" to stdout
  local verdict
  verdict=$(python3 - "$STEPS" "$MAX_FAIL_PCT" "$MIN_RATE_FRAC" "$peer" "$R" "$m" "$t0" "$t1" "$c0" "$c1" "$b0" "$b1" "$s0" "$s1" "$rss" "$pss" "$SIPP_RC" "$HZ" "$db" "$sum" <<'PY'
import sys
steps, max_fail, min_frac, peer, R, m, t0, t1, c0, c1, b0, b1, s0, s1, rss, pss, rc, hz, db, summ = sys.argv[1:]
d = dict(kv.split('=', 1) for kv in summ.split())
R, m, hz = int(R), int(m), int(hz)
wall = float(t1) - float(t0)
cpu = (int(c1) - int(c0)) / hz
sipp = float(s1) - float(s0)
busy = (int(b1) - int(b0)) / hz
db = int(db) / hz
ok, fail = int(d['successful']), int(d['failed'])
unfinished = max(0, m - ok - fail)
el = float(d['elapsed_s'])
fail_pct = (fail + unfinished) * 100 / m
ach = ok / el if el else 0
row = [peer, R, m, round(wall, 2), el, d['created'], ok, fail, unfinished,
       round(fail_pct, 4), round(ach, 1),
       round(cpu, 2), round(cpu * 100 / wall, 1), rss, pss, round(sipp * 100 / wall, 1),
       round((busy - cpu - sipp - db) * 100 / wall, 1), d['retransmissions'],
       d['p50_ms'], d['p99_ms'], d['p50_auth_ms'], d['p99_auth_ms'], rc, round(db, 2),
       d['pct_src'], d['pct_n']]
with open(steps, 'a') as f:
    f.write('\t'.join(str(x) for x in row) + '\n')
ok_step = fail_pct < float(max_fail) and ach >= float(min_frac) * R
print(f"{peer:<16} rate={R:<6} ok={ok:<7} fail={fail:<5} unfinished={unfinished:<5} "
      f"fail%={fail_pct:<7.3f} achieved/s={ach:<8.1f} retrans={d['retransmissions']:<5} "
      f"p50/p99_ms={d['p50_ms']}/{d['p99_ms']:<6} cpu%={cpu * 100 / wall:<6.1f} rss_kB={rss:<7} "
      f"sipp%={sipp * 100 / wall:<6.1f} other%={(busy - cpu - sipp - db) * 100 / wall:<6.1f} "
      f"db_cpu_s={db:<5.2f} rc={rc} {'pass' if ok_step else 'FAIL'}", file=sys.stderr)
print('pass' if ok_step else 'fail')
PY
)
  [ "$verdict" = pass ] && PASSED[$peer]=1
  sipp_errors "$peer" "$R"
  return 0
}

# ---------------------------------------------------------------- the sweep
{
  echo "# REGISTER+digest: peers=${RUN_PEERS[*]} rates=${RATES:-none} until_fail=$UNTIL_FAIL max_rate=$MAX_RATE secs=$SECS users=$USERS kamailio_qop=$KAM_QOP rf_workers=${RF_WORKERS:-default} mem_phones=$MEM_PHONES"
  echo "# $(date -Is) host=$(hostname) cores=$(nproc) $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1) $(kamailio -v 2>/dev/null | head -1 | awk '{print "kamailio", $3}') ringfort=$( [ -n "${RF_BIN:-}" ] && "$RF_BIN" --version 2>/dev/null | awk '{print $2}') git=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
} | tee "$OUT" >&2

# warn-and-above lines of a peer's log into $OUT, and a copy of the log into $LOGS
keep_log() {               # keep_log PEER LABEL
  local p=$1 label=$2 f=${LOGF[$1]:-} pat n
  [ -n "$f" ] && [ -f "$f" ] || return 0
  # Ringfort logs at "warn"; Kamailio also prints its listening sockets at start (skipped)
  if [ "$p" = kamailio ]; then pat='WARNING|ERROR|CRITICAL|ALERT|BUG'; else pat='.'; fi
  n=$(grep -cE "$pat" "$f" 2>/dev/null); n=${n:-0}
  if [ "$n" -gt 0 ]; then
    echo "# $label log: $n lines at warn or above, first and last ones:"
    { grep -E "$pat" "$f" | head -3; echo "..."; grep -E "$pat" "$f" | tail -3; } \
      | sed -E 's/\x1b\[[0-9;]*m//g' | cut -c1-300 | sed 's/^/#   /'
  fi >>"$OUT"
  mkdir -p "$LOGS"; cp "$f" "$LOGS/$label.log" 2>/dev/null
  kill -0 "${PID[$p]:-0}" 2>/dev/null || echo "# $label DIED during the run" >>"$OUT"
}

note() { log "$*"; echo "# $*" >>"$OUT"; }   # to the terminal and into the results

one_rate() {               # one_rate RATE PEER...: a step per peer, in the given order
  local R=$1 peer; shift
  for peer in "$@"; do
    run_step "$peer" "$R"
    settle "$peer"
    sleep "$PAUSE"
  done
}
reverse() { local i; REV=(); for ((i=$#; i>0; i--)); do REV+=("${!i}"); done; }

if [ -n "${RATES// }" ]; then
  for p in "${RUN_PEERS[@]}"; do start_peer "$p" "$TMP/users_rf.csv"; done
  order=("${RUN_PEERS[@]}"); last=0
  for R in $RATES; do
    one_rate "$R" "${order[@]}"; last=$R
    # reverse the order each rate so neither peer always runs right after the other
    reverse "${order[@]}"; order=("${REV[@]}")
  done

  if [ "$UNTIL_FAIL" = 1 ]; then
    # more steps at 1.5x the last rate while a peer still passes: bounded by MAX_RATE, by
    # UNTIL_FAIL_MAX_STEPS and by UNTIL_FAIL_MAX_S (each step by SIPp's timeouts and SETTLE_MAX)
    added=0; deadline=$((SECONDS + UNTIL_FAIL_MAX_S))
    while :; do
      go=()
      for p in "${order[@]}"; do
        if [ "${PASSED[$p]:-0}" = 1 ] || [ "$UNTIL_FAIL_ALL" = 1 ]; then go+=("$p"); fi
      done
      alive=0; for p in "${RUN_PEERS[@]}"; do [ "${PASSED[$p]:-0}" = 1 ] && alive=1; done
      if [ $alive = 0 ]; then note "until-fail: every peer failed its last step (at $last/s)"; break; fi
      if [ "$last" -ge "$MAX_RATE" ]; then note "until-fail: reached MAX_RATE=$MAX_RATE"; break; fi
      if [ $added -ge "$UNTIL_FAIL_MAX_STEPS" ]; then note "until-fail: UNTIL_FAIL_MAX_STEPS=$UNTIL_FAIL_MAX_STEPS steps added, stopping"; break; fi
      if [ $SECONDS -ge $deadline ]; then note "until-fail: UNTIL_FAIL_MAX_S=$UNTIL_FAIL_MAX_S s used up, stopping"; break; fi
      next=$(( (last * 3 / 2 + 500) / 1000 * 1000 ))
      [ $next -le "$last" ] && next=$((last + 1000))
      [ $next -gt "$MAX_RATE" ] && next=$MAX_RATE
      note "until-fail: step $((added + 1)) at $next/s: ${go[*]}"
      one_rate "$next" "${go[@]}"
      last=$next; added=$((added + 1))
      reverse "${order[@]}"; order=("${REV[@]}")
    done
  fi

  for p in "${RUN_PEERS[@]}"; do keep_log "$p" "$p"; stop_peer "$p"; done
fi

# ---------------------------------------------------------------- the memory phase
# Per peer, one after the other: a fresh instance with MEM_PHONES users, its memory when idle
# ("before"), every user registered once, MEM_WAIT s later its memory again ("after").
if [ "$MEM_PHONES" -gt 0 ]; then
  python3 "$HERE/gen_users.py" "$MEM_PHONES" "$PASSWORD" "$TMP/mem_sipp.csv" "$TMP/mem_rf.csv" >/dev/null \
    || die "gen_users.py failed"
  printf 'peer\tphones\trate\tsipp_ok\tsipp_failed\tsipp_rc\tretrans\tp50_ms\tp99_ms\tregistered\ttransactions_after\trss_before_kb\tpss_before_kb\trss_after_kb\tpss_after_kb\trss_b_per_reg\tpss_b_per_reg\tkam_shm_before_b\tkam_shm_after_b\n' >"$MEMTSV"
  kam_shm() { kamcmd -s "unix:${DIR[kamailio]}/ctl" stats.get_statistics shmem: 2>/dev/null | awk '$1 == "shmem:real_used_size" {print $3}'; }
  for p in "${RUN_PEERS[@]}"; do
    log "memory phase: $p with $MEM_PHONES users"
    start_peer "$p" "$TMP/mem_rf.csv" "-mem"
    sleep 2; settle "$p"
    read -r rss0 pss0 < <(mem_kb "${PID[$p]}")
    shm0=""; [ "$p" = kamailio ] && shm0=$(kam_shm)
    log "$p before: rss=${rss0} kB pss=${pss0} kB $(peer_counts "$p")"
    sipp_run "$p" "$MEM_RATE" "$MEM_PHONES" "$TMP/mem_sipp.csv" mem
    sum=$(python3 "$HERE/stat_summary.py" "$ST.csv" "$(rtt_file "$ST")")
    sipp_errors "$p" "memory phase"
    log "$p registered: $sum"
    log "$p: waiting $MEM_WAIT s (completed transactions expire)"
    sleep "$MEM_WAIT"; settle "$p"
    read -r rss1 pss1 < <(mem_kb "${PID[$p]}")
    shm1=""; [ "$p" = kamailio ] && shm1=$(kam_shm)
    counts=$(peer_counts "$p")
    log "$p after: rss=${rss1} kB pss=${pss1} kB $counts"
    python3 - "$MEMTSV" "$p" "$MEM_PHONES" "$MEM_RATE" "$SIPP_RC" "$rss0" "$pss0" "$rss1" "$pss1" "${shm0:-}" "${shm1:-}" "$counts" "$sum" <<'PY'
import sys
path, peer, phones, rate, rc, rss0, pss0, rss1, pss1, shm0, shm1, counts, summ = sys.argv[1:]
d = dict(kv.split('=', 1) for kv in summ.split())
c = dict(kv.split('=', 1) for kv in counts.split())
ok = int(d['successful'])
reg = c['registered']
# growth per registration: per binding the peer says it holds, else per SIPp success
n = int(reg) if reg.isdigit() and int(reg) > 0 else ok
per = lambda a, b: round((int(b) - int(a)) * 1024 / n, 1) if n else 'nan'
row = [peer, phones, rate, ok, d['failed'], rc, d['retransmissions'], d['p50_ms'], d['p99_ms'],
       reg, c['transactions'], rss0, pss0, rss1, pss1, per(rss0, rss1), per(pss0, pss1),
       shm0 or 'n/a', shm1 or 'n/a']
with open(path, 'a') as f:
    f.write('\t'.join(str(x) for x in row) + '\n')
PY
    keep_log "$p" "$p-mem"
    stop_peer "$p"
    sleep "$PAUSE"
  done
fi

# ---------------------------------------------------------------- report
args=("$STEPS" "$MAX_FAIL_PCT" "$MIN_RATE_FRAC")
[ -s "$MEMTSV" ] && args+=(--mem "$MEMTSV")
python3 "$HERE/report.py" "${args[@]}" >>"$OUT"
echo
cat "$OUT"
mkdir -p "$LOGS"
cp "$TMP"/sipp_*.err "$TMP"/sipp_*.log "$LOGS/" 2>/dev/null
echo
echo "results: $OUT (steps: $STEPS$([ -s "$MEMTSV" ] && echo ", memory: $MEMTSV"), logs: $LOGS/)"
