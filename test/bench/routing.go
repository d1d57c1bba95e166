package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The per-transaction routing part of the bench (issue 18): pgbench -S
// through pgproxy routing each transaction (routing.unit: transaction) at
// each consistency level, against pgproxy routing whole sessions (a read
// listener, the same transaction pool) and the replica directly; then a
// mixed read/write script through transaction routing at consistency
// session, with the share of its reads the replica served.

// Target names of the routing part.
const (
	RouteEventual = "tx-eventual" // pgproxy, routing.unit transaction, consistency eventual
	RouteSession  = "tx-session"
	RouteGlobal   = "tx-global"
	RouteSessions = "session-routed" // pgproxy, routing.unit session (read listener), pool.mode transaction
	DirectPrimary = "direct-primary" // the mixed script straight to the primary
)

// routingTargets are the -S targets in table order.
var routingTargets = []string{Direct, RouteSessions, RouteEventual, RouteSession, RouteGlobal}

// routingOptions are the routing part's flags.
type routingOptions struct {
	on      bool
	modes   []string
	clients int
	reads   int // read-only transactions per write transaction in the mixed script
	mixed   bool
}

// routingFlags registers the routing part's flags on fs; the returned
// func finishes them after fs.Parse (set: the flags given; quick: -quick).
func routingFlags(fs *flag.FlagSet, r *routingOptions) func(set map[string]bool, quick bool) error {
	var modes string
	fs.BoolVar(&r.on, "routing", true, "also measure per-transaction routing (issue 18): -S through routing.unit transaction at each consistency level vs session routing vs direct, and a mixed read/write script; -routing=false skips it")
	fs.StringVar(&modes, "routing-modes", "simple,prepared", "pgbench -M values of the routing -S cases (-quick: simple)")
	fs.IntVar(&r.clients, "routing-clients", 16, "pgbench -c of the routing cases")
	fs.IntVar(&r.reads, "mixed-reads", 4, "read-only transactions per TPC-B-like write transaction in the mixed script (pgbench script weights)")
	fs.BoolVar(&r.mixed, "mixed", true, "with -routing: also run the mixed read/write script")
	return func(set map[string]bool, quick bool) error {
		if quick && !set["routing-modes"] {
			modes = "simple"
		}
		var err error
		if r.modes, err = modeList(modes); err != nil {
			return fmt.Errorf("-routing-modes: %w", err)
		}
		if r.clients < 1 || r.reads < 1 {
			return fmt.Errorf("-routing-clients and -mixed-reads must be >= 1")
		}
		return nil
	}
}

func (r *routingOptions) cases() []Case {
	if !r.on {
		return nil
	}
	var cs []Case
	for _, m := range r.modes {
		cs = append(cs, Case{Mode: m, Clients: r.clients})
	}
	return cs
}

// mixedCase names the mixed script's row (its Mode is pgbench's -M).
func (r *routingOptions) mixedCase() Case { return Case{Mode: "simple", Clients: r.clients} }

// estimate is about how long the routing part takes.
func (r *routingOptions) estimate(o *options) time.Duration {
	if !r.on {
		return 0
	}
	runs := o.rounds * len(r.cases()) * len(routingTargets)
	if r.mixed {
		runs += o.rounds * 2
	}
	return time.Duration(runs)*(o.duration+2*time.Second) + 4*20*time.Second
}

// Routed is one reading of a pgproxy's per-transaction routing counters.
type Routed struct {
	Targets   map[string]float64 // pgproxy_transactions_routed_total by target
	Fallbacks float64            // pgproxy_consistency_fallbacks_total
	Waits     float64            // pgproxy_consistency_waits_seconds_count
}

var routedLine = regexp.MustCompile(`(?m)^pgproxy_transactions_routed_total\{target="([a-z_]+)"\} (\S+)$`)

