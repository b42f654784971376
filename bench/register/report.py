#!/usr/bin/env python3
"""Print the REGISTER benchmark tables from the per-step TSV (and the memory-phase TSV)
written by run.sh, then issue 15's goal ratios, each computed within this one run.

usage: report.py STEPS_TSV [MAX_FAIL_PCT=0.1] [MIN_RATE_FRAC=0.8] [--mem MEM_TSV]
                 [--goal-rate 8000]

Definitions (also in bench/README.md):
  fail%     (failed + unfinished) / attempted * 100, attempted = rate * SECS; "unfinished" are
            registrations SIPp never completed (killed by the step's timeout).
  achieved  successful / SIPp elapsed seconds.
  retrans   SIPp's retransmissions (REGISTERs sent again after 500 ms, 1 s, ... unanswered).
  p50/p99   response time of the whole registration (first REGISTER sent -> 200 received),
            ms, over the completed ones: exact from SIPp's -trace_rtt file, or (marked ~)
            the upper bound of the ResponseTimeRepartition bucket it falls in.
  pass      fail% < MAX_FAIL_PCT and achieved >= MIN_RATE_FRAC * rate (the second condition
            catches steps where the load generator, not the peer, could not keep up).
  best      the highest passing rate of a peer.
  cpu%      peer CPU (utime+stime of its process tree) / step wall time, % of one core.
            "<peer>+db" lines add the CPU of the PostgreSQL backends serving the peer.
  reg/cpu-s successful registrations / peer CPU seconds. Per step in the step table;
            "cumulative" in the summary = summed over all of the peer's steps at rates <= R.
  ratio     Ringfort reg/cpu-s / Kamailio reg/cpu-s, both cumulative over the same steps:
            every rate <= the lower of the two peers' best rates (equal offered work).
"""
import math
import sys

# ---- arguments
argv = sys.argv[1:]
mem_path = None
goal_rate = 8000.0
pos = []
i = 0
while i < len(argv):
    if argv[i] == "--mem":
        mem_path = argv[i + 1]; i += 2
    elif argv[i] == "--goal-rate":
        goal_rate = float(argv[i + 1]); i += 2
    else:
        pos.append(argv[i]); i += 1
if not pos:
    sys.exit(__doc__)
path = pos[0]
max_fail = float(pos[1]) if len(pos) > 1 else 0.1
min_frac = float(pos[2]) if len(pos) > 2 else 0.8

# Issue 15's goals: (b) "p99 <= 50 ms at 8,000/s with no retransmission caused by a late
# answer"; (d) "RSS at 8,000/s <= 200 MB, with Kamailio's PSS summed over its processes
# printed beside it".
GOAL_CPU_RATIO = 1.2        # (a) Ringfort reg/cpu-s / Kamailio reg/cpu-s >=
GOAL_P99_MS = 50            # (b) Ringfort p99 at goal_rate <=
GOAL_RETRANS = 0            # (b) Ringfort retransmissions at goal_rate <=
GOAL_BEST_RATIO = 1.0       # (c) Ringfort best rate / Kamailio best rate >=
GOAL_MEM_RATIO = 2.0        # (e) Ringfort growth per registration / Kamailio's <=
GOAL_LOAD_RSS_MB = 200      # (d) Ringfort RSS at goal_rate <=
GOAL_IDLE_RSS_MB = 100      # (e) Ringfort RSS with MEM_PHONES extensions, none registered <=


def read_tsv(p):
    out = []
    with open(p) as f:
        hdr = f.readline().rstrip("\n").split("\t")
        for line in f:
            if line.strip():
                out.append(dict(zip(hdr, line.rstrip("\n").split("\t"))))
    return out


def ms(v):
    """a p50/p99 field -> float ms (inf for the overflow bucket, nan when missing)."""
    v = (v or "nan").strip()
    if v.startswith(">"):
        return math.inf
    try:
        return float(v)
    except ValueError:
        return math.nan


def fmt(x, nd=0):
    if x is None or x != x:
        return "n/a"
    if x == math.inf:
        return "inf"
    return f"{x:,.{nd}f}"


def fmt_ms(x, approx=False):
    if x != x:
        return "n/a"
    if x == math.inf:
        return ">1000"
    return ("~" if approx else "") + (f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}")


def table(head, body):
    w = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    out = ["  ".join(str(c).rjust(w[i]) for i, c in enumerate(head))]
    out.append("  ".join("-" * n for n in w))
    out += ["  ".join(str(c).rjust(w[i]) for i, c in enumerate(row)) for row in body]
    return "\n".join(out)


