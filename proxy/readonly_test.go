package proxy_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ofitec/pgproxy/internal/sqlscan"
	"github.com/ofitec/pgproxy/proxy"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

// The read-only guard answers refused statements itself (policy_readonly.go).
// These tests run the same protocol scripts against PostgreSQL and through a
// read-only session of the proxy: REFUSED stands for a statement the guard
// refuses (through the proxy) or one PostgreSQL fails at the same place (a
// read of a table that does not exist: at Parse in the extended protocol, at
// execution in a simple Query, and 25P02 in a failed block). What the client
// receives must be the same message for message, but for that one error's
// SQLSTATE; and the server must not have seen a thing.

const refusedSQL, failingSQL = "SET default_transaction_read_only = off", "SELECT * FROM pgproxy_no_such_table"

type roStep struct {
	send []pgproto3.FrontendMessage
	// until: read until this many ReadyForQuery messages; 0: until an
	// ErrorResponse (a client that waits for the error before its Sync);
	// -1: until a CommandComplete (one that reads a result after a Flush).
	until int
}

func q(sql string) *pgproto3.Query           { return &pgproto3.Query{String: sql} }
func parse(name, sql string) *pgproto3.Parse { return &pgproto3.Parse{Name: name, Query: sql} }

// ext is Parse (unnamed), Bind, Describe portal, Execute.
func ext(sql string) []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{parse("", sql), &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}}
}

func msgs(parts ...any) []pgproto3.FrontendMessage {
	var out []pgproto3.FrontendMessage
	for _, p := range parts {
		switch p := p.(type) {
		case pgproto3.FrontendMessage:
			out = append(out, p)
		case []pgproto3.FrontendMessage:
			out = append(out, p...)
		case string:
			out = append(out, q(p))
		}
	}
	return out
}

var (
	syncM  = &pgproto3.Sync{}
	flushM = &pgproto3.Flush{}
)

