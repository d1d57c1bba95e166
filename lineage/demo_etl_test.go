package lineage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap/zaptest"

	"github.com/ofitec/pgproxy/internal/sqlscan"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every data-moving statement of the demo ETL is tagged and parses; the
// datasets form the raw → stage → vault → marts chain.
func TestDemoETLStatements(t *testing.T) {
	stmts, err := sqlscan.Split(readFile(t, "../deploy/demo/etl.sql"))
	if err != nil {
		t.Fatal(err)
	}
	jobs := 0
	for _, s := range stmts {
		_, writes, err := sqlscan.Tables(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		tags, ok := ParseTags(s)
		isDDL := strings.Contains(strings.ToLower(s), "create table stage.") ||
			strings.Contains(strings.ToLower(s), "create table vault.") ||
			strings.HasPrefix(strings.TrimSpace(strings.ToLower(s)), "drop schema") ||
			strings.HasPrefix(strings.TrimSpace(strings.ToLower(s)), "create schema")
		if !ok && len(writes) > 0 && !isDDL {
			t.Errorf("untagged statement writes %v: %q", writes, s)
		}
		if ok {
			jobs++
			if tags.JobNamespace != "ofitec" {
				t.Errorf("job %s: namespace %q", tags.Job, tags.JobNamespace)
			}
		}
	}
	if jobs < 8 {
		t.Errorf("%d tagged statements, want at least 8", jobs)
	}
}

// The demo ETL against real PostgreSQL 15, each statement wrapped the way the
// proxy will: Start before it is sent, Complete on CommandComplete, Fail on
// ErrorResponse. Every event validates; the lineage chain is complete.
func TestDemoETLOnPostgres(t *testing.T) {
	pgcluster.Require(t, cluster)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := cluster.Primary()
	_ = p.Exec(ctx, "DROP DATABASE IF EXISTS ofitec")
	if err := p.Exec(ctx, "CREATE DATABASE ofitec"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgconn.Connect(ctx, p.DSN("ofitec"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, readFile(t, "../deploy/demo/marts.sql")).ReadAll(); err != nil {
		t.Fatalf("marts.sql: %v", err)
	}
	var version string
	if r := conn.ExecParams(ctx, "SHOW server_version", nil, nil, nil, nil).Read(); r.Err != nil {
		t.Fatal(r.Err)
	} else {
		version = string(r.Rows[0][0])
	}

	out := filepath.Join(t.TempDir(), "events.jsonl")
	e, err := NewEmitter(Config{
		Enabled: true, JobNamespace: "ofitec", DatasetNamespace: "postgres://127.0.0.1:5432",
		CatalogPath: "../configs/catalog.yaml", NormalizeSQL: true,
		Transport: TransportConfig{Type: "file", Path: out},
	}, zaptest.NewLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(rctx) }()

	info := SessionInfo{Database: "ofitec", User: "postgres", ServerVersion: version}
	stmts, err := sqlscan.Split(readFile(t, "../deploy/demo/etl.sql"))
	if err != nil {
		t.Fatal(err)
	}
	// Plus one statement that fails on the server.
	stmts = append(stmts, "/*job='load_missing'*/ INSERT INTO stage.nope SELECT * FROM raw.proyectos")
	runs := 0
	for _, s := range stmts {
		var run *Run
		if HasTag([]byte(s)) {
			if tags, ok := ParseTags(s); ok {
				run = e.Start(info, s, tags)
				runs++
			}
		}
		_, err := conn.Exec(ctx, s).ReadAll()
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			run.Complete()
		case errors.As(err, &pgErr):
			run.Fail(pgErr.Code, pgErr.Message)
			if !strings.Contains(s, "load_missing") {
				t.Errorf("%q: %v", s, err)
			}
		default:
			t.Fatalf("%q: %v", s, err)
		}
	}
	// The file is re-runnable and also works as one multi-statement Query
	// (how `pgproxy demo` may send it): one run named by its first tag.
	whole := readFile(t, "../deploy/demo/etl.sql")
	if _, err := conn.Exec(ctx, whole).ReadAll(); err != nil {
		t.Fatalf("etl.sql as one Query: %v", err)
	}
	if tags, ok := ParseTags(whole); !ok || tags.Job != "ofitec_demo_etl" {
		t.Errorf("whole file tags %+v", tags)
	}
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if err := e.Close(cctx); err != nil {
		t.Fatal(err)
	}
	rcancel()
	<-done

	evs, _ := readEvents(t, out) // validates each against the schemas
	if len(evs) != 2*runs {
		t.Fatalf("%d events for %d runs", len(evs), runs)
	}
	edges := map[string]bool{}
	var failed *decoded
	for i := range evs {
		ev := evs[i]
		if ev.EventType == "FAIL" {
			failed = &evs[i]
		}
		if ev.EventType != "COMPLETE" {
			continue
		}
		if ev.Run.Facets.ProcessingEngine.Version != version {
			t.Errorf("engine version %q", ev.Run.Facets.ProcessingEngine.Version)
		}
		for _, in := range ev.Inputs {
			for _, o := range ev.Outputs {
				edges[strings.TrimPrefix(in.Name, "ofitec.")+" -> "+strings.TrimPrefix(o.Name, "ofitec.")] = true
			}
		}
	}
	for _, want := range []string{
		"public.of_proyectos -> raw.proyectos",
		"public.of_facturas -> raw.facturas",
		"raw.proyectos -> stage.proyecto",
		"raw.facturas -> stage.factura",
		"stage.proyecto -> vault.hub_proyecto",
		"stage.factura -> vault.sat_factura",
		"vault.hub_proyecto -> public.mart_cartera_proyecto",
		"vault.sat_factura -> public.mart_cartera_proyecto",
	} {
		if !edges[want] {
			keys := make([]string, 0, len(edges))
			for k := range edges {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			t.Errorf("missing lineage edge %s; have %v", want, keys)
		}
	}
	if failed == nil || failed.Job.Name != "load_missing" || !strings.Contains(failed.Run.Facets.ErrorMessage.Message, "42P01") {
		t.Errorf("FAIL event: %+v", failed)
	}
}
