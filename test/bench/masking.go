package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// The masking part of the bench (issue 19): a `-S`-like script that reads
// 100 rows of 4 columns, 2 of them masked for the role that reads them,
// through a pgproxy with masking.rules (PgproxyMasked) and through the
// pass-through pgproxy of the main table, which has none (Pgproxy), in the
// same rounds; direct for reference. Same role, same query, same replica:
// what differs is masking alone (the masked session relays on goroutines,
// checks each statement (parsed once per shape), describes each portal
// and rewrites each row).

const (
	maskUser  = "bench_bi" // trust from 127.0.0.1 (pgcluster's pg_hba)
	maskTable = "bench_mask"
	maskRows  = 1000 // the script reads 100 of them from a random start
	// PgproxyMasked is the pgproxy with masking.rules for maskUser.
	PgproxyMasked = "pgproxy-masked"
	// maskBenchKey is the hash method's key of the bench (not a secret).
	maskBenchKey = "bench-masking-key-0123456789abcdef"
	// maskGoal is the goal: masking costs at most 10% of the TPS.
	maskGoal = 0.90
)

// maskScript is the pgbench script: 100 consecutive rows, email and vat
// masked (hash, partial), id and city not.
const maskScript = `\set a random(1, ` + "901" + `)
SELECT id, email, vat, city FROM ` + maskTable + ` WHERE id BETWEEN :a AND :a + 99;
`

// maskingYAML is the masked pgproxy's masking section.
const maskingYAML = `masking:
  rules:
    - match: { user: ` + maskUser + ` }
      columns:
        public.` + maskTable + `.email: hash
        public.` + maskTable + `.vat: partial
`

// maskOptions are the flags of the masking cases.
type maskOptions struct {
	on      bool
	clients []int
	modes   []string
}

// maskingFlags registers the masking flags; the function it returns parses
// their lists once fs.Parse has run.
func maskingFlags(fs *flag.FlagSet, m *maskOptions) func() error {
	var clients, modes string
	fs.BoolVar(&m.on, "masking", true, "also measure column masking (issue 19): 100-row results with 2 masked columns through a pgproxy with masking.rules vs the pass-through pgproxy; -masking=false skips it")
	fs.StringVar(&clients, "masking-clients", "16", "pgbench -c values of the masking cases")
	fs.StringVar(&modes, "masking-modes", "simple,prepared", "pgbench -M values of the masking cases")
	return func() error {
		var err error
		if m.clients, err = ints(clients); err != nil {
			return fmt.Errorf("-masking-clients: %w", err)
		}
		if m.modes, err = modeList(modes); err != nil {
			return fmt.Errorf("-masking-modes: %w", err)
		}
		return nil
	}
}

// maskingCases are the masking matrix (none with -masking=false).
func (o *options) maskingCases(script string) []Case {
	if !o.mask.on {
		return nil
	}
	var cs []Case
	for _, c := range o.mask.clients {
		for _, m := range o.mask.modes {
			cs = append(cs, Case{Mode: m, Clients: c, Script: script})
		}
	}
	return cs
}

// maskingRuns is how many runs the masking cases add to the rounds.
func (o *options) maskingRuns() int { return o.rounds * len(o.maskingCases("x")) * 3 }

// maskingBench is the masking part's setup: its targets and table.
type maskingBench struct {
	proxy   *child
	targets []target
	table   *Table
}

func (mb *maskingBench) stop() {
	if mb != nil {
		mb.proxy.stop()
	}
}

