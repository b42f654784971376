#!/usr/bin/env bash
# Failover of a 2-node Ringfort cluster on PostgreSQL: 10 kills (-9) of the floating-IP
# holder under a steady load of registered phones and calls, then a REGISTER rate sweep.
#
# usage: sudo bench/failover/run.sh
#
# The script builds (release), then creates network namespaces (a bridge in one, a node in
# each of two more, SIPp phones in a fourth), reaches the host's PostgreSQL from them
# through a Unix socket (pg_proxy.py), starts two nodes sharing the VIP, and:
#   1. load: USERS phones (SIPp, reg_auth.xml) re-register through the VIP at REG_RATE/s
#      with a short expiry; a callee (2001) answers the calls a caller (2002) places at
#      CALL_RATE/s through the VIP, each held CALL_MS;
#   2. ROUNDS times: count the bindings in the store and the answered calls on the holder,
#      kill -9 the holder, time from the kill to the first 200 answering an OPTIONS on the
#      VIP (probe.py, from the phones' namespace), restart the killed node, let it settle,
#      count the bindings again;
#   3. stops the load, then for each rate in REG_RATES sends rate*REG_SECS REGISTERs through
#      the VIP (SIPp) and keeps the highest rate with < MAX_FAIL_PCT % failures and at
#      least MIN_RATE_FRAC of the rate achieved;
#   4. prints each round, then one line:
#      failover_ms_median=… failover_ms_max=… registrations_lost=… register_per_s=… calls_lost=…
#
# registrations_lost: bindings in the store before a kill minus after the restart, summed
# over rounds (never below 0 per round). calls_lost: calls answered on the killed node at
# the kill, summed (calls do not survive a node's death yet; they are counted, not hidden).
#
# Environment (all optional):
#   ROUNDS=10 USERS=300 REG_RATE=20 REG_EXPIRES=60 CALL_RATE=1 CALL_MS=20000
#   REG_USERS=3000 REG_RATES="1000 2000 3000 4000 6000 8000" REG_SECS=5 MAX_FAIL_PCT=0.1 MIN_RATE_FRAC=0.8
#   SETTLE=3           seconds after a restart before the next round
#   PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres PG_DB=test   (trust auth on loopback)
#   RF_BIN=...         use this binary instead of building
#   KEEP_TMP=1         keep the temp dir (configs, logs)
#
# Needs root (namespaces, addresses), iproute2, SIPp (sip-tester), psql, python3, arping
# (iputils-arping; without it the phones learn the move only when their ARP entry ages).
# Everything it creates (namespaces, processes, schema, temp dir) is removed on exit,
# Ctrl-C included. Every loop is bounded in count and time.
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

ROUNDS=${ROUNDS:-10}
USERS=${USERS:-300}
REG_RATE=${REG_RATE:-20}
REG_EXPIRES=${REG_EXPIRES:-60}
CALL_RATE=${CALL_RATE:-1}
CALL_MS=${CALL_MS:-20000}
REG_USERS=${REG_USERS:-3000}
REG_RATES=${REG_RATES:-"1000 2000 3000 4000 6000 8000"}
REG_SECS=${REG_SECS:-5}
MAX_FAIL_PCT=${MAX_FAIL_PCT:-0.1}
MIN_RATE_FRAC=${MIN_RATE_FRAC:-0.8}
SETTLE=${SETTLE:-3}
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
PG_DB=${PG_DB:-test}
PASSWORD=benchsecret
PG_BASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$PG_DB"

ID=$(( $$ % 10000 ))
NS_SW="rffo${ID}sw"; NS_PH="rffo${ID}ph"
NS=("rffo${ID}n1" "rffo${ID}n2")
IF=("rffo${ID}a" "rffo${ID}b" "rffo${ID}p")
NODE_IP=(10.81.0.1 10.81.0.2)
PHONE_IP=10.81.0.10
VIP=10.81.0.100
NAMES=(a b)

# shellcheck source=../lib.sh
. "$HERE/../lib.sh"

