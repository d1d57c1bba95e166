package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/internal/pgauth"
	"github.com/ofitec/pgproxy/internal/sqlscan"
	"github.com/ofitec/pgproxy/pool"
	"github.com/ofitec/pgproxy/proxy"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

// authidLookup reads secrets from the primary's pg_authid, as auth_query
// would: the proxy gets verifiers, never a password.
func authidLookup(ctx context.Context, user string) (pgauth.Secret, bool, error) {
	c, err := pgx.Connect(ctx, cluster.Primary().DSN("postgres"))
	if err != nil {
		return pgauth.Secret{}, false, err
	}
	defer c.Close(ctx)
	var pw *string
	err = c.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", user).Scan(&pw)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && pw == nil) {
		return pgauth.Secret{}, false, nil
	}
	if err != nil {
		return pgauth.Secret{}, false, err
	}
	sec, err := pgauth.ParseSecret(*pw)
	return sec, err == nil, err
}

func pooledConfig(trx bool, size int) proxy.Config {
	return proxy.Config{
		Auth: &proxy.ProxyAuth{Lookup: authidLookup},
		Pool: proxy.PoolConfig{
			Config:      pool.Config{Size: size, MaxWait: 2 * time.Second, IdleTimeout: time.Minute},
			Transaction: trx, ResetQuery: "DISCARD ALL", MaxPrepared: 100,
		},
		SessionState:  sqlscan.SessionState,
		ReadOnlyCheck: sqlscan.ReadOnlyViolation,
	}
}

// oneServerConfig is transaction mode on one server with a short
// max_client_wait: while a client is pinned, another gets 53300 at once
// (wantPinned).
func oneServerConfig() proxy.Config {
	cfg := pooledConfig(true, 1)
	cfg.Pool.MaxWait = 500 * time.Millisecond
	return cfg
}

// withSessionSetting lets plain SETs move with their client (as app does).
func withSessionSetting(cfg proxy.Config) proxy.Config {
	cfg.SessionSetting = func(sql string) (proxy.Setting, bool) {
		name, value, reset, ok := sqlscan.SessionSetting(sql)
		return proxy.Setting{Name: name, Value: value, Reset: reset}, ok
	}
	return cfg
}

// wantPinned fails t unless a client app connecting through tp (a
// oneServerConfig proxy) gets 53300: the only server is held by a pinned
// client. why says what should have pinned it.
func wantPinned(t *testing.T, ctx context.Context, tp *testProxy, app, why string) {
	t.Helper()
	_, err := pgx.Connect(ctx, scramDSN(tp, app))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "53300" {
		t.Fatalf("another client while %s: %v, want 53300 (the first client pinned)", why, err)
	}
}

func scramDSN(tp *testProxy, app string) string {
	return fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable&application_name=%s",
		pgcluster.ScramUser, pgcluster.ScramPassword, tp.addr, app)
}

func connectPooled(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func queryString(t *testing.T, ctx context.Context, c *pgx.Conn, sql string) string {
	t.Helper()
	var s *string
	if err := c.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if s == nil {
		return "<null>"
	}
	return *s
}

func TestPooledLoginSCRAMWithoutPassword(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, pooledConfig(true, 2), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// pg_hba.conf demands scram-sha-256 of scram_user on TCP: the proxy logs
	// in with the ClientKey it recovered from the client's proof.
	c := connectPooled(t, ctx, scramDSN(tp, "a"))
	if got := queryString(t, ctx, c, "SELECT current_user::text"); got != pgcluster.ScramUser {
		t.Fatalf("current_user = %q", got)
	}

	for _, dsn := range []string{
		fmt.Sprintf("postgres://%s:wrong@%s/postgres?sslmode=disable", pgcluster.ScramUser, tp.addr),
		fmt.Sprintf("postgres://nosuchuser:whatever@%s/postgres?sslmode=disable", tp.addr),
		fmt.Sprintf("postgres://%s:wrong@%s/postgres?sslmode=disable", pgcluster.MD5User, tp.addr),
	} {
		_, err := pgx.Connect(ctx, dsn)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "28P01" || !strings.HasPrefix(pe.Message, "password authentication failed for user") {
			t.Errorf("%s: err = %v, want 28P01 password authentication failed", dsn, err)
		}
	}
	// md5 secrets: md5 to the client, and to the backend with the hash.
	if sec, found, err := authidLookup(ctx, pgcluster.MD5User); err != nil || !found || sec.Kind != pgauth.KindMD5 {
		t.Fatalf("%s has no md5 secret (%v, %v, %v): the md5 path is not tested", pgcluster.MD5User, sec, found, err)
	}
	m := connectPooled(t, ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pgcluster.MD5User, pgcluster.MD5Password, tp.addr))
	if got := queryString(t, ctx, m, "SELECT current_user::text"); got != pgcluster.MD5User {
		t.Fatalf("current_user = %q", got)
	}
}

