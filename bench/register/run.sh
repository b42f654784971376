#!/usr/bin/env bash
# REGISTER-with-digest-auth rate sweep: Ringfort (SQLite and/or PostgreSQL) against
# Kamailio 5.6 in the same run, interleaved per rate step, with SIPp as the load generator.
#
# usage: bench/register/run.sh [RATE ...]            (default rates: 500 1000 2000 4000 8000)
#
# Environment (all optional):
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
#   RESULTS_DIR=bench/register/results   where the table, step TSV and logs are kept
#   KEEP_TMP=1           keep the temp dir (configs, SIPp logs, node logs) for inspection
#
# Needs root-free tools only except for the install step: installs sip-tester and kamailio with
# apt-get when missing (as root). PostgreSQL must accept trust auth on 127.0.0.1 (see
# scripts/pg-test-setup.sh); the script creates a fresh schema bench_reg_<pid>_<rand> and drops
# it at exit. Everything (peers, SIPp, schema, temp dir) is cleaned up on exit and on Ctrl-C.
# The machine should be otherwise idle; the "other%" column shows how much it was not.
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

SECS=${SECS:-10}
RATES=${*:-"500 1000 2000 4000 8000"}
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

# ---------------------------------------------------------------- cleanup (runs on any exit)
TMP=""; SCHEMA=""; SIPP_PID=""
declare -A PID=()          # peer name -> main PID

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$SIPP_PID" ] && stop_tree "$SIPP_PID"
  for p in "${!PID[@]}"; do stop_tree "${PID[$p]}"; done
  drop_schema "$PG_BASE_URL" "$SCHEMA"
  remove_tmp "$TMP"
  exit $rc
}
on_exit cleanup

# ---------------------------------------------------------------- prerequisites
need_apt=()
command -v sipp >/dev/null || need_apt+=(sip-tester)
command -v kamailio >/dev/null || need_apt+=(kamailio)
command -v kamcmd >/dev/null || need_apt+=(kamailio)
apt_install "${need_apt[@]}"
for t in sipp kamailio kamcmd python3 ss timeout; do command -v $t >/dev/null || die "$t not found"; done
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
OUT="$RESULTS_DIR/register_${STAMP}.txt"

python3 "$HERE/gen_users.py" "$USERS" "$PASSWORD" "$TMP/users_sipp.csv" "$TMP/users_rf.csv" >/dev/null \
  || die "gen_users.py failed"

# ---------------------------------------------------------------- peers
declare -A PORT=()         # peer name -> UDP port
declare -A SPORT=()        # peer name -> SIPp's local UDP port

start_kamailio() {
  local d="$TMP/kamailio"; mkdir -p "$d"
  sed -e "s|@RUNDIR@|$d|g" -e "s|@PORT@|$KAM_PORT|g" -e "s|@PASSWORD@|$PASSWORD|g" \
    "$HERE/kamailio.cfg" >"$d/kamailio.cfg"
  local def=(-A WITH_AUTH); [ "$KAM_QOP" = 1 ] && def+=(-A WITH_QOP)
  kamailio -f "$d/kamailio.cfg" -DD -E -m 256 -M 8 -P "$d/kam.pid" "${def[@]}" \
    >"$d/kamailio.log" 2>&1 &
  PID[kamailio]=$!; PORT[kamailio]=$KAM_PORT
  for _ in $(seq 50); do
    kamcmd -s "unix:$d/ctl" core.version >/dev/null 2>&1 && { log "kamailio up, pid ${PID[kamailio]}, udp 127.0.0.1:$KAM_PORT"; return 0; }
    kill -0 "${PID[kamailio]}" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "$d/kamailio.log" >&2; die "kamailio failed to start"
}