var roScripts = []struct {
	name  string
	steps []roStep
}{
	{"simple pipelined", []roStep{{msgs("SELECT 1", "REFUSED", "SELECT 2"), 3}}},
	{"simple in a block", []roStep{{msgs("BEGIN", "SET search_path = in_block", "SELECT 1", "REFUSED", "SELECT 2", "COMMIT", "SHOW search_path"), 7}}},
	{"simple: rollback, abort, end", []roStep{{msgs("BEGIN", "REFUSED", "ROLLBACK", "BEGIN", "REFUSED", "ABORT", "START TRANSACTION", "REFUSED", "END"), 9}}},
	{"simple: commit and chain, then a statement", []roStep{{msgs("BEGIN", "REFUSED", "COMMIT AND CHAIN", "SELECT 1", "COMMIT"), 5}}},
	{"simple: commit with more statements", []roStep{{msgs("BEGIN", "REFUSED", "COMMIT; SELECT 7"), 3}}},
	{"simple: savepoint", []roStep{{msgs("BEGIN", "SAVEPOINT s", "SELECT 1", "REFUSED", "RELEASE SAVEPOINT s", "ROLLBACK TO SAVEPOINT s", "SELECT 2", "COMMIT"), 8}}},
	{"simple: no such savepoint", []roStep{{msgs("BEGIN", "REFUSED", "ROLLBACK TO SAVEPOINT nope", "SELECT 1", "ROLLBACK"), 5}}},
	{"simple: in a block the server failed", []roStep{{msgs("BEGIN", "SELECT 1/0", "REFUSED", "ROLLBACK"), 4}}},
	{"extended pipeline", []roStep{{msgs(ext("SELECT 1"), ext("REFUSED"), ext("SELECT 2"), syncM, ext("SELECT 3"), syncM), 2}}},
	{"extended: error before Sync, inside a batch", []roStep{
		{msgs(ext("SELECT 1"), ext("REFUSED"), flushM), 0},
		{msgs(ext("SELECT 2"), syncM, ext("SELECT 3"), syncM), 2},
	}},
	{"extended: error before Sync, at a batch's start", []roStep{
		{msgs(parse("s1", "REFUSED"), &pgproto3.Describe{ObjectType: 'S', Name: "s1"}, flushM), 0},
		{msgs(syncM), 1},
		{msgs(&pgproto3.Bind{PreparedStatement: "s1"}, &pgproto3.Execute{}, syncM), 1},
	}},
	{"extended: error before Sync, after a Flush answered", []roStep{
		{msgs(ext("SELECT 1"), flushM), -1},
		{msgs(ext("REFUSED"), flushM), 0},
		{msgs(syncM, ext("SELECT 2"), syncM), 2},
	}},
	{"extended: the server failed first in the batch", []roStep{{msgs(ext("SELECT 1/0"), ext("REFUSED"), syncM, ext("SELECT 2"), syncM), 2}}},
	{"extended in a block", []roStep{{msgs("BEGIN", ext("SELECT 1"), syncM, ext("REFUSED"), syncM, ext("SELECT 2"), syncM, &pgproto3.Describe{ObjectType: 'S'}, syncM, ext("COMMIT"), syncM, "SELECT 3"), 7}}},
	{"extended: ROLLBACK TO SAVEPOINT", []roStep{{msgs("BEGIN", "SAVEPOINT s", ext("REFUSED"), syncM, ext("ROLLBACK TO SAVEPOINT s"), ext("SELECT 1"), syncM, "COMMIT"), 5}}},
	{"extended: prepared COMMIT", []roStep{{msgs(
		parse("c", "COMMIT"), parse("r", "ROLLBACK"), syncM,
		"BEGIN", "SET search_path = in_block", "REFUSED",
		&pgproto3.Describe{ObjectType: 'S', Name: "c"}, &pgproto3.Bind{PreparedStatement: "c"}, &pgproto3.Execute{}, syncM,
		"SHOW search_path",
		"BEGIN", "REFUSED", &pgproto3.Bind{DestinationPortal: "p", PreparedStatement: "r"}, &pgproto3.Execute{Portal: "p"}, syncM,
		&pgproto3.Bind{}, &pgproto3.Execute{}, syncM, // the unnamed statement: never made by the client
		"BEGIN", &pgproto3.Bind{PreparedStatement: "c"}, &pgproto3.Execute{}, syncM), 12}}},
	{"extended: unnamed statement of a refused Parse", []roStep{{msgs(parse("", "SELECT 1"), syncM, parse("", "REFUSED"), syncM, &pgproto3.Bind{}, &pgproto3.Execute{}, syncM,
		&pgproto3.Describe{ObjectType: 'S'}, syncM, ext("SELECT 2"), syncM), 5}}},
	{"Queries after an unsynced batch that failed", []roStep{{msgs(ext("SELECT 1/0"), "SELECT 2", "SELECT 3", syncM, ext("SELECT 1/0"), "SELECT 4", "REFUSED", "SELECT 5", syncM, "SELECT 6"), 3}}},
	{"a Query inside an unsynced batch", []roStep{{msgs(ext("SELECT 1"), "REFUSED", syncM, ext("SELECT 1/0"), "SELECT 2", syncM, "REFUSED", ext("SELECT 3"), "SELECT 4", syncM), 6}}},
}