// setupMasking creates the role and the table on the primary (and waits
// for the replica), starts the masked pgproxy, checks that it masks, and
// returns the targets: direct and the pass-through pgproxy (proxyPort,
// proxyPID) as maskUser, and the masked pgproxy. Nil with -masking=false.
func setupMasking(ctx context.Context, o *options, st *setup, proxyPort, proxyPID int, logf func(string, ...any)) (*maskingBench, error) {
	if !o.mask.on || len(o.mask.clients) == 0 || len(o.mask.modes) == 0 {
		return nil, nil
	}
	primary := st.cluster.Primary()
	conn, err := pgconn.Connect(ctx, dsn(primary.Port, "postgres", ""))
	if err != nil {
		return nil, err
	}
	sql := fmt.Sprintf(`CREATE ROLE %[1]s LOGIN;
CREATE TABLE %[2]s (id int PRIMARY KEY, email text NOT NULL, vat text NOT NULL, city text NOT NULL);
INSERT INTO %[2]s SELECT i, 'customer' || i || '@example.com', '76.' || lpad(i::text, 3, '0') || '.' || (i * 7 %% 1000) || '-' || (i %% 10), 'Santiago' FROM generate_series(1, %[3]d) i;
GRANT SELECT ON %[2]s TO %[1]s;
ANALYZE %[2]s;`, maskUser, maskTable, maskRows)
	_, err = conn.Exec(ctx, sql).ReadAll()
	conn.Close(context.Background())
	if err != nil {
		return nil, fmt.Errorf("masking: create %s: %w", maskTable, err)
	}
	if err := st.cluster.WaitReplicasCaughtUp(ctx); err != nil {
		return nil, err
	}
	script := filepath.Join(st.dir, "masking.sql")
	if err := os.WriteFile(script, []byte(maskScript), 0o644); err != nil {
		return nil, err
	}
	dir := filepath.Join(st.dir, PgproxyMasked)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	env := append(append([]string(nil), o.proxyEnv...), "PGPROXY_MASKING_KEY="+maskBenchKey)
	ch, port, _, err := startPgproxy(ctx, o.pgproxy, env, proxyConf{Gomaxprocs: o.gomaxprocs, Extra: maskingYAML}, dir, st.cluster, maskUser, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PgproxyMasked, err)
	}
	mb := &maskingBench{proxy: ch}
	if err := checkMasked(ctx, port, proxyPort); err != nil {
		mb.stop()
		return nil, fmt.Errorf("%s: %w", PgproxyMasked, err)
	}
	logf("bench: %s pid %d on 127.0.0.1:%d (masking.rules for %s: email hash, vat partial)", PgproxyMasked, ch.pid, port, maskUser)
	mb.targets = []target{
		{name: Direct, port: st.replica.Port, user: maskUser},
		{name: Pgproxy, port: proxyPort, pid: proxyPID, user: maskUser},
		{name: PgproxyMasked, port: port, pid: ch.pid, user: maskUser},
	}
	mb.table = newTable(o.maskingCases(script), []string{Direct, Pgproxy, PgproxyMasked})
	// Warm-up: each target's catalog lookups and caches (the masked
	// pgproxy's), the table in shared buffers.
	for _, t := range mb.targets {
		w := Case{Mode: "simple", Clients: 2, Script: script}
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		_, out, err := runPgbench(wctx, st.pgbench, w.Args(t.port, t.user, "postgres", 2*time.Second), st.env)
		wcancel()
		if err != nil {
			logf("bench: masking warm-up through %s failed (its runs will show it): %v %s", t.name, firstLine(err), lastLines(out, 3))
		}
	}
	return mb, nil
}

// checkMasked reads one row through both pgproxies: the masked one must
// rewrite email and vat, the other must not (else the bench would compare
// nothing).
func checkMasked(ctx context.Context, maskedPort, plainPort int) error {
	read := func(port int) ([][]byte, error) {
		conn, err := pgconn.Connect(ctx, dsn(port, maskUser, ""))
		if err != nil {
			return nil, err
		}
		defer conn.Close(context.Background())
		rr := conn.ExecParams(ctx, "SELECT email, vat FROM "+maskTable+" WHERE id = 1", nil, nil, nil, nil).Read()
		if rr.Err != nil {
			return nil, rr.Err
		}
		if len(rr.Rows) != 1 || len(rr.Rows[0]) != 2 {
			return nil, fmt.Errorf("%d rows", len(rr.Rows))
		}
		return rr.Rows[0], nil
	}
	clear, err := read(plainPort)
	if err != nil {
		return fmt.Errorf("unmasked read: %w", err)
	}
	masked, err := read(maskedPort)
	if err != nil {
		return fmt.Errorf("masked read: %w", err)
	}
	vat := string(clear[1])
	if string(masked[0]) == string(clear[0]) || len(masked[0]) != 16 || string(masked[1]) != "***"+vat[len(vat)-4:] {
		return fmt.Errorf("the masked pgproxy does not mask: email %q, vat %q (clear %q, %q)", masked[0], masked[1], clear[0], clear[1])
	}
	return nil
}

// MaskingReport is the masking part's results.
type MaskingReport struct{ Table *Table }

