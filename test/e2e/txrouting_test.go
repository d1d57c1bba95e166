package e2e

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"

	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

// Per-transaction routing (routing.unit: transaction, issue 18).

// txProxy starts pgproxy with auth.mode proxy, transaction pools and
// per-transaction routing at consistency level, and makes the objects the
// tests use (as postgres, on the primary, replicated before it returns).
func txProxy(t *testing.T, level string, extra string) *proxytest.Proxy {
	t.Helper()
	reset(t)
	ctx := ctxT(t, time.Minute)
	primary := cluster.Primary()
	for _, sql := range []string{
		"DROP TABLE IF EXISTS rt, rw_counter",
		"DROP SEQUENCE IF EXISTS rt_seq",
		"CREATE TABLE rt (id int PRIMARY KEY, v int NOT NULL)",
		"INSERT INTO rt SELECT g, 0 FROM generate_series(1, 10) g",
		"CREATE SEQUENCE rt_seq",
		"CREATE TABLE rw_counter (id int PRIMARY KEY, v bigint NOT NULL)",
		"INSERT INTO rw_counter SELECT g, 0 FROM generate_series(1, 16) g",
		"CREATE OR REPLACE FUNCTION report_total() RETURNS bigint STABLE LANGUAGE sql AS 'SELECT sum(v) FROM rt'",
		"CREATE OR REPLACE FUNCTION volatile_fn() RETURNS int VOLATILE LANGUAGE sql AS 'SELECT 1'",
		"GRANT ALL ON rt, rw_counter, rt_seq TO " + pgcluster.ScramUser,
	} {
		if err := primary.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := cluster.WaitReplicasCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	userlist := proxytest.Userlist(t, cluster, pgcluster.ScramUser)
	return proxytest.Start(t, cluster, &proxytest.Options{YAML: fmt.Sprintf(`auth:
  mode: proxy
  file: %s
pool:
  mode: transaction
  size: 8
  max_client_wait: 20s
routing:
  max_lag: 30s
  unit: transaction
  consistency: %s
  consistency_wait: 200ms
  read_functions: [report_total, pg_is_in_recovery, inet_server_port]
%s`, userlist, level, extra)})
}

func txDSN(p *proxytest.Proxy, extra string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable%s",
		pgcluster.ScramUser, url.QueryEscape(pgcluster.ScramPassword), p.WriteAddr(), extra)
}

// routed returns pgproxy_transactions_routed_total by target.
func routed(t *testing.T, p *proxytest.Proxy) map[string]float64 {
	t.Helper()
	return counterByLabel(t, p, "pgproxy_transactions_routed_total", "target")
}

func counterByLabel(t *testing.T, p *proxytest.Proxy, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := p.App.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[labelOf(m, label)] += m.GetCounter().GetValue()
		}
	}
	return out
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func metricSum(t *testing.T, p *proxytest.Proxy, name string) (sum float64, count uint64) {
	t.Helper()
	mfs, err := p.App.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				sum += h.GetSampleSum()
				count += h.GetSampleCount()
			} else {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum, count
}