func runScript(t *testing.T, pc *pgconn.PgConn, steps []roStep, refused string) (got []string, errs []*pgproto3.ErrorResponse) {
	t.Helper()
	fe := pc.Frontend()
	sub := func(s string) string { return strings.ReplaceAll(s, "REFUSED", refused) }
	for i, st := range steps {
		for _, m := range st.send {
			switch m := m.(type) {
			case *pgproto3.Query:
				fe.Send(q(sub(m.String)))
			case *pgproto3.Parse:
				fe.Send(parse(m.Name, sub(m.Query)))
			default:
				fe.Send(m)
			}
		}
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		_ = pc.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
		for zs := 0; ; {
			msg, err := fe.Receive()
			if err != nil {
				t.Fatalf("step %d after %v: %v", i, got, err)
			}
			var s string
			switch m := msg.(type) {
			case *pgproto3.ReadyForQuery:
				s = "Z" + string(m.TxStatus)
				zs++
			case *pgproto3.ErrorResponse:
				s = "E:" + m.Code
				if m.Code == "25006" || m.Code == "42P01" {
					s = "E:refused"
				}
				c := *m
				errs = append(errs, &c)
			case *pgproto3.CommandComplete:
				s = "C:" + string(m.CommandTag)
			case *pgproto3.DataRow:
				var vs []string
				for _, v := range m.Values {
					vs = append(vs, string(v))
				}
				s = "D:" + strings.Join(vs, ",")
			case *pgproto3.RowDescription:
				s = "T"
			case *pgproto3.ParseComplete:
				s = "1"
			case *pgproto3.BindComplete:
				s = "2"
			case *pgproto3.CloseComplete:
				s = "3"
			case *pgproto3.NoData:
				s = "n"
			case *pgproto3.ParameterDescription:
				s = "t"
			case *pgproto3.EmptyQueryResponse:
				s = "I"
			case *pgproto3.PortalSuspended:
				s = "s"
			case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
				continue
			default:
				s = fmt.Sprintf("%T", msg)
			}
			got = append(got, s)
			if st.until == 0 && s[0] == 'E' || st.until > 0 && zs == st.until || st.until < 0 && s[0] == 'C' {
				break
			}
		}
	}
	_ = pc.Conn().SetReadDeadline(time.Time{})
	return got, errs
}

// readOnlyProxy is a proxy whose every session is enforced read-only on the
// primary, as a read session that fell back to it.
func readOnlyProxy(t *testing.T) *testProxy {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	return startProxy(t, proxy.Config{ReadOnlyCheck: sqlscan.ReadOnlyViolation}, staticDirector{addr: cluster.Primary().Addr(), readOnly: true})
}

// primaryErrors counts the ERROR lines in the primary's log.
func primaryErrors() int { return strings.Count(cluster.Primary().Log(), "ERROR:") }

func TestReadOnlyRefusalsAsPostgreSQL(t *testing.T) {
	tp := readOnlyProxy(t)
	compareRefusals(t, func(t *testing.T) *pgconn.PgConn { return rawSession(t, tp) })
}

// TestReadOnlyRefusalsSlowCheck: the same with a read-only check slow
// enough for the server to have answered, by the time the guard decides a
// statement, everything sent before it (an error at once, the rest at a
// Flush): what the guard makes of those answers must not depend on whether
// the statement's entry was listed yet (the ordering rule in
// policy_readonly.go).
func TestReadOnlyRefusalsSlowCheck(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	slow := func(sql string) (string, bool, error) {
		time.Sleep(30 * time.Millisecond)
		return sqlscan.ReadOnlyViolation(sql)
	}
	tp := startProxy(t, proxy.Config{ReadOnlyCheck: slow}, staticDirector{addr: cluster.Primary().Addr(), readOnly: true})
	compareRefusals(t, func(t *testing.T) *pgconn.PgConn { return rawSession(t, tp) })
}