// TestTransactionModeStateLeak: two clients share one server connection;
// whatever the first leaves, the second must not see.
func TestTransactionModeStateLeak(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, oneServerConfig(), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cluster.Primary().Exec(ctx, "CREATE TABLE IF NOT EXISTS leak_rows (v text)"); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		// a runs on the first client; pinned says it pins (the first
		// client must leave before the second gets the server).
		a      []string
		pinned bool
		check  string // on the second client
		want   string
	}{
		{"SET tracked", []string{"SET application_name = 'leaked'"}, false, "SELECT current_setting('application_name')", "b"},
		{"SET untracked", []string{"SET statement_timeout = '1234s'"}, true, "SELECT current_setting('statement_timeout')", "0"},
		{"SET LOCAL", []string{"BEGIN", "SET LOCAL statement_timeout = '1234s'", "COMMIT"}, false, "SELECT current_setting('statement_timeout')", "0"},
		{"temp table", []string{"CREATE TEMP TABLE leak_tmp (a int)"}, true, "SELECT coalesce(to_regclass('pg_temp.leak_tmp')::text, 'none')", "none"},
		{"SQL prepared statement", []string{"PREPARE leak_p AS SELECT 1"}, true, "SELECT count(*)::text FROM pg_prepared_statements WHERE name = 'leak_p'", "0"},
		{"open transaction", []string{"BEGIN", "INSERT INTO leak_rows VALUES ('uncommitted')"}, true, "SELECT count(*)::text FROM leak_rows WHERE v = 'uncommitted'", "0"},
		{"LISTEN", []string{"LISTEN leak_channel"}, true, "SELECT count(*)::text FROM pg_listening_channels()", "0"},
		{"advisory lock", []string{"SELECT pg_advisory_lock(4242)"}, true, "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()", "0"},
		{"cursor WITH HOLD", []string{"DECLARE leak_c CURSOR WITH HOLD FOR SELECT 1"}, true, "SELECT count(*)::text FROM pg_cursors", "0"},
		// State the session-state filter must find behind SQL it lexes
		// (a string holding ";--", a nested comment, a Unicode escape).
		{"SET after a string", []string{"SELECT ';--'; SET statement_timeout = '1234s'"}, true, "SELECT current_setting('statement_timeout')", "0"},
		{"SET after a nested comment", []string{"/* a /* b */ */ SET statement_timeout = '1234s'"}, true, "SELECT current_setting('statement_timeout')", "0"},
		// With standard_conforming_strings off, \' does not end a string:
		// the server runs a SET that PostgreSQL's parser (strings standard)
		// reads as part of a literal.
		{"SET hidden by a backslash", []string{"SET standard_conforming_strings = off", `SELECT '\'; SELECT '; SET statement_timeout = 1234000; --'`, "SET standard_conforming_strings = on" /* for pgx's own queries below */}, true, "SELECT current_setting('statement_timeout')", "0"},
		{"query too big to check", []string{"SELECT pg_advisory_lock(4244), '" + strings.Repeat("x", 1<<20+100) + "' IS NOT NULL"}, true, "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()", "0"},
		{"temp table through search_path", []string{"BEGIN", "SET LOCAL search_path = pg_temp", "CREATE TABLE leak_sp AS SELECT 42 AS v", "COMMIT"}, true, "SELECT coalesce(to_regclass('leak_sp')::text, 'none')", "none"},
		{"DO block", []string{"DO $$BEGIN PERFORM set_config('statement_timeout', '1234s', false); END$$"}, true, "SELECT current_setting('statement_timeout')", "0"},
		{"function in pg_temp", []string{"CREATE FUNCTION pg_temp.leak_f() RETURNS int LANGUAGE sql AS 'SELECT 1'"}, true, "SELECT count(*)::text FROM pg_proc WHERE proname = 'leak_f'", "0"},
		{"advisory lock by escape", []string{`SELECT U&"pg_advisory_\006Cock"(4243)`}, true, "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()", "0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := pgx.Connect(ctx, scramDSN(tp, "a")+"&default_query_exec_mode=simple_protocol")
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close(ctx)
			for _, q := range tc.a {
				if _, err := a.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			var pidA string
			if !tc.pinned || tc.name == "open transaction" {
				if tc.name != "open transaction" {
					pidA = queryString(t, ctx, a, "SELECT pg_backend_pid()::text")
				}
			} else {
				pidA = queryString(t, ctx, a, "SELECT pg_backend_pid()::text")
				// Pinned: the only server is a's, so b cannot get one.
				wantPinned(t, ctx, tp, "b", "the first is pinned")
				a.Close(ctx)
			}
			if tc.name == "open transaction" {
				a.Close(ctx) // leaves in the middle of its transaction
			}
			b, err := pgx.Connect(ctx, scramDSN(tp, "b")+"&default_query_exec_mode=simple_protocol")
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close(ctx)
			if pidA != "" {
				if pidB := queryString(t, ctx, b, "SELECT pg_backend_pid()::text"); pidB != pidA {
					t.Fatalf("the clients did not share the server: %s vs %s", pidA, pidB)
				}
			}
			if got := queryString(t, ctx, b, tc.check); got != tc.want {
				t.Errorf("second client sees %q, want %q", got, tc.want)
			}
			if !tc.pinned {
				if got := queryString(t, ctx, a, "SELECT current_setting('application_name')"); tc.name == "SET tracked" && got != "leaked" {
					t.Errorf("first client lost its own setting: application_name = %q", got)
				}
			}
		})
	}
}

