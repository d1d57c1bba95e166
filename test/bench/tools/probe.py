#!/usr/bin/env python3
# probe.py: interleaved pgbench -S runs through the targets of a held bench
# setup (`go run ./test/bench -hold FILE`), each measured two ways:
#   run_*: over the whole run, as the bench does (postmaster tree CPU and
#          minor faults, machine busy time), per transaction;
#   the rest: over a window from 1.5 s after the start to 1.5 s before the
#          end: the live backends' /proc/PID/sched and minflt, the relay's
#          and pgbench's threads, /proc/stat, /proc/interrupts, TCP counters.
# Add a target by appending NAME_port= and NAME_pid= lines to FILE (e.g. a
# second PgBouncer with server_lifetime = 1: fresh server connections per run).
# --extra runs a command during the window ({T}: its length, {pids}: backends).
# Output: one JSON object per run.
import subprocess, time, os, sys, re, json, argparse
ap = argparse.ArgumentParser()
ap.add_argument('--targets', default='direct,pgbouncer,pgproxy')
ap.add_argument('--rounds', type=int, default=3)
ap.add_argument('--T', type=int, default=8)
ap.add_argument('-c', type=int, default=16)
ap.add_argument('-M', default='simple')
ap.add_argument('--extra', default='')
ap.add_argument('--setup', default='/tmp/i20/setup.env')
args = ap.parse_args()
env = dict(l.strip().split('=',1) for l in open(args.setup) if '=' in l)
pm = int(env['postmaster'])
HZ = os.sysconf('SC_CLK_TCK')

def children(ppid):
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit(): continue
        try:
            st = open(f'/proc/{d}/stat').read()
            f = st[st.rindex(')')+2:].split()
            if int(f[1]) == ppid:
                cmd = open(f'/proc/{d}/cmdline').read()
                out.append((int(d), cmd))
        except Exception: pass
    return out

def sched(pid):
    d = {}
    try:
        st = open(f'/proc/{pid}/stat').read()
        f = st[st.rindex(')')+2:].split()
        d['minflt'] = float(f[7]); d['majflt'] = float(f[9])
        d['cpu_ticks'] = float(f[11]) + float(f[12])
        for l in open(f'/proc/{pid}/sched'):
            m = re.match(r'(\S+)\s+:\s+([-\d.]+)', l)
            if m: d[m.group(1)] = float(m.group(2))
    except Exception: return None
    return d

def tasks_sched(pid):
    tot = {}
    try:
        for t in os.listdir(f'/proc/{pid}/task'):
            try:
                for l in open(f'/proc/{pid}/task/{t}/sched'):
                    m = re.match(r'(\S+)\s+:\s+([-\d.]+)', l)
                    if m: tot[m.group(1)] = tot.get(m.group(1), 0) + float(m.group(2))
            except Exception: pass
    except Exception: pass
    return tot

def statline():
    l = open('/proc/stat').read().split('\n')
    cpu = [int(x) for x in l[0].split()[1:]]
    ctxt = [int(x.split()[1]) for x in l if x.startswith('ctxt')][0]
    return cpu, ctxt

def interrupts():
    tot = {}
    for l in open('/proc/interrupts').read().split('\n')[1:]:
        p = l.split()
        if not p: continue
        k = p[0].rstrip(':')
        n = sum(int(x) for x in p[1:3] if x.isdigit())
        tot[k] = n
    return tot

KEYS = ['minflt', 'majflt', 'cpu_ticks', 'se.sum_exec_runtime', 'nr_switches', 'nr_voluntary_switches', 'nr_involuntary_switches', 'se.nr_migrations', 'se.statistics.wait_sum', 'wait_sum', 'nr_wakeups', 'nr_wakeups_remote', 'nr_wakeups_migrate', 'nr_wakeups_local', 'nr_wakeups_affine']

def netstat():
    d = {}
    for fn in ('/proc/net/snmp', '/proc/net/netstat'):
        ls = open(fn).read().split('\n')
        for i in range(0, len(ls) - 1, 2):
            h, v = ls[i].split(), ls[i + 1].split()
            if not h: continue
            for k, x in zip(h[1:], v[1:]):
                try: d[h[0].rstrip(':') + '.' + k] = int(x)
                except ValueError: pass
    return d

def snap(relay_pid, pgb_pid):
    bes = [p for p, c in children(pm) if 'postgres: postgres postgres 127.0.0.1' in c.replace('\0', ' ')]
    s = {'t': time.time(), 'be': {p: sched(p) for p in bes}, 'stat': statline(), 'irq': interrupts(), 'net': netstat()}
    s['relay'] = tasks_sched(relay_pid) if relay_pid else {}
    s['pgbench'] = tasks_sched(pgb_pid)
    return s

def tree():
    # bench-style: postmaster utime+stime+cutime+cstime + live children's utime+stime; also minflt
    st = open(f'/proc/{pm}/stat').read(); f = st[st.rindex(')')+2:].split()
    cpu = sum(int(x) for x in f[11:15]); flt = int(f[7]) + int(f[8])
    for d, c in children(pm):
        try:
            st = open(f'/proc/{d}/stat').read(); g = st[st.rindex(')')+2:].split()
            cpu += int(g[11]) + int(g[12]); flt += int(g[7])
        except Exception: pass
    return cpu / HZ, flt

