package proxy_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ofitec/pgproxy/proxy"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestTransactionModeFunctionCallPins: a FunctionCall message names its
// function by OID, with no SQL the proxy could check, so in transaction
// mode it pins the client (set_config through the fast path would
// otherwise leave a setting for the next client of the server), except for
// libpq's large-object functions, whose descriptors end with their
// transaction.
func TestTransactionModeFunctionCallPins(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, oneServerConfig(), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	direct, err := pgx.Connect(ctx, cluster.Primary().DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	oid := func(fn string) uint32 {
		var o uint32
		if err := direct.QueryRow(ctx, "SELECT $1::regprocedure::oid", fn).Scan(&o); err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
		return o
	}
	// The OIDs the proxy lets through are libpq's large-object functions.
	fns := []string{"lo_open(oid,integer)", "lo_close(integer)", "loread(integer,integer)", "lowrite(integer,bytea)",
		"lo_lseek(integer,integer,integer)", "lo_creat(integer)", "lo_tell(integer)", "lo_unlink(oid)", "lo_create(oid)",
		"lo_truncate(integer,integer)", "lo_lseek64(integer,bigint,integer)", "lo_tell64(integer)", "lo_truncate64(integer,bigint)"}
	if len(proxy.LargeObjectFunctions) != len(fns) {
		t.Errorf("%d large-object functions let through, want %d", len(proxy.LargeObjectFunctions), len(fns))
	}
	for _, fn := range fns {
		if o := oid(fn); !proxy.LargeObjectFunctions[o] {
			t.Errorf("%s (oid %d) is not in the proxy's large-object list", fn, o)
		}
	}

	secondGetsServer := func() (*pgx.Conn, error) {
		return pgx.Connect(ctx, scramDSN(tp, "b"))
	}

	// set_config through the fast path: pinned, so the second client
	// cannot have the only server while the first is connected, and sees
	// none of the setting after.
	a := rawConnect(t, ctx, scramDSN(tp, "a"), "a")
	a.expect("F:1234s", &pgproto3.FunctionCall{Function: oid("set_config(text,text,boolean)"),
		ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("statement_timeout"), []byte("1234s"), []byte("false")}})
	wantPinned(t, ctx, tp, "b", "the first called set_config through a FunctionCall")
	a.hc.Conn.Close()
	b, err := connectEventually(ctx, secondGetsServer)
	if err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, ctx, b, "SELECT current_setting('statement_timeout')"); got != "0" {
		t.Errorf("second client sees statement_timeout %q, want 0", got)
	}
	b.Close(ctx)

	// A large-object call does not pin: another client gets the server.
	c := rawConnect(t, ctx, scramDSN(tp, "c"), "c")
	got := c.send(&pgproto3.Query{String: "BEGIN"},
		&pgproto3.FunctionCall{Function: oid("lo_creat(integer)"), ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("-1")}},
		&pgproto3.Query{String: "ROLLBACK"})
	if len(got) != 1 || got[0] == "" || got[0][:2] != "F:" {
		t.Fatalf("lo_creat: %v", got)
	}
	d, err := secondGetsServer()
	if err != nil {
		t.Fatalf("a client after a large-object call: %v (the call pinned the first)", err)
	}
	d.Close(ctx)
}

// connectEventually retries connect while the server of a closed client is
// still being given back (53300 for up to a few tries).
func connectEventually(ctx context.Context, connect func() (*pgx.Conn, error)) (*pgx.Conn, error) {
	for i := 0; ; i++ {
		c, err := connect()
		var pe *pgconn.PgError
		if err == nil || i == 10 || !errors.As(err, &pe) || pe.Code != "53300" {
			return c, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTransactionModeTempSearchPathPins: a client whose startup
// search_path names pg_temp makes temporary tables with an unqualified
// CREATE TABLE, so it keeps its server from the start.
func TestTransactionModeTempSearchPathPins(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, oneServerConfig(), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := pgx.Connect(ctx, scramDSN(tp, "a")+"&options=-c%20search_path%3Dpg_temp,public&default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "CREATE TABLE leak_opt AS SELECT 1 AS v"); err != nil {
		t.Fatal(err)
	}
	wantPinned(t, ctx, tp, "b", "the first has a temporary table")
	a.Close(ctx)
	b, err := connectEventually(ctx, func() (*pgx.Conn, error) { return pgx.Connect(ctx, scramDSN(tp, "b")) })
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if got := queryString(t, ctx, b, "SELECT coalesce(to_regclass('pg_temp.leak_opt')::text, 'none')"); got != "none" {
		t.Errorf("second client sees %q, want none", got)
	}
}