# ---------------------------------------------------------------- cleanup (runs on any exit)
TMP=""; SCHEMA=""; PROXY_PID=""; LOAD_PIDS=(); NODE_PID=("" "")

stop_pid() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && { kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null; }; return 0; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${LOAD_PIDS[@]}"; do stop_pid "$p"; done
  for i in 0 1; do
    if [ -n "${NODE_PID[$i]}" ] && kill -0 "${NODE_PID[$i]}" 2>/dev/null; then
      kill -TERM "${NODE_PID[$i]}" 2>/dev/null
      for _ in $(seq 30); do kill -0 "${NODE_PID[$i]}" 2>/dev/null || break; sleep 0.1; done
      stop_pid "${NODE_PID[$i]}"
    fi
  done
  stop_pid "$PROXY_PID"
  for ns in "$NS_SW" "$NS_PH" "${NS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  drop_schema "$PG_BASE_URL" "$SCHEMA"
  remove_tmp "$TMP"
  exit $rc
}
on_exit cleanup

# ---------------------------------------------------------------- prerequisites
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
for t in ip sipp psql python3 timeout; do command -v $t >/dev/null || die "$t not found"; done
command -v arping >/dev/null || log "warning: arping not installed (iputils-arping): failover waits for ARP to age"
psql "$PG_BASE_URL" -qAtc "SELECT 1" >/dev/null 2>&1 || die "PostgreSQL unreachable at $PG_BASE_URL (scripts/pg-test-setup.sh)"
if [ -z "${RF_BIN:-}" ]; then
  log "cargo build --release"
  (cd "$REPO" && cargo build --release -q) || die "cargo build failed"
  RF_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/ringfort"
fi
[ -x "$RF_BIN" ] || die "no ringfort binary at $RF_BIN"

TMP=$(mktemp -d /tmp/ringfort-bench-failover.XXXXXX)
chmod 755 "$TMP"

# ---------------------------------------------------------------- network
sh_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
for ns in "$NS_SW" "$NS_PH" "${NS[@]}"; do
  ip netns del "$ns" 2>/dev/null
  ip netns add "$ns" || die "ip netns add $ns"
  ip -n "$ns" link set lo up
done
ip -n "$NS_SW" link add br0 type bridge && ip -n "$NS_SW" link set br0 up || die "bridge"
HOST_NS=("${NS[0]}" "${NS[1]}" "$NS_PH")
HOST_IP=("${NODE_IP[0]}" "${NODE_IP[1]}" "$PHONE_IP")
for i in 0 1 2; do
  ip link add "${IF[$i]}" netns "${HOST_NS[$i]}" type veth peer name "${IF[$i]}s" netns "$NS_SW" \
    || die "veth ${IF[$i]}"
  ip -n "$NS_SW" link set "${IF[$i]}s" master br0
  ip -n "$NS_SW" link set "${IF[$i]}s" up
  ip -n "${HOST_NS[$i]}" addr add "${HOST_IP[$i]}/24" dev "${IF[$i]}"
  ip -n "${HOST_NS[$i]}" link set "${IF[$i]}" up
done
log "namespaces ${NS[*]} $NS_PH on a bridge in $NS_SW; VIP $VIP"

# ---------------------------------------------------------------- database
SCHEMA="bench_fo_$$_$RANDOM"
psql "$PG_BASE_URL" -qAtc "CREATE SCHEMA $SCHEMA" >/dev/null || die "cannot create schema $SCHEMA"
mkdir -p "$TMP/pg"; chmod 755 "$TMP/pg"
python3 "$HERE/pg_proxy.py" "$TMP/pg" "$PG_HOST" "$PG_PORT" >"$TMP/pg_proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 50); do [ -S "$TMP/pg/.s.PGSQL.5432" ] && break; sleep 0.1; done
[ -S "$TMP/pg/.s.PGSQL.5432" ] || die "pg_proxy.py did not start: $(cat "$TMP/pg_proxy.log")"
NODE_URL="postgres://$PG_USER@localhost/$PG_DB?host=$TMP/pg&options=-c%20search_path%3D$SCHEMA"
sql() { psql "$PG_BASE_URL" -qAtc "SET search_path TO $SCHEMA; $1" 2>/dev/null | tail -1; }

