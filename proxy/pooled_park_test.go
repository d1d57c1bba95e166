package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestPooledIdleClientsPark: transaction-mode clients idle between
// transactions hold no goroutine (park_linux.go), and lose nothing by it:
// each one's prepared statement and settings work after it wakes, one that
// closes while parked ends its session, and a terminate reaches a parked
// client as a FATAL 57P01.
func TestPooledIdleClientsPark(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, pooledConfig(true, 2), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const n = 40
	base := runtime.NumGoroutine()
	conns := make([]*pgx.Conn, n)
	for i := range conns {
		c := connectPooled(t, ctx, scramDSN(tp, fmt.Sprintf("parked%d", i)))
		if _, err := c.Prepare(ctx, "plus", "SELECT $1::int + 1"); err != nil {
			t.Fatalf("prepare: %v", err)
		}
		if _, err := c.Exec(ctx, "SET TimeZone = 'America/Santiago'"); err != nil {
			t.Fatalf("set: %v", err)
		}
		conns[i] = c
	}
	// Without parking each idle client keeps its session goroutine (n more);
	// the parker, the pool and the test's own take a few.
	waitGoroutines := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > base+5 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d goroutines with %d idle clients, %d before them: idle clients are not parked", what, runtime.NumGoroutine(), n, base)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitGoroutines("after the first transactions")

	check := func(i int, c *pgx.Conn) {
		t.Helper()
		var got int
		var app, tz string
		if err := c.QueryRow(ctx, "plus", i).Scan(&got); err != nil || got != i+1 {
			t.Fatalf("client %d: prepared statement after parking: %d, %v", i, got, err)
		}
		if err := c.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('TimeZone')").Scan(&app, &tz); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if want := fmt.Sprintf("parked%d", i); app != want || tz != "America/Santiago" {
			t.Fatalf("client %d after parking: application_name %q TimeZone %q, want %q America/Santiago", i, app, tz, want)
		}
	}
	for i, c := range conns {
		check(i, c)
	}
	waitGoroutines("after every client woke once")
	for i, c := range conns { // and again: parked twice
		check(i, c)
	}
	waitGoroutines("after the second round")

	// A parked client that goes away ends its session.
	before := tp.srv.SessionCount()
	conns[0].Close(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for tp.srv.SessionCount() != before-1 {
		if time.Now().After(deadline) {
			t.Fatalf("sessions: %d, want %d after a parked client closed", tp.srv.SessionCount(), before-1)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A terminate wakes parked clients, which get a FATAL 57P01.
	if got, _ := tp.srv.KillDatabase(ctx, "postgres", "killed by the test"); got != n-1 {
		t.Fatalf("KILL ended %d sessions, want %d", got, n-1)
	}
	for i, c := range conns[1:] {
		_, err := c.Exec(ctx, "SELECT 1")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57P01" {
			t.Fatalf("client %d after KILL: %v, want FATAL 57P01", i+1, err)
		}
	}
	if got := tp.srv.SessionCount(); got != 0 {
		t.Fatalf("%d sessions left after KILL", got)
	}
}
