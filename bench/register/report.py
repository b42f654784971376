#!/usr/bin/env python3
"""Print the REGISTER benchmark tables from the per-step TSV written by run.sh.

usage: report.py STEPS_TSV [MAX_FAIL_PCT=0.1] [MIN_RATE_FRAC=0.8]

Definitions (also in bench/README.md):
  fail%     (failed + unfinished) / attempted * 100, attempted = rate * SECS; "unfinished" are
            registrations SIPp never completed (killed by the step's timeout).
  achieved  successful / SIPp elapsed seconds.
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
import sys

path = sys.argv[1]
max_fail = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
min_frac = float(sys.argv[3]) if len(sys.argv) > 3 else 0.8

rows = []
with open(path) as f:
    hdr = f.readline().rstrip("\n").split("\t")
    for line in f:
        if line.strip():
            rows.append(dict(zip(hdr, line.rstrip("\n").split("\t"))))

NUM = ("db_cpu_s", "rate", "m", "wall_s", "elapsed_s", "successful", "failed", "unfinished", "fail_pct",
       "achieved_per_s", "cpu_s", "cpu_pct", "rss_kb", "pss_kb", "sipp_cpu_pct",
       "other_cpu_pct", "retrans", "sipp_rc")
for r in rows:
    for k in NUM:
        r[k] = float(r.get(k) or 0)
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


def fmt(x, nd=0):
    if x is None or x != x:
        return "n/a"
    return f"{x:,.{nd}f}"


def table(head, body):
    w = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    out = ["  ".join(str(c).rjust(w[i]) for i, c in enumerate(head))]
    out.append("  ".join("-" * n for n in w))
    out += ["  ".join(str(c).rjust(w[i]) for i, c in enumerate(row)) for row in body]
    return "\n".join(out)


# --- per step -------------------------------------------------------------------------
body = []
for r in sorted(rows, key=lambda r: (r["rate"], peers.index(r["peer"]))):
    body.append([r["peer"], fmt(r["rate"]), fmt(r["successful"]), fmt(r["failed"] + r["unfinished"]),
                 fmt(r["fail_pct"], 3), fmt(r["achieved_per_s"]), fmt(r["wall_s"], 1),
                 fmt(r["cpu_pct"], 1), fmt(r["rss_kb"] / 1024, 1), fmt(r["pss_kb"] / 1024, 1),
                 fmt(r["reg_per_cpu_s"]), fmt(r["sipp_cpu_pct"], 1), fmt(r["other_cpu_pct"], 1),
                 "yes" if r["pass"] else "NO"])
print("per step (cpu% = % of one core; other% = rest of the machine, noise)")
print(table(["peer", "rate", "ok", "fail", "fail%", "achieved/s", "wall_s", "cpu%", "rss_MB",
             "pss_MB", "reg/cpu-s", "sipp%", "other%", "pass"], body))


# --- per peer -------------------------------------------------------------------------
def steps(peer, upto):
    return [r for r in rows if r["peer"] == peer and r["rate"] <= upto]


def cumulative(peer, upto):
    s = steps(peer, upto)
    cpu = sum(r["cpu_s"] for r in s)
    ok = sum(r["successful"] for r in s)
    return ok / cpu if cpu > 0 else float("nan")


best = {}
for p in peers:
    ok = [r for r in rows if r["peer"] == p and r["pass"]]
    best[p] = max(ok, key=lambda r: r["rate"]) if ok else None

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

# --- ratios vs Kamailio ----------------------------------------------------------------
kam = next((p for p in peers if p.startswith("kamailio")), None)
body = []
for p in peers:
    if p == kam or kam is None:
        continue
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
