#!/usr/bin/env python3
"""Summarise the last row of a SIPp -trace_stat CSV (';'-separated) as key=value pairs.
(copied from the shared peers' sipp/stat_summary.py; prints zeros when SIPp wrote no row)"""
import sys, csv
try:
    rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
except OSError:
    rows = []
if len(rows) < 2:
    print('elapsed_s=0 created=0 successful=0 failed=0 success_per_s=0 retransmissions=0 '
          'peak_concurrent=0 call_rate_c=0 rtd1_ms_hist= failed_timeout=0 failed_unexpected=0')
    sys.exit(0)
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
print(' '.join(f'{k}={v}' for k, v in out.items()))
