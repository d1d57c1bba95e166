package proxy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// rawClient is a client speaking the protocol message by message.
type rawClient struct {
	t    *testing.T
	name string
	fe   *pgproto3.Frontend
	hc   *pgconn.HijackedConn
}

func rawConnect(t *testing.T, ctx context.Context, dsn, name string) *rawClient {
	t.Helper()
	pc, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("%s: connect: %v", name, err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Conn.Close() })
	return &rawClient{t: t, name: name, fe: hc.Frontend, hc: hc}
}

// send sends msgs in one write and reads the answers up to the
// ReadyForQuery of each Sync, Query and FunctionCall among them. It returns
// the answers summed up: each DataRow's first column, "F:<result>" per
// FunctionCallResponse, "E:<SQLSTATE>" per ErrorResponse.
func (c *rawClient) send(msgs ...pgproto3.FrontendMessage) []string {
	c.t.Helper()
	want := 0
	for _, m := range msgs {
		c.fe.Send(m)
		switch m.(type) {
		case *pgproto3.Sync, *pgproto3.Query, *pgproto3.FunctionCall:
			want++
		}
	}
	if err := c.fe.Flush(); err != nil {
		c.t.Fatalf("%s: send: %v", c.name, err)
	}
	_ = c.hc.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []string
	for want > 0 {
		m, err := c.fe.Receive()
		if err != nil {
			c.t.Fatalf("%s: receive: %v (so far %v)", c.name, err, got)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			got = append(got, string(m.Values[0]))
		case *pgproto3.FunctionCallResponse:
			got = append(got, "F:"+string(m.Result))
		case *pgproto3.ErrorResponse:
			got = append(got, "E:"+m.Code)
		case *pgproto3.ReadyForQuery:
			want--
		}
	}
	return got
}

func (c *rawClient) expect(want string, msgs ...pgproto3.FrontendMessage) {
	c.t.Helper()
	if got := strings.Join(c.send(msgs...), ","); got != want {
		c.t.Errorf("%s: got %q, want %q", c.name, got, want)
	}
}

func parseUnnamed(sql string) *pgproto3.Parse { return &pgproto3.Parse{Query: sql} }

var (
	bindUnnamed = &pgproto3.Bind{}
	execute     = &pgproto3.Execute{}
	syncMsg     = &pgproto3.Sync{}
)

// TestTransactionModeUnnamedStatementTwoClients: two clients share one
// server in transaction mode; each one's unnamed statement lives, and
// dies, as PostgreSQL says, and neither ever runs the other's.
func TestTransactionModeUnnamedStatementTwoClients(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, pooledConfig(true, 1), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The same settings: nothing is SET (which would drop the statement)
	// when one client's server goes to the other.
	a := rawConnect(t, ctx, scramDSN(tp, "app"), "a")
	b := rawConnect(t, ctx, scramDSN(tp, "app"), "b")

	a.expect("", parseUnnamed("SELECT 'a1'"), syncMsg)
	// b never parsed one: the server's (a's) is not b's.
	b.expect("E:26000", bindUnnamed, execute, syncMsg)
	b.expect("E:26000", &pgproto3.Describe{ObjectType: 'S'}, syncMsg)
	// a's lives on, in its next transaction.
	a.expect("a1", bindUnnamed, execute, syncMsg)
	a.expect("a1", bindUnnamed, execute, syncMsg)

	// b's replaces nothing of a's.
	b.expect("", parseUnnamed("SELECT 'b1'"), syncMsg)
	a.expect("a1", bindUnnamed, execute, syncMsg)
	b.expect("b1", bindUnnamed, execute, syncMsg)

	// A Parse skipped after an error changes nothing.
	a.expect("E:26000", &pgproto3.Bind{PreparedStatement: "no_such"}, execute, parseUnnamed("SELECT 'a2'"), syncMsg)
	b.expect("b1", bindUnnamed, execute, syncMsg)
	a.expect("a1", bindUnnamed, execute, syncMsg)
	// Pipelined across a Sync: the second batch sees the first's outcome
	// (the Parse skipped: a1, not a3), with b's statement on the server.
	b.expect("b1", bindUnnamed, execute, syncMsg)
	a.expect("E:26000,a1", &pgproto3.Bind{PreparedStatement: "no_such"}, parseUnnamed("SELECT 'a3'"), syncMsg, bindUnnamed, execute, syncMsg)
	a.expect("a4", parseUnnamed("SELECT 'a4'"), syncMsg, bindUnnamed, execute, syncMsg)

	// A failed Parse leaves none.
	a.expect("E:42601", parseUnnamed("SELEC 'a5'"), syncMsg)
	b.expect("b1", bindUnnamed, execute, syncMsg)
	a.expect("E:26000", bindUnnamed, execute, syncMsg)

	// A simple Query drops it; so does a Close of "".
	a.expect("", parseUnnamed("SELECT 'a6'"), syncMsg)
	a.expect("1", &pgproto3.Query{String: "SELECT 1"})
	a.expect("E:26000", bindUnnamed, execute, syncMsg)
	a.expect("", parseUnnamed("SELECT 'a7'"), syncMsg)
	b.expect("b1", bindUnnamed, execute, syncMsg)
	a.expect("", &pgproto3.Close{ObjectType: 'S'}, syncMsg)
	a.expect("E:26000", bindUnnamed, execute, syncMsg)
	b.expect("b1", bindUnnamed, execute, syncMsg)
	// Parse, Bind and Execute in one batch, as most drivers send them.
	b.expect("b2", parseUnnamed("SELECT 'b2'"), bindUnnamed, execute, syncMsg)
	a.expect("a8", parseUnnamed("SELECT 'a8'"), bindUnnamed, execute, syncMsg)
	b.expect("b2", bindUnnamed, execute, syncMsg)
}

// TestTransactionModeUnnamedStatementOtherServer: a client's unnamed
// statement follows it to the other server.
func TestTransactionModeUnnamedStatementOtherServer(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, pooledConfig(true, 2), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := rawConnect(t, ctx, scramDSN(tp, "a"), "a")
	holders := []*rawClient{rawConnect(t, ctx, scramDSN(tp, "h1"), "h1"), rawConnect(t, ctx, scramDSN(tp, "h2"), "h2")}

	got := a.send(parseUnnamed("SELECT pg_backend_pid()::text"), bindUnnamed, execute, syncMsg)
	if len(got) != 1 {
		t.Fatalf("a: %v", got)
	}
	first := got[0]
	// Both servers taken, each in a transaction; the one that is not a's
	// lets go: a's next batch runs on it.
	var free *rawClient
	for _, h := range holders {
		h.expect("", &pgproto3.Query{String: "BEGIN"})
		if pid := h.send(&pgproto3.Query{String: "SELECT pg_backend_pid()::text"}); len(pid) == 1 && pid[0] != first {
			free = h
		}
	}
	if free == nil {
		t.Fatal("no holder got the other server")
	}
	free.expect("", &pgproto3.Query{String: "COMMIT"})
	got = a.send(bindUnnamed, execute, syncMsg)
	if len(got) != 1 || got[0] == first || strings.HasPrefix(got[0], "E:") {
		t.Fatalf("a's unnamed statement on the other server: %v (first server %s)", got, first)
	}
}