rows = read_tsv(path)
NUM = ("db_cpu_s", "rate", "m", "wall_s", "elapsed_s", "successful", "failed", "unfinished", "fail_pct",
       "achieved_per_s", "cpu_s", "cpu_pct", "rss_kb", "pss_kb", "sipp_cpu_pct",
       "other_cpu_pct", "retrans", "sipp_rc")
for r in rows:
    for k in NUM:
        r[k] = float(r.get(k) or 0)
    for k in ("p50_ms", "p99_ms", "p50_auth_ms", "p99_auth_ms"):
        r[k] = ms(r.get(k))
    r["approx"] = r.get("pct_src") == "buckets"
# A peer whose database work runs in other processes (Ringfort on PostgreSQL: the postgres
# backends serving its connections) gets a second line "<peer>+db" charged with that CPU too.
with_db = {r["peer"] for r in rows if r["db_cpu_s"] > 0}
for r in list(rows):
    if r["peer"] in with_db:
        d = dict(r)
        d["peer"] = r["peer"] + "+db"
        d["cpu_s"] = r["cpu_s"] + r["db_cpu_s"]
        d["cpu_pct"] = d["cpu_s"] * 100 / r["wall_s"] if r["wall_s"] else 0
        rows.append(d)
for r in rows:
    r["pass"] = r["fail_pct"] < max_fail and r["achieved_per_s"] >= min_frac * r["rate"]
    r["reg_per_cpu_s"] = r["successful"] / r["cpu_s"] if r["cpu_s"] > 0 else float("nan")

peers = []
for r in rows:
    if r["peer"] not in peers:
        peers.append(r["peer"])
kam = next((p for p in peers if p.startswith("kamailio")), None)
rfs = [p for p in peers if p != kam]
sections = []

if rows:
    # --- per step -----------------------------------------------------------------------
    body = []
    for r in sorted(rows, key=lambda r: (r["rate"], peers.index(r["peer"]))):
        body.append([r["peer"], fmt(r["rate"]), fmt(r["successful"]), fmt(r["failed"] + r["unfinished"]),
                     fmt(r["fail_pct"], 3), fmt(r["retrans"]), fmt_ms(r["p50_ms"], r["approx"]),
                     fmt_ms(r["p99_ms"], r["approx"]), fmt_ms(r["p99_auth_ms"], r["approx"]),
                     fmt(r["achieved_per_s"]), fmt(r["wall_s"], 1),
                     fmt(r["cpu_pct"], 1), fmt(r["rss_kb"] / 1024, 1), fmt(r["pss_kb"] / 1024, 1),
                     fmt(r["reg_per_cpu_s"]), fmt(r["sipp_cpu_pct"], 1), fmt(r["other_cpu_pct"], 1),
                     "yes" if r["pass"] else "NO"])
    print("per step (cpu% = % of one core; other% = rest of the machine, noise; p50/p99 = whole\n"
          "registration, first REGISTER -> 200, ms; p99auth = REGISTER with credentials -> 200)")
    print(table(["peer", "rate", "ok", "fail", "fail%", "retrans", "p50", "p99", "p99auth",
                 "achieved/s", "wall_s", "cpu%", "rss_MB", "pss_MB", "reg/cpu-s", "sipp%",
                 "other%", "pass"], body))


# --- per peer ---------------------------------------------------------------------------
def steps(peer, upto):
    return [r for r in rows if r["peer"] == peer and r["rate"] <= upto]


def per_cpu(s):
    cpu = sum(r["cpu_s"] for r in s)
    ok = sum(r["successful"] for r in s)
    return ok / cpu if cpu > 0 else float("nan")


def cumulative(peer, upto):
    return per_cpu(steps(peer, upto))


best = {}
for p in peers:
    ok = [r for r in rows if r["peer"] == p and r["pass"]]
    best[p] = max(ok, key=lambda r: r["rate"]) if ok else None

