package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ofitec/pgproxy/lineage/lineagetest"
	"github.com/ofitec/pgproxy/test/fakemarquez"
	"github.com/ofitec/pgproxy/test/proxytest"
)

type olEvent struct {
	EventType string `json:"eventType"`
	Run       struct {
		RunID  string                     `json:"runId"`
		Facets map[string]json.RawMessage `json:"facets"`
	} `json:"run"`
	Job struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"job"`
	Inputs  []struct{ Namespace, Name string } `json:"inputs"`
	Outputs []struct{ Namespace, Name string } `json:"outputs"`
}

func lineageProxy(t *testing.T, m *fakemarquez.Server) *proxytest.Proxy {
	return proxytest.Start(t, cluster, &proxytest.Options{
		YAML: fmt.Sprintf(`lineage:
  enabled: true
  job_namespace: ofitec
  dataset_namespace: postgres://db-primary:5432
  transport:
    type: http
    url: %s
    queue: 100
    timeout: 1s
`, m.URL),
	})
}

// waitEvents waits for want events, then a moment more (nothing more
// should come), and returns every event received; fewer fails the test
// with the job:type of those that came.
func waitEvents(t *testing.T, m *fakemarquez.Server, want int) []json.RawMessage {
	t.Helper()
	if _, err := m.WaitFor(ctxT(t, 20*time.Second), want); err != nil {
		var got []string
		for _, r := range m.Events() {
			var e olEvent
			_ = json.Unmarshal(r, &e)
			got = append(got, e.Job.Name+":"+e.EventType)
		}
		t.Fatalf("got %d events of %d: %v\n%v", len(m.Events()), want, err, got)
	}
	time.Sleep(300 * time.Millisecond)
	return m.Events()
}

// runsOf groups events by runId and returns, per job name, the event types
// of each run in arrival order.
func runsOf(t *testing.T, raw []json.RawMessage) (map[string][]string, map[string]olEvent) {
	t.Helper()
	byRun := map[string][]string{}
	last := map[string]olEvent{}
	for _, r := range raw {
		lineagetest.Check(t, r)
		var e olEvent
		if err := json.Unmarshal(r, &e); err != nil {
			t.Fatal(err)
		}
		byRun[e.Run.RunID] = append(byRun[e.Run.RunID], e.EventType)
		last[e.Run.RunID] = e
	}
	return byRun, last
}

func names(ds []struct{ Namespace, Name string }) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func TestLineageThroughProxy(t *testing.T) {
	reset(t)
	m := fakemarquez.New()
	t.Cleanup(m.Close)
	p := lineageProxy(t, m)
	ctx := ctxT(t, 2*time.Minute)
	setup := `DROP TABLE IF EXISTS raw_project, stage_project, stage_copy, vault_project, mart_x CASCADE;
CREATE TABLE raw_project(id int, name text, amount numeric);
INSERT INTO raw_project VALUES (1, 'a', 10), (2, 'b', 20);
CREATE TABLE stage_project(id int, name text, amount numeric);
CREATE TABLE stage_copy(id int, name text);
CREATE TABLE vault_project(id int, name text, amount numeric)`
	if err := cluster.Primary().Exec(ctx, setup); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, proxytest.DSN(p.WriteAddr(), "postgres", "postgres")+"&default_query_exec_mode=simple_protocol")
	cases := []struct {
		job, sql, inputs, outputs, end string
	}{
		{"raw_to_stage", "/*job='raw_to_stage'*/ INSERT INTO stage_project SELECT id, name, amount FROM raw_project WHERE amount > 5", "postgres.public.raw_project", "postgres.public.stage_project", "COMPLETE"},
		{"ctas", "CREATE TABLE mart_x AS SELECT * FROM stage_project /*job='ctas'*/", "postgres.public.stage_project", "postgres.public.mart_x", "COMPLETE"},
		{"upd", "/*job='upd'*/ UPDATE vault_project v SET amount = s.amount FROM stage_project s WHERE s.id = v.id", "postgres.public.stage_project", "postgres.public.vault_project", "COMPLETE"},
		{"cte", "/*job='cte'*/ WITH src AS (SELECT * FROM raw_project) INSERT INTO vault_project SELECT * FROM src", "postgres.public.raw_project", "postgres.public.vault_project", "COMPLETE"},
		{"broken", "/*job='broken'*/ INSERT INTO stage_project SELECT 1/0, 'x', 1 FROM raw_project", "postgres.public.raw_project", "postgres.public.stage_project", "FAIL"},
	}
	for _, c := range cases {
		_, err := conn.Exec(ctx, c.sql)
		if (c.end == "FAIL") != (err != nil) {
			t.Fatalf("%s: %v", c.job, err)
		}
	}
	// COPY FROM STDIN, tagged.
	if _, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("1\tx\n2\ty\n"), "/*job='copy_in'*/ COPY stage_copy FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	// Untagged: nothing.
	if _, err := conn.Exec(ctx, "INSERT INTO stage_copy SELECT id, name FROM raw_project"); err != nil {
		t.Fatal(err)
	}
	// A tagged prepared statement executed 3 times: 3 runs.
	ext := connect(t, proxytest.DSN(p.WriteAddr(), "postgres", "postgres"))
	for i := 0; i < 3; i++ {
		if _, err := ext.Exec(ctx, "/*job='prepared_job'*/ INSERT INTO stage_copy SELECT id, name FROM raw_project WHERE id = $1", i); err != nil {
			t.Fatal(err)
		}
	}
	want := 2 * (len(cases) + 1 + 3)
	raw := waitEvents(t, m, want)
	if len(raw) != want {
		t.Errorf("%d events, want %d", len(raw), want)
	}
	byRun, last := runsOf(t, raw)
	perJob := map[string][]olEvent{}
	for id, types := range byRun {
		e := last[id]
		if len(types) != 2 || types[0] != "START" {
			t.Errorf("run %s of %s: events %v", id, e.Job.Name, types)
		}
		perJob[e.Job.Name] = append(perJob[e.Job.Name], e)
	}
	for _, c := range cases {
		runs := perJob[c.job]
		if len(runs) != 1 {
			t.Errorf("%s: %d runs", c.job, len(runs))
			continue
		}
		e := runs[0]
		if e.EventType != c.end || e.Job.Namespace != "ofitec" {
			t.Errorf("%s: ended %s in %s", c.job, e.EventType, e.Job.Namespace)
		}
		if got := names(e.Inputs); got != c.inputs {
			t.Errorf("%s: inputs %s, want %s", c.job, got, c.inputs)
		}
		if got := names(e.Outputs); got != c.outputs {
			t.Errorf("%s: outputs %s, want %s", c.job, got, c.outputs)
		}
		if c.end == "FAIL" && !strings.Contains(string(e.Run.Facets["errorMessage"]), "22012") {
			t.Errorf("%s: FAIL without the SQLSTATE in errorMessage: %s", c.job, e.Run.Facets["errorMessage"])
		}
	}
	if runs := perJob["copy_in"]; len(runs) != 1 || names(runs[0].Outputs) != "postgres.public.stage_copy" || runs[0].EventType != "COMPLETE" {
		t.Errorf("copy_in: %+v", runs)
	}
	if runs := perJob["prepared_job"]; len(runs) != 3 {
		t.Errorf("prepared statement executed 3 times: %d runs", len(runs))
	}
	if len(m.CheckErrors()) > 0 {
		t.Errorf("fake Marquez rejected events: %v", m.CheckErrors())
	}
}

// TestLineageMarquezDownOrHanging: queries through the proxy are unaffected
// while Marquez is down or never answers; dropped or failed events are
// counted; goroutines do not grow; delivery resumes when Marquez is back.
func TestLineageMarquezDownOrHanging(t *testing.T) {
	reset(t)
	m := fakemarquez.New()
	t.Cleanup(m.Close)
	p := lineageProxy(t, m)
	ctx := ctxT(t, 2*time.Minute)
	if err := cluster.Primary().Exec(ctx, "DROP TABLE IF EXISTS lin_t; CREATE TABLE lin_t(v int)"); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, proxytest.DSN(p.WriteAddr(), "postgres", "postgres")+"&default_query_exec_mode=simple_protocol")
	runQueries := func(n int) time.Duration {
		start := time.Now()
		for i := 0; i < n; i++ {
			if _, err := conn.Exec(ctx, "/*job='load_lin'*/ INSERT INTO lin_t VALUES (1)"); err != nil {
				t.Fatal(err)
			}
		}
		return time.Since(start)
	}
	runQueries(5) // warm up
	base := runtime.NumGoroutine()
	for _, mode := range []fakemarquez.Mode{fakemarquez.ModeHang, fakemarquez.ModeDown, fakemarquez.ModeRefuse} {
		m.SetMode(mode)
		d := runQueries(300)
		t.Logf("%v: 300 tagged queries in %v", mode, d)
		if g := runtime.NumGoroutine(); g > base+20 {
			t.Errorf("%v: goroutines grew from %d to %d", mode, base, g)
		}
	}
	_, metrics := p.Get(t, "/metrics")
	dropped := metricValue(metrics, `pgproxy_lineage_events_total{result="dropped"}`)
	failed := metricValue(metrics, `pgproxy_lineage_events_total{result="failed"}`)
	if dropped+failed == 0 {
		t.Errorf("no dropped or failed lineage events counted while Marquez was unavailable:\n%s", grep(metrics, "lineage"))
	}
	m.SetMode(fakemarquez.ModeOK)
	m.Reset()
	time.Sleep(2 * time.Second) // let the worker give up on old events
	runQueries(1)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if hasCompleteFor(m.Events(), "load_lin") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !hasCompleteFor(m.Events(), "load_lin") {
		t.Fatalf("delivery did not resume after Marquez came back (%d events)", len(m.Events()))
	}
	var n int
	if err := cluster.Primary().QueryRow(ctx, "SELECT count(*) FROM lin_t", &n); err != nil || n != 906 {
		t.Fatalf("rows %d err %v, want 906", n, err)
	}
}

func hasCompleteFor(raw []json.RawMessage, job string) bool {
	for _, r := range raw {
		var e olEvent
		if json.Unmarshal(r, &e) == nil && e.Job.Name == job && e.EventType == "COMPLETE" {
			return true
		}
	}
	return false
}

func metricValue(metrics, series string) float64 {
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, series+" ") {
			var v float64
			fmt.Sscanf(strings.TrimPrefix(l, series+" "), "%g", &v)
			return v
		}
	}
	return 0
}

// TestSessionJobTag: options=-c pgproxy.job=NAME tags every statement of
// the session and is not forwarded to the server.
func TestSessionJobTag(t *testing.T) {
	reset(t)
	m := fakemarquez.New()
	t.Cleanup(m.Close)
	p := lineageProxy(t, m)
	ctx := ctxT(t, time.Minute)
	cfg, err := pgx.ParseConfig(proxytest.DSN(p.WriteAddr(), "postgres", "postgres") + "&default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["options"] = "-c pgproxy.job=nightly_etl -c work_mem=8MB"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var wm string
	if err := conn.QueryRow(ctx, "SHOW work_mem").Scan(&wm); err != nil || wm != "8MB" {
		t.Fatalf("options not forwarded: work_mem=%q err=%v", wm, err)
	}
	// A statement that touches no table publishes nothing; this one reads pg_class.
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM pg_class"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.WaitFor(ctxT(t, 10*time.Second), 2); err != nil {
		t.Fatal(err)
	}
	byRun, last := runsOf(t, m.Events())
	for id := range byRun {
		if last[id].Job.Name != "nightly_etl" {
			t.Fatalf("session tag: job %q", last[id].Job.Name)
		}
	}
}

// TestLineageHotReload: lineage settings change on reload while a session
// stays open; that session's next tagged statement goes to the new
// transport.
func TestLineageHotReload(t *testing.T) {
	reset(t)
	m1, m2 := fakemarquez.New(), fakemarquez.New()
	t.Cleanup(m1.Close)
	t.Cleanup(m2.Close)
	p := lineageProxy(t, m1)
	ctx := ctxT(t, time.Minute)
	conn := connect(t, proxytest.DSN(p.WriteAddr(), "postgres", "postgres")+"&default_query_exec_mode=simple_protocol")
	if _, err := conn.Exec(ctx, "/*job='before_reload'*/ SELECT count(*) FROM pg_class"); err != nil {
		t.Fatal(err)
	}
	if _, err := m1.WaitFor(ctxT(t, 10*time.Second), 2); err != nil {
		t.Fatal(err)
	}
	next := p.App.Config().Clone()
	next.Lineage.Transport.URL = m2.URL
	next.Lineage.JobNamespace = "ofitec_reloaded"
	if _, err := p.App.Reload(next); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "/*job='after_reload'*/ SELECT count(*) FROM pg_class"); err != nil {
		t.Fatal(err)
	}
	raw, err := m2.WaitFor(ctxT(t, 10*time.Second), 2)
	if err != nil {
		t.Fatalf("no events at the new Marquez after reload: %v", err)
	}
	_, last := runsOf(t, raw)
	for _, e := range last {
		if e.Job.Name != "after_reload" || e.Job.Namespace != "ofitec_reloaded" {
			t.Fatalf("after reload: job %s/%s", e.Job.Namespace, e.Job.Name)
		}
	}
	if n := len(m1.Events()); n != 2 {
		t.Fatalf("the old Marquez got %d events, want the 2 from before the reload", n)
	}
	// Disabling lineage on reload stops events.
	off := p.App.Config().Clone()
	off.Lineage.Enabled = false
	if _, err := p.App.Reload(off); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "/*job='disabled'*/ SELECT count(*) FROM pg_class"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(m2.Events()); n != 2 {
		t.Fatalf("events after lineage was disabled: %d", n)
	}
}

// TestLineageRoutedPerTransaction: with routing.unit transaction, the
// messages of each extended-protocol batch are held until its Sync (where
// it may run is decided then) and reach the server all at once; lineage
// must still see the Parse, Bind and Execute of every tagged statement,
// whether it runs on the primary (a write) or on a replica (a read), the
// first time (Parse in the batch) and when pgx reuses its cached statement
// (Bind and Execute only).
func TestLineageRoutedPerTransaction(t *testing.T) {
	m := fakemarquez.New()
	t.Cleanup(m.Close)
	p := txProxy(t, "session", fmt.Sprintf(`lineage:
  enabled: true
  job_namespace: ofitec
  dataset_namespace: postgres://db-primary:5432
  transport:
    type: http
    url: %s
    queue: 100
    timeout: 1s
`, m.URL))
	ctx := ctxT(t, 2*time.Minute)
	conn := connect(t, txDSN(p, "")) // pgx's default: prepared statements, cached
	const runs = 3
	for i := 0; i < runs; i++ {
		if _, err := conn.Exec(ctx, "/*job='routed_write'*/ UPDATE rt SET v = v + 1 WHERE id = $1", i+1); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := conn.QueryRow(ctx, "/*job='routed_read'*/ SELECT count(*) FROM rt WHERE id > $1", i).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	if got := routed(t, p); got["replica"] < runs {
		t.Fatalf("routed %v: the reads did not go to a replica (the test needs them there)", got)
	}
	want := 2 * 2 * runs
	byRun, last := runsOf(t, waitEvents(t, m, want))
	perJob := map[string]int{}
	for id, types := range byRun {
		e := last[id]
		if len(types) != 2 || types[0] != "START" || types[1] != "COMPLETE" {
			t.Errorf("run %s of %s: events %v", id, e.Job.Name, types)
		}
		perJob[e.Job.Name]++
		switch e.Job.Name {
		case "routed_write":
			if names(e.Outputs) != "postgres.public.rt" {
				t.Errorf("routed_write outputs %s", names(e.Outputs))
			}
		case "routed_read":
			if names(e.Inputs) != "postgres.public.rt" || len(e.Outputs) != 0 {
				t.Errorf("routed_read inputs %s outputs %s", names(e.Inputs), names(e.Outputs))
			}
		}
	}
	if perJob["routed_write"] != runs || perJob["routed_read"] != runs {
		t.Errorf("runs per job %v, want %d each", perJob, runs)
	}
	if len(m.CheckErrors()) > 0 {
		t.Errorf("fake Marquez rejected events: %v", m.CheckErrors())
	}
}
