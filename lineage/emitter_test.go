package lineage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/ofitec/pgproxy/lineage/lineagetest"
	"github.com/ofitec/pgproxy/test/fakemarquez"
)

const testCatalog = `
- name: raw_project
  description: "Proyectos crudos"
  owner: datos@ofitec.cl
- name: ofitec.stage.project
  description: "Proyectos normalizados"
  owner: team:data
  pii: true
  columns:
    - {name: id, type: int}
    - {name: name, type: text, description: "nombre"}
`

// decoded is the part of an event the tests look at.
type decoded struct {
	EventType string `json:"eventType"`
	EventTime string `json:"eventTime"`
	Producer  string `json:"producer"`
	Run       struct {
		RunID  string `json:"runId"`
		Facets struct {
			ProcessingEngine *struct{ Name, Version string } `json:"processing_engine"`
			Parent           *struct {
				Run struct{ RunID string }           `json:"run"`
				Job struct{ Namespace, Name string } `json:"job"`
			} `json:"parent"`
			ErrorMessage *struct{ Message, ProgrammingLanguage string } `json:"errorMessage"`
		} `json:"facets"`
	} `json:"run"`
	Job struct {
		Namespace, Name string
		Facets          struct {
			SQL     *struct{ Query, Dialect string }                       `json:"sql"`
			JobType *struct{ ProcessingType, Integration, JobType string } `json:"jobType"`
		} `json:"facets"`
	} `json:"job"`
	Inputs  []decodedDataset `json:"inputs"`
	Outputs []decodedDataset `json:"outputs"`
}

type decodedDataset struct {
	Namespace, Name string
	Facets          struct {
		Documentation *struct{ Description string } `json:"documentation"`
		Ownership     *struct {
			Owners []struct{ Name string } `json:"owners"`
		} `json:"ownership"`
		Schema *struct {
			Fields []struct{ Name, Type string } `json:"fields"`
		} `json:"schema"`
	} `json:"facets"`
}

func names(ds []decodedDataset) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.Namespace+" "+d.Name)
	}
	return out
}