// parseRouted reads the routing counters from the Prometheus text format.
func parseRouted(text string) Routed {
	r := Routed{Targets: map[string]float64{}}
	for _, m := range routedLine.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		r.Targets[m[1]] = v
	}
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, "pgproxy_consistency_fallbacks_total "); ok {
			r.Fallbacks, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(l, "pgproxy_consistency_waits_seconds_count "); ok {
			r.Waits, _ = strconv.ParseFloat(v, 64)
		}
	}
	return r
}

// Sub is r minus an earlier reading.
func (r Routed) Sub(before Routed) Routed {
	d := Routed{Targets: map[string]float64{}, Fallbacks: r.Fallbacks - before.Fallbacks, Waits: r.Waits - before.Waits}
	for k, v := range r.Targets {
		d.Targets[k] = v - before.Targets[k]
	}
	return d
}

// Reads are the transactions routed as reads (wherever they ran).
func (r Routed) Reads() float64 {
	return r.Targets["replica"] + r.Targets["primary_fallback"] + r.Targets["primary_no_replica"] + r.Targets["rejected"]
}

// add sums readings.
func (r Routed) add(o Routed) Routed {
	s := Routed{Targets: map[string]float64{}, Fallbacks: r.Fallbacks + o.Fallbacks, Waits: r.Waits + o.Waits}
	for k, v := range r.Targets {
		s.Targets[k] += v
	}
	for k, v := range o.Targets {
		s.Targets[k] += v
	}
	return s
}

