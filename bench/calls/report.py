#!/usr/bin/env python3
"""Tables of bench/calls/run.sh from its step TSVs.

usage: report.py CONC.tsv RATE.tsv MAX_FAIL_PCT MIN_RATE_FRAC HZ

Definitions (also in bench/README.md):
  relayed pkts   packets the relay sent (to the UAS + back to the UAC), counted on lo
  relay loss     packets into the relay that did not come out, both directions
                 ((UAC sent - to UAS) + (UAS echoed - to UAC))
  echo loss      packets the relay sent to the UAS that SIPp's echo did not send back (the
                 load generator's loss, not the relay's: it only lowers the return traffic)
  conc pass      every call answered and ended (no failed, no unfinished) and relay loss 0
  rate pass      fail% < MAX_FAIL_PCT and achieved calls/s >= MIN_RATE_FRAC x rate
  cpu%           CPU of the system's processes / step wall time (% of one core); Ringfort =
                 its process; kam+rtpe = Kamailio's processes + rtpengine; rtpengine alone too
  si%            softirq CPU of the machine (the kernel delivering packets on lo), from
                 /proc/stat; with tick-based accounting much of it is also in the cpu% of
                 the process that was running, so it is shown for information only
  kthr%          the kernel's threads (ksoftirqd, kworkers, jbd2: packet delivery, fsync)
  other%         the rest of the machine: busy - (system + SIPp UAC + SIPp UAS + kernel
                 threads) = other users' processes (a step above NOISY_PCT is run again)
  noport         the machine's UDP NoPorts counter over the step (/proc/net/snmp):
                 datagrams to a closed port, e.g. RTP that came after its call's relay was gone
  us/pkt         CPU microseconds per relayed packet (signalling included for Ringfort and
                 kam+rtpe: the calls are set up and torn down within the step)
  kB/call        (peak memory during the step - memory at the start of the run, before any
                 call) / peak concurrent calls. Ringfort and rtpengine: RSS; Kamailio: PSS of
                 its processes (RSS would count its shared memory once per child)
"""
import csv
import sys

conc_f, rate_f, max_fail, min_frac, hz = sys.argv[1:6]
max_fail, min_frac = float(max_fail), float(min_frac)


def load(f):
    try:
        return [r for r in csv.DictReader(open(f), delimiter='\t') if not r['sweep'].startswith('#')]
    except OSError:
        return []


def num(x, default=0.0):
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


conc, rate = load(conc_f), load(rate_f)
systems = []
for r in conc + rate:
    if r['system'] not in systems:
        systems.append(r['system'])
NAME = {'ringfort': 'Ringfort', 'kamailio': 'Kamailio+rtpengine'}


def c_loss(r):
    a, b, c, d = (int(r[k]) for k in ('uac_sent', 'to_uas', 'uas_sent', 'to_uac'))
    return (a - b) + (c - d), a - d, a + c, b + d   # relay loss, e2e loss, relay in, relay out


def c_pass(r):
    loss, _, rin, _ = c_loss(r)
    return int(r['failed']) + int(r['unfinished']) == 0 and loss == 0 and rin > 0


def r_pass(r):
    return num(r['fail_pct']) < max_fail and num(r['achieved_per_s']) >= min_frac * int(r['load'])


def kb_per_call(r, which):
    peak = max(1, int(r['peak_calls']))
    if which == 'rtpe':
        return (int(r['rtpe_rss_kb']) - int(r['rtpe_rss0_kb'])) / peak
    if r['system'] == 'kamailio':  # PSS of Kamailio's processes + RSS of rtpengine
        return ((int(r['relay_pss_kb']) - int(r['relay_pss0_kb'])) / peak
                + (int(r['rtpe_rss_kb']) - int(r['rtpe_rss0_kb'])) / peak)
    return (int(r['relay_rss_kb']) - int(r['relay_rss0_kb'])) / peak


def groups(r):
    """(label, cpu_s, kB/call) rows of a concurrency step: the system, and rtpengine alone."""
    out = [('ringfort' if r['system'] == 'ringfort' else 'kam+rtpe', num(r['relay_cpu_s']),
            kb_per_call(r, 'sys'))]
    if r['system'] == 'kamailio':
        out.append(('rtpengine', num(r['rtpe_cpu_s']), kb_per_call(r, 'rtpe')))
    return out


print()
print('## Concurrency steps (calls held with RTP both ways; relay loss counted on lo)')
hdr = ('system', 'calls', 'ok', 'fail', 'peak', 'relayed_pkts', 'relay_loss', 'echo_loss',
       'setup_p50/p99_ms', 'cpu%', 'us/pkt', 'kB/call', 'uac%', 'uas%', 'si%', 'kthr%', 'other%', 'noport', 'pass')