// TestTransactionRoutingTable: each statement or transaction lands on the
// role it must, in the simple protocol and with named prepared statements
// (pgx's statement cache: Parse/Describe/Sync once, then Bind/Execute/Sync
// by name, classified from the name). A read routed to the primary would
// only cost load; a write or a lock routed to a replica fails (25006), so
// every case must also succeed.
func TestTransactionRoutingTable(t *testing.T) {
	p := txProxy(t, "eventual", "")
	ctx := ctxT(t, 2*time.Minute)
	type tc struct {
		stmts   []string
		replica bool
		simple  bool // simple protocol only (several statements in one Query)
	}
	cases := []tc{
		{stmts: []string{"SELECT 1"}, replica: true},
		{stmts: []string{"SELECT v FROM rt WHERE id = 1"}, replica: true},
		{stmts: []string{"VALUES (1), (2)"}, replica: true},
		{stmts: []string{"TABLE rt"}, replica: true},
		{stmts: []string{"SHOW work_mem"}, replica: true},
		{stmts: []string{"SELECT now(), lower('A'), count(*) FROM rt"}, replica: true},
		{stmts: []string{"WITH r AS (SELECT 1 AS x) SELECT x FROM r"}, replica: true},
		{stmts: []string{"SELECT report_total()"}, replica: true},
		{stmts: []string{"EXPLAIN SELECT * FROM rt"}, replica: true},
		{stmts: []string{"SELECT * FROM generate_series(1, 3)"}, replica: true},
		{stmts: []string{"SELECT pg_catalog.upper('x'), pg_is_in_recovery()"}, replica: true},
		{stmts: []string{"BEGIN READ ONLY", "SELECT 1", "COMMIT"}, replica: true},
		{stmts: []string{"START TRANSACTION READ ONLY", "SELECT count(*) FROM rt", "COMMIT"}, replica: true},
		{stmts: []string{"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "SELECT 1", "SELECT 2", "COMMIT"}, replica: true},
		{stmts: []string{"BEGIN; SET TRANSACTION READ ONLY; SELECT 1; COMMIT"}, replica: true, simple: true},
		{stmts: []string{"SELECT 1; SELECT 2"}, replica: true, simple: true},
		{stmts: []string{"BEGIN; SELECT 1; COMMIT"}, replica: true, simple: true},

		{stmts: []string{"INSERT INTO rt VALUES (100, 1) ON CONFLICT (id) DO UPDATE SET v = rt.v + 1"}},
		{stmts: []string{"UPDATE rt SET v = v + 1 WHERE id = 1"}},
		{stmts: []string{"DELETE FROM rt WHERE id = 999"}},
		{stmts: []string{"SELECT * FROM rt FOR UPDATE"}},
		{stmts: []string{"SELECT * FROM rt FOR SHARE"}},
		{stmts: []string{"SELECT * FROM (SELECT * FROM rt FOR UPDATE) s"}},
		{stmts: []string{"WITH d AS (UPDATE rt SET v = v WHERE id = 1 RETURNING *) SELECT * FROM d"}},
		{stmts: []string{"WITH r AS (INSERT INTO rt VALUES (101, 1) ON CONFLICT DO NOTHING RETURNING *) SELECT * FROM r"}},
		{stmts: []string{"SELECT nextval('rt_seq')"}},
		{stmts: []string{"VALUES (nextval('rt_seq'))"}},
		{stmts: []string{"SELECT setval('rt_seq', 10)"}},
		{stmts: []string{"SELECT random()"}},
		{stmts: []string{"SELECT txid_current()"}},
		{stmts: []string{"SELECT volatile_fn()"}},
		{stmts: []string{"SELECT pg_advisory_xact_lock(1)"}},
		{stmts: []string{"SELECT set_config('work_mem', '64MB', true)"}},
		{stmts: []string{"SELECT pg_sleep(0)"}},
		{stmts: []string{"EXPLAIN ANALYZE UPDATE rt SET v = v WHERE id = 1"}},
		{stmts: []string{"BEGIN", "LOCK TABLE rt IN SHARE MODE", "COMMIT"}},
		{stmts: []string{"BEGIN", "SELECT 1", "COMMIT"}},
		{stmts: []string{"BEGIN ISOLATION LEVEL REPEATABLE READ", "SELECT count(*) FROM rt", "COMMIT"}},
		{stmts: []string{"BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE", "SELECT 1", "COMMIT"}},
		{stmts: []string{"BEGIN", "SELECT 1", "SET TRANSACTION READ ONLY", "COMMIT"}},
		{stmts: []string{"SELECT 1; INSERT INTO rt VALUES (102, 1) ON CONFLICT DO NOTHING"}, simple: true},
		{stmts: []string{"BEGIN; SELECT 1", "COMMIT"}, simple: true},
		// A DO block pins its client (its code may leave session state:
		// proxy's TestTransactionModeStateLeak), so it is not in this table.
		{stmts: []string{"MERGE INTO rt USING (VALUES (1)) s(id) ON rt.id = s.id WHEN MATCHED THEN UPDATE SET v = rt.v"}},
	}
	modes := []struct {
		name string
		mode pgx.QueryExecMode
	}{{"simple", pgx.QueryExecModeSimpleProtocol}, {"prepared", pgx.QueryExecModeCacheStatement}}
	n := 0
	for _, m := range modes {
		cfg, err := pgx.ParseConfig(txDSN(p, ""))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = m.mode
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		for _, c := range cases {
			if c.simple && m.mode != pgx.QueryExecModeSimpleProtocol {
				continue
			}
			for run := 0; run < 2; run++ { // the second run Binds the prepared statements by name
				before := routed(t, p)
				for _, sql := range c.stmts {
					rows, err := conn.Query(ctx, sql)
					if err == nil {
						for rows.Next() {
						}
						rows.Close()
						err = rows.Err()
					}
					if err != nil {
						t.Fatalf("%s %q (in %q): %v", m.name, sql, c.stmts, err)
					}
				}
				after := routed(t, p)
				replicas := after["replica"] - before["replica"]
				others := 0.0
				for k, v := range after {
					if k != "replica" {
						others += v - before[k]
					}
				}
				switch {
				case c.replica && (replicas == 0 || others != 0):
					t.Errorf("%s %q: %v replica and %v primary transactions, want replica only", m.name, c.stmts, replicas, others)
				case !c.replica && (replicas != 0 || others == 0):
					t.Errorf("%s %q: %v replica and %v primary transactions, want primary only", m.name, c.stmts, replicas, others)
				}
			}
			n++
		}
	}
	t.Logf("%d cases (statements or transactions) over both protocols, each run twice", n)
	if n < 40 {
		t.Fatalf("only %d cases", n)
	}
}

// staleReads runs the stale-read detector at level: clients that each
// commit to their own row and then read it back together with a row a
// separate writer commits to every 2 ms, while replay is paused on one
// replica and then the other in turn. A read misses its own write when it
// returns an older value of the client's row than its UPDATE ... RETURNING
// said; it misses an acknowledged write when it returns an older value of
// the writer's row than the writer had seen acknowledged before the read
// was sent.
type detector struct {
	reads, onReplica, ownMisses, ackedMisses int64
}

func staleReads(t *testing.T, level string, minReads int64, stopAtMiss bool) detector {
	p := txProxy(t, level, "")
	ctx := ctxT(t, 90*time.Second)
	const clients = 4
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, clients+2)

	// The writer: id 16, every 2 ms, through the proxy.
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := pgx.Connect(ctx, txDSN(p, "&application_name=writer"))
		if err != nil {
			errc <- err
			return
		}
		defer conn.Close(context.Background())
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			var v int64
			if err := conn.QueryRow(ctx, "UPDATE rw_counter SET v = v + 1 WHERE id = 16 RETURNING v").Scan(&v); err != nil {
				errc <- fmt.Errorf("writer: %w", err)
				return
			}
			acked.Store(v)
		}
	}()
	// Replay paused on one replica, then on the other, in turn.
	wg.Add(1)
	go func() {
		defer wg.Done()
		reps := cluster.Replicas()
		defer func() {
			for _, r := range reps {
				_ = r.ResumeReplay(context.Background())
			}
		}()
		for i := 0; ; i++ {
			paused, other := reps[i%len(reps)], reps[(i+1)%len(reps)]
			if err := other.ResumeReplay(ctx); err != nil {
				errc <- err
				return
			}
			if err := paused.PauseReplay(ctx); err != nil {
				errc <- err
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	var d detector
	var mu sync.Mutex
	var readers sync.WaitGroup
	deadline := time.Now().Add(45 * time.Second)
	for i := 1; i <= clients; i++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			cfg, err := pgx.ParseConfig(txDSN(p, fmt.Sprintf("&application_name=client%d", i)))
			if err != nil {
				errc <- err
				return
			}
			if i%2 == 0 {
				cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
			}
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				errc <- err
				return
			}
			defer conn.Close(context.Background())
			var local detector
			defer func() {
				mu.Lock()
				d.reads += local.reads
				d.onReplica += local.onReplica
				d.ownMisses += local.ownMisses
				d.ackedMisses += local.ackedMisses
				mu.Unlock()
			}()
			for local.reads < minReads/clients && time.Now().Before(deadline) {
				if stopAtMiss && local.ownMisses+local.ackedMisses > 0 {
					return
				}
				var wrote, own, shared int64
				var rec bool
				if err := conn.QueryRow(ctx, "UPDATE rw_counter SET v = v + 1 WHERE id = $1 RETURNING v", i).Scan(&wrote); err != nil {
					errc <- fmt.Errorf("client %d write: %w", i, err)
					return
				}
				seen := acked.Load()
				if err := conn.QueryRow(ctx, "SELECT (SELECT v FROM rw_counter WHERE id = $1), (SELECT v FROM rw_counter WHERE id = 16), pg_is_in_recovery()", i).Scan(&own, &shared, &rec); err != nil {
					errc <- fmt.Errorf("client %d read: %w", i, err)
					return
				}
				local.reads++
				if rec {
					local.onReplica++
				}
				if own < wrote {
					local.ownMisses++
				}
				if shared < seen {
					local.ackedMisses++
				}
			}
		}()
	}
	readers.Wait()
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	waits, nwaits := metricSum(t, p, "pgproxy_consistency_waits_seconds")
	fallbacks, _ := metricSum(t, p, "pgproxy_consistency_fallbacks_total")
	mean := 0.0
	if nwaits > 0 {
		mean = waits / float64(nwaits) * 1000
	}
	t.Logf("%s: %d reads, %d on replicas (%.0f%%), %d missed their own write, %d missed an acknowledged write; %d waits for a replica (mean %.2f ms), %.0f fallbacks to the primary; routed %v",
		level, d.reads, d.onReplica, 100*float64(d.onReplica)/float64(max(d.reads, 1)), d.ownMisses, d.ackedMisses, nwaits, mean, fallbacks, routed(t, p))
	return d
}

