#!/usr/bin/env python3
"""Summarise a SIPp step as key=value pairs: the last row of its -trace_stat CSV
(';'-separated) and, when given, its -trace_rtt file (exact response-time percentiles).

usage: stat_summary.py STAT_CSV [RTT_CSV]

Response times (ms) of the REGISTER scenario (reg_auth.xml):
  rtd 1 = the whole registration: first REGISTER sent -> 200 received (p50_ms, p99_ms)
  rtd 2 = the REGISTER with credentials -> its 200 (p50_auth_ms, p99_auth_ms)
Only completed registrations have a response time (a failed one has none).
From the RTT file (one line per completed timer, SIPp's millisecond clock) the percentiles
are exact (nearest rank); without one (or when it is empty) they are read off the stat file's
ResponseTimeRepartition buckets: the upper bound of the bucket where the cumulative count
reaches 50 % / 99 %, ">1000" for the overflow bucket (pct_src tells which).
(copied from the shared peers' sipp/stat_summary.py, percentiles added; prints zeros when
SIPp wrote no row)"""
import csv
import math
import sys

EMPTY = ('elapsed_s=0 created=0 successful=0 failed=0 success_per_s=0 retransmissions=0 '
         'peak_concurrent=0 call_rate_c=0 rtd1_ms_hist= failed_timeout=0 failed_unexpected=0 '
         'p50_ms=nan p99_ms=nan p50_auth_ms=nan p99_auth_ms=nan pct_src=none pct_n=0')


def nearest_rank(sorted_vals, p):
    return sorted_vals[max(0, math.ceil(p / 100 * len(sorted_vals)) - 1)]


def from_rtt(path):
    """{rtd_no: sorted [ms, ...]} from a SIPp -trace_rtt file (Date_ms;response_time_ms;rtd_no)."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(';')
                if len(parts) != 3 or not parts[2].isdigit():
                    continue
                try:
                    out.setdefault(int(parts[2]), []).append(float(parts[1]))
                except ValueError:
                    continue
    except OSError:
        return {}
    for v in out.values():
        v.sort()
    return out


def from_buckets(d, n):
    """p50, p99 (ms, as bucket upper bounds) of ResponseTimeRepartition<n> in stat row d."""
    pre = f'ResponseTimeRepartition{n}_'
    buckets = []                      # [(label, count)] in file order: <1, <2, ..., >=1000
    for k, v in d.items():
        if k.startswith(pre) and v.strip():
            buckets.append((k[len(pre):], int(v)))
    total = sum(c for _, c in buckets)
    if not total:
        return 'nan', 'nan'
    res = []
    for p in (50, 99):
        cum = 0
        for label, c in buckets:
            cum += c
            if cum >= p / 100 * total:
                res.append(label[1:] if label.startswith('<') else '>' + label.lstrip('>='))
                break
    return res[0], res[1]


def fmt_ms(x):
    return str(int(x)) if float(x).is_integer() else f'{x:.1f}'


def main():
    try:
        rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
    except (OSError, IndexError):
        rows = []
    if len(rows) < 2:
        print(EMPTY)
        return
    hdr, last = rows[0], rows[-1]
    d = dict(zip(hdr, last))

    def epoch(s):  # "YYYY-MM-DD\tHH:MM:SS.uuuuuu\tEPOCH"
        return float(s.split('\t')[-1])
    el = epoch(d['CurrentTime']) - epoch(d['StartTime'])
    # response-time distribution (ms buckets) of rtd1
    rtd = {k[len('ResponseTimeRepartition1_'):]: int(v) for k, v in d.items()
           if k.startswith('ResponseTimeRepartition1_') and v.strip()}
    ok = int(d['SuccessfulCall(C)']); fail = int(d['FailedCall(C)'])
    out = {
        'elapsed_s': round(el, 3),
        'created': int(d['TotalCallCreated']) if 'TotalCallCreated' in d else int(d.get('OutgoingCall(C)', 0)),
        'successful': ok, 'failed': fail,
        'success_per_s': round(ok / el, 1) if el else 0,
        'retransmissions': int(d.get('Retransmissions(C)', 0)),
        'peak_concurrent': max(int(r[hdr.index('CurrentCall')]) for r in rows[1:]) if 'CurrentCall' in hdr else None,
        'call_rate_c': d.get('CallRate(C)'),
        'rtd1_ms_hist': ','.join(f'{k}:{v}' for k, v in rtd.items() if v),
        'failed_timeout': int(d.get('FailedMaxUDPRetrans(C)', 0)) + int(d.get('FailedCallTimeout(C)', 0)) if 'FailedMaxUDPRetrans(C)' in d else None,
        'failed_unexpected': int(d.get('FailedUnexpectedMessage(C)', 0)),
    }
    rtt = from_rtt(sys.argv[2]) if len(sys.argv) > 2 else {}
    if rtt.get(1):
        out['p50_ms'] = fmt_ms(nearest_rank(rtt[1], 50))
        out['p99_ms'] = fmt_ms(nearest_rank(rtt[1], 99))
        a = rtt.get(2) or []
        out['p50_auth_ms'] = fmt_ms(nearest_rank(a, 50)) if a else 'nan'
        out['p99_auth_ms'] = fmt_ms(nearest_rank(a, 99)) if a else 'nan'
        out['pct_src'] = 'rtt'
        out['pct_n'] = len(rtt[1])
    else:
        out['p50_ms'], out['p99_ms'] = from_buckets(d, 1)
        out['p50_auth_ms'], out['p99_auth_ms'] = from_buckets(d, 2)
        out['pct_src'] = 'buckets'
        out['pct_n'] = sum(rtd.values())
    print(' '.join(f'{k}={v}' for k, v in out.items()))


main()