fmt = '%-10s %6s %6s %5s %5s %12s %10s %9s %16s %7s %7s %8s %6s %6s %6s %6s %7s %6s %4s'
print(fmt % hdr)
for r in conc:
    loss, e2e, rin, rout = c_loss(r)
    wall = num(r['wall_s'], 1)
    for i, (label, cpu, kb) in enumerate(groups(r)):
        print(fmt % (label, r['load'], r['ok'] if i == 0 else '', (int(r['failed']) + int(r['unfinished'])) if i == 0 else '',
                     r['peak_calls'] if i == 0 else '', rout if i == 0 else '', loss if i == 0 else '',
                     (int(r['to_uas']) - int(r['uas_sent'])) if i == 0 else '',
                     f"{r['setup_p50_ms']}/{r['setup_p99_ms']}" if i == 0 else '',
                     '%.1f' % (cpu * 100 / wall), '%.2f' % (cpu * 1e6 / rout) if rout else 'na',
                     '%.1f' % kb, r['uac_cpu_pct'] if i == 0 else '', r['uas_cpu_pct'] if i == 0 else '',
                     r['softirq_cpu_pct'] if i == 0 else '', r['kthread_cpu_pct'] if i == 0 else '',
                     r['other_cpu_pct'] if i == 0 else '', r['udp_noports'] if i == 0 else '',
                     ('yes' if c_pass(r) else 'NO') if i == 0 else ''))

print()
print('## Call-rate steps (short calls, no RTP)')
hdr = ('system', 'rate', 'calls', 'ok', 'failed', 'unfinished', 'fail%', 'achieved/s', 'setup_p50',
       'setup_p99', 'setup_max', 'cpu%', 'cpu_ms/call', 'uac%', 'uas%', 'si%', 'kthr%', 'other%', 'pass')
fmt = '%-10s %5s %6s %6s %6s %10s %7s %10s %9s %9s %9s %6s %11s %6s %6s %6s %6s %7s %4s'
print(fmt % hdr)
for r in rate:
    wall = num(r['wall_s'], 1)
    cpu = num(r['relay_cpu_s'])
    ok = int(r['ok'])
    print(fmt % ('ringfort' if r['system'] == 'ringfort' else 'kam+rtpe', r['load'], r['m'], ok, r['failed'],
                 r['unfinished'], r['fail_pct'], r['achieved_per_s'], r['setup_p50_ms'], r['setup_p99_ms'],
                 r['setup_max_ms'], '%.1f' % (cpu * 100 / wall), '%.3f' % (cpu * 1000 / ok) if ok else 'na',
                 r['uac_cpu_pct'], r['uas_cpu_pct'], r['softirq_cpu_pct'], r['kthread_cpu_pct'], r['other_cpu_pct'],
                 'yes' if r_pass(r) else 'NO'))

# ---------------------------------------------------------------- summary per system
summ = {}
for s in systems:
    cs = [r for r in conc if r['system'] == s]
    rs = [r for r in rate if r['system'] == s]
    best_c = max((r for r in cs if c_pass(r)), key=lambda r: int(r['load']), default=None)
    best_r = max((r for r in rs if r_pass(r)), key=lambda r: int(r['load']), default=None)
    summ[s] = dict(best_c=best_c, best_r=best_r, conc={r['load']: r for r in cs},
                   rate={r['load']: r for r in rs})


def fmt_or(v, f='%s', dash='-'):
    return dash if v is None else f % v


def cpu_pkt(rows, which='sys'):
    """us per relayed packet summed over steps."""
    cpu = sum(num(r['rtpe_cpu_s'] if which == 'rtpe' else r['relay_cpu_s']) for r in rows)
    pk = sum(c_loss(r)[3] for r in rows)
    return cpu * 1e6 / pk if pk else None


print()
print('## Summary')
print(f'%-46s' % '' + ''.join('%22s' % NAME.get(s, s) for s in systems) + ('%16s' % 'ratio RF/peer' if len(systems) == 2 else ''))
lines = []


def row(label, vals, ratio=None):
    print('%-46s' % label + ''.join('%22s' % v for v in vals) + ('%16s' % ratio if ratio is not None else ''))


def ratio(a, b, f='%.2f'):
    return f % (a / b) if a is not None and b else '-'


def best_rate(s):
    b = summ[s]['best_r']
    return int(b['load']) if b else None


def best_conc(s):
    b = summ[s]['best_c']
    return int(b['load']) if b else None


two = len(systems) == 2 and systems[0] == 'ringfort'
row('highest calls/s with < %g %% failed' % max_fail,
    [fmt_or(best_rate(s)) for s in systems], ratio(best_rate('ringfort'), best_rate(systems[1])) if two else None)