# ---------------------------------------------------------------- nodes
for i in 0 1; do
  d="$TMP/${NAMES[$i]}"; mkdir -p "$d/data"
  cat >"$d/ringfort.toml" <<EOF
[node]
id = "${NAMES[$i]}"
data_dir = "$d/data"

[sip]
udp_listen = ["${NODE_IP[$i]}:5060"]
tcp_listen = []

[media]
rtp_port_min = 20000
rtp_port_max = 29998

[database]
url = "$NODE_URL"
max_connections = 8

[log]
level = "warn,ringfort::cluster=info,ringfort::node=info"

[http]
listen = "127.0.0.1:8080"

[cluster]
enabled = true
sip_address = "${NODE_IP[$i]}:5060"
media_address = "${NODE_IP[$i]}"
heartbeat_ms = 500

[[cluster.vip]]
address = "$VIP"
interface = "${IF[$i]}"
priority = $(( 100 - i * 10 ))
EOF
done
CFG_A="$TMP/a/ringfort.toml"

python3 "$REPO/bench/register/gen_users.py" "$REG_USERS" "$PASSWORD" "$TMP/users_sipp.csv" "$TMP/users_rf.csv" "" 100000 >/dev/null \
  || die "gen_users.py failed"
head -n $((USERS + 1)) "$TMP/users_sipp.csv" >"$TMP/load_sipp.csv"
printf '2001,%s,callee\n2002,%s,caller\n' "$PASSWORD" "$PASSWORD" >>"$TMP/users_rf.csv"
printf 'SEQUENTIAL\n2001;%s;[authentication username=2001 password=%s]\n' "$PASSWORD" "$PASSWORD" >"$TMP/callee_sipp.csv"
"$RF_BIN" --config "$CFG_A" extension import "$TMP/users_rf.csv" >"$TMP/import.log" 2>&1 \
  || { cat "$TMP/import.log" >&2; die "extension import failed"; }
log "$(tail -1 "$TMP/import.log")"

start_node() {             # start_node I: serve in its namespace, wait until it is up
  local i=$1 d="$TMP/${NAMES[$1]}"
  ip netns exec "${NS[$i]}" "$RF_BIN" --config "$d/ringfort.toml" serve >>"$d/node.log" 2>&1 &
  NODE_PID[$i]=$!
  local before; before=$(grep -c "ringfort node up" "$d/node.log" 2>/dev/null)
  for _ in $(seq 100); do
    [ "$(grep -c "ringfort node up" "$d/node.log" 2>/dev/null)" -gt "${before:-0}" ] && return 0
    kill -0 "${NODE_PID[$i]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$d/node.log" >&2; die "node ${NAMES[$i]} did not start"
}
has_vip() { ip -n "${NS[$1]}" -4 addr show dev "${IF[$1]}" | grep -q "$VIP/32"; }
holder() {                 # prints 0 or 1 when exactly one namespace has the VIP
  local h=""
  has_vip 0 && h=0
  if has_vip 1; then [ -n "$h" ] && { echo both; return; }; h=1; fi
  echo "${h:-none}"
}
wait_holder() {            # wait_holder LIMIT_S: prints the holder index, or fails
  local end=$(( $(date +%s) + $1 )) h
  while [ "$(date +%s)" -lt "$end" ]; do
    h=$(holder)
    case $h in 0|1) echo "$h"; return 0;; both) die "both namespaces have the VIP";; esac
    sleep 0.05
  done
  return 1
}

start_node 0
start_node 1
H=$(wait_holder 10) || die "nobody took the VIP"
log "nodes up; ${NAMES[$H]} holds $VIP"