if rows:
    body = []
    for p in peers:
        b = best[p]
        if b is None:
            body.append([p, "none", "n/a", "n/a", "n/a", "n/a", "n/a"])
            continue
        body.append([p, fmt(b["rate"]), fmt(b["cpu_pct"], 1), fmt(b["rss_kb"] / 1024, 1),
                     fmt(b["pss_kb"] / 1024, 1), fmt(b["reg_per_cpu_s"]), fmt(cumulative(p, b["rate"]))])
    print()
    print(f"per peer (best = highest rate with fail% < {max_fail} and achieved >= {min_frac} x rate)")
    print(table(["peer", "best_rate", "cpu%@best", "rss_MB@best", "pss_MB@best", "reg/cpu-s@best",
                 "reg/cpu-s<=best"], body))

    # --- ratios vs Kamailio ------------------------------------------------------------
    body = []
    for p in rfs:
        if kam is None:
            break
        if best[p] is None or best[kam] is None:
            body.append([f"{p}/{kam}", "n/a", "n/a", "n/a", "n/a"])
            continue
        upto = min(best[p]["rate"], best[kam]["rate"])
        rf, km = cumulative(p, upto), cumulative(kam, upto)
        body.append([f"{p}/{kam}", f"<= {fmt(upto)}", fmt(rf), fmt(km), fmt(rf / km, 2)])
    if body:
        print()
        print("ratio of REGISTERs per CPU-second (cumulative over the same steps)")
        print(table(["ratio", "rates", "ringfort reg/cpu-s", "kamailio reg/cpu-s", "ratio"], body))

# --- memory phase -----------------------------------------------------------------------
mem = {}
if mem_path:
    try:
        for r in read_tsv(mem_path):
            mem[r["peer"]] = r
    except OSError:
        pass
if mem:
    def kb(v):
        try:
            return float(v) / 1024
        except ValueError:
            return math.nan

    def num(v):
        try:
            return float(v)
        except ValueError:
            return math.nan
    body = []
    for p, r in mem.items():
        body.append([p, fmt(num(r["phones"])), fmt(num(r["sipp_ok"])), fmt(num(r["sipp_failed"])),
                     r["registered"], r["transactions_after"], fmt_ms(ms(r["p50_ms"])), fmt_ms(ms(r["p99_ms"])),
                     fmt(kb(r["rss_before_kb"]), 1), fmt(kb(r["rss_after_kb"]), 1),
                     fmt(kb(r["pss_before_kb"]), 1), fmt(kb(r["pss_after_kb"]), 1),
                     fmt(num(r["rss_b_per_reg"])), fmt(num(r["pss_b_per_reg"])),
                     fmt((num(r["kam_shm_after_b"]) - num(r["kam_shm_before_b"])) / num(r["registered"]))
                     if r["kam_shm_after_b"] != "n/a" and num(r["registered"]) > 0 else "-"])
    print()
    print("memory phase (a fresh instance per peer with N users, nothing registered: \"before\";\n"
          "each user registered once, Expires 3600, then idle for MEM_WAIT s: \"after\";\n"
          "B/reg = growth / registered bindings the peer reports; MB = MiB)")
    print(table(["peer", "phones", "sipp_ok", "sipp_fail", "registered", "tx_after", "p50", "p99",
                 "rss_MB_before", "rss_MB_after", "pss_MB_before", "pss_MB_after", "rss_B/reg",
                 "pss_B/reg", "kam_shm_B/reg"], body))

# --- summary per peer and rate ------------------------------------------------------------
if rows:
    body = []
    for r in sorted(rows, key=lambda r: (peers.index(r["peer"]), r["rate"])):
        body.append([r["peer"], fmt(r["rate"]), fmt(r["achieved_per_s"]),
                     fmt(r["failed"] + r["unfinished"]), fmt(r["retrans"]),
                     fmt_ms(r["p50_ms"], r["approx"]), fmt_ms(r["p99_ms"], r["approx"]),
                     fmt(r["cpu_pct"], 1), fmt(r["rss_kb"] / 1024, 1),
                     fmt(r["pss_kb"] / 1024, 1) if r["peer"].startswith("kamailio") else "-",
                     "yes" if r["pass"] else "NO"])
    print()
    print("summary per peer and rate (failures = failed + unfinished; p50/p99 ms; pss for Kamailio,\n"
          "whose children share memory)")
    print(table(["peer", "rate", "achieved/s", "failures", "retrans", "p50", "p99", "cpu%",
                 "rss_MB", "pss_MB", "pass"], body))

# --- issue 15's goals, within this run ------------------------------------------------------
goals = []
GOAL_HEAD = ["goal", "peer", "value (this run)", "goal", "verdict"]


def verdict(value, goal, op):
    if value != value or value is None:
        return "n/a"
    return "met" if (value >= goal if op == ">=" else value <= goal) else "NOT met"


