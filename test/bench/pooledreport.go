package main

import (
	"fmt"
	"math"
	"strings"
)

// PooledReport is what the pooled part of a run measured (issue 17).
type PooledReport struct {
	Table *Table                // the pooled cases; nil when no pooled target started
	Idle  map[string]IdleResult // by target: idle clients in transaction mode
	Large []LargeResult
}

// poolModes pairs each pool mode with its PgBouncer and pgproxy targets.
var poolModes = []struct{ mode, bouncer, proxy string }{
	{"session", PgBouncerSession, PgproxySession},
	{"transaction", PgBouncerTxn, PgproxyTxn},
}

// Markdown is the pooled section's tables and checks (without heading).
func (p *PooledReport) Markdown(o *options) string {
	var b strings.Builder
	if p.Table != nil {
		b.WriteString(p.TableMarkdown())
		b.WriteString("\n")
		b.WriteString(p.Table.MachineMarkdown())
		b.WriteString("\n")
	}
	b.WriteString(p.IdleMarkdown(o))
	b.WriteString("\n")
	b.WriteString(p.LargeMarkdown(o))
	b.WriteString("\n")
	b.WriteString(checksMarkdownOf("issue 17", p.Checks(o)))
	return b.String()
}

// TableMarkdown renders the pooled cases, one row per case and pool mode.
func (p *PooledReport) TableMarkdown() string {
	var b strings.Builder
	b.WriteString("| pgbench `-S` | pool mode | TPS PgBouncer | TPS pgproxy | pgproxy / PgBouncer | latency ms PgBouncer / pgproxy | CPU s per 100k q PgBouncer / pgproxy | CPU pgproxy / PgBouncer | context switches per q PgBouncer / pgproxy | failed tx PgBouncer / pgproxy |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	t := p.Table
	for _, c := range t.Cases {
		for _, m := range poolModes {
			pb, okB := t.summary(c, m.bouncer)
			px, okP := t.summary(c, m.proxy)
			if !okB && !okP {
				continue
			}
			bTPS, bLat, bCPU, bCS, bFailed := "–", "–", "–", "–", "–"
			switch {
			case naPooled(c, m.bouncer):
				bTPS, bLat, bCPU, bCS, bFailed = "n/a¹", "n/a", "n/a", "n/a", "n/a"
			case okB:
				bTPS, bLat, bCPU, bCS, bFailed = fnum(pb.TPS, 0), fnum(pb.LatencyMS, 3), fnum(pb.CPUPer100k, 2), fnum(pb.SwitchesPQ, 2), failedCell(pb)
			default:
				pb = Summary{TPS: math.NaN(), CPUPer100k: math.NaN()}
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s / %s | %s / %s | %s | %s / %s | %s / %s |\n",
				c.Name(), m.mode, bTPS, fnum(px.TPS, 0), ratio(px.TPS, pb.TPS),
				bLat, fnum(px.LatencyMS, 3), bCPU, fnum(px.CPUPer100k, 2), ratio(px.CPUPer100k, pb.CPUPer100k),
				bCS, fnum(px.SwitchesPQ, 2), bFailed, failedCell(px))
		}
	}
	if hasPrepared(t.Cases) {
		b.WriteString("\n¹ not run: PgBouncer 1.18 has no prepared statement support in transaction mode (a statement exists only on the server that prepared it, so `-M prepared` fails as soon as a client lands on another server).\n")
	}
	return b.String()
}

func hasPrepared(cs []Case) bool {
	for _, c := range cs {
		if c.Mode == "prepared" {
			return true
		}
	}
	return false
}

// failedCell is a summary's failed transactions, with aborted runs and runs
// without a summary.
func failedCell(s Summary) string {
	if s.N == 0 && s.Errors == 0 {
		return "–"
	}
	out := fmt.Sprint(s.Failed)
	if s.Aborted > 0 {
		out += fmt.Sprintf(" (%d aborted)", s.Aborted)
	}
	if s.Errors > 0 {
		out += fmt.Sprintf(" (%d no summary)", s.Errors)
	}
	return out
}

// IdleMarkdown renders the idle clients of each transaction-mode relay.
func (p *PooledReport) IdleMarkdown(o *options) string {
	if len(p.Idle) == 0 {
		return "Idle clients in transaction mode: not measured in this run.\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Idle clients in transaction mode (`pool.size` / `default_pool_size` %d): each client logged in (SCRAM) and ran `SELECT 1`, then sat idle holding no server; RSS (`VmRSS`) after one warm-up client, and the highest of four readings 0.5 s apart with all of them open.\n\n", o.poolSize)
	b.WriteString("| relay | idle clients | RSS before KiB | RSS with the clients KiB | KiB per idle client |\n|---|---:|---:|---:|---:|\n")
	for _, name := range []string{PgBouncerTxn, PgproxyTxn} {
		r, ok := p.Idle[name]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %.2f |\n", name, r.Sessions, r.BeforeKiB, r.WithKiB, r.PerSessionKiB())
	}
	return b.String()
}

// LargeMarkdown renders the many-clients runs.
func (p *PooledReport) LargeMarkdown(o *options) string {
	if len(p.Large) == 0 {
		return "Many clients in transaction mode: not measured in this run.\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Many clients in transaction mode: pgbench `-n -S -M simple -c %d -j %d -l` (SCRAM logins) through a relay started for it with %d server connections (pool filled by a 2 s warm-up first), one run each. pgbench's `-T` also counts the time its threads take to connect their clients one after the other (a few ms of PBKDF2 each), so `-T` is %d s plus that phase as estimated from the warm-up; *run s* is the part after it (transactions / TPS). Latency percentiles are over every transaction pgbench logged (`--log`: its latency, which includes the wait for a server); *pool wait p99* is the bucket of pgproxy's `pgproxy_pool_wait_seconds` histogram (bounds ×4 apart) holding the 99th percentile of the run's waits (PgBouncer reports no distribution).\n\n",
		o.largeClients, o.largeThreads, o.largeServers, int(o.largeDuration.Seconds()))
	b.WriteString("| relay | `-T` s | connecting the clients s | run s | TPS | latency ms p50 / p99 / max | pool wait p99 | failed tx | aborted clients | CPU s per 100k q | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range p.Large {
		if r.Sample.Processed == 0 {
			fmt.Fprintf(&b, "| %s | %s | – | – | – | – | – | – | – | – | – |\n", r.Target, fnum(r.T.Seconds(), 0))
			continue
		}
		wait := "–"
		if r.HasWait {
			wait = fmt.Sprintf("%s – %s", seconds(r.WaitLo), seconds(r.WaitHi))
		}
		cpu := math.NaN()
		if r.Sample.HasCPU {
			cpu = r.Sample.CPU.Seconds() / float64(r.Sample.Processed) * 100000
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s / %s / %s | %s | %d | %d | %s | %s |\n", r.Target, fnum(r.T.Seconds(), 0),
			fnum(r.Sample.ConnectMS/1000, 1), fnum(float64(r.Sample.Processed)/r.Sample.TPS, 1), fnum(r.Sample.TPS, 0),
			fnum(r.Latency.P50, 1), fnum(r.Latency.P99, 1), fnum(r.Latency.Max, 1), wait,
			r.Sample.Failed, r.Sample.AbortedClients, fnum(cpu, 2), fnum(float64(r.PeakKiB)/1024, 0))
	}
	for _, r := range p.Large {
		if r.Err != nil {
			fmt.Fprintf(&b, "\n%s: %s", r.Target, strings.ReplaceAll(firstLine(r.Err), "|", "\\|"))
			if pr := progressSummary(r.Sample.Progress); pr != "" {
				fmt.Fprintf(&b, "; pgbench `-P 5` said: %s", pr)
			}
			if n := r.Sample.AbortedClients; n > 0 && r.Sample.Processed == 0 {
				fmt.Fprintf(&b, "; %d clients aborted", n)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// seconds is a histogram bound for humans: "0.4 ms", "1.6 s", "+Inf".
func seconds(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case v == 0:
		return "0"
	case v < 1:
		return fmt.Sprintf("%.4g ms", v*1000)
	default:
		return fmt.Sprintf("%.4g s", v)
	}
}

// pooledTPSCheck is "pgproxy ≥ 1.0× PgBouncer TPS" over the cases that
// match, in one pool mode (or both when mode is ""), with the CPU ratio
// alongside.
func (p *PooledReport) pooledTPSCheck(target, mode string, match func(Case) bool) Check {
	ch := Check{Target: target}
	if p.Table == nil {
		return ch
	}
	var parts []string
	ok, seen := true, false
	for _, c := range p.Table.Cases {
		if !match(c) {
			continue
		}
		for _, m := range poolModes {
			if mode != "" && m.mode != mode {
				continue
			}
			pb, okB := p.Table.summary(c, m.bouncer)
			px, okP := p.Table.summary(c, m.proxy)
			if !okB || !okP || math.IsNaN(pb.TPS) || math.IsNaN(px.TPS) {
				continue
			}
			seen = true
			r := px.TPS / pb.TPS
			ok = ok && r >= 1.0
			label := fmt.Sprintf("`-c%d` %s", c.Clients, c.Mode)
			if mode == "" {
				label = m.mode
			}
			parts = append(parts, fmt.Sprintf("%s %.2f× (CPU %s)", label, r, ratio(px.CPUPer100k, pb.CPUPer100k)))
		}
	}
	ch.Result = strings.Join(parts, ", ")
	if seen {
		ch.OK = okp(ok)
	}
	return ch
}

// Checks evaluates issue 17's targets.
func (p *PooledReport) Checks(o *options) []Check {
	connect := func(c Case) bool { return c.Connect && c.Clients == 16 && c.MD5 }
	steady := func(c Case) bool { return !c.Connect && (c.Clients == 16 || c.Clients == 64) }
	out := []Check{
		p.pooledTPSCheck("`-C -c16` (md5 role; with SCRAM pgbench's PBKDF2 sets the pace): pgproxy ≥ 1.0× PgBouncer TPS, same pool mode (CPU per connection and query pgproxy / PgBouncer)", "", connect),
		p.pooledTPSCheck("`-S -c16/-c64`, session mode: pgproxy ≥ 1.0× PgBouncer TPS (CPU per query pgproxy / PgBouncer)", "session", steady),
		p.pooledTPSCheck("`-S -c16/-c64`, transaction mode: pgproxy ≥ 1.0× PgBouncer TPS (CPU per query pgproxy / PgBouncer; `-M prepared` n/a)", "transaction", steady),
	}
	{
		ch := Check{Target: fmt.Sprintf("%d idle clients on %d servers, transaction mode: ≤ 2 KiB RSS per idle client (pgproxy; PgBouncer alongside)", o.pooledIdle, o.poolSize)}
		if px, ok := p.Idle[PgproxyTxn]; ok && px.Sessions > 0 {
			ch.Result = fmt.Sprintf("pgproxy %.2f KiB", px.PerSessionKiB())
			if pb, ok := p.Idle[PgBouncerTxn]; ok {
				ch.Result += fmt.Sprintf(", PgBouncer %.2f KiB", pb.PerSessionKiB())
			}
			ch.OK = okp(px.PerSessionKiB() <= 2)
		}
		if o.pooledIdle != 2000 {
			ch.Result = strings.TrimPrefix(ch.Result+"; the issue asks for 2 000 clients", "; ")
		}
		out = append(out, ch)
	}
	{
		ch := Check{Target: fmt.Sprintf("%d clients on %d servers, `-S` for %d s, transaction mode: 0 failed transactions (pgproxy; p99 reported)", o.largeClients, o.largeServers, int(o.largeDuration.Seconds()))}
		var parts []string
		for _, r := range p.Large {
			if r.Sample.Processed == 0 {
				parts = append(parts, r.Target+": no result")
				if r.Target == PgproxyTxn {
					ch.OK = okp(false)
				}
				continue
			}
			parts = append(parts, fmt.Sprintf("%s: %d failed, %d aborted clients, p99 %s ms", r.Target, r.Sample.Failed, r.Sample.AbortedClients, fnum(r.Latency.P99, 1)))
			if r.Target == PgproxyTxn {
				ch.OK = okp(r.Sample.Failed == 0 && r.Sample.AbortedClients == 0 && !r.Sample.Aborted)
			}
		}
		if len(p.Large) > 0 && (o.largeClients != 10000 || o.largeServers != 50 || o.largeDuration.Seconds() != 30) {
			parts = append(parts, "scaled down from the issue's 10 000 clients on 50 servers for 30 s")
		}
		ch.Result = strings.Join(parts, "; ")
		out = append(out, ch)
	}
	return out
}

// progressSummary tells a run's -P lines in one sentence: how long it ran
// at what rate, and from when it did nothing.
func progressSummary(ps []Progress) string {
	if len(ps) == 0 {
		return ""
	}
	var parts []string
	for i := 0; i < len(ps); {
		j := i
		stalled := ps[i].TPS == 0
		sum := 0.0
		for j < len(ps) && (ps[j].TPS == 0) == stalled {
			sum += ps[j].TPS
			j++
		}
		from := 0.0
		if i > 0 {
			from = ps[i-1].At
		}
		if stalled {
			parts = append(parts, fmt.Sprintf("0 tps from %.0f to %.0f s", from, ps[j-1].At))
		} else {
			parts = append(parts, fmt.Sprintf("%.0f tps on average from %.0f to %.0f s", sum/float64(j-i), from, ps[j-1].At))
		}
		i = j
	}
	return strings.Join(parts, ", then ")
}