// TestPooledReadOnlyRefusalsAsPostgreSQL: the same through a pooled
// read-only session, whose relay rewrites what the guard forwards (in
// transaction mode: statement names, Parses the server already has).
func TestPooledReadOnlyRefusalsAsPostgreSQL(t *testing.T) {
	pgcluster.Require(t, cluster)
	for _, mode := range []struct {
		name string
		trx  bool
	}{{"session", false}, {"transaction", true}} {
		t.Run(mode.name, func(t *testing.T) {
			checkLeaks(t)
			tp := startProxy(t, pooledConfig(mode.trx, 2), staticDirector{addr: cluster.Primary().Addr(), readOnly: true})
			compareRefusals(t, func(t *testing.T) *pgconn.PgConn {
				pc, err := pgconn.Connect(ctxT(t, 10*time.Second), scramDSN(tp, "ro"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { pc.Close(context.Background()) })
				return pc
			})
		})
	}
}

// compareRefusals runs each of roScripts on PostgreSQL directly and on a
// session that connect opens through the proxy.
func compareRefusals(t *testing.T, connect func(*testing.T) *pgconn.PgConn) {
	ctx := ctxT(t, 60*time.Second)
	cfg, err := pgconn.ParseConfig(cluster.Primary().DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["default_transaction_read_only"] = "on"
	for _, sc := range roScripts {
		t.Run(sc.name, func(t *testing.T) {
			direct, err := pgconn.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer direct.Close(context.Background())
			want, _ := runScript(t, direct, sc.steps, failingSQL)

			before := len(cluster.Primary().Log())
			got, errs := runScript(t, connect(t), sc.steps, refusedSQL)
			t.Logf("%v", got)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("through the proxy:\n got  %v\nPostgreSQL:\n want %v", got, want)
			}
			for _, e := range errs {
				if e.Code == "25006" && (e.Severity != "ERROR" || e.Where != "" || !strings.HasPrefix(e.Message, "pgproxy: refused on a read-only session: SET default_transaction_read_only")) {
					t.Errorf("refusal: %+v", e)
				}
			}
			// The server never saw a refused statement, nor raised a refusal.
			if log := cluster.Primary().Log()[before:]; strings.Contains(log, "pgproxy") || strings.Contains(log, "default_transaction_read_only") {
				t.Errorf("the primary saw a refusal:\n%s", log)
			}
		})
	}
}

// TestReadOnlyRefusalNoServerTrace: psql through a read-only session sees the
// refusal without CONTEXT (the DO block it used to be sent as said "PL/pgSQL
// function inline_code_block"), the block it fails inside answers 25P02 and
// its COMMIT says ROLLBACK, and the primary logs nothing.
func TestReadOnlyRefusalNoServerTrace(t *testing.T) {
	tp := readOnlyProxy(t)
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("psql not on PATH")
	}
	before := primaryErrors()
	script := "SET default_transaction_read_only = off;\nSELECT 'after-refusal';\nBEGIN;\nSELECT set_config('default_transaction_read_only', 'off', false);\nSELECT 'aborted';\nCOMMIT;\nSHOW default_transaction_read_only;\n"
	cmd := exec.CommandContext(ctxT(t, 30*time.Second), psql, "-X", "-A", "-t", "-v", "VERBOSITY=verbose", "-f", "-", tp.dsn("postgres", "postgres"))
	cmd.Stdin = strings.NewReader(script)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	out, errs := stdout.String(), stderr.String()
	for _, want := range []string{"after-refusal", "BEGIN", "ROLLBACK", "on"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q\nstdout:\n%s\nstderr:\n%s", want, out, errs)
		}
	}
	if strings.Contains(out, "aborted") {
		t.Errorf("a statement ran in the failed block\n%s", out)
	}
	for _, want := range []string{"ERROR:  25006: pgproxy: refused on a read-only session: SET default_transaction_read_only", "ERROR:  25006: pgproxy: refused on a read-only session: set_config", "ERROR:  25P02: current transaction is aborted"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q\n%s", want, errs)
		}
	}
	if strings.Contains(errs, "CONTEXT") || strings.Contains(errs, "LOCATION") {
		t.Errorf("the refusal carries server context:\n%s", errs)
	}
	if n := primaryErrors() - before; n != 0 {
		t.Errorf("the primary logged %d ERRORs:\n%s", n, cluster.Primary().Log())
	}
}