func scrapeRouted(ctx context.Context, httpAddr string) (Routed, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return Routed{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Routed{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return Routed{}, err
	}
	return parseRouted(string(b)), nil
}

// routingBench is the routing part of one run: its targets (started by
// startRouting, stopped by stop) and what the rounds measured.
type routingBench struct {
	o       *options
	st      *setup
	table   *Table // -S cases × routingTargets
	targets []target
	mixed   *Table // the mixed case × tx-session, direct-primary
	mtarget []target
	// routed sums the routing counters over the runs of each (case, target).
	routed map[string]map[string]Routed
	mixArg []string // the mixed run's script arguments
	stops  []func()
}

// mixedWrite is pgbench's built-in TPC-B-like transaction; mixedRead one
// autocommit account lookup (pgbench -S's). Both pick accounts the same
// way (-D scale).
const (
	mixedWrite = `\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
`
	mixedRead = `\set aid random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
`
)

// startRouting starts the routing targets: three pgproxies routing per
// transaction (one per consistency level) and one routing sessions, each
// with auth.mode proxy and a transaction pool of -pool-size servers.
func startRouting(ctx context.Context, o *options, st *setup, logf func(string, ...any)) (*routingBench, error) {
	rb := &routingBench{o: o, st: st, routed: map[string]map[string]Routed{}}
	ok := false
	defer func() {
		if !ok {
			rb.stop()
		}
	}()
	if st.userlist == "" { // -pooled=false
		secret, err := roleSecret(ctx, st.cluster.Primary(), pooledUser)
		if err != nil {
			return nil, err
		}
		st.userlistText = userlistLine(pooledUser, secret)
		st.userlist = filepath.Join(st.dir, "userlist.txt")
		if err := os.WriteFile(st.userlist, []byte(st.userlistText), 0o600); err != nil {
			return nil, err
		}
	}
	rb.targets = append(rb.targets, target{name: Direct, port: st.replica.Port, user: "postgres"})
	for _, t := range []struct{ name, unit, level string }{
		{RouteSessions, "session", ""},
		{RouteEventual, "transaction", "eventual"},
		{RouteSession, "transaction", "session"},
		{RouteGlobal, "transaction", "global"},
	} {
		dir := filepath.Join(st.dir, t.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		conf := proxyConf{Gomaxprocs: o.gomaxprocs, AuthFile: st.userlist, Pool: "transaction", PoolSize: o.poolSize, Unit: t.unit, Consistency: t.level}
		ch, port, httpAddr, err := startPgproxy(ctx, o.pgproxy, o.proxyEnv, conf, dir, st.cluster, pooledUser, pooledPassword)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
		rb.stops = append(rb.stops, ch.stop)
		logf("bench: %s pid %d on 127.0.0.1:%d (routing.unit %s %s, pool.size %d)", t.name, ch.pid, port, t.unit, t.level, o.poolSize)
		rb.targets = append(rb.targets, target{name: t.name, port: port, pid: ch.pid, user: pooledUser, password: pooledPassword, http: httpAddr})
	}
	rb.table = newTable(o.routing.cases(), routingTargets)
	if o.routing.mixed {
		w, r := filepath.Join(st.dir, "mixed_write.sql"), filepath.Join(st.dir, "mixed_read.sql")
		if err := os.WriteFile(w, []byte(mixedWrite), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(r, []byte(mixedRead), 0o644); err != nil {
			return nil, err
		}
		rb.mixArg = []string{"-f", w + "@1", "-f", r + "@" + strconv.Itoa(o.routing.reads), "-D", "scale=" + strconv.Itoa(o.scale)}
		rb.mtarget = []target{rb.target(RouteSession), {name: DirectPrimary, port: st.cluster.Primary().Port, user: "postgres"}}
		rb.mixed = newTable([]Case{o.routing.mixedCase()}, []string{RouteSession, DirectPrimary})
	}
	// Fill the pools (twice the clients), as the pooled targets' warm-up does.
	for _, t := range rb.targets[1:] {
		w := Case{Mode: "simple", Clients: 2 * o.routing.clients}
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		_, out, err := runPgbench(wctx, st.pgbench, w.Args(t.port, t.user, "postgres", 2*time.Second), t.env(st.env))
		wcancel()
		if err != nil {
			logf("bench: warm-up through %s failed (its runs will show it): %v %s", t.name, firstLine(err), lastLines(out, 3))
		}
	}
	ok = true
	return rb, nil
}

func (rb *routingBench) target(name string) target {
	for _, t := range rb.targets {
		if t.name == name {
			return t
		}
	}
	return target{}
}

func (rb *routingBench) stop() {
	for i := len(rb.stops) - 1; i >= 0; i-- {
		rb.stops[i]()
	}
	rb.stops = nil
}

// round runs every routing case once against every target, in an order
// rotated by round (as the other groups), then the mixed script.
func (rb *routingBench) round(ctx context.Context, round int, logf func(string, ...any)) error {
	o, st := rb.o, rb.st
	one := func(tab *Table, c Case, t target, args []string) error {
		var before Routed
		var herr error
		if t.http != "" {
			before, herr = scrapeRouted(ctx, t.http)
		}
		s, err := measure(ctx, st.pgbench, st.env, args, t, o.duration+time.Minute, st.tick, st.postmaster)
		if ctx.Err() != nil {
			return fmt.Errorf("stopped: %w", ctx.Err())
		}
		tab.add(c, t.name, s)
		share := ""
		if t.http != "" && herr == nil {
			if after, err := scrapeRouted(ctx, t.http); err == nil {
				d := after.Sub(before)
				byT := rb.routed[c.Name()+"|"+fmt.Sprint(tab == rb.mixed)]
				if byT == nil {
					byT = map[string]Routed{}
					rb.routed[c.Name()+"|"+fmt.Sprint(tab == rb.mixed)] = byT
				}
				byT[t.name] = byT[t.name].add(d)
				if d.Reads() > 0 {
					share = fmt.Sprintf("  reads on the replica %.1f%%, %v waits, %v fallbacks", 100*d.Targets["replica"]/d.Reads(), d.Waits, d.Fallbacks)
				}
			}
		}
		name := c.Name()
		if tab == rb.mixed {
			name = "mixed " + name
		}
		if err != nil {
			logf("round %d/%d %-26s %-17s  error: %v", round+1, o.rounds, name, t.name, firstLine(err))
			return nil
		}
		logf("round %d/%d %-26s %-17s %9.0f tps  %7.3f ms  failed %d%s", round+1, o.rounds, name, t.name, s.TPS, s.LatencyMS, s.Failed, share)
		return nil
	}
	for ci, c := range rb.table.Cases {
		for k := range rb.targets {
			t := rb.targets[(k+round+ci)%len(rb.targets)]
			if err := one(rb.table, c, t, c.Args(t.port, t.user, "postgres", o.duration)); err != nil {
				return err
			}
		}
	}
	if rb.mixed != nil {
		c := o.routing.mixedCase()
		for k := range rb.mtarget {
			t := rb.mtarget[(k+round)%len(rb.mtarget)]
			args := append(append([]string(nil), rb.mixArg...), mixedArgs(c, t, o.duration)...)
			if err := one(rb.mixed, c, t, args); err != nil {
				return err
			}
		}
	}
	return nil
}

// mixedArgs are pgbench's arguments of the mixed script but the scripts:
// c.Args without -S.
func mixedArgs(c Case, t target, d time.Duration) []string {
	var out []string
	for _, a := range c.Args(t.port, t.user, "postgres", d) {
		if a != "-S" {
			out = append(out, a)
		}
	}
	return out
}

// RoutingReport is what the routing part measured.
type RoutingReport struct {
	Table  *Table
	Mixed  *Table
	Routed map[string]map[string]Routed
	Reads  int // -mixed-reads
}

func (rb *routingBench) report() *RoutingReport {
	return &RoutingReport{Table: rb.table, Mixed: rb.mixed, Routed: rb.routed, Reads: rb.o.routing.reads}
}

func (p *RoutingReport) share(c Case, mixed bool, target string) (Routed, string) {
	r, ok := p.Routed[c.Name()+"|"+fmt.Sprint(mixed)][target]
	if !ok || r.Reads() == 0 {
		return r, "–"
	}
	return r, fmt.Sprintf("%.1f%%", 100*r.Targets["replica"]/r.Reads())
}

// Markdown is the routing section's tables and checks (without heading).
func (p *RoutingReport) Markdown() string {
	var b strings.Builder
	t := p.Table
	b.WriteString("| pgbench `-S` | TPS direct | TPS session-routed | TPS tx eventual | TPS tx session | TPS tx global | session / eventual | global / eventual | eventual / session-routed | eventual / direct | latency ms direct / session-routed / eventual / session / global | reads on the replica eventual / session / global | consistency waits / fallbacks session / global | failed tx |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range t.Cases {
		s := map[string]Summary{}
		for _, name := range routingTargets {
			if sum, ok := t.summary(c, name); ok {
				s[name] = sum
			} else {
				s[name] = Summary{TPS: math.NaN(), LatencyMS: math.NaN()}
			}
		}
		var shares, waits, failed []string
		for _, name := range []string{RouteEventual, RouteSession, RouteGlobal} {
			_, sh := p.share(c, false, name)
			shares = append(shares, sh)
		}
		for _, name := range []string{RouteSession, RouteGlobal} {
			r, _ := p.share(c, false, name)
			waits = append(waits, fmt.Sprintf("%.0f / %.0f", r.Waits, r.Fallbacks))
		}
		for _, name := range routingTargets {
			failed = append(failed, failedCell(s[name]))
		}
		var lat []string
		for _, name := range routingTargets {
			lat = append(lat, fnum(s[name].LatencyMS, 3))
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c.Name(),
			fnum(s[Direct].TPS, 0), fnum(s[RouteSessions].TPS, 0), fnum(s[RouteEventual].TPS, 0), fnum(s[RouteSession].TPS, 0), fnum(s[RouteGlobal].TPS, 0),
			ratio(s[RouteSession].TPS, s[RouteEventual].TPS), ratio(s[RouteGlobal].TPS, s[RouteEventual].TPS),
			ratio(s[RouteEventual].TPS, s[RouteSessions].TPS), ratio(s[RouteEventual].TPS, s[Direct].TPS),
			strings.Join(lat, " / "), strings.Join(shares, " / "), strings.Join(waits, ", "), strings.Join(failed, " / "))
	}
	if p.Mixed != nil {
		fmt.Fprintf(&b, "\nMixed read/write (`-M simple`): pgbench scripts `mixed_write.sql@1` (the TPC-B-like transaction) and `mixed_read.sql@%d` (one autocommit `SELECT abalance ... WHERE aid = :aid`), so about %d of %d transactions read only; through `tx-session` every write transaction gives its client a floor its next reads wait for. `direct-primary` runs the same mix on the primary alone (what the application gets without a replica).\n\n", p.Reads, p.Reads, p.Reads+1)
		b.WriteString("| mixed script | target | TPS | latency ms | write transactions (on the primary) | reads | reads on the replica | consistency waits | fallbacks to the primary | failed tx |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		c := p.Mixed.Cases[0]
		for _, name := range p.Mixed.Targets {
			s, ok := p.Mixed.summary(c, name)
			if !ok {
				continue
			}
			r, sh := p.share(c, true, name)
			writes, reads, waits, fb := "–", "–", "–", "–"
			if r.Targets != nil {
				writes, reads, waits, fb = fnum(r.Targets["primary"], 0), fnum(r.Reads(), 0), fnum(r.Waits, 0), fnum(r.Fallbacks, 0)
			}
			fmt.Fprintf(&b, "| `-c %d` | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c.Clients, name, fnum(s.TPS, 0), fnum(s.LatencyMS, 3), writes, reads, sh, waits, fb, failedCell(s))
		}
		b.WriteString("\nCounts are summed over the rounds, from pgproxy's `pgproxy_transactions_routed_total`, `pgproxy_consistency_waits_seconds_count` and `pgproxy_consistency_fallbacks_total` around each run.\n")
	}
	b.WriteString("\n")
	b.WriteString(checksMarkdownOf("issue 18", p.Checks()))
	return b.String()
}

// Checks evaluates the issue 18 goals on the medians: session within 5%
// of eventual, global within 1.5× (TPS at least eventual / 1.5), per mode.
func (p *RoutingReport) Checks() []Check {
	check := func(target, level string, min float64) Check {
		var parts []string
		ok, seen := true, false
		for _, c := range p.Table.Cases {
			e, okE := p.Table.summary(c, RouteEventual)
			l, okL := p.Table.summary(c, level)
			if !okE || !okL || math.IsNaN(e.TPS) || math.IsNaN(l.TPS) || e.TPS == 0 {
				continue
			}
			seen = true
			r := l.TPS / e.TPS
			ok = ok && r >= min
			parts = append(parts, fmt.Sprintf("%s %.2f×", c.Mode, r))
		}
		ch := Check{Target: target, Result: strings.Join(parts, ", ")}
		if seen {
			ch.OK = okp(ok)
		}
		return ch
	}
	return []Check{
		check("`-S -c16`: `session` within 5% of `eventual` (TPS ≥ 0.95×)", RouteSession, 0.95),
		check("`-S -c16`: `global` within 1.5× of `eventual` (TPS ≥ 1/1.5 = 0.67×)", RouteGlobal, 1/1.5),
	}
}

// Doc is the routing section of docs/benchmarks.md: the setup, then Markdown.
func (p *RoutingReport) Doc(o *options) string {
	return fmt.Sprintf("Measured in the same rounds as the tables above (after them in each round, targets in rotating order), against the same replica. Every pgproxy here authenticates `%s` (SCRAM-SHA-256, the userlist above) and pools in transaction mode with %d servers per backend: `session-routed` is a `route: read` listener (`routing.unit: session`: every session on the replica); `tx-eventual`, `tx-session`, `tx-global` are a write listener with `routing.unit: transaction` at that `routing.consistency` (`consistency_wait` 100 ms, `read_functions: [pg_is_in_recovery]` for the readiness check), so each `-S` transaction is classified and sent to the replica; `direct` is pgbench to the replica's port. All have `routing.fallback: reject`: a read no replica can take fails instead of silently measuring the primary. *reads on the replica* is the share of transactions classified as reads that the replica served (`pgproxy_transactions_routed_total{target=\"replica\"}` over the reads), summed over the rounds.\n\n%s",
		pooledUser, o.poolSize, p.Markdown())
}