func writeCatalog(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "catalog.yaml")
	if err := os.WriteFile(p, []byte(testCatalog), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileConfig(t *testing.T) (Config, string) {
	out := filepath.Join(t.TempDir(), "events.jsonl")
	return Config{
		Enabled:          true,
		JobNamespace:     "ofitec",
		DatasetNamespace: "postgres://db-primary:5432",
		CatalogPath:      writeCatalog(t),
		NormalizeSQL:     true,
		Transport:        TransportConfig{Type: "file", Path: out, Queue: 100},
	}, out
}

// readEvents reads a JSON lines file, validating every event against the
// official schemas.
func readEvents(t *testing.T, path string) ([]decoded, [][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []decoded
	var raws [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := append([]byte(nil), sc.Bytes()...)
		lineagetest.Check(t, line)
		var d decoded
		if err := json.Unmarshal(line, &d); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
		raws = append(raws, line)
	}
	return out, raws
}

func startRun(t *testing.T, e *Emitter) (context.CancelFunc, chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	return cancel, done
}

func closeEmitter(t *testing.T, e *Emitter, cancel context.CancelFunc, done chan error) {
	t.Helper()
	ctx, c := context.WithTimeout(context.Background(), 10*time.Second)
	defer c()
	if err := e.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

var session = SessionInfo{Database: "ofitec", User: "etl", ApplicationName: "psql", ServerVersion: "15.8"}

func TestEventsFileTransport(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg, out := fileConfig(t)
	reg := prometheus.NewRegistry()
	e, err := NewEmitter(cfg, zaptest.NewLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := startRun(t, e)

	sql := "/*job='raw_to_stage'*/ INSERT INTO stage.project SELECT id, name FROM raw_project WHERE email = 'ana@example.cl'"
	tags, ok := ParseTags(sql)
	if !ok {
		t.Fatal("not tagged")
	}
	r1 := e.Start(session, sql, tags)
	r1.Complete()
	r1.Complete() // second end: ignored
	r1.Fail("XX000", "ignored")

	parent := uuid.Must(uuid.NewV7()).String()
	r2 := e.Start(session, "DELETE FROM raw_project USING gone WHERE gone.id = raw_project.id",
		Tags{Job: "cleanup", JobNamespace: "etl", ParentJob: "nightly", ParentRunID: parent})
	r2.Fail("23503", `update or delete on table "raw_project" violates foreign key constraint`)

	// Session-wide job, no tags.
	r3 := e.Start(SessionInfo{User: "bob", ServerVersion: "15.8", SessionJob: "session_job"}, "SELECT * FROM t", Tags{})
	r3.Complete()
	// Session-wide job on a statement without datasets: nothing published.
	e.Start(SessionInfo{SessionJob: "session_job"}, "BEGIN", Tags{}).Complete()
	// Unparsable SQL: still a run, with no datasets and no query text.
	r4 := e.Start(session, "SELEC 'secret' FROM", Tags{Job: "broken", JobNamespace: "has space", ParentJob: "p", ParentRunID: "not-a-uuid"})
	r4.Fail("42601", "syntax error")
	// Untagged: nothing.
	if r := e.Start(session, "SELECT 1", Tags{}); r != nil {
		t.Fatal("untagged statement got a run")
	}

	closeEmitter(t, e, cancel, done)
	evs, raws := readEvents(t, out)
	if len(evs) != 8 {
		t.Fatalf("%d events, want 8", len(evs))
	}
	if got := testutil.ToFloat64(e.events.WithLabelValues(ResultSent)); got != 8 {
		t.Errorf("sent = %v, want 8", got)
	}

	// Run 1: START then COMPLETE, same runId (a UUIDv7), datasets and facets.
	s, c := evs[0], evs[1]
	if s.EventType != "START" || c.EventType != "COMPLETE" || s.Run.RunID != c.Run.RunID {
		t.Fatalf("run 1: %s %s %s %s", s.EventType, c.EventType, s.Run.RunID, c.Run.RunID)
	}
	if id := uuid.MustParse(s.Run.RunID); id.Version() != 7 || id != r1.ID() {
		t.Errorf("runId %s: version %d, want 7 and %s", id, id.Version(), r1.ID())
	}
	if _, err := time.Parse(time.RFC3339Nano, s.EventTime); err != nil {
		t.Errorf("eventTime %q: %v", s.EventTime, err)
	}
	if !strings.HasPrefix(s.Producer, "https://github.com/ofitec/pgproxy/tree/") {
		t.Errorf("producer %q", s.Producer)
	}
	if s.Job.Namespace != "ofitec" || s.Job.Name != "raw_to_stage" {
		t.Errorf("job %s/%s", s.Job.Namespace, s.Job.Name)
	}
	for _, ev := range []decoded{s, c} {
		if got := strings.Join(names(ev.Inputs), ","); got != "postgres://db-primary:5432 ofitec.public.raw_project" {
			t.Errorf("%s inputs %s", ev.EventType, got)
		}
		if got := strings.Join(names(ev.Outputs), ","); got != "postgres://db-primary:5432 ofitec.stage.project" {
			t.Errorf("%s outputs %s", ev.EventType, got)
		}
	}
	q := s.Job.Facets.SQL
	if q == nil || strings.Contains(q.Query, "ana@example.cl") || !strings.Contains(q.Query, "$1") || q.Dialect != "postgres" {
		t.Errorf("sql facet %+v: literal must be replaced", q)
	}
	if jt := s.Job.Facets.JobType; jt == nil || *jt != (struct{ ProcessingType, Integration, JobType string }{"BATCH", "PGPROXY", "QUERY"}) {
		t.Errorf("jobType facet %+v", jt)
	}
	if pe := s.Run.Facets.ProcessingEngine; pe == nil || pe.Name != "postgresql" || pe.Version != "15.8" {
		t.Errorf("processing_engine %+v", pe)
	}
	in := s.Inputs[0].Facets
	if in.Documentation == nil || in.Documentation.Description != "Proyectos crudos" ||
		in.Ownership == nil || in.Ownership.Owners[0].Name != "email:datos@ofitec.cl" {
		t.Errorf("catalog facets of raw_project: %+v", in)
	}
	outF := s.Outputs[0].Facets
	if outF.Ownership == nil || outF.Ownership.Owners[0].Name != "team:data" || outF.Schema == nil || len(outF.Schema.Fields) != 2 {
		t.Errorf("catalog facets of stage.project: %+v", outF)
	}
	if s.Run.Facets.ErrorMessage != nil || s.Run.Facets.Parent != nil {
		t.Error("run 1 has errorMessage or parent facet")
	}

	// Run 2: FAIL with errorMessage and parent.
	s, f := evs[2], evs[3]
	if s.EventType != "START" || f.EventType != "FAIL" || s.Run.RunID != f.Run.RunID || s.Run.RunID == evs[0].Run.RunID {
		t.Fatalf("run 2: %s %s", s.EventType, f.EventType)
	}
	em := f.Run.Facets.ErrorMessage
	if em == nil || !strings.Contains(em.Message, "23503") || em.ProgrammingLanguage != "SQL" {
		t.Errorf("errorMessage %+v", em)
	}
	if p := f.Run.Facets.Parent; p == nil || p.Run.RunID != parent || p.Job.Name != "nightly" || p.Job.Namespace != "etl" {
		t.Errorf("parent %+v", p)
	}
	if f.Job.Namespace != "etl" {
		t.Errorf("job_namespace tag ignored: %s", f.Job.Namespace)
	}
	if got := strings.Join(names(f.Inputs), ","); got != "postgres://db-primary:5432 ofitec.public.gone" {
		t.Errorf("run 2 inputs %s", got)
	}

	// Run 3: session job; database defaults to the user.
	if evs[4].Job.Name != "session_job" || evs[4].Inputs[0].Name != "bob.public.t" {
		t.Errorf("run 3: %+v", evs[4])
	}
	// Run 4: unparsable: no datasets, text withheld, bad namespace and parent ignored.
	b := evs[6]
	if len(b.Inputs)+len(b.Outputs) != 0 || strings.Contains(string(raws[6]), "secret") ||
		b.Job.Namespace != "ofitec" || b.Run.Facets.Parent != nil {
		t.Errorf("run 4: %s", raws[6])
	}
}

func TestNormalizeOff(t *testing.T) {
	cfg, out := fileConfig(t)
	cfg.NormalizeSQL = false
	e, err := NewEmitter(cfg, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Start(session, "SELECT * FROM t WHERE x = 'lit'", Tags{Job: "j"}).Complete()
	if err := e.Close(context.Background()); err != nil { // no worker: Close drains
		t.Fatal(err)
	}
	evs, _ := readEvents(t, out)
	if len(evs) != 2 || evs[0].Job.Facets.SQL.Query != "SELECT * FROM t WHERE x = 'lit'" {
		t.Fatalf("events %+v", evs)
	}
}

func TestConsoleTransport(t *testing.T) {
	cfg, _ := fileConfig(t)
	cfg.Transport = TransportConfig{Type: "console"}
	e, err := NewEmitter(cfg, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	e.setWriter(&buf)
	e.Start(session, "TRUNCATE stage_a", Tags{Job: "j"}).Complete()
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	for _, l := range lines {
		lineagetest.Check(t, []byte(l))
	}
}

func TestDisabledAndNil(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, err := NewEmitter(Config{}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if e.Enabled() {
		t.Fatal("enabled")
	}
	if r := e.Start(session, "SELECT 1", Tags{Job: "j"}); r != nil {
		t.Fatal("disabled emitter returned a run")
	}
	cancel, done := startRun(t, e)
	closeEmitter(t, e, cancel, done)
	// The metrics exist even when disabled.
	if n, err := testutil.GatherAndCount(reg, "pgproxy_lineage_events_total", "pgproxy_lineage_queue_depth"); err != nil || n != 4 {
		t.Fatalf("metrics: %d series, %v", n, err)
	}

	var nilE *Emitter
	var nilR *Run
	nilR.Complete()
	nilR.Fail("x", "y")
	if nilE.Start(session, "SELECT 1", Tags{Job: "j"}) != nil || nilE.Close(context.Background()) != nil || nilE.Enabled() || nilR.ID() != uuid.Nil {
		t.Fatal("nil receivers")
	}
}

func TestNewEmitterErrors(t *testing.T) {
	ok := Config{Enabled: true, JobNamespace: "ofitec", DatasetNamespace: "postgres://db:5432", Transport: TransportConfig{Type: "http", URL: "http://127.0.0.1:1"}}
	for name, mut := range map[string]func(*Config){
		"no dataset namespace":  func(c *Config) { c.DatasetNamespace = "" },
		"namespace with scheme": func(c *Config) { c.JobNamespace = "http://x" },
		"namespace with space":  func(c *Config) { c.JobNamespace = "a b" },
		"unknown transport":     func(c *Config) { c.Transport.Type = "kafka" },
		"http without url":      func(c *Config) { c.Transport.URL = "" },
		"file without path":     func(c *Config) { c.Transport = TransportConfig{Type: "file"} },
		"file in missing dir":   func(c *Config) { c.Transport = TransportConfig{Type: "file", Path: "/nonexistent/dir/x"} },
		"missing catalog":       func(c *Config) { c.CatalogPath = "/nonexistent/catalog.yaml" },
	} {
		c := ok
		mut(&c)
		if _, err := NewEmitter(c, nil, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	e, err := NewEmitter(ok, nil, nil)
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	_ = e.Close(context.Background())

	// Registering twice on one registry fails cleanly.
	reg := prometheus.NewRegistry()
	e1, err := NewEmitter(ok, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer e1.Close(context.Background())
	if _, err := NewEmitter(ok, nil, reg); err == nil {
		t.Error("second registration: no error")
	}
}

func TestQueueFullDropsAndNeverBlocks(t *testing.T) {
	cfg, out := fileConfig(t)
	cfg.Transport.Queue = 3
	e, err := NewEmitter(cfg, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// No worker runs: the queue fills, further events are dropped at once.
	for i := 0; i < 5; i++ {
		e.Start(session, "SELECT 1", Tags{Job: "j"}).Complete()
	}
	if got := testutil.ToFloat64(e.events.WithLabelValues(ResultDropped)); got != 7 {
		t.Errorf("dropped = %v, want 7", got)
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs, _ := readEvents(t, out)
	if len(evs) != 3 {
		t.Errorf("%d events delivered, want 3", len(evs))
	}
	// After Close: dropped, counted.
	e.Start(session, "SELECT 1", Tags{Job: "j"})
	if got := testutil.ToFloat64(e.events.WithLabelValues(ResultDropped)); got != 8 {
		t.Errorf("dropped after close = %v, want 8", got)
	}
}

func TestPendingSQLBudget(t *testing.T) {
	old := maxPendingSQL
	maxPendingSQL = 100
	defer func() { maxPendingSQL = old }()
	cfg, out := fileConfig(t)
	e, err := NewEmitter(cfg, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sql := "SELECT * FROM t WHERE x = '" + strings.Repeat("x", 50) + "'" // 78 bytes
	r1 := e.Start(session, sql, Tags{Job: "first"})
	r2 := e.Start(session, sql, Tags{Job: "second"}) // over budget: START dropped
	r2.Complete()                                    // and so its COMPLETE
	r1.Complete()
	if got := testutil.ToFloat64(e.dropped); got != 2 {
		t.Errorf("dropped = %v, want 2", got)
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs, _ := readEvents(t, out)
	if len(evs) != 2 || evs[0].Job.Name != "first" || evs[1].Job.Name != "first" {
		t.Errorf("events %+v", evs)
	}
	if n := e.pendingSQL.Load(); n != 0 {
		t.Errorf("pending SQL bytes after the flush: %d", n)
	}
}

func fastRetries(t *testing.T) {
	old := []any{httpMaxAttempts, httpMaxElapsed, httpBackoffBase, httpBackoffMax}
	httpMaxAttempts, httpMaxElapsed, httpBackoffBase, httpBackoffMax = 4, 2*time.Second, 10*time.Millisecond, 50*time.Millisecond
	t.Cleanup(func() {
		httpMaxAttempts, httpMaxElapsed = old[0].(int), old[1].(time.Duration)
		httpBackoffBase, httpBackoffMax = old[2].(time.Duration), old[3].(time.Duration)
	})
}

func httpConfig(url string) Config {
	return Config{
		Enabled: true, JobNamespace: "ofitec", DatasetNamespace: "postgres://db-primary:5432", NormalizeSQL: true,
		Transport: TransportConfig{Type: "http", URL: url, APIKey: "secret-key", Queue: 100, Timeout: 300 * time.Millisecond},
	}
}

func TestHTTPToMarquezFake(t *testing.T) {
	defer goleak.VerifyNone(t)
	fastRetries(t)
	m := fakemarquez.New()
	defer m.Close()
	m.SetAPIKey("secret-key")
	m.SetCheck(lineagetest.ValidateEvent)
	e, err := NewEmitter(httpConfig(m.URL), zaptest.NewLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := startRun(t, e)
	e.Start(session, "INSERT INTO b SELECT * FROM a", Tags{Job: "a_to_b"}).Complete()
	ctx, c := context.WithTimeout(context.Background(), 10*time.Second)
	defer c()
	evs, err := m.WaitFor(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		lineagetest.Check(t, ev)
	}
	// 5xx is retried: Marquez down, then back within the retry budget.
	m.SetMode(fakemarquez.ModeDown)
	e.Start(session, "SELECT * FROM a", Tags{Job: "reader"})
	for m.Answers(http.StatusServiceUnavailable) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	m.SetMode(fakemarquez.ModeOK)
	if _, err := m.WaitFor(ctx, 3); err != nil {
		t.Fatal(err)
	}
	closeEmitter(t, e, cancel, done)
	if errs := m.CheckErrors(); len(errs) > 0 {
		t.Errorf("schema errors: %v", errs)
	}
	if got := testutil.ToFloat64(e.events.WithLabelValues(ResultSent)); got != 3 {
		t.Errorf("sent = %v, want 3", got)
	}
	if got := testutil.ToFloat64(e.events.WithLabelValues(ResultFailed)); got != 0 {
		t.Errorf("failed = %v, want 0", got)
	}
}

// checkBody validates a POSTed event (from a handler goroutine: Errorf).
func checkBody(t *testing.T, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Errorf("read body: %v", err)
		return
	}
	if err := lineagetest.ValidateEvent(b); err != nil {
		t.Errorf("invalid event: %v", err)
	}
}

func TestHTTP4xxNotRetried(t *testing.T) {
	defer goleak.VerifyNone(t)
	fastRetries(t)
	var hits atomic.Int32
	var auth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		checkBody(t, r)
		auth.Store(r.Header.Get("Authorization") + " " + r.Header.Get("Content-Type") + " " + r.URL.Path)
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = w.Write([]byte(`{"errors":["run.runId must not be null"]}`))
	}))
	defer srv.Close()
	e, err := NewEmitter(httpConfig(srv.URL+"/"), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Start(session, "SELECT 1", Tags{Job: "j"})
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != 1 {
		t.Errorf("%d requests for a 422, want 1 (no retry)", hits.Load())
	}
	if got := auth.Load(); got != "Bearer secret-key application/json /api/v1/lineage" {
		t.Errorf("request: %q", got)
	}
	if got := testutil.ToFloat64(e.events.WithLabelValues(ResultFailed)); got != 1 {
		t.Errorf("failed = %v, want 1", got)
	}
}

func TestHTTP5xxRetriesBounded(t *testing.T) {
	defer goleak.VerifyNone(t)
	fastRetries(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		checkBody(t, r)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	e, err := NewEmitter(httpConfig(srv.URL), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Start(session, "SELECT 1", Tags{Job: "j"})
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != int32(httpMaxAttempts) {
		t.Errorf("%d attempts, want %d", hits.Load(), httpMaxAttempts)
	}
	if got := testutil.ToFloat64(e.events.WithLabelValues(ResultFailed)); got != 1 {
		t.Errorf("failed = %v, want 1", got)
	}
}

// Marquez hangs, is down or refuses connections: emitting never blocks,
// drops are counted, goroutines do not grow; once Marquez is back, delivery
// resumes.
func TestMarquezUnavailableThenBack(t *testing.T) {
	for _, mode := range []fakemarquez.Mode{fakemarquez.ModeHang, fakemarquez.ModeDown, fakemarquez.ModeRefuse} {
		t.Run(mode.String(), func(t *testing.T) {
			defer goleak.VerifyNone(t)
			fastRetries(t)
			m := fakemarquez.New()
			defer m.Close()
			cfg := httpConfig(m.URL)
			cfg.Transport.Queue = 16
			e, err := NewEmitter(cfg, zap.NewNop(), nil)
			if err != nil {
				t.Fatal(err)
			}
			cancel, done := startRun(t, e)
			m.SetMode(mode)
			before := runtime.NumGoroutine()
			const runs = 2000
			for i := 0; i < runs; i++ {
				r := e.Start(session, "INSERT INTO b SELECT * FROM a", Tags{Job: "flood"})
				if i%2 == 0 {
					r.Complete()
				} else {
					r.Fail("57014", "canceling statement due to statement timeout")
				}
			}
			// The worker handles at most a few events while the loop runs
			// (each waits for retries): nearly all the rest is dropped.
			dropped := testutil.ToFloat64(e.events.WithLabelValues(ResultDropped))
			if dropped < runs {
				t.Errorf("dropped = %v, want at least %d", dropped, runs)
			}
			if after := runtime.NumGoroutine(); after > before+8 {
				t.Errorf("goroutines grew from %d to %d", before, after)
			}
			m.SetMode(fakemarquez.ModeOK)
			// Delivery resumes: a marker run arrives once the backlog (at
			// most the queue) is through.
			ctx, c := context.WithTimeout(context.Background(), 30*time.Second)
			defer c()
			markers := 0
			for markers == 0 || !received(m, "marker") {
				if ctx.Err() != nil {
					t.Fatal("delivery did not resume")
				}
				e.Start(session, "SELECT 1", Tags{Job: "marker"}).Complete()
				markers++
				time.Sleep(20 * time.Millisecond)
			}
			for _, ev := range m.Events() {
				lineagetest.Check(t, ev)
			}
			closeEmitter(t, e, cancel, done)
			sent := testutil.ToFloat64(e.events.WithLabelValues(ResultSent))
			if sent != float64(len(m.Events())) {
				t.Errorf("sent = %v, fake received %d", sent, len(m.Events()))
			}
			// Every event is accounted for exactly once.
			failed := testutil.ToFloat64(e.events.WithLabelValues(ResultFailed))
			dropped = testutil.ToFloat64(e.events.WithLabelValues(ResultDropped))
			if total := float64(2*runs + 2*markers); sent+failed+dropped != total {
				t.Errorf("sent %v + failed %v + dropped %v != %v events", sent, failed, dropped, total)
			}
		})
	}
}

func received(m *fakemarquez.Server, job string) bool {
	for _, ev := range m.Events() {
		if bytes.Contains(ev, []byte(`"name":"`+job+`"`)) {
			return true
		}
	}
	return false
}

// Close's deadline bounds a flush against a Marquez that never answers; what
// is left is counted as dropped.
func TestCloseDeadlineWithHungMarquez(t *testing.T) {
	defer goleak.VerifyNone(t)
	fastRetries(t)
	m := fakemarquez.New()
	defer m.Close()
	m.SetMode(fakemarquez.ModeHang)
	cfg := httpConfig(m.URL)
	cfg.Transport.Timeout = time.Hour // only the deadline can end the attempt
	e, err := NewEmitter(cfg, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := startRun(t, e)
	for i := 0; i < 10; i++ {
		e.Start(session, "SELECT 1", Tags{Job: "j"}).Complete()
	}
	ctx, c := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer c()
	_ = e.Close(ctx) // nil or ctx's error, depending on which ends first
	if ctx.Err() == nil {
		t.Error("Close returned before its deadline although Marquez hangs")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sent := testutil.ToFloat64(e.events.WithLabelValues(ResultSent))
	failed := testutil.ToFloat64(e.events.WithLabelValues(ResultFailed))
	dropped := testutil.ToFloat64(e.events.WithLabelValues(ResultDropped))
	if sent != 0 || failed+dropped != 20 || dropped == 0 {
		t.Errorf("sent %v failed %v dropped %v; want 0, and 20 in all", sent, failed, dropped)
	}
}