start_ringfort() {         # start_ringfort sqlite|pg
  local be=$1 name="ringfort-$1" d="$TMP/ringfort-$1" port url=""
  mkdir -p "$d/data"
  if [ "$be" = pg ]; then
    port=$RF_PG_PORT
    SCHEMA="bench_reg_$$_$RANDOM"
    psql "$PG_BASE_URL" -qAtc "CREATE SCHEMA $SCHEMA" >/dev/null \
      || die "cannot create schema $SCHEMA at $PG_BASE_URL (run scripts/pg-test-setup.sh)"
    url="${PG_BASE_URL}?options=-c%20search_path%3D${SCHEMA}"
    log "created schema $SCHEMA"
  else
    port=$RF_SQLITE_PORT
  fi
  cat >"$d/ringfort.toml" <<EOF
[node]
id = "bench-$be"
data_dir = "$d/data"

[sip]
udp_listen = ["127.0.0.1:$port"]
tcp_listen = []

[database]
url = "$url"

[http]
listen = "127.0.0.1:$((port + 3000))"

[log]
level = "warn"
EOF
  local t0=$(date +%s.%N)
  "$RF_BIN" --config "$d/ringfort.toml" extension import "$TMP/users_rf.csv" \
    >"$d/import.log" 2>&1 || { cat "$d/import.log" >&2; die "$name: extension import failed"; }
  log "$name: $(tail -1 "$d/import.log") in $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s"
  "$RF_BIN" --config "$d/ringfort.toml" serve >"$d/node.log" 2>&1 &
  PID[$name]=$!; PORT[$name]=$port
  for _ in $(seq 100); do
    port_free "$port" || { log "$name up, pid ${PID[$name]}, udp 127.0.0.1:$port"; return 0; }
    kill -0 "${PID[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$d/node.log" >&2; die "$name failed to start"
}

RUN_PEERS=()
if [[ " $PEERS " == *" kamailio "* ]]; then start_kamailio; RUN_PEERS+=(kamailio); fi
if [[ " $PEERS " == *" ringfort "* ]]; then
  for be in $BACKENDS; do
    case $be in sqlite|pg) start_ringfort "$be"; RUN_PEERS+=("ringfort-$be");;
      *) die "unknown backend $be";; esac
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
  [ $t -gt 1 ] && log "$peer: busy for ${t} s after its step ended (backlog)"
  return 0
}

printf 'peer\trate\tm\twall_s\telapsed_s\tcreated\tsuccessful\tfailed\tunfinished\tfail_pct\tachieved_per_s\tcpu_s\tcpu_pct\trss_kb\tpss_kb\tsipp_cpu_pct\tother_cpu_pct\tretrans\tsipp_rc\tdb_cpu_s\n' >"$STEPS"

run_step() {               # run_step PEER RATE
  local peer=$1 R=$2 m to hard st c0 c1 b0 b1 s0 s1 t0 t1 rc sum db
  m=$((R * SECS)); to=$((SECS * 2 + 10)); hard=$((SECS * 2 + 20))
  st="$TMP/sipp_${peer}_${R}"
  kill -0 "${PID[$peer]}" 2>/dev/null || { log "$peer is not running any more"; return 1; }
  pg_backend_ticks "${PID[$peer]}" >"$TMP/pgb0"
  c0=$(cpu_ticks "${PID[$peer]}"); b0=$(busy_ticks); t0=$(date +%s.%N); child_secs; s0=$CHILD_SECS
  timeout -k 5 $hard sipp -sf "$HERE/reg_auth.xml" -inf "$TMP/users_sipp.csv" \
    -i 127.0.0.1 -p "${SPORT[$peer]}" -r "$R" -m "$m" -timeout ${to}s -nostdin \
    -trace_stat -stf "$st.csv" -fd 1 -trace_err -error_file "$st.err" \
    "127.0.0.1:${PORT[$peer]}" >"$st.log" 2>&1 &
  SIPP_PID=$!
  wait "$SIPP_PID"; rc=$?; SIPP_PID=""
  child_secs; s1=$CHILD_SECS; t1=$(date +%s.%N); c1=$(cpu_ticks "${PID[$peer]}"); b1=$(busy_ticks)
  pg_backend_ticks "${PID[$peer]}" >"$TMP/pgb1"
  # backend ticks spent during the step (a backend born during the step started at 0)
  db=$(awk 'NR==FNR { t0[$1] = $2; next } { d += $2 - ($1 in t0 ? t0[$1] : 0) } END { print d + 0 }' "$TMP/pgb0" "$TMP/pgb1")
  read -r rss pss < <(mem_kb "${PID[$peer]}")
  sum=$(python3 "$HERE/stat_summary.py" "$st.csv")
  python3 - "$peer" "$R" "$m" "$t0" "$t1" "$c0" "$c1" "$b0" "$b1" "$s0" "$s1" "$rss" "$pss" "$rc" "$HZ" "$db" "$sum" >>"$STEPS" <<'PY'
import sys
peer, R, m, t0, t1, c0, c1, b0, b1, s0, s1, rss, pss, rc, hz, db, summ = sys.argv[1:]
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
row = [peer, R, m, round(wall, 2), el, d['created'], ok, fail, unfinished,
       round((fail + unfinished) * 100 / m, 4), round(ok / el, 1) if el else 0,
       round(cpu, 2), round(cpu * 100 / wall, 1), rss, pss, round(sipp * 100 / wall, 1),
       round((busy - cpu - sipp - db) * 100 / wall, 1), d['retransmissions'], rc, round(db, 2)]
print('\t'.join(str(x) for x in row))
PY
  tail -1 "$STEPS" | awk -F'\t' -v p="$peer" '{printf "%-16s rate=%-6s ok=%-7s fail=%-5s unfinished=%-5s fail%%=%-7s achieved/s=%-8s cpu%%=%-6s rss_kB=%-7s sipp%%=%-6s other%%=%-6s db_cpu_s=%-5s rc=%s\n", p,$2,$7,$8,$9,$10,$11,$13,$14,$16,$17,$20,$19}' >&2
  # keep what explains failures
  if [ -s "$st.err" ]; then
    log "$peer @ $R: SIPp error log, events by kind:"
    grep -oE "[0-9]{10}\.[0-9]{6}: [^']{1,120}" "$st.err" | cut -d' ' -f2- \
      | sed -E 's/^Dead call [^ ]+/Dead call/; s/(received|Discarding message).*/\1 .../' \
      | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /' >&2
  fi
}