func TestStaleReadsSession(t *testing.T) {
	d := staleReads(t, "session", 5000, false)
	if d.reads < 5000 {
		t.Fatalf("only %d reads", d.reads)
	}
	if d.ownMisses != 0 {
		t.Errorf("%d reads missed the client's own last write", d.ownMisses)
	}
	if d.onReplica < d.reads/4 {
		t.Errorf("only %d of %d reads ran on a replica: the detector proves little", d.onReplica, d.reads)
	}
}

func TestStaleReadsGlobal(t *testing.T) {
	d := staleReads(t, "global", 5000, false)
	if d.reads < 5000 {
		t.Fatalf("only %d reads", d.reads)
	}
	if d.ownMisses != 0 || d.ackedMisses != 0 {
		t.Errorf("%d reads missed their own write, %d an acknowledged write", d.ownMisses, d.ackedMisses)
	}
	if d.onReplica < d.reads/4 {
		t.Errorf("only %d of %d reads ran on a replica: the detector proves little", d.onReplica, d.reads)
	}
}

// TestStaleReadsEventual: the detector does find stale reads when nothing
// holds reads back (it can fail).
func TestStaleReadsEventual(t *testing.T) {
	d := staleReads(t, "eventual", 5000, true)
	if d.ownMisses+d.ackedMisses == 0 {
		t.Errorf("no stale read in %d reads (%d on replicas) at eventual: the detector cannot see one", d.reads, d.onReplica)
	}
}