for q in ('p50', 'p99'):
    vals = []
    for s in systems:
        b = summ[s]['best_r']
        vals.append(fmt_or(b and b[f'setup_{q}_ms'], '%s ms'))
    row(f'  setup time {q} at that rate', vals)
if two:
    common = [L for L in summ['ringfort']['rate'] if L in summ[systems[1]]['rate']
              and r_pass(summ['ringfort']['rate'][L]) and r_pass(summ[systems[1]]['rate'][L])]
    if common:
        L = max(common, key=int)
        for q in ('p50', 'p99'):
            a = num(summ['ringfort']['rate'][L][f'setup_{q}_ms'], None)
            b = num(summ[systems[1]]['rate'][L][f'setup_{q}_ms'], None)
            row(f'  setup time {q} at {L}/s (both pass)', [fmt_or(a, '%g ms'), fmt_or(b, '%g ms')], ratio(a, b))
        cpa = sum(num(summ['ringfort']['rate'][L]['relay_cpu_s']) for L in common) * 1000 / max(1, sum(int(summ['ringfort']['rate'][L]['ok']) for L in common))
        cpb = sum(num(summ[systems[1]]['rate'][L]['relay_cpu_s']) for L in common) * 1000 / max(1, sum(int(summ[systems[1]]['rate'][L]['ok']) for L in common))
        row('  CPU ms per call (rate steps both pass)', ['%.3f' % cpa, '%.3f' % cpb], ratio(cpa, cpb))
row('most concurrent relayed calls, 0 RTP loss', [fmt_or(best_conc(s)) for s in systems],
    ratio(best_conc('ringfort'), best_conc(systems[1])) if two else None)
for s in systems:
    pass
vals, vals_r = [], []
for s in systems:
    b = summ[s]['best_c']
    if b:
        g = groups(b)
        vals.append('%.1f %%' % (g[0][1] * 100 / num(b['wall_s'], 1)))
        vals_r.append('%.1f %%' % (g[1][1] * 100 / num(b['wall_s'], 1)) if len(g) > 1 else '')
    else:
        vals.append('-'); vals_r.append('')
row('  CPU (% of one core) over that step', vals)
if any(vals_r):
    row('    of which rtpengine', vals_r)
if two:
    peer = systems[1]
    common = [L for L in summ['ringfort']['conc'] if L in summ[peer]['conc']
              and c_pass(summ['ringfort']['conc'][L]) and c_pass(summ[peer]['conc'][L])]
    if common:
        ra = [summ['ringfort']['conc'][L] for L in common]
        rb = [summ[peer]['conc'][L] for L in common]
        a, b, c = cpu_pkt(ra), cpu_pkt(rb), cpu_pkt(rb, 'rtpe')
        lab = 'steps ' + '+'.join(sorted(common, key=int))
        row(f'CPU us per relayed packet ({lab})', ['%.2f' % a, '%.2f' % b], ratio(a, b))
        row('  vs rtpengine alone', ['', '%.2f' % c], ratio(a, c))
        L = max(common, key=int)
        ka = kb_per_call(summ['ringfort']['conc'][L], 'sys')
        kb = kb_per_call(summ[peer]['conc'][L], 'sys')
        kc = kb_per_call(summ[peer]['conc'][L], 'rtpe')
        row(f'memory kB per relayed call (at {L} calls)', ['%.1f' % ka, '%.1f' % kb], ratio(ka, kb))
        row('  vs rtpengine alone', ['', '%.1f' % kc], ratio(ka, kc))
else:
    for s in systems:
        b = summ[s]['best_c']
        if b:
            row(f'{NAME.get(s, s)}: us/pkt, kB/call at {b["load"]} calls',
                ['%.2f / %.1f' % (cpu_pkt([b]), kb_per_call(b, 'sys'))])

if 'ringfort' in summ:
    print()
    print('## Goals (Ringfort, this machine)')
    b = summ['ringfort']['best_c']
    n = best_conc('ringfort')
    print('  >= 1,000 concurrent relayed G.711 calls without loss: %s (%s)' % (
        'MET' if n and n >= 1000 else 'NOT MET', f'{n} calls' if n else 'no step passed'))
    if two and common:
        a, c = cpu_pkt(ra), cpu_pkt(rb, 'rtpe')
        print('  CPU per relayed packet <= rtpengine\'s: %s (%.2f vs %.2f us, whole Ringfort vs rtpengine alone)' % (
            'MET' if a <= c else 'NOT MET', a, c))
    if b:
        kb = kb_per_call(b, 'sys')
        print('  RSS <= 0.3 MB per relayed call: %s (%.1f kB at %s calls)' % ('MET' if kb <= 307.2 else 'NOT MET', kb, b['load']))
