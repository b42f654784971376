#!/usr/bin/env python3
"""Summary of one SIPp UAC step as key=value pairs: the last row of its -trace_stat CSV
(';'-separated; from the shared peers' sipp/stat_summary.py) and the call setup times of its
-trace_rtt files (rtd 1: first INVITE sent -> 200 received, whole milliseconds as SIPp
writes them).

usage: stat_summary.py STAT.csv [RTT.csv ...]"""
import csv
import sys

try:
    rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
except OSError:
    rows = []
out = {'elapsed_s': 0, 'created': 0, 'successful': 0, 'failed': 0, 'retransmissions': 0,
       'peak_concurrent': 0}
if len(rows) >= 2:
    hdr, last = rows[0], rows[-1]
    d = dict(zip(hdr, last))

    def epoch(s):  # "YYYY-MM-DD\tHH:MM:SS.uuuuuu\tEPOCH"
        return float(s.split('\t')[-1])
    out['elapsed_s'] = round(epoch(d['CurrentTime']) - epoch(d['StartTime']), 3)
    out['created'] = int(d.get('TotalCallCreated') or d.get('OutgoingCall(C)') or 0)
    out['successful'] = int(d['SuccessfulCall(C)'])
    out['failed'] = int(d['FailedCall(C)'])
    out['retransmissions'] = int(d.get('Retransmissions(C)', 0))
    if 'CurrentCall' in hdr:
        i = hdr.index('CurrentCall')
        out['peak_concurrent'] = max(int(r[i]) for r in rows[1:] if len(r) > i)
times = []
for f in sys.argv[2:]:
    try:
        for line in open(f):
            p = line.strip().split(';')
            if len(p) == 3 and p[2] == '1':
                try:
                    times.append(float(p[1]))
                except ValueError:
                    pass
    except OSError:
        pass
times.sort()


def pct(q):
    if not times:
        return 'na'
    return times[min(len(times) - 1, int(q * len(times)))]


out.update(setup_n=len(times), setup_p50_ms=pct(0.5), setup_p99_ms=pct(0.99),
           setup_max_ms=times[-1] if times else 'na')
print(' '.join(f'{k}={v}' for k, v in out.items()))
