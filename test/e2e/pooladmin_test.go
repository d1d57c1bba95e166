package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

// adminConn is a session on the admin console (simple protocol only).
type adminConn struct {
	t *testing.T
	c *pgconn.PgConn
}

func dialAdmin(t *testing.T, addr string) *adminConn {
	return dialAdminDSN(t, proxytest.DSN(addr, "postgres", "pgproxy"))
}

func dialAdminDSN(t *testing.T, dsn string) *adminConn {
	t.Helper()
	c, err := pgconn.Connect(ctxT(t, 20*time.Second), dsn)
	if err != nil {
		t.Fatalf("admin console: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return &adminConn{t: t, c: c}
}

// rows runs one command and returns its rows as column → value ("NULL"
// for NULL).
func (a *adminConn) rows(cmd string) []map[string]string {
	a.t.Helper()
	res, err := a.c.Exec(ctxT(a.t, 10*time.Second), cmd).ReadAll()
	if err != nil {
		a.t.Fatalf("%s: %v", cmd, err)
	}
	var out []map[string]string
	for _, r := range res[0].Rows {
		m := map[string]string{}
		for i, f := range res[0].FieldDescriptions {
			if r[i] == nil {
				m[f.Name] = "NULL"
			} else {
				m[f.Name] = string(r[i])
			}
		}
		out = append(out, m)
	}
	return out
}

func (a *adminConn) exec(cmd string) error {
	_, err := a.c.Exec(ctxT(a.t, 30*time.Second), cmd).ReadAll()
	return err
}

// waitFor polls cond (every 20 ms, 10 s at most) and fails with what
// describe says of the last state.
func waitFor(t *testing.T, what string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened; last: %s", what, describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sessionPID(t *testing.T, c *pgx.Conn) string {
	t.Helper()
	var pid int
	if err := c.QueryRow(ctxT(t, 10*time.Second), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(pid)
}

// sampleValue is the value of the sample line that starts with series
// (name{labels}), or -1.
func sampleValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// TestPoolAdminConsole runs the whole pgproxy in pooled transaction mode
// (auth.file with scram_user's verifier, pool.size 1) in front of the
// cluster and checks the admin console's pool commands and the pool
// metrics against what real clients do: a client inside a transaction
// holds the server (SHOW POOLS sv_active 1, SHOW CLIENTS with its server's
// pid, SHOW SERVERS with the client), a second one waits for it at login
// (cl_waiting 1, pgproxy_pool_clients_waiting 1); after COMMIT the server
// is idle; RECONNECT closes the idle server at once and the lent one when
// it is released (the backends' own pids change); a LISTEN pins; KILL
// ends both sessions (57P01) and closes the pool's servers.
func TestPoolAdminConsole(t *testing.T) {
	reset(t)
	ctx := ctxT(t, 3*time.Minute)
	primary := cluster.Primary()

	// auth.file from the primary's own verifier (trust for postgres).
	pc, err := pgx.Connect(ctx, primary.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	var verifier string
	if err := pc.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", pgcluster.ScramUser).Scan(&verifier); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(verifier, "SCRAM-SHA-256$") {
		t.Fatalf("%s has no SCRAM verifier: %.14q", pgcluster.ScramUser, verifier)
	}
	userlist := filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(userlist, []byte(fmt.Sprintf("%q %q\n", pgcluster.ScramUser, verifier)), 0o600); err != nil {
		t.Fatal(err)
	}
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: `admin:
  users: [` + pgcluster.ScramUser + `]
auth:
  mode: proxy
  file: ` + userlist + `
pool:
  mode: transaction
  size: 1
  max_client_wait: 20s
`})
	clientDSN := fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable&application_name=",
		pgcluster.ScramUser, url.QueryEscape(pgcluster.ScramPassword), p.WriteAddr())
	// With auth.mode proxy the console checks the admin against auth.file.
	admin := dialAdminDSN(t, fmt.Sprintf("postgres://%s:%s@%s/pgproxy?sslmode=disable",
		pgcluster.ScramUser, url.QueryEscape(pgcluster.ScramPassword), p.WriteAddr()))
	backend := primary.Addr()
	poolRow := func() map[string]string {
		for _, r := range admin.rows("SHOW POOLS") {
			if r["database"] == "postgres" && r["user"] == pgcluster.ScramUser && r["backend"] == backend && r["read_only"] == "f" {
				return r
			}
		}
		return nil
	}
	clientRows := func() map[string]map[string]string { // by application_name
		out := map[string]map[string]string{}
		for _, r := range admin.rows("SHOW CLIENTS") {
			out[r["application_name"]] = r
		}
		return out
	}
	metrics := func() string {
		code, body := p.Get(t, "/metrics")
		if code != 200 {
			t.Fatalf("/metrics = %d", code)
		}
		return body
	}
	servers := func(state string) string {
		return `pgproxy_pool_servers{backend="` + backend + `",state="` + state + `"}`
	}

	// Passthrough-only and pooled metrics before any client: the pool
	// gauges are there, at 0.
	m := metrics()
	for _, s := range []string{servers("active"), servers("idle"), servers("opening"), "pgproxy_pool_clients_waiting"} {
		if v := sampleValue(m, s); v != 0 {
			t.Errorf("before any client: %s = %v, want 0", s, v)
		}
	}

	// A client inside a transaction holds the pool's one server.
	a := connect(t, clientDSN+"a")
	if _, err := a.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	pidA := sessionPID(t, a)
	r := poolRow()
	if r == nil || r["mode"] != "transaction" || r["cl_active"] != "1" || r["cl_waiting"] != "0" || r["sv_active"] != "1" || r["sv_idle"] != "0" {
		t.Fatalf("SHOW POOLS with a client in a transaction: %v (all: %v)", r, admin.rows("SHOW POOLS"))
	}
	ca := clientRows()["a"]
	if ca == nil || ca["state"] != "active" || ca["server_pid"] != pidA || ca["tx_state"] != "in transaction" || ca["mode"] != "transaction" || ca["backend"] != backend {
		t.Fatalf("SHOW CLIENTS: client a = %v, want active on server %s, in transaction", ca, pidA)
	}
	sv := admin.rows("SHOW SERVERS")
	if len(sv) != 1 || sv[0]["pid"] != pidA || sv[0]["state"] != "active" || sv[0]["client_id"] != ca["id"] || sv[0]["idle_since"] != "NULL" {
		t.Fatalf("SHOW SERVERS: %v, want server %s active for client %s", sv, pidA, ca["id"])
	}
	if v := sampleValue(metrics(), servers("active")); v != 1 {
		t.Errorf("%s = %v, want 1", servers("active"), v)
	}

	// A second client waits at login for the only server.
	type connected struct {
		c   *pgx.Conn
		err error
	}
	bch := make(chan connected, 1)
	go func() {
		c, err := pgx.Connect(ctx, clientDSN+"b")
		bch <- connected{c, err}
	}()
	waitFor(t, "SHOW POOLS cl_waiting 1", func() bool { r := poolRow(); return r != nil && r["cl_waiting"] == "1" },
		func() string { return fmt.Sprint(poolRow(), clientRows()) })
	cb := clientRows()["b"]
	if cb == nil || cb["state"] != "waiting" || cb["wait_ms"] == "NULL" || cb["server_pid"] != "NULL" {
		t.Errorf("SHOW CLIENTS: client b = %v, want waiting", cb)
	}
	waitFor(t, "pgproxy_pool_clients_waiting 1", func() bool { return sampleValue(metrics(), "pgproxy_pool_clients_waiting") == 1 },
		func() string { return grepMetrics(metrics(), "pgproxy_pool_") })

	// COMMIT: the server goes to b (its login), then back to the pool.
	if _, err := a.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	var b *pgx.Conn
	select {
	case got := <-bch:
		if got.err != nil {
			t.Fatalf("client b: %v", got.err)
		}
		b = got.c
		t.Cleanup(func() { b.Close(context.Background()) })
	case <-ctx.Done():
		t.Fatal("client b never logged in after a's COMMIT")
	}
	waitFor(t, "the server idle after COMMIT", func() bool {
		r := poolRow()
		return r != nil && r["sv_active"] == "0" && r["sv_idle"] == "1" && r["cl_active"] == "2" && r["cl_waiting"] == "0"
	}, func() string { return fmt.Sprint(poolRow()) })
	for app, c := range clientRows() {
		if c["state"] != "idle" || c["server_pid"] != "NULL" || c["tx_state"] != "idle" {
			t.Errorf("SHOW CLIENTS after COMMIT: client %s = %v, want idle, no server", app, c)
		}
	}
	if sv := admin.rows("SHOW SERVERS"); len(sv) != 1 || sv[0]["state"] != "idle" || sv[0]["client_id"] != "NULL" || sv[0]["idle_since"] == "NULL" {
		t.Errorf("SHOW SERVERS after COMMIT: %v, want one idle server", sv)
	}
	m = metrics()
	if sampleValue(m, servers("active")) != 0 || sampleValue(m, servers("idle")) != 1 || sampleValue(m, "pgproxy_pool_clients_waiting") != 0 {
		t.Errorf("metrics after COMMIT:\n%s", grepMetrics(m, "pgproxy_pool_"))
	}
	backendGone := func(pid string) {
		t.Helper()
		waitFor(t, "backend "+pid+" closed", func() bool {
			var n int
			err := pc.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", pid).Scan(&n)
			return err == nil && n == 0
		}, func() string { return "still in pg_stat_activity" })
	}

	// RECONNECT closes the idle server now...
	if err := admin.exec("RECONNECT " + backend); err != nil {
		t.Fatal(err)
	}
	if sv := admin.rows("SHOW SERVERS"); len(sv) != 0 {
		t.Errorf("SHOW SERVERS after RECONNECT: %v, want none", sv)
	}
	backendGone(pidA)
	// ... and a lent one when it is released.
	if _, err := a.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	pid2 := sessionPID(t, a)
	if pid2 == pidA {
		t.Fatalf("after RECONNECT the server is still backend %s", pid2)
	}
	if err := admin.exec("RECONNECT '" + backend + "'"); err != nil {
		t.Fatal(err)
	}
	if sv := admin.rows("SHOW SERVERS"); len(sv) != 1 || sv[0]["pid"] != pid2 || sv[0]["state"] != "active" {
		t.Errorf("SHOW SERVERS after RECONNECT during a transaction: %v, want %s still active", sv, pid2)
	}
	if _, err := a.Exec(ctx, "COMMIT"); err != nil {
		t.Fatalf("the transaction across RECONNECT: %v", err)
	}
	backendGone(pid2)
	if pid3 := sessionPID(t, a); pid3 == pid2 {
		t.Errorf("the server released after RECONNECT was reused (backend %s)", pid3)
	}

	// LISTEN pins b to a server of its own.
	if _, err := b.Exec(ctx, "LISTEN pool_admin_test"); err != nil {
		t.Fatal(err)
	}
	pidB := sessionPID(t, b)
	cb = clientRows()["b"]
	if cb["pinned"] != "listen" || cb["state"] != "active" || cb["server_pid"] != pidB {
		t.Errorf("SHOW CLIENTS: pinned client b = %v, want pinned listen, active on %s", cb, pidB)
	}
	if v := sampleValue(metrics(), `pgproxy_pool_pins_total{reason="listen"}`); v != 1 {
		t.Errorf(`pgproxy_pool_pins_total{reason="listen"} = %v, want 1`, v)
	}

	// KILL: both sessions end with 57P01, the pool's servers close.
	if err := admin.exec("KILL nosuchdb"); sqlState(err) != "3D000" {
		t.Errorf("KILL nosuchdb: %v, want 3D000", err)
	}
	if err := admin.exec("KILL postgres"); err != nil {
		t.Fatal(err)
	}
	if rows := admin.rows("SHOW CLIENTS"); len(rows) != 0 {
		t.Errorf("SHOW CLIENTS after KILL: %v, want none", rows)
	}
	if rows := admin.rows("SHOW SERVERS"); len(rows) != 0 {
		t.Errorf("SHOW SERVERS after KILL: %v, want none (the idle servers of postgres are closed)", rows)
	}
	backendGone(pidB)
	for name, c := range map[string]*pgx.Conn{"a": a, "b": b} {
		_, err := c.Exec(ctx, "SELECT 1")
		if err == nil {
			t.Errorf("client %s still works after KILL", name)
		} else if code := sqlState(err); code != "" && code != "57P01" {
			t.Errorf("client %s after KILL: %v, want 57P01", name, err)
		}
	}
	// The console survives its KILL; a new client logs in as before.
	if r := poolRow(); r != nil && (r["cl_active"] != "0" || r["sv_idle"] != "0" || r["sv_active"] != "0") {
		t.Errorf("SHOW POOLS after KILL: %v", r)
	}
	c := connect(t, clientDSN+"c")
	if pid := sessionPID(t, c); pid == pidB {
		t.Errorf("a new client got the killed server %s", pid)
	}

	// Every pool metric is exposed.
	m = metrics()
	for _, name := range []string{"pgproxy_pool_servers", "pgproxy_pool_clients_waiting", "pgproxy_pool_wait_seconds_bucket", "pgproxy_pool_pins_total"} {
		if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).MatchString(m) {
			t.Errorf("/metrics lacks %s:\n%s", name, grepMetrics(m, "pgproxy_pool_"))
		}
	}
	if v := sampleValue(m, "pgproxy_pool_wait_seconds_count"); v < 4 {
		t.Errorf("pgproxy_pool_wait_seconds_count = %v, want at least 4 waits observed", v)
	}
}

func grepMetrics(text, prefix string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