# ---------------------------------------------------------------- the sweep
{
  echo "# REGISTER+digest sweep: peers=${RUN_PEERS[*]} rates=$RATES secs=$SECS users=$USERS kamailio_qop=$KAM_QOP"
  echo "# $(date -Is) host=$(hostname) cores=$(nproc) $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1) $(kamailio -v 2>/dev/null | head -1 | awk '{print "kamailio", $3}') ringfort=$( [ -n "${RF_BIN:-}" ] && "$RF_BIN" --version 2>/dev/null | awk '{print $2}') git=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)"
} | tee "$OUT" >&2

order=("${RUN_PEERS[@]}")
for R in $RATES; do
  for peer in "${order[@]}"; do
    run_step "$peer" "$R"
    settle "$peer"
    sleep "$PAUSE"
  done
  # reverse the order each rate so neither peer always runs right after the other
  rev=(); for ((i=${#order[@]}-1; i>=0; i--)); do rev+=("${order[$i]}"); done; order=("${rev[@]}")
done

# node / kamailio log lines at warn and above (Ringfort logs at "warn"; Kamailio also prints
# its listening sockets at start, which are skipped)
for p in "${RUN_PEERS[@]}"; do
  if [ "$p" = kamailio ]; then pat='WARNING|ERROR|CRITICAL|ALERT|BUG'; f="$TMP/kamailio/kamailio.log"
  else pat='.'; f="$TMP/$p/node.log"; fi
  n=$(grep -cE "$pat" "$f" 2>/dev/null); n=${n:-0}
  if [ "$n" -gt 0 ]; then
    echo "# $p log: $n lines at warn or above, first and last ones:"
    { grep -E "$pat" "$f" | head -3; echo "..."; grep -E "$pat" "$f" | tail -3; } \
      | sed -E 's/\x1b\[[0-9;]*m//g' | cut -c1-300 | sed 's/^/#   /'
  fi
done >>"$OUT"
for p in "${RUN_PEERS[@]}"; do kill -0 "${PID[$p]}" 2>/dev/null || echo "# $p DIED during the run" >>"$OUT"; done

python3 "$HERE/report.py" "$STEPS" "$MAX_FAIL_PCT" "$MIN_RATE_FRAC" >>"$OUT"
echo
cat "$OUT"
mkdir -p "$RESULTS_DIR/register_${STAMP}.logs"
cp "$TMP"/sipp_*.err "$TMP"/sipp_*.log "$RESULTS_DIR/register_${STAMP}.logs/" 2>/dev/null
for p in "${RUN_PEERS[@]}"; do
  [ "$p" = kamailio ] && f="$TMP/kamailio/kamailio.log" || f="$TMP/$p/node.log"
  cp "$f" "$RESULTS_DIR/register_${STAMP}.logs/$p.log" 2>/dev/null
done
echo
echo "results: $OUT (steps: $STEPS, logs: $RESULTS_DIR/register_${STAMP}.logs/)"