// Markdown renders the masking table and its goal.
func (r *MaskingReport) Markdown() string {
	var b strings.Builder
	b.WriteString("| 100 rows, 2 of 4 columns masked | TPS direct | TPS pgproxy | TPS pgproxy-masked | masked / pgproxy | latency ms direct / pgproxy / masked | CPU s per 100k q pgproxy / masked | context switches per q pgproxy / masked | failed tx direct / pgproxy / masked |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range r.Table.Cases {
		d, _ := r.Table.summary(c, Direct)
		px, _ := r.Table.summary(c, Pgproxy)
		m, _ := r.Table.summary(c, PgproxyMasked)
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s / %s / %s | %s / %s | %s / %s | %s |\n", c.Name(),
			fnum(d.TPS, 0), fnum(px.TPS, 0), fnum(m.TPS, 0), ratio(m.TPS, px.TPS),
			fnum(d.LatencyMS, 3), fnum(px.LatencyMS, 3), fnum(m.LatencyMS, 3),
			fnum(px.CPUPer100k, 2), fnum(m.CPUPer100k, 2), fnum(px.SwitchesPQ, 2), fnum(m.SwitchesPQ, 2),
			failedTriple(d, px, m))
	}
	b.WriteString("\n")
	b.WriteString(checksMarkdownOf("issue 19", r.Checks()))
	return b.String()
}

func failedTriple(ss ...Summary) string {
	var parts []string
	for _, s := range ss {
		p := fmt.Sprint(s.Failed)
		if s.Aborted > 0 {
			p += fmt.Sprintf(" (%d aborted)", s.Aborted)
		}
		if s.Errors > 0 {
			p += fmt.Sprintf(" (%d no summary)", s.Errors)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " / ")
}

// Checks is the goal per client count: the masked pgproxy's TPS at
// least maskGoal of the pass-through one's, in every protocol.
func (r *MaskingReport) Checks() []Check {
	byClients := map[int][]Case{}
	var order []int
	for _, c := range r.Table.Cases {
		if _, ok := byClients[c.Clients]; !ok {
			order = append(order, c.Clients)
		}
		byClients[c.Clients] = append(byClients[c.Clients], c)
	}
	var out []Check
	for _, n := range order {
		var parts []string
		ok, seen := true, false
		for _, c := range byClients[n] {
			px, _ := r.Table.summary(c, Pgproxy)
			m, _ := r.Table.summary(c, PgproxyMasked)
			if math.IsNaN(px.TPS) || math.IsNaN(m.TPS) || px.TPS == 0 || m.Errors > 0 || m.Aborted > 0 {
				parts = append(parts, c.Mode+" –")
				ok = false
				continue
			}
			seen = true
			q := m.TPS / px.TPS
			ok = ok && q >= maskGoal
			parts = append(parts, fmt.Sprintf("%s %.2f× (%+.0f%%)", c.Mode, q, (q-1)*100))
		}
		ch := Check{Target: fmt.Sprintf("`-c%d`, 100 rows × 2 masked columns: ≤ 10%% TPS cost (masked ≥ %.2f× pgproxy)", n, maskGoal), Result: strings.Join(parts, ", ")}
		if seen {
			ch.OK = okp(ok)
		}
		out = append(out, ch)
	}
	return out
}

// maskingDoc is the section of docs/benchmarks.md.
func maskingDoc(r *MaskingReport) string {
	return fmt.Sprintf("## Column masking (issue 19)\n\n"+
		"Measured in the same rounds as the tables above, against the same replica, all as role `%s`. Script (`pgbench -f`): `%s` on a table of %d rows (`id int`, `email text`, `vat text`, `city text`): 100 rows of 4 columns per transaction. "+
		"*pgproxy* is the pass-through pgproxy of the first table (no `masking.rules`: the session relays on an event loop); *pgproxy-masked* is a second pgproxy, same configuration plus `masking.rules` for `%s`: `email: hash`, `vat: partial` (so every session is masked: each statement is checked (parsed once per statement shape and session), each Execute gets a Describe but one right after the client's own Describe of the unnamed portal (`-M prepared`: libpq's Bind, Describe, Execute, Sync), each row's two masked values are rewritten, and the session relays on a goroutine per direction). "+
		"The bench checks before the runs that pgproxy-masked rewrites both columns and the other does not.\n\n%s",
		maskUser, strings.TrimSpace(strings.Split(maskScript, "\n")[1]), maskRows, maskUser, r.Markdown())
}
