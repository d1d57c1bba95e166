package proxy_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestTransactionModeForeignStatementNames: statement names a client did
// not prepare reach no server as they are, since they could be another
// client's statements on the server the proxy shares: a Bind or Describe
// of one gets 26000, a Close of one closes nothing (the owner's next Bind
// still works).
func TestTransactionModeForeignStatementNames(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, pooledConfig(true, 1), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := rawConnect(t, ctx, scramDSN(tp, "a"), "a")
	a.expect("41", &pgproto3.Parse{Name: "mine", Query: "SELECT 41"},
		&pgproto3.Bind{PreparedStatement: "mine"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	// The statement's name on the (only) server.
	names := a.send(&pgproto3.Query{String: "SELECT name FROM pg_prepared_statements WHERE statement = 'SELECT 41'"})
	if len(names) != 1 || names[0] == "" || names[0] == "mine" {
		t.Fatalf("server-side names of a's statement: %v", names)
	}
	server := names[0]
	b := rawConnect(t, ctx, scramDSN(tp, "b"), "b")
	b.expect("E:26000", &pgproto3.Bind{PreparedStatement: server}, &pgproto3.Execute{}, &pgproto3.Sync{})
	b.expect("E:26000", &pgproto3.Describe{ObjectType: 'S', Name: server}, &pgproto3.Sync{})
	b.expect("", &pgproto3.Close{ObjectType: 'S', Name: server}, &pgproto3.Sync{})
	a.expect("41", &pgproto3.Bind{PreparedStatement: "mine"}, &pgproto3.Execute{}, &pgproto3.Sync{})
}

// TestTransactionModeStringsSettingPipelined: a SET of
// standard_conforming_strings sent in the same write as a statement that
// relies on it (its ParameterStatus has not come back when the second is
// checked) still pins the client.
func TestTransactionModeStringsSettingPipelined(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, oneServerConfig(), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := rawConnect(t, ctx, scramDSN(tp, "a"), "a")
	a.send(&pgproto3.Query{String: "SET standard_conforming_strings = off"},
		&pgproto3.Query{String: `SELECT '\'; SELECT '; SET statement_timeout = 1234000; --'`})
	wantPinned(t, ctx, tp, "b", "the first may have hidden a SET")
	a.hc.Conn.Close()
	b, err := connectEventually(ctx, func() (*pgx.Conn, error) { return pgx.Connect(ctx, scramDSN(tp, "b")) })
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if got := queryString(t, ctx, b, "SELECT current_setting('statement_timeout')"); got != "0" {
		t.Errorf("second client sees statement_timeout %q, want 0", got)
	}
}