// TestReadOnlyFunctionCallRefused: a FunctionCall is answered by the proxy
// (ErrorResponse, ReadyForQuery), with 25P02 and 'E' in a failed block.
func TestReadOnlyFunctionCallRefused(t *testing.T) {
	tp := readOnlyProxy(t)
	pc := rawSession(t, tp)
	before := primaryErrors()
	call := &pgproto3.FunctionCall{Function: 177, ArgFormatCodes: []uint16{1}, Arguments: [][]byte{{0, 0, 0, 40}, {0, 0, 0, 2}}, ResultFormatCode: 1}
	got, _ := runScript(t, pc, []roStep{{[]pgproto3.FrontendMessage{call, q("BEGIN"), call, call, q("ROLLBACK")}, 5}}, "")
	want := "[E:refused ZI C:BEGIN ZT E:refused ZE E:25P02 ZE C:ROLLBACK ZI]"
	if fmt.Sprint(got) != want {
		t.Errorf("got %v, want %s", got, want)
	}
	if n := primaryErrors() - before; n != 0 {
		t.Errorf("the primary logged %d ERRORs", n)
	}
}

// TestReadOnlyRefusalInPgconnPipeline: pgconn's pipeline mode gets the
// refusal at its place, the rest of its batch skipped, the next batch run,
// and the session stays usable; also when it reads the error before it
// sends the Sync.
func TestReadOnlyRefusalInPgconnPipeline(t *testing.T) {
	tp := readOnlyProxy(t)
	ctx := ctxT(t, 30*time.Second)
	pc := rawSession(t, tp)
	before := len(cluster.Primary().Log())

	p := pc.StartPipeline(ctx)
	p.SendQueryParams("SELECT 1", nil, nil, nil, nil)
	p.SendQueryParams(refusedSQL, nil, nil, nil, nil)
	p.SendQueryParams("SELECT 2", nil, nil, nil, nil)
	p.SendPipelineSync()
	p.SendQueryParams("SELECT $1::int", [][]byte{[]byte("3")}, nil, nil, nil)
	p.SendPipelineSync()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 5 {
		res, err := p.GetResults()
		switch r := res.(type) {
		case *pgconn.ResultReader:
			rows := r.Read()
			s := "rows:" + fmt.Sprint(len(rows.Rows))
			if len(rows.Rows) == 1 {
				s = "row:" + string(rows.Rows[0][0])
			}
			if rows.Err != nil {
				s = "error:" + sqlState(rows.Err)
			}
			got = append(got, s)
		case *pgconn.PipelineSync:
			got = append(got, "sync")
		case nil:
			if err == nil {
				t.Fatalf("no more results after %v", got)
			}
			got = append(got, "error:"+sqlState(err))
		}
	}
	if want := "[row:1 error:25006 sync row:3 sync]"; fmt.Sprint(got) != want {
		t.Errorf("pipeline: %v, want %s", got, want)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	// The error arrives before the Sync is sent (Flush only).
	p = pc.StartPipeline(ctx)
	p.SendQueryParams("SELECT 4", nil, nil, nil, nil)
	p.SendQueryParams(refusedSQL, nil, nil, nil, nil)
	p.SendFlushRequest()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if res, err := p.GetResults(); err != nil {
		t.Fatal(err)
	} else if rows := res.(*pgconn.ResultReader).Read(); rows.Err != nil || len(rows.Rows) != 1 {
		t.Fatalf("SELECT 4: %v %v", rows.Rows, rows.Err)
	}
	_ = pc.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := p.GetResults(); sqlState(err) != "25006" {
		t.Fatalf("refused statement before Sync: %v, want 25006", err)
	}
	_ = pc.Conn().SetReadDeadline(time.Time{})
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	if res, err := p.GetResults(); err != nil {
		t.Fatal(err)
	} else if _, ok := res.(*pgconn.PipelineSync); !ok {
		t.Fatalf("after Sync: %T", res)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Exec(ctx, "SELECT 1").ReadAll(); err != nil || pc.TxStatus() != 'I' {
		t.Fatalf("after the pipelines: %v, status %c", err, pc.TxStatus())
	}
	if log := cluster.Primary().Log()[before:]; strings.Contains(log, "pgproxy") || strings.Contains(log, "default_transaction_read_only") {
		t.Errorf("the primary saw a refusal:\n%s", log)
	}
}
