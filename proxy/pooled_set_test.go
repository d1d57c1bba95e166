package proxy_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestTransactionModePlainSetMoves: a plain SET of an unreported setting
// (pgjdbc sends "SET extra_float_digits = 3" on every connection) does not
// pin the client; the setting follows it to its next transaction, never to
// another client; a failed SET changes nothing; a SET inside a
// transaction block still pins.
func TestTransactionModePlainSetMoves(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, withSessionSetting(oneServerConfig()), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	settings := "SELECT pg_backend_pid()::text || ' ' || current_setting('statement_timeout') || ' ' || current_setting('extra_float_digits')"

	a := connectPooled(t, ctx, scramDSN(tp, "a")+"&default_query_exec_mode=simple_protocol")
	if _, err := a.Exec(ctx, "SET statement_timeout = '1234s'"); err != nil { // simple Query
		t.Fatal(err)
	}
	// Extended protocol, unnamed statement, as pgjdbc sends it.
	if _, err := a.PgConn().ExecParams(ctx, "SET extra_float_digits = 2", nil, nil, nil, nil).Close(); err != nil {
		t.Fatal(err)
	}
	gotA := queryString(t, ctx, a, settings)
	pid, rest, _ := strings.Cut(gotA, " ")
	if rest != "1234s 2" {
		t.Fatalf("first client sees %q after its SETs", gotA)
	}

	// Not pinned: b gets the only server, without a's settings.
	b := connectPooled(t, ctx, scramDSN(tp, "b"))
	gotB := queryString(t, ctx, b, settings)
	if want := pid + " 0 1"; gotB != want {
		t.Errorf("second client on the server sees %q, want %q", gotB, want)
	}
	// a gets them back on its next transaction.
	if got := queryString(t, ctx, a, settings); got != gotA {
		t.Errorf("first client then sees %q, had %q", got, gotA)
	}

	// A SET that fails changes nothing; RESET undoes.
	if _, err := a.Exec(ctx, "SET extra_float_digits = 'bogus'"); err == nil {
		t.Fatal("a bad SET succeeded")
	}
	if _, err := a.Exec(ctx, "RESET statement_timeout"); err != nil {
		t.Fatal(err)
	}
	queryString(t, ctx, b, "SELECT 1") // b in between
	if got := queryString(t, ctx, a, settings); got != pid+" 0 2" {
		t.Errorf("after a failed SET and a RESET the first client sees %q, want %q", got, pid+" 0 2")
	}

	// Inside a transaction block the SET may still be rolled back: it pins.
	if _, err := a.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "SET statement_timeout = '99s'"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	wantPinned(t, ctx, tp, "c", "the first SET inside a transaction block")
}

// TestTransactionModeSessionCharacteristicsMove: pgjdbc's setReadOnly and
// setTransactionIsolation (Metabase calls setReadOnly(true) on every
// connection) send SET SESSION CHARACTERISTICS AS TRANSACTION ...: moved
// with the client as default_transaction_*, not a pin, and never seen by
// another client on the same server.
func TestTransactionModeSessionCharacteristicsMove(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, withSessionSetting(oneServerConfig()), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	settings := "SELECT current_setting('transaction_read_only') || ' ' || current_setting('transaction_isolation')"

	a := connectPooled(t, ctx, scramDSN(tp, "a"))
	for _, q := range []string{
		"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
		"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ",
	} {
		if _, err := a.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if got := queryString(t, ctx, a, settings); got != "on repeatable read" {
		t.Fatalf("the client sees %q after its SETs", got)
	}
	b := connectPooled(t, ctx, scramDSN(tp, "b")) // the only server: a is not pinned
	if got := queryString(t, ctx, b, settings); got != "off read committed" {
		t.Errorf("another client on the same server sees %q, want %q", got, "off read committed")
	}
	var pe *pgconn.PgError
	if _, err := a.Exec(ctx, "CREATE TEMP TABLE t (x int)"); !errors.As(err, &pe) || pe.Code != "25006" {
		t.Errorf("a write by the read-only client: %v, want 25006", err)
	}
	if got := queryString(t, ctx, a, settings); got != "on repeatable read" {
		t.Errorf("the client then sees %q", got)
	}
}

// TestTransactionModePreparedSetRunAgain: a plain SET run through a
// prepared statement (pgx's statement cache) becomes the client's setting
// each time it runs, not only when it was parsed: SET, RESET, then the
// cached SET again leaves the client with the setting and the next client
// of the server without it.
func TestTransactionModePreparedSetRunAgain(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, withSessionSetting(pooledConfig(true, 1)), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := connectPooled(t, ctx, scramDSN(tp, "a"))
	if _, err := a.Prepare(ctx, "set1", "SET statement_timeout = '1234s'"); err != nil {
		t.Fatal(err)
	}
	// Bind and Execute of the prepared SET, a RESET (simple Query), the
	// prepared SET again.
	for _, q := range []string{"set1", "RESET statement_timeout", "set1"} {
		if _, err := a.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if got := queryString(t, ctx, a, "SELECT current_setting('statement_timeout')"); got != "1234s" {
		t.Fatalf("the client's own statement_timeout = %q, want 1234s", got)
	}
	b := connectPooled(t, ctx, scramDSN(tp, "b"))
	if got := queryString(t, ctx, b, "SELECT current_setting('statement_timeout')"); got != "0" {
		t.Errorf("the next client of the server sees statement_timeout %q, want 0", got)
	}
	if got := queryString(t, ctx, a, "SELECT current_setting('statement_timeout')"); got != "1234s" {
		t.Errorf("the client's statement_timeout after the other's turn = %q, want 1234s", got)
	}
}
