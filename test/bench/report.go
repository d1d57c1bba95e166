package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Target names, in table order.
const (
	Direct    = "direct"
	PgBouncer = "PgBouncer"
	Pgproxy   = "pgproxy"
	PgproxyB  = "pgproxy-B" // -compare

	// Pooled targets (issue 17): auth.mode proxy / auth_type scram-sha-256.
	PgBouncerSession = "PgBouncer-session"
	PgproxySession   = "pgproxy-session"
	PgBouncerTxn     = "PgBouncer-txn"
	PgproxyTxn       = "pgproxy-txn"
)

// pooledTargets are the pooled targets in table order.
var pooledTargets = []string{PgBouncerSession, PgproxySession, PgBouncerTxn, PgproxyTxn}

// Sample is one pgbench run against one target.
type Sample struct {
	Result
	CPU    time.Duration // CPU the relay process used during the run (0 for direct)
	HasCPU bool
	// Switches are the relay's context switches (all threads) during the run.
	Switches int64
	// Machine is the busy CPU time of the whole machine (every process:
	// pgbench, PostgreSQL, the relay) during the run; HasMachine says it
	// was read.
	Machine    time.Duration
	HasMachine bool
	// MachineSwitches are the context switches of the whole machine
	// during the run (with HasMachine).
	MachineSwitches int64
	// Server is the CPU of the replica's PostgreSQL (the postmaster and
	// its exited children: the run's backends) during the run.
	Server time.Duration
	Err    error // the run produced no summary
}