func simpleConn(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func show(t *testing.T, ctx context.Context, c *pgx.Conn, sql string) string {
	t.Helper()
	var v string
	if err := c.QueryRow(ctx, sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// TestFloorIsTheCommitEnd: on an idle primary the floor a write leaves
// (SHOW pgproxy.last_lsn) is exactly where a replica's replay stops once it
// has replayed that commit, and a read at that floor runs on a replica
// without waiting out consistency_wait: "caught up" is replay ≥ floor. With
// > (or a floor past the commit's end, e.g. the next page's first record)
// the read would fall back to the primary.
func TestFloorIsTheCommitEnd(t *testing.T) {
	p := txProxy(t, "session", "")
	ctx := ctxT(t, time.Minute)
	c := simpleConn(t, ctx, txDSN(p, ""))
	if got := show(t, ctx, c, "SHOW pgproxy.last_lsn"); got != "0/0" {
		t.Fatalf("last_lsn before any write = %q, want 0/0", got)
	}
	for attempt := 1; ; attempt++ {
		if _, err := c.Exec(ctx, "UPDATE rt SET v = v + 1 WHERE id = 2"); err != nil {
			t.Fatal(err)
		}
		floor := show(t, ctx, c, "SHOW pgproxy.last_lsn")
		var insert string
		if err := cluster.Primary().QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text", &insert); err != nil {
			t.Fatal(err)
		}
		if insert != floor {
			// A background record (a standby snapshot, a checkpoint)
			// came after the commit: the primary is not idle; again.
			if attempt == 5 {
				t.Fatalf("the primary never stayed idle after a commit (floor %s, insert position %s)", floor, insert)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		// Each replica's replay stops exactly at the floor.
		for _, r := range cluster.Replicas() {
			var replay string
			for i := 0; ; i++ {
				if err := r.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text", &replay); err != nil {
					t.Fatal(err)
				}
				if replay == floor || i == 200 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if replay != floor {
				t.Fatalf("replica %s replayed to %s, floor %s", r.Addr(), replay, floor)
			}
		}
		_, waitsBefore := metricSum(t, p, "pgproxy_consistency_waits_seconds")
		fallbacks, _ := metricSum(t, p, "pgproxy_consistency_fallbacks_total")
		start := time.Now()
		var rec bool
		if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		fallbacksAfter, _ := metricSum(t, p, "pgproxy_consistency_fallbacks_total")
		_, waitsAfter := metricSum(t, p, "pgproxy_consistency_waits_seconds")
		if !rec || fallbacksAfter != fallbacks {
			t.Fatalf("a read at floor %s with every replica replayed to exactly %s ran on the primary (fallbacks %v -> %v, %s)", floor, floor, fallbacks, fallbacksAfter, took)
		}
		t.Logf("floor %s = insert position = replay position; the read ran on a replica in %s (%d replay checks)", floor, took, waitsAfter-waitsBefore)
		return
	}
}

// TestProxySettings: SHOW pgproxy.last_lsn / SET pgproxy.min_lsn (and
// pgproxy.consistency) are answered by the proxy; a floor given to
// another session holds its reads back.
func TestProxySettings(t *testing.T) {
	p := txProxy(t, "session", "")
	ctx := ctxT(t, time.Minute)
	a := simpleConn(t, ctx, txDSN(p, ""))
	if _, err := a.Exec(ctx, "UPDATE rt SET v = v + 1 WHERE id = 3"); err != nil {
		t.Fatal(err)
	}
	lsn := show(t, ctx, a, "SHOW pgproxy.last_lsn")
	if lsn == "0/0" {
		t.Fatal("last_lsn after a write is 0/0")
	}
	if got := show(t, ctx, a, "SHOW pgproxy.consistency"); got != "session" {
		t.Errorf("pgproxy.consistency = %q", got)
	}

	b := simpleConn(t, ctx, txDSN(p, "&options=-c%20pgproxy.consistency%3Deventual"))
	if got := show(t, ctx, b, "SHOW pgproxy.consistency"); got != "eventual" {
		t.Errorf("options pgproxy.consistency=eventual: SHOW = %q", got)
	}
	if _, err := b.Exec(ctx, "SET pgproxy.min_lsn = '"+lsn+"'"); err != nil {
		t.Fatal(err)
	}
	if got := show(t, ctx, b, "SHOW pgproxy.last_lsn"); got != lsn {
		t.Errorf("after SET pgproxy.min_lsn = %s: last_lsn = %s", lsn, got)
	}
	// A floor no replica reaches: the read runs on the primary after
	// consistency_wait, even at eventual.
	if _, err := b.Exec(ctx, "SET pgproxy.min_lsn = 'FFFF/0'"); err != nil {
		t.Fatal(err)
	}
	before, _ := metricSum(t, p, "pgproxy_consistency_fallbacks_total")
	start := time.Now()
	var rec bool
	if err := b.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		t.Fatal(err)
	}
	after, _ := metricSum(t, p, "pgproxy_consistency_fallbacks_total")
	if rec || after != before+1 || time.Since(start) < 200*time.Millisecond {
		t.Errorf("read with an unreachable floor: in recovery %v, fallbacks %v -> %v, after %s", rec, before, after, time.Since(start))
	}
	if _, err := b.Exec(ctx, "RESET pgproxy.min_lsn"); err != nil {
		t.Fatal(err)
	}
	if err := b.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil || !rec {
		t.Errorf("after RESET pgproxy.min_lsn: in recovery %v, %v", rec, err)
	}
	if _, err := b.Exec(ctx, "SET pgproxy.consistency = global"); err != nil {
		t.Fatal(err)
	}
	if got := show(t, ctx, b, "SHOW pgproxy.consistency"); got != "global" {
		t.Errorf("SET pgproxy.consistency = global: SHOW = %q", got)
	}

	for _, tc := range []struct{ sql, code string }{
		{"SET pgproxy.min_lsn = 'soon'", "22023"},
		{"SET pgproxy.consistency = strong", "22023"},
		{"SET pgproxy.last_lsn = '0/1'", "55P02"},
		{"SHOW pgproxy.nothing", "42704"},
		{"SET pgproxy.min_lsn = '0/1'; SELECT 1", "0A000"},
	} {
		_, err := b.Exec(ctx, tc.sql)
		if got := sqlState(err); got != tc.code {
			t.Errorf("%s: %v, want %s", tc.sql, err, tc.code)
		}
	}
	// The extended protocol: refused at its Sync, the session goes on.
	ext := connect(t, txDSN(p, ""))
	var v string
	err := ext.QueryRow(ctx, "SHOW pgproxy.last_lsn").Scan(&v)
	if got := sqlState(err); got != "0A000" {
		t.Errorf("SHOW pgproxy.last_lsn in the extended protocol: %v, want 0A000", err)
	}
	if err := ext.QueryRow(ctx, "SELECT 1::text").Scan(&v); err != nil || v != "1" {
		t.Errorf("after the refusal: %q, %v", v, err)
	}
	// A Query answered by the proxy drops the unnamed statement, as any
	// simple Query does in PostgreSQL.
	pc := ext.PgConn()
	if _, err := pc.Prepare(ctx, "", "SELECT 1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Exec(ctx, "SHOW pgproxy.consistency").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if got := sqlState(pc.ExecPrepared(ctx, "", nil, nil, nil).Read().Err); got != "26000" {
		t.Errorf("unnamed statement after a proxy-answered Query: %s, want 26000", got)
	}
	// Not forwarded: the servers never saw a pgproxy.* setting.
	var n int
	if err := cluster.Primary().QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '%pgproxy.%' AND pid <> pg_backend_pid()", &n); err != nil || n != 0 {
		t.Errorf("servers running pgproxy.* statements: %d, %v", n, err)
	}
}