// TestTransactionModeNamedStatements: pgx's statement cache (named
// prepared statements) with 8 clients on 2 servers.
func TestTransactionModeNamedStatements(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, pooledConfig(true, 2), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, scramDSN(tp, fmt.Sprintf("c%d", i)))
			if err != nil {
				errc <- err
				return
			}
			defer c.Close(ctx)
			for j := 0; j < 50; j++ {
				var n int
				var app string
				if err := c.QueryRow(ctx, "SELECT $1::int + 1, current_setting('application_name')", j).Scan(&n, &app); err != nil {
					errc <- fmt.Errorf("client %d query %d: %w", i, j, err)
					return
				}
				if n != j+1 || app != fmt.Sprintf("c%d", i) {
					errc <- fmt.Errorf("client %d got %d, %q", i, n, app)
					return
				}
				if j%10 == 0 {
					tx, err := c.Begin(ctx)
					if err != nil {
						errc <- err
						return
					}
					if _, err := tx.Exec(ctx, "SELECT $1::text", "in tx"); err != nil {
						errc <- err
						return
					}
					if err := tx.Commit(ctx); err != nil {
						errc <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	st := tp.srv.PoolStats()
	if len(st) != 1 || st[0].Active+st[0].Idle > 2 {
		t.Fatalf("pool stats %+v: more than 2 servers", st)
	}
}

func TestPooledCancel(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, pooledConfig(true, 2), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := connectPooled(t, ctx, scramDSN(tp, "a"))
	other := connectPooled(t, ctx, scramDSN(tp, "b"))
	done := make(chan error, 1)
	go func() {
		var x any
		done <- other.QueryRow(ctx, "SELECT pg_sleep(3)").Scan(&x)
	}()
	qctx, qcancel := context.WithTimeout(ctx, 300*time.Millisecond) // pgx cancels on the context's end
	defer qcancel()
	start := time.Now()
	_, err := c.Exec(qctx, "SELECT pg_sleep(20)")
	if err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("query not cancelled: %v after %v", err, time.Since(start))
	}
	// The other client's query was not the one cancelled.
	if err := <-done; err != nil {
		t.Fatalf("the other client's query failed: %v", err)
	}
}

func TestSessionModeResetsOnLeave(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, pooledConfig(false, 1), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := pgx.Connect(ctx, scramDSN(tp, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "SET statement_timeout = '777s'"); err != nil {
		t.Fatal(err)
	}
	pidA := queryString(t, ctx, a, "SELECT pg_backend_pid()::text")
	a.Close(ctx)
	b := connectPooled(t, ctx, scramDSN(tp, "b"))
	if pidB := queryString(t, ctx, b, "SELECT pg_backend_pid()::text"); pidB != pidA {
		t.Fatalf("server not reused: %s vs %s", pidA, pidB)
	}
	if got := queryString(t, ctx, b, "SELECT current_setting('statement_timeout')"); got != "0" {
		t.Fatalf("statement_timeout = %q after the first client left, want 0", got)
	}
	if got := queryString(t, ctx, b, "SELECT current_setting('application_name')"); got != "b" {
		t.Fatalf("application_name = %q, want b", got)
	}
}

type echoConsole struct{}

func (echoConsole) Exec(ctx context.Context, query string) ([]proxy.AdminResult, error) {
	v := "pong"
	return []proxy.AdminResult{{Columns: []string{"answer"}, Rows: [][]*string{{&v}}, Tag: "SHOW"}}, nil
}

// TestAdminConsoleWithoutBackends: with auth.mode proxy the console logs
// admins in against the proxy's own users, so it works with every backend
// down (here: the only one is a closed port).
func TestAdminConsoleWithoutBackends(t *testing.T) {
	checkLeaks(t)
	salt := []byte("0123456789abcdef")
	sec, err := pgauth.ParseSecret(pgauth.SCRAMVerifier("adminpw", salt, 4096))
	if err != nil {
		t.Fatal(err)
	}
	users := pgauth.Userlist{"ops": sec}
	cfg := proxy.Config{
		Auth: &proxy.ProxyAuth{Lookup: func(ctx context.Context, user string) (pgauth.Secret, bool, error) {
			s, ok := users[user]
			return s, ok, nil
		}},
		Admin: echoConsole{}, AdminUsers: []string{"ops"},
	}
	tp := startProxy(t, cfg, staticDirector{addr: "127.0.0.1:1"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, "postgres://ops:adminpw@"+tp.addr+"/pgproxy?sslmode=disable&default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatalf("admin login with the backend down: %v", err)
	}
	defer c.Close(ctx)
	var got string
	if err := c.QueryRow(ctx, "SHOW PING").Scan(&got); err != nil || got != "pong" {
		t.Fatalf("console answered %q, %v", got, err)
	}
	_, err = pgx.Connect(ctx, "postgres://ops:wrong@"+tp.addr+"/pgproxy?sslmode=disable")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Fatalf("wrong admin password: %v, want 28P01", err)
	}
}

// TestPooledServerKilledWhileIdle: a server that dies while idle in the
// pool (pg_terminate_backend, idle_session_timeout) is not lent again: the
// client's next transaction runs on a new one.
func TestPooledServerKilledWhileIdle(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, pooledConfig(true, 1), staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := connectPooled(t, ctx, scramDSN(tp, "a"))
	pid := queryString(t, ctx, c, "SELECT pg_backend_pid()::text")
	if err := cluster.Primary().Exec(ctx, "SELECT pg_terminate_backend("+pid+")"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the FATAL and FIN arrive
	if got := queryString(t, ctx, c, "SELECT pg_backend_pid()::text"); got == pid {
		t.Fatalf("still on the terminated server %s", pid)
	}
}

// TestPooledReadOnlyFallback: a read session that fell back to the primary
// gets a server of the read-only pool, and the guard still refuses turning
// read-only off, in transaction mode too.
func TestPooledReadOnlyFallback(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, pooledConfig(true, 2), staticDirector{addr: cluster.Primary().Addr(), readOnly: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := connectPooled(t, ctx, scramDSN(tp, "ro")+"&default_query_exec_mode=simple_protocol")
	if got := queryString(t, ctx, c, "SHOW default_transaction_read_only"); got != "on" {
		t.Fatalf("default_transaction_read_only = %q", got)
	}
	for _, q := range []string{"CREATE TABLE ro_pooled (a int)", "SET default_transaction_read_only = off"} {
		_, err := c.Exec(ctx, q)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "25006" {
			t.Errorf("%s: %v, want 25006", q, err)
		}
	}
	if got := queryString(t, ctx, c, "SHOW default_transaction_read_only"); got != "on" {
		t.Fatalf("after the refusals default_transaction_read_only = %q", got)
	}
	st := tp.srv.PoolStats()
	if len(st) != 1 || !st[0].Key.ReadOnly {
		t.Fatalf("pools %+v, want one read-only pool", st)
	}
}

// TestPooledLoginRetriesWithNewestCredential: the role's password changes
// while a client is connected. Its own credential (recovered from its proof
// at login) is stale now; when its next transaction needs a new server,
// the backend refuses that credential (28P01), and the proxy retries once
// with the newest one, which a client that logged in with the new password
// left: the old client goes on working.
func TestPooledLoginRetriesWithNewestCredential(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, cluster.Primary().DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	setPassword := func(pw string) {
		t.Helper()
		if _, err := admin.Exec(context.Background(), "SET password_encryption = 'scram-sha-256'; ALTER ROLE "+pgcluster.ScramUser+" PASSWORD '"+pw+"'"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		setPassword(pgcluster.ScramPassword)
		admin.Close(context.Background())
	})
	tp := startProxy(t, pooledConfig(true, 1), staticDirector{addr: cluster.Primary().Addr()})

	old := connectPooled(t, ctx, scramDSN(tp, "old"))
	queryString(t, ctx, old, "SELECT 1::text")
	setPassword("rotated")
	fresh := connectPooled(t, ctx, fmt.Sprintf("postgres://%s:rotated@%s/postgres?sslmode=disable", pgcluster.ScramUser, tp.addr))
	queryString(t, ctx, fresh, "SELECT 1::text")

	// Every server goes; the old client's next transaction dials one.
	tp.srv.DrainBackend(cluster.Primary().Addr())
	if got := queryString(t, ctx, old, "SELECT current_user::text"); got != pgcluster.ScramUser {
		t.Fatalf("current_user = %q", got)
	}
}