def at(peer, rate):
    return next((r for r in rows if r["peer"] == peer and r["rate"] == rate), None)


for p in rfs if kam else []:
    # (a) over every rate both passed
    both = sorted({r["rate"] for r in rows if r["peer"] == p and r["pass"]}
                  & {r["rate"] for r in rows if r["peer"] == kam and r["pass"]})
    rf = per_cpu([r for r in rows if r["peer"] == p and r["rate"] in both])
    km = per_cpu([r for r in rows if r["peer"] == kam and r["rate"] in both])
    v = rf / km if both and km == km and km > 0 else math.nan
    goals.append(["(a) REGISTERs per CPU-second, ringfort/kamailio", p,
                  f"{fmt(v, 2)} ({fmt(rf)} / {fmt(km)}, {len(both)} steps both pass)",
                  f"goal >= {GOAL_CPU_RATIO}", verdict(v, GOAL_CPU_RATIO, ">=")])
for p in rfs:
    if p.endswith("+db"):
        continue
    r = at(p, goal_rate)
    p99 = r["p99_ms"] if r else math.nan
    goals.append([f"(b) p99 at {fmt(goal_rate)}/s", p,
                  (fmt_ms(p99, r["approx"]) + " ms" + ("" if r["pass"] else " (step failed)")) if r else "no step",
                  f"goal <= {GOAL_P99_MS} ms", verdict(p99, GOAL_P99_MS, "<=")])
    rt = r["retrans"] if r else math.nan
    goals.append([f"(b) retransmissions at {fmt(goal_rate)}/s", p, fmt(rt) if r else "no step",
                  f"goal <= {GOAL_RETRANS}", verdict(rt, GOAL_RETRANS, "<=")])
top = max((r["rate"] for r in rows), default=0)
for p in rfs if kam else []:
    if p.endswith("+db"):
        continue
    b, k = best.get(p), best.get(kam)
    br = b["rate"] if b else 0
    kr = k["rate"] if k else 0
    v = br / kr if kr else math.nan
    note = ""
    if br == kr == top:
        note = ", both passed the top rate tried: no limit found"
    elif kr == top:
        note = ", kamailio passed the top rate tried: its limit is higher"
    goals.append(["(c) highest rate with < {} % failures".format(max_fail), p,
                  f"{fmt(v, 2)} ({fmt(br)} vs kamailio {fmt(kr)}{note})",
                  f"goal >= {GOAL_BEST_RATIO}", verdict(v, GOAL_BEST_RATIO, ">=")])
for p in rfs if kam else []:
    if p.endswith("+db"):
        continue
    r, k = at(p, goal_rate), at(kam, goal_rate)
    v = r["rss_kb"] / 1024 if r else math.nan
    beside = f" (kamailio PSS sum {fmt(k['pss_kb'] / 1024, 1)} MB)" if k else ""
    goals.append([f"(d) RSS at {fmt(goal_rate)}/s", p,
                  f"{fmt(v, 1)} MB{beside}" if r else "no step",
                  f"goal <= {GOAL_LOAD_RSS_MB} MB", verdict(v, GOAL_LOAD_RSS_MB, "<=")])
if mem:
    km = mem.get("kamailio")
    for p, r in mem.items():
        if p == "kamailio":
            continue
        try:
            v = float(r["rss_b_per_reg"]) / float(km["pss_b_per_reg"]) if km else math.nan
        except (ValueError, ZeroDivisionError):
            v = math.nan
        goals.append(["(e) growth per registration, ringfort RSS / kamailio PSS", p,
                      f"{fmt(v, 2)} ({r['rss_b_per_reg']} B / {km['pss_b_per_reg'] if km else 'n/a'} B)",
                      f"goal <= {GOAL_MEM_RATIO}", verdict(v, GOAL_MEM_RATIO, "<=")])
        mb = float(r["rss_before_kb"]) / 1024
        goals.append([f"(e) RSS with {fmt(float(r['phones']))} extensions, none registered", p,
                      f"{fmt(mb, 1)} MB", f"goal <= {GOAL_IDLE_RSS_MB} MB",
                      verdict(mb, GOAL_IDLE_RSS_MB, "<=")])
if goals:
    print()
    print("issue 15 goals, each within this run (printed, not asserted)")
    w = [max(len(str(g[i])) for g in goals + [GOAL_HEAD]) for i in range(5)]
    for g in [GOAL_HEAD, ["-" * n for n in w]] + goals:
        print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(g)).rstrip())