// Summary is the median of a target's samples for one case.
type Summary struct {
	N          int     // runs with a summary
	Errors     int     // runs without one
	Aborted    int     // runs where pgbench exited non-zero
	TPS        float64 // median
	LatencyMS  float64 // median
	CPUPer100k float64 // median CPU seconds per 100 000 transactions; NaN without CPU
	SwitchesPQ float64 // median context switches per transaction; NaN without CPU
	MachinePQ  float64 // median machine-wide busy CPU µs per transaction; NaN without it
	ClientPQ   float64 // median pgbench CPU µs per transaction
	ServerPQ   float64 // median PostgreSQL (replica) CPU µs per transaction
	MachineCS  float64 // median machine-wide context switches per transaction
	Failed     int64   // sum over runs
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

func summarize(samples []Sample) Summary {
	var sum Summary
	var tps, lat, cpu, sw, mach, cli, srv, mcs []float64
	for _, s := range samples {
		if s.Err != nil {
			sum.Errors++
			continue
		}
		sum.N++
		if s.Aborted {
			sum.Aborted++
		}
		sum.Failed += s.Failed
		tps = append(tps, s.TPS)
		lat = append(lat, s.LatencyMS)
		if s.HasCPU && s.Processed > 0 {
			cpu = append(cpu, s.CPU.Seconds()/float64(s.Processed)*100000)
			sw = append(sw, float64(s.Switches)/float64(s.Processed))
		}
		if s.HasMachine && s.Processed > 0 {
			mach = append(mach, float64(s.Machine.Microseconds())/float64(s.Processed))
			srv = append(srv, float64(s.Server.Microseconds())/float64(s.Processed))
			mcs = append(mcs, float64(s.MachineSwitches)/float64(s.Processed))
		}
		if s.ClientCPU > 0 && s.Processed > 0 {
			cli = append(cli, float64(s.ClientCPU.Microseconds())/float64(s.Processed))
		}
	}
	sum.TPS, sum.LatencyMS, sum.CPUPer100k, sum.SwitchesPQ, sum.MachinePQ = median(tps), median(lat), median(cpu), median(sw), median(mach)
	sum.ClientPQ, sum.ServerPQ, sum.MachineCS = median(cli), median(srv), median(mcs)
	return sum
}

// Table holds every sample by case and target.
type Table struct {
	Cases   []Case
	Targets []string // in table order; PgBouncer may be absent
	Samples map[string]map[string][]Sample
}

func newTable(cases []Case, targets []string) *Table {
	t := &Table{Cases: cases, Targets: targets, Samples: map[string]map[string][]Sample{}}
	for _, c := range cases {
		t.Samples[c.Name()] = map[string][]Sample{}
	}
	return t
}

func (t *Table) add(c Case, target string, s Sample) {
	t.Samples[c.Name()][target] = append(t.Samples[c.Name()][target], s)
}

func (t *Table) summary(c Case, target string) (Summary, bool) {
	ss, ok := t.Samples[c.Name()][target]
	if !ok {
		return Summary{}, false
	}
	return summarize(ss), true
}

func fnum(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// Markdown renders the results table. Missing targets show "–".
func (t *Table) Markdown() string {
	var b strings.Builder
	b.WriteString("| pgbench `-S` | TPS direct | TPS PgBouncer | TPS pgproxy | pgproxy / direct | pgproxy / PgBouncer | latency ms direct / PgBouncer / pgproxy | pgproxy added latency µs | CPU s per 100k q PgBouncer | CPU s per 100k q pgproxy | context switches per q PgBouncer / pgproxy | failed tx direct / PgBouncer / pgproxy |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	na := Summary{TPS: math.NaN(), LatencyMS: math.NaN(), CPUPer100k: math.NaN(), SwitchesPQ: math.NaN()}
	for _, c := range t.Cases {
		d, _ := t.summary(c, Direct)
		pb, okB := t.summary(c, PgBouncer)
		px, _ := t.summary(c, Pgproxy)
		if !okB {
			pb = na
		}
		failed := func(s Summary, ok bool) string {
			if !ok {
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
		added := math.NaN()
		if !math.IsNaN(px.LatencyMS) && !math.IsNaN(d.LatencyMS) {
			added = (px.LatencyMS - d.LatencyMS) * 1000
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s | %s / %s / %s | %s | %s | %s | %s / %s | %s / %s / %s |\n",
			c.Name(),
			fnum(d.TPS, 0), fnum(pb.TPS, 0), fnum(px.TPS, 0),
			ratio(px.TPS, d.TPS), ratio(px.TPS, pb.TPS),
			fnum(d.LatencyMS, 3), fnum(pb.LatencyMS, 3), fnum(px.LatencyMS, 3),
			signed(added),
			fnum(pb.CPUPer100k, 2), fnum(px.CPUPer100k, 2),
			fnum(pb.SwitchesPQ, 2), fnum(px.SwitchesPQ, 2),
			failed(d, true), failed(pb, okB), failed(px, true))
	}
	return b.String()
}

func signed(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%+.0f", v)
}

// Check is one target of issue 8 and whether the run met it.
type Check struct {
	Target string
	Result string
	OK     *bool // nil: not measured
}

func (c Check) mark() string {
	switch {
	case c.OK == nil:
		return "not measured"
	case *c.OK:
		return "met"
	default:
		return "**not met**"
	}
}

func okp(b bool) *bool { return &b }

// tpsCheck is "pgproxy ≥ 1.0× PgBouncer TPS" over the -c clients cases
// (not -C).
func (t *Table) tpsCheck(clients int, target string) Check {
	var parts []string
	ok, seen := true, false
	for _, c := range t.Cases {
		if c.Clients != clients || c.Connect {
			continue
		}
		pb, okB := t.summary(c, PgBouncer)
		px, _ := t.summary(c, Pgproxy)
		if !okB || math.IsNaN(pb.TPS) || math.IsNaN(px.TPS) {
			continue
		}
		seen = true
		r := px.TPS / pb.TPS
		ok = ok && r >= 1.0
		parts = append(parts, fmt.Sprintf("%s %.2f×", c.Mode, r))
	}
	ch := Check{Target: target, Result: strings.Join(parts, ", ")}
	if seen {
		ch.OK = okp(ok)
	}
	return ch
}

// Checks evaluates the issue 8 targets on the medians.
func (t *Table) Checks(idle *IdleResult) []Check {
	var out []Check
	// -c16, all three protocols: pgproxy >= 1.0x PgBouncer.
	out = append(out, t.tpsCheck(16, "`-S -c16`, every protocol: pgproxy ≥ 1.0× PgBouncer TPS"))
	// CPU per 100k queries pgproxy <= PgBouncer, every case.
	{
		var worse []string
		n, seen := 0, false
		for _, c := range t.Cases {
			pb, okB := t.summary(c, PgBouncer)
			px, _ := t.summary(c, Pgproxy)
			if !okB || math.IsNaN(pb.CPUPer100k) || math.IsNaN(px.CPUPer100k) {
				continue
			}
			seen = true
			n++
			if px.CPUPer100k > pb.CPUPer100k {
				worse = append(worse, fmt.Sprintf("`%s` %.2f vs %.2f", c.Name(), px.CPUPer100k, pb.CPUPer100k))
			}
		}
		res := fmt.Sprintf("%d of %d cases at or below PgBouncer", n-len(worse), n)
		if len(worse) > 0 {
			res += "; above: " + strings.Join(worse, ", ")
		}
		ch := Check{Target: "CPU s per 100k queries: pgproxy ≤ PgBouncer", Result: res}
		if seen {
			ch.OK = okp(len(worse) == 0)
		}
		out = append(out, ch)
	}
	// -c1 added latency <= 40 us, without -C.
	{
		var parts []string
		ok, seen := true, false
		for _, c := range t.Cases {
			if c.Clients != 1 || c.Connect {
				continue
			}
			d, _ := t.summary(c, Direct)
			px, _ := t.summary(c, Pgproxy)
			if math.IsNaN(d.LatencyMS) || math.IsNaN(px.LatencyMS) {
				continue
			}
			seen = true
			added := (px.LatencyMS - d.LatencyMS) * 1000
			ok = ok && added <= 40
			parts = append(parts, fmt.Sprintf("%s %+.0f µs", c.Mode, added))
		}
		ch := Check{Target: "`-c1` added latency ≤ 40 µs over direct", Result: strings.Join(parts, ", ")}
		if seen {
			ch.OK = okp(ok)
		}
		out = append(out, ch)
	}
	// -c64: no failed transactions through pgproxy.
	{
		var parts []string
		ok, seen := true, false
		for _, c := range t.Cases {
			if c.Clients != 64 {
				continue
			}
			px, _ := t.summary(c, Pgproxy)
			seen = true
			bad := px.Failed > 0 || px.Aborted > 0 || px.Errors > 0
			ok = ok && !bad
			parts = append(parts, fmt.Sprintf("%s: %d failed, %d aborted runs, %d runs without summary", c.Name(), px.Failed, px.Aborted, px.Errors))
		}
		ch := Check{Target: "`-c64`: no failed transactions (pgproxy)", Result: strings.Join(parts, "; ")}
		if seen {
			ch.OK = okp(ok)
		}
		out = append(out, ch)
	}
	out = append(out, t.tpsCheck(64, "`-c64`: pgproxy ≥ 1.0× PgBouncer TPS"))
	// idle session RSS.
	{
		ch := Check{Target: "idle session ≤ 32 KiB RSS (pgproxy)"}
		if idle != nil && idle.Sessions > 0 {
			ch.Result = fmt.Sprintf("%.1f KiB per session (%d sessions: %d → %d KiB)", idle.PerSessionKiB(), idle.Sessions, idle.BeforeKiB, idle.WithKiB)
			ch.OK = okp(idle.PerSessionKiB() <= 32)
		}
		out = append(out, ch)
	}
	// -C reported.
	{
		var parts []string
		for _, c := range t.Cases {
			if !c.Connect {
				continue
			}
			d, _ := t.summary(c, Direct)
			pb, okB := t.summary(c, PgBouncer)
			px, _ := t.summary(c, Pgproxy)
			if !okB {
				pb.TPS = math.NaN()
			}
			parts = append(parts, fmt.Sprintf("`%s`: pgproxy %s of direct, %s of PgBouncer", c.Name(), ratio(px.TPS, d.TPS), ratio(px.TPS, pb.TPS)))
		}
		ch := Check{Target: "`-C` (new connection per transaction) reported", Result: strings.Join(parts, "; ")}
		if len(parts) > 0 {
			ch.OK = okp(true)
		}
		out = append(out, ch)
	}
	return out
}

func checksMarkdown(cs []Check) string { return checksMarkdownOf("issue 8", cs) }

func checksMarkdownOf(issue string, cs []Check) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| target (%s) | this run | |\n|---|---|---|\n", issue)
	for _, c := range cs {
		res := c.Result
		if res == "" {
			res = "–"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", c.Target, res, c.mark())
	}
	return b.String()
}

// CompareMarkdown renders the A/B table of -compare: pgproxy (A) against a
// second pgproxy binary (B) measured in the same rounds.
func (t *Table) CompareMarkdown(bin string, env []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "A/B: A = pgproxy, B = `%s`", bin)
	if len(env) > 0 {
		fmt.Fprintf(&b, " with `%s`", strings.Join(env, " "))
	}
	b.WriteString(", measured in the same rounds.\n\n")
	b.WriteString("| pgbench `-S` | TPS A | TPS B | B / A | B / PgBouncer | CPU s per 100k q A / B | context switches per q A / B |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range t.Cases {
		a, _ := t.summary(c, Pgproxy)
		x, _ := t.summary(c, PgproxyB)
		pb, okB := t.summary(c, PgBouncer)
		vsB := "–"
		if okB {
			vsB = ratio(x.TPS, pb.TPS)
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s / %s | %s / %s |\n", c.Name(), fnum(a.TPS, 0), fnum(x.TPS, 0), ratio(x.TPS, a.TPS), vsB,
			fnum(a.CPUPer100k, 2), fnum(x.CPUPer100k, 2), fnum(a.SwitchesPQ, 2), fnum(x.SwitchesPQ, 2))
	}
	return b.String()
}

// MachineMarkdown renders where the machine's CPU goes per query, for
// every target: on a saturated machine TPS is the machine's capacity
// divided by the first column, so it shows whether a relay costs the
// machine more than its own CPU (by making pgbench or PostgreSQL work or
// wake more per query).
func (t *Table) MachineMarkdown() string {
	var b strings.Builder
	b.WriteString("| pgbench `-S` | target | machine CPU µs per q | pgbench | PostgreSQL | relay | rest | machine context switches per q |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range t.Cases {
		if c.Clients < 16 {
			continue // an unsaturated machine: the per-process tick samples do not add up
		}
		for _, name := range t.Targets {
			s, ok := t.summary(c, name)
			if !ok {
				continue // not run (n/a)
			}
			relay := 0.0
			if !math.IsNaN(s.CPUPer100k) {
				relay = s.CPUPer100k * 10 // s per 100k q = 10 µs per q
			}
			relayCol := "–"
			if name != Direct {
				relayCol = fnum(relay, 1)
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s | %s | %s |\n", c.Name(), name, fnum(s.MachinePQ, 1), fnum(s.ClientPQ, 1), fnum(s.ServerPQ, 1), relayCol,
				fnum(s.MachinePQ-s.ClientPQ-s.ServerPQ-relay, 1), fnum(s.MachineCS, 2))
		}
	}
	return b.String()
}
