package proxy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestTransactionModeMessagesTooBigToHold: in transaction mode the proxy
// holds each Parse and Bind to rewrite its statement name, up to 16 MiB;
// a larger one must still reach the server whole (its start rewritten,
// the rest streamed), and the session go on in step.
func TestTransactionModeMessagesTooBigToHold(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	// Two servers: a Parse too big to check pins its client (b gets the other).
	tp := startProxy(t, pooledConfig(true, 2), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	a := rawConnect(t, ctx, scramDSN(tp, "app"), "a")
	b := rawConnect(t, ctx, scramDSN(tp, "app"), "b")

	const size = 17 << 20 // past the proxy's 16 MiB hold
	long := strings.Repeat("x", size)
	want := fmt.Sprint(size)
	bigSQL := "SELECT length('" + long + "')::text"

	// A named Parse too big to hold, Bound in the same batch and in the next transactions.
	a.expect(want, &pgproto3.Parse{Name: "big", Query: bigSQL}, &pgproto3.Bind{PreparedStatement: "big"}, execute, syncMsg)
	a.expect(want, &pgproto3.Bind{PreparedStatement: "big"}, execute, syncMsg)
	b.expect("1", &pgproto3.Query{String: "SELECT 1"})
	a.expect(want, &pgproto3.Bind{PreparedStatement: "big"}, execute, syncMsg)
	// Not another client's.
	b.expect("E:26000", &pgproto3.Bind{PreparedStatement: "big"}, execute, syncMsg)
	// Closed, it is gone.
	a.expect("", &pgproto3.Close{ObjectType: 'S', Name: "big"}, syncMsg)
	a.expect("E:26000", &pgproto3.Bind{PreparedStatement: "big"}, execute, syncMsg)

	// A Bind too big to hold, of a named statement (its server-side name
	// differs from the client's) and of the unnamed one.
	a.expect("", &pgproto3.Parse{Name: "len", Query: "SELECT length($1)::text"}, syncMsg)
	bind := &pgproto3.Bind{PreparedStatement: "len", Parameters: [][]byte{[]byte(long)}}
	a.expect(want, bind, execute, syncMsg)
	a.expect(want+",2", bind, execute, syncMsg, &pgproto3.Query{String: "SELECT 2"})
	a.expect(want, parseUnnamed("SELECT length($1)::text"), &pgproto3.Bind{Parameters: [][]byte{[]byte(long)}}, execute, syncMsg)

	// An unnamed Parse too big to hold, then its statement used again.
	a.expect(want, parseUnnamed(bigSQL), bindUnnamed, execute, syncMsg)
	a.expect(want, bindUnnamed, execute, syncMsg)
	b.expect("E:26000", bindUnnamed, execute, syncMsg)
	a.expect("3", &pgproto3.Query{String: "SELECT 3"})
}

// TestReadOnlyMessagesTooBigToCheck: on an enforced read-only session a
// statement too big to hold (Query, Parse) is refused (54000) and none of
// it reaches the server; the session goes on in step, in both protocols,
// pass-through and pooled.
func TestReadOnlyMessagesTooBigToCheck(t *testing.T) {
	long := strings.Repeat("x", 17<<20)
	run := func(t *testing.T, a *rawClient) {
		a.expect("E:54000", &pgproto3.Query{String: "SELECT length('" + long + "')::text"})
		a.expect("1", &pgproto3.Query{String: "SELECT 1"})
		a.expect("E:54000", parseUnnamed("SELECT length('"+long+"')::text"), bindUnnamed, execute, syncMsg)
		a.expect("2", parseUnnamed("SELECT 2"), bindUnnamed, execute, syncMsg)
		// A Bind is not checked: a large parameter goes through.
		a.expect(fmt.Sprint(len(long)), parseUnnamed("SELECT length($1)::text"), &pgproto3.Bind{Parameters: [][]byte{[]byte(long)}}, execute, syncMsg)
		a.expect("3", &pgproto3.Query{String: "SELECT 3"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	t.Run("pass-through", func(t *testing.T) {
		tp := readOnlyProxy(t)
		run(t, rawConnect(t, ctx, tp.dsn("postgres", "postgres"), "a"))
	})
	t.Run("transaction", func(t *testing.T) {
		pgcluster.Require(t, cluster)
		checkLeaks(t)
		tp := startProxy(t, pooledConfig(true, 1), staticDirector{addr: cluster.Primary().Addr(), readOnly: true})
		run(t, rawConnect(t, ctx, scramDSN(tp, "app"), "a"))
	})
}