def run(target, rnd):
    port = env[f'{target}_port']; rpid = int(env.get(f'{target}_pid', 0))
    cmd = ['/usr/lib/postgresql/15/bin/pgbench', '-n', '-S', '-M', args.M, '-c', str(args.c), '-j', str(min(args.c, 2)), '-T', str(args.T), '-P', '1', '-h', '127.0.0.1', '-p', port, '-U', 'postgres', 'postgres']
    e = dict(os.environ, PGSSLMODE='disable', PGGSSENCMODE='disable')
    w0 = tree(); m0 = statline()
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    time.sleep(1.5)
    a = snap(rpid, p.pid)
    ta = time.time() - t0
    ex = None
    if args.extra:
        pids = ','.join(str(x) for x in a['be'])
        ex = subprocess.run(args.extra.format(pids=pids, relay=rpid, T=args.T - 3), shell=True, capture_output=True, text=True)
    else:
        time.sleep(args.T - 3)
    b = snap(rpid, p.pid)
    tb = time.time() - t0
    out, err = p.communicate()
    time.sleep(0.3)
    w1 = tree(); m1 = statline()
    prog = [(float(m.group(1)), float(m.group(2))) for m in re.finditer(r'progress: ([\d.]+) s, ([\d.]+) tps', err)]
    # transactions in (ta, tb): integrate per-second tps
    tx = 0.0
    for end, tps in prog:
        lo, hi = max(end - 1, ta), min(end, tb)
        if hi > lo: tx += tps * (hi - lo)
    tps = float(re.search(r'tps = ([\d.]+)', out).group(1))
    common = [x for x in a['be'] if x in b['be'] and a['be'][x] and b['be'][x]]
    def bsum(k, s): return sum(s['be'][x].get(k, 0) for x in common)
    r = {'target': target, 'round': rnd, 'tps': tps, 'nbe': len(common), 'tx': tx}
    nproc = int(re.search(r'number of transactions actually processed: (\d+)', out).group(1))
    r['run_pg_us'] = (w1[0] - w0[0]) / nproc * 1e6
    r['run_mach_us'] = sum(m1[0][i] - m0[0][i] for i in range(8) if i not in (3, 4)) / HZ / nproc * 1e6
    r['run_pg_minflt_per_q'] = (w1[1] - w0[1]) / nproc
    r['run_pg_minflt'] = float(w1[1] - w0[1])
    for k in KEYS:
        r['be.' + k] = (bsum(k, b) - bsum(k, a)) / tx
    for k in ['se.sum_exec_runtime', 'nr_voluntary_switches', 'nr_involuntary_switches', 'se.nr_migrations', 'nr_wakeups', 'nr_wakeups_remote']:
        r['relay.' + k] = (b['relay'].get(k, 0) - a['relay'].get(k, 0)) / tx
        r['pgbench.' + k] = (b['pgbench'].get(k, 0) - a['pgbench'].get(k, 0)) / tx
    ca, cb = a['stat'], b['stat']
    busy = sum(cb[0][i] - ca[0][i] for i in range(8) if i not in (3, 4)) / HZ
    r['mach_us'] = busy / tx * 1e6
    r['steal_us'] = (cb[0][7] - ca[0][7]) / HZ / tx * 1e6
    r['idle_pct'] = 100 * ((cb[0][3] - ca[0][3]) / HZ) / (2 * (b['t'] - a['t']))
    r['pg_us'] = r['be.se.sum_exec_runtime'] * 1e3
    r['relay_us'] = r['relay.se.sum_exec_runtime'] * 1e3
    r['pgbench_us'] = r['pgbench.se.sum_exec_runtime'] * 1e3
    r['rest_us'] = r['mach_us'] - r['pg_us'] - r['relay_us'] - r['pgbench_us']
    r['mach_cs'] = (cb[1] - ca[1]) / tx
    r['mach_irq_soft_us'] = ((cb[0][5] - ca[0][5]) + (cb[0][6] - ca[0][6])) / HZ / tx * 1e6
    for k in ['LOC', 'RES', 'CAL', 'TLB', 'IWI', 'NMI']:
        if k in a['irq']: r['irq.' + k] = (b['irq'][k] - a['irq'][k]) / tx
    for k in b['net']:
        dv = b['net'][k] - a['net'].get(k, 0)
        if dv and k.split('.')[0] in ('Tcp', 'TcpExt') and abs(dv) / tx > 0.005: r['net.' + k] = dv / tx
    if ex is not None: r['extra'] = ex.stdout[-3000:] + ex.stderr[-2000:]
    return r

res = []
tg = args.targets.split(',')
for rnd in range(args.rounds):
    for k in range(len(tg)):
        t = tg[(k + rnd) % len(tg)]
        r = run(t, rnd)
        res.append(r)
        print(json.dumps(r), flush=True)
        time.sleep(0.5)