sipp_ph() {                # sipp_ph LOG ARGS...: SIPp in the phones' namespace, towards the VIP
  local logf=$1; shift
  ip netns exec "$NS_PH" sipp -i "$PHONE_IP" -nostdin -t u1 "$@" "$VIP:5060" >"$logf" 2>&1
}
STATS=(-trace_stat -fd 1)   # with -stf FILE.csv: SIPp's counters every second
sipp_stat() {              # sipp_stat CSV KEY: KEY (successful, failed, ...) of SIPp's last stat row
  python3 "$REPO/bench/register/stat_summary.py" "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

# ---------------------------------------------------------------- 1. steady load
TOTAL_S=$(( ROUNDS * 20 + 60 ))
cd "$TMP" || die "cd $TMP"
sipp_ph "$TMP/callee_reg.log" -sf "$HERE/reg_auth.xml" -inf "$TMP/callee_sipp.csv" -set expires 3600 \
  -p 16000 -m 1 -timeout 10s || die "callee 2001 could not register: $(tail -5 "$TMP/callee_reg.log")"
timeout $((TOTAL_S + 30)) ip netns exec "$NS_PH" sipp -i "$PHONE_IP" -nostdin -t u1 -sf "$HERE/call_uas.xml" \
  -p 16000 -mp 30000 -timeout "${TOTAL_S}s" -recv_timeout $((CALL_MS + 10000)) \
  "${STATS[@]}" -stf "$TMP/load_uas.csv" >"$TMP/load_uas.log" 2>&1 &
LOAD_PIDS+=($!)
timeout $((TOTAL_S + 30)) ip netns exec "$NS_PH" sipp -i "$PHONE_IP" -nostdin -t u1 -sf "$HERE/reg_auth.xml" \
  -inf "$TMP/load_sipp.csv" -set expires "$REG_EXPIRES" -p 16001 -r "$REG_RATE" -timeout "${TOTAL_S}s" \
  -recv_timeout 5000 "${STATS[@]}" -stf "$TMP/load_reg.csv" "$VIP:5060" >"$TMP/load_reg.log" 2>&1 &
LOAD_PIDS+=($!)
timeout $((TOTAL_S + 30)) ip netns exec "$NS_PH" sipp -i "$PHONE_IP" -nostdin -t u1 -sf "$HERE/call_uac.xml" \
  -s 2001 -au 2002 -ap "$PASSWORD" -set caller 2002 -d "$CALL_MS" -p 16002 -mp 32000 -r "$CALL_RATE" \
  -timeout "${TOTAL_S}s" -recv_timeout 8000 "${STATS[@]}" -stf "$TMP/load_calls.csv" "$VIP:5060" \
  >"$TMP/load_calls.log" 2>&1 &
LOAD_PIDS+=($!)
WARM=$(( USERS / REG_RATE + 5 ))
log "load: $USERS phones re-registering at $REG_RATE/s (expires $REG_EXPIRES s), $CALL_RATE call/s of $CALL_MS ms; warming up ${WARM} s"
sleep "$WARM"

# ---------------------------------------------------------------- 2. kills
FAILOVER_MS=(); REG_LOST=0; CALLS_LOST=0
printf '%-5s %-6s %-9s %-12s %-14s %-13s\n' round killed failover_ms bindings_pre bindings_post calls_on_node >"$TMP/rounds.txt"
count_bindings() { sql "SELECT count(*) FROM bindings WHERE expires_at > EXTRACT(EPOCH FROM now())::BIGINT"; }
for r in $(seq "$ROUNDS"); do
  H=$(wait_holder 10) || die "round $r: nobody holds the VIP"
  pre=$(count_bindings)
  calls=$("$RF_BIN" --config "$CFG_A" calls 2>/dev/null | grep -P "\tnode=${NAMES[$H]}\t" | grep -vc "answered=-")
  t_kill=$(date +%s.%N)
  kill -KILL "${NODE_PID[$H]}"
  t_ok=$(ip netns exec "$NS_PH" python3 "$HERE/probe.py" "$PHONE_IP" "$VIP" 5060 10 15)
  wait "${NODE_PID[$H]}" 2>/dev/null
  [ "$t_ok" = none ] && die "round $r: no 200 on the VIP within 15 s of the kill"
  ms=$(python3 -c "print(round(($t_ok - $t_kill) * 1000))")
  FAILOVER_MS+=("$ms")
  CALLS_LOST=$((CALLS_LOST + calls))
  other=$((1 - H))
  has_vip "$other" || log "round $r: warning: a 200 came but ${NAMES[$other]} has no VIP"
  start_node "$H"
  sleep "$SETTLE"
  post=$(count_bindings)
  lost=$(( pre > post ? pre - post : 0 ))
  REG_LOST=$((REG_LOST + lost))
  printf '%-5s %-6s %-11s %-12s %-14s %-13s\n' "$r" "${NAMES[$H]}" "$ms" "$pre" "$post" "$calls" >>"$TMP/rounds.txt"
  log "round $r: killed ${NAMES[$H]}, first 200 on the VIP after $ms ms; bindings $pre -> $post; $calls calls were on it"
done
for p in "${LOAD_PIDS[@]}"; do stop_pid "$p"; done
LOAD_PIDS=()
log "load: REGISTER $(sipp_stat "$TMP/load_reg.csv" successful) ok, $(sipp_stat "$TMP/load_reg.csv" failed) failed; calls $(sipp_stat "$TMP/load_calls.csv" successful) ok, $(sipp_stat "$TMP/load_calls.csv" failed) failed"

# ---------------------------------------------------------------- 3. REGISTER rate
BEST=0
printf '%-6s %-8s %-8s %-10s %-10s\n' rate ok failed fail_pct achieved/s >"$TMP/rates.txt"
for rate in $REG_RATES; do
  n=$(( rate * REG_SECS ))
  t0=$(date +%s.%N)
  timeout $(( 2 * REG_SECS + 20 )) ip netns exec "$NS_PH" sipp -i "$PHONE_IP" -nostdin -t u1 -sf "$HERE/reg_auth.xml" \
    -inf "$TMP/users_sipp.csv" -set expires 3600 -p 16003 -r "$rate" -m "$n" -timeout "$(( 2 * REG_SECS + 10 ))s" \
    -recv_timeout 5000 "${STATS[@]}" -stf "$TMP/rate_$rate.csv" "$VIP:5060" >"$TMP/rate_$rate.log" 2>&1
  t1=$(date +%s.%N)
  ok=$(sipp_stat "$TMP/rate_$rate.csv" successful); failed=$(sipp_stat "$TMP/rate_$rate.csv" failed)
  elapsed=$(sipp_stat "$TMP/rate_$rate.csv" elapsed_s)
  read -r pct achieved pass < <(python3 -c "
ok, failed, n, rate = ${ok:-0}, ${failed:-0}, $n, $rate
secs = float('${elapsed:-0}') or ($t1 - $t0)
pct = (n - ok) * 100.0 / n
ach = ok / secs
print(f'{pct:.3f} {ach:.0f} {int(pct < $MAX_FAIL_PCT and ach >= $MIN_RATE_FRAC * rate)}')")
  printf '%-6s %-8s %-8s %-10s %-10s\n' "$rate" "$ok" "$failed" "$pct" "$achieved" >>"$TMP/rates.txt"
  log "REGISTER at $rate/s: $ok ok, $failed failed ($pct %), $achieved/s achieved"
  [ "$pass" = 1 ] && BEST=$achieved
  [ "$pass" = 1 ] || break
  sleep 2
done

# ---------------------------------------------------------------- 4. report
echo "== failover rounds (kill -9 of the VIP holder; time to the first 200 to OPTIONS on $VIP)"
cat "$TMP/rounds.txt"
echo "== REGISTER rate through the VIP (2-node cluster on PostgreSQL, $REG_SECS s per step)"
cat "$TMP/rates.txt"
read -r MED MAX < <(printf '%s\n' "${FAILOVER_MS[@]}" | python3 -c "
import statistics, sys
v = [int(x) for x in sys.stdin.read().split()]
print(round(statistics.median(v)), max(v))")
echo "failover_ms_median=$MED failover_ms_max=$MAX registrations_lost=$REG_LOST register_per_s=$BEST calls_lost=$CALLS_LOST"
