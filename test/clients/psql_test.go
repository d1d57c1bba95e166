package clients

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestPsqlSimpleQueries: psql's simple query protocol through both
// listeners, with trust, md5 and SCRAM roles; an error in the middle of a
// session leaves the session usable.
func TestPsqlSimpleQueries(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	primary := strconv.Itoa(cluster.Primary().Port)
	replica := strconv.Itoa(cluster.Replicas()[0].Port)
	cases := []struct {
		name, addr, user string
		want             string
	}{
		{"write trust", p.WriteAddr(), "postgres", "postgres|" + primary + "|f"},
		{"write md5", p.WriteAddr(), pgcluster.MD5User, pgcluster.MD5User + "|" + primary + "|f"},
		{"write scram", p.WriteAddr(), pgcluster.ScramUser, pgcluster.ScramUser + "|" + primary + "|f"},
		{"read trust", p.ReadAddr(), "postgres", "postgres|" + replica + "|t"},
		{"read scram", p.ReadAddr(), pgcluster.ScramUser, pgcluster.ScramUser + "|" + replica + "|t"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := psql(ctxT(t, 30*time.Second), pgEnv(c.addr, c.user, "postgres"), "",
				"-c", "SELECT current_user, inet_server_port(), pg_is_in_recovery()")
			if r.err != nil || strings.TrimSpace(r.stdout) != c.want {
				t.Fatalf("want %q\n%s", c.want, r)
			}
		})
	}

	t.Run("multi-statement and DDL on the primary", func(t *testing.T) {
		r := psql(ctxT(t, 30*time.Second), pgEnv(p.WriteAddr(), "postgres", "postgres"), "",
			"-c", "DROP TABLE IF EXISTS psql_simple; CREATE TABLE psql_simple(id int, v text); INSERT INTO psql_simple SELECT g, 'v' || g FROM generate_series(1, 10) g; SELECT count(*), sum(id) FROM psql_simple")
		if r.err != nil || strings.TrimSpace(r.stdout) != "10|55" {
			t.Fatalf("want 10|55\n%s", r)
		}
		var n int
		primaryScalar(t, "SELECT count(*) FROM psql_simple", &n)
		if n != 10 {
			t.Fatalf("primary has %d rows, want 10", n)
		}
	})

	t.Run("error then more statements in one session", func(t *testing.T) {
		script := "SELECT 1/0;\nSELECT 'after-error';\nBEGIN;\nSELECT 'in-tx';\nSELECT nosuchcolumn;\nSELECT 'aborted';\nROLLBACK;\nSELECT 'after-rollback';\n"
		r := run(ctxT(t, 30*time.Second), pgEnv(p.WriteAddr(), "postgres", "postgres"), script,
			psqlBin, "-X", "-A", "-t", "-q", "-v", "VERBOSITY=verbose", "-f", "-")
		for _, want := range []string{"after-error", "in-tx", "after-rollback"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout lacks %q\n%s", want, r)
			}
		}
		if strings.Contains(r.stdout, "aborted") {
			t.Errorf("a statement ran in an aborted transaction\n%s", r)
		}
		for _, want := range []string{"22012: division by zero", "42703: column \"nosuchcolumn\" does not exist", "25P02: current transaction is aborted"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q\n%s", want, r)
			}
		}
	})

	t.Run("server errors at startup reach psql", func(t *testing.T) {
		for _, c := range []struct {
			name string
			env  []string
			want string
		}{
			{"wrong md5 password", pgEnv(p.WriteAddr(), pgcluster.MD5User, "postgres", "PGPASSWORD=wrong"), `password authentication failed for user "md5_user"`},
			{"wrong scram password", pgEnv(p.ReadAddr(), pgcluster.ScramUser, "postgres", "PGPASSWORD=wrong"), `password authentication failed for user "scram_user"`},
			{"unknown database", pgEnv(p.WriteAddr(), "postgres", "no_such_db"), `database "no_such_db" does not exist`},
			{"unknown role", pgEnv(p.ReadAddr(), "no_such_role", "postgres"), `role "no_such_role" does not exist`},
		} {
			r := psql(ctxT(t, 30*time.Second), c.env, "", "-c", "SELECT 1")
			if r.err == nil || !strings.Contains(r.stderr, c.want) {
				t.Errorf("%s: want an error with %q\n%s", c.name, c.want, r)
			}
		}
	})

	t.Run("read listener refuses writes with 25006", func(t *testing.T) {
		r := psql(ctxT(t, 30*time.Second), pgEnv(p.ReadAddr(), "postgres", "postgres"), "",
			"-v", "VERBOSITY=verbose", "-c", "CREATE TABLE psql_on_replica(x int)")
		if r.err == nil || !strings.Contains(r.stderr, "25006") {
			t.Fatalf("want a 25006 error\n%s", r)
		}
	})
}

// TestPsqlCopy: \copy out and in of 50 000 rows through the write listener,
// and \copy out through the read listener; counts and checksums are read on
// the primary directly.
func TestPsqlCopy(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	const rows = 50000
	primaryExec(t, "DROP TABLE IF EXISTS copy_src, copy_dst")
	primaryExec(t, fmt.Sprintf("CREATE TABLE copy_src AS SELECT g AS id, md5(g::text) AS h, 'tab\tand \\ backslash ' || g AS s FROM generate_series(1, %d) g", rows))
	primaryExec(t, "CREATE TABLE copy_dst (LIKE copy_src)")
	dir := t.TempDir()
	out := filepath.Join(dir, "out.tsv")
	env := pgEnv(p.WriteAddr(), "postgres", "postgres")

	r := psql(ctxT(t, 60*time.Second), env, "", "-c", fmt.Sprintf(`\copy copy_src TO '%s'`, out))
	if r.err != nil {
		t.Fatalf("copy out: %s", r)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n != rows {
		t.Fatalf("copy out wrote %d lines, want %d", n, rows)
	}

	r = psql(ctxT(t, 60*time.Second), env, "", "-c", fmt.Sprintf(`\copy copy_dst FROM '%s'`, out))
	if r.err != nil {
		t.Fatalf("copy in: %s", r)
	}
	var n int
	primaryScalar(t, "SELECT count(*) FROM copy_dst", &n)
	if n != rows {
		t.Fatalf("primary has %d rows after \\copy in, want %d", n, rows)
	}
	var diff int
	primaryScalar(t, "SELECT count(*) FROM ((TABLE copy_src EXCEPT ALL TABLE copy_dst) UNION ALL (TABLE copy_dst EXCEPT ALL TABLE copy_src)) d", &diff)
	if diff != 0 {
		t.Fatalf("copy_dst differs from copy_src in %d rows", diff)
	}

	// COPY out on a replica, to stdout, once it has replayed the table.
	if err := cluster.WaitReplicasCaughtUp(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	r = psql(ctxT(t, 60*time.Second), pgEnv(p.ReadAddr(), "postgres", "postgres"), "",
		"-c", `\copy (SELECT id FROM copy_dst WHERE pg_is_in_recovery()) TO STDOUT`)
	if r.err != nil {
		t.Fatalf("copy out on the read listener: %s", r)
	}
	if n := strings.Count(r.stdout, "\n"); n != rows {
		t.Fatalf("copy out on the replica gave %d lines, want %d", n, rows)
	}

	// A failing COPY FROM (bad data in the middle) leaves the session usable.
	bad := filepath.Join(dir, "bad.tsv")
	if err := os.WriteFile(bad, []byte("1\tx\ty\nnot-a-number\tx\ty\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("\\copy copy_dst FROM '%s'\nSELECT 'still-here', count(*) FROM copy_dst;\n", bad)
	r = run(ctxT(t, 30*time.Second), env, script, psqlBin, "-X", "-A", "-t", "-q", "-v", "VERBOSITY=verbose", "-f", "-")
	if !strings.Contains(r.stderr, "22P02") || !strings.Contains(r.stdout, fmt.Sprintf("still-here|%d", rows)) {
		t.Fatalf("want 22P02 then still-here|%d\n%s", rows, r)
	}
}

// TestPsqlCancel: Ctrl-C (SIGINT) on psql running pg_sleep(30) makes psql
// send a CancelRequest on a new connection to the proxy; the statement must
// end with 57014 well before the sleep would (the bound is 2 s; the sleep
// is 30 s), on both listeners.
func TestPsqlCancel(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	for _, c := range []struct {
		name string
		addr string
	}{{"write", p.WriteAddr()}, {"read", p.ReadAddr()}} {
		t.Run(c.name, func(t *testing.T) {
			app := fmt.Sprintf("clients-cancel-%s-%d", c.name, time.Now().UnixNano())
			ctx := ctxT(t, 60*time.Second)
			cmd := exec.CommandContext(ctx, psqlBin, "-X", "-A", "-t", "-v", "VERBOSITY=verbose", "-c", "SELECT pg_sleep(30)")
			cmd.Env = pgEnv(c.addr, "postgres", "postgres", "PGAPPNAME="+app)
			var out, errb strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &errb
			cmd.WaitDelay = 5 * time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Wait until the statement runs on a backend.
			node := cluster.Primary()
			if c.name == "read" {
				node = cluster.Replicas()[0]
			}
			waitActive(t, node, app, func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			sent := time.Now()
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			elapsed := time.Since(sent)
			t.Logf("psql ended %v after SIGINT", elapsed)
			if err == nil {
				t.Errorf("psql exited 0 after cancel\nstdout: %s", out.String())
			}
			if !strings.Contains(errb.String(), "57014") || !strings.Contains(errb.String(), "canceling statement due to user request") {
				t.Errorf("stderr lacks 57014 canceling statement due to user request: %q", errb.String())
			}
			if elapsed > 2*time.Second {
				t.Errorf("cancel took %v, want < 2s", elapsed)
			}
		})
	}
}

// TestPsqlCancelTargetsOneSession: two psql sessions sleep on the same
// server; Ctrl-C on one cancels only that one: the other finishes its
// statement normally.
func TestPsqlCancelTargetsOneSession(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	ctx := ctxT(t, 60*time.Second)
	start := func(app string) (*exec.Cmd, *strings.Builder, *strings.Builder) {
		cmd := exec.CommandContext(ctx, psqlBin, "-X", "-A", "-t", "-v", "VERBOSITY=verbose", "-c", "SELECT 'slept', pg_sleep(2)")
		cmd.Env = pgEnv(p.WriteAddr(), "postgres", "postgres", "PGAPPNAME="+app)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out, &errb
	}
	id := time.Now().UnixNano()
	appA, appB := fmt.Sprintf("clients-a-%d", id), fmt.Sprintf("clients-b-%d", id)
	a, _, errA := start(appA)
	b, outB, errB := start(appB)
	waitActive(t, cluster.Primary(), appA, func() { _ = a.Process.Kill(); _ = b.Process.Kill(); _ = a.Wait(); _ = b.Wait() })
	waitActive(t, cluster.Primary(), appB, func() { _ = a.Process.Kill(); _ = b.Process.Kill(); _ = a.Wait(); _ = b.Wait() })
	if err := a.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	errAWait := a.Wait()
	errBWait := b.Wait()
	if errAWait == nil || !strings.Contains(errA.String(), "57014") {
		t.Errorf("session A: err %v, stderr %q; want 57014", errAWait, errA.String())
	}
	if errBWait != nil || !strings.HasPrefix(strings.TrimSpace(outB.String()), "slept|") {
		t.Errorf("session B was disturbed: err %v, stdout %q, stderr %q", errBWait, outB.String(), errB.String())
	}
}

// TestPsqlBind: psql's \bind (PostgreSQL 16+ psql) sends the extended
// protocol (Parse/Bind/Describe/Execute/Sync) with parameters. psql 15 has
// no \bind; the test skips there, saying so.
func TestPsqlBind(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	r := psql(ctxT(t, 30*time.Second), pgEnv(p.WriteAddr(), "postgres", "postgres"), "SELECT $1::int + $2::int AS s, pg_is_in_recovery() \\bind 40 2 \\g\n", "-f", "-")
	if strings.Contains(r.stderr, `invalid command \bind`) {
		t.Skipf("this psql has no \\bind (added in psql 16): %s", strings.TrimSpace(r.stderr))
	}
	if r.err != nil || strings.TrimSpace(r.stdout) != "42|f" {
		t.Fatalf("want 42|f\n%s", r)
	}
}

// TestPsqlStartupParameters: libpq turns PGOPTIONS, PGTZ, PGDATESTYLE,
// PGAPPNAME and PGCLIENTENCODING into startup parameters; they must reach
// the server unchanged, except pgproxy.* options, which the proxy consumes.
// default_transaction_read_only=on inside options routes to a replica.
func TestPsqlStartupParameters(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	const show = "SELECT current_setting('search_path'), current_setting('work_mem'), current_setting('TimeZone'), current_setting('DateStyle'), current_setting('application_name'), current_setting('client_encoding'), coalesce(current_setting('pgproxy.max_lag', true), '<unset>'), pg_is_in_recovery()"
	cases := []struct {
		name, addr, options string
		want                string
	}{
		// The control: what the server itself makes of these settings.
		{"direct to the primary", cluster.Primary().Addr(), `-c search_path=\"my\ schema\",public -c work_mem=3MB`,
			`"my schema",public|3MB|Asia/Tokyo|SQL, DMY|clients app|LATIN1|<unset>|f`},
		{"write", p.WriteAddr(), `-c search_path=\"my\ schema\",public -c pgproxy.max_lag=30s -c work_mem=3MB`,
			`"my schema",public|3MB|Asia/Tokyo|SQL, DMY|clients app|LATIN1|<unset>|f`},
		{"write, pgproxy option last", p.WriteAddr(), `-c work_mem=3MB --search_path=\"my\ schema\",public -c pgproxy.max_lag=30s`,
			`"my schema",public|3MB|Asia/Tokyo|SQL, DMY|clients app|LATIN1|<unset>|f`},
		{"read-only option routes to a replica", p.WriteAddr(), `-c default_transaction_read_only=on -c search_path=\"my\ schema\",public -c work_mem=3MB`,
			`"my schema",public|3MB|Asia/Tokyo|SQL, DMY|clients app|LATIN1|<unset>|t`},
		{"read listener", p.ReadAddr(), `-c pgproxy.max_lag=30s -c search_path=\"my\ schema\",public -c work_mem=3MB`,
			`"my schema",public|3MB|Asia/Tokyo|SQL, DMY|clients app|LATIN1|<unset>|t`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := pgEnv(c.addr, "postgres", "postgres", "PGOPTIONS="+c.options, "PGTZ=Asia/Tokyo", "PGDATESTYLE=SQL, DMY", "PGAPPNAME=clients app", "PGCLIENTENCODING=LATIN1")
			r := psql(ctxT(t, 30*time.Second), env, "", "-c", show)
			if r.err != nil || strings.TrimSpace(r.stdout) != c.want {
				t.Fatalf("want %s\n%s", c.want, r)
			}
		})
	}
}

// TestPsqlTargetSessionAttrs: libpq's target_session_attrs judges a
// connection by the in_hot_standby/default_transaction_read_only
// ParameterStatus (or SHOW) it gets through the proxy. With both listeners
// as a multi-host list, libpq must pick the one the attribute asks for.
func TestPsqlTargetSessionAttrs(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	_, wport, _ := strings.Cut(p.WriteAddr(), ":")
	_, rport, _ := strings.Cut(p.ReadAddr(), ":")
	hosts := map[string]string{"read,write": rport + "," + wport, "write,read": wport + "," + rport, "write": wport}
	cases := []struct {
		attrs, order, want string
	}{
		{"read-write", "read,write", "f"},
		{"primary", "read,write", "f"},
		{"read-only", "write,read", "t"},
		{"standby", "write,read", "t"},
		{"prefer-standby", "write,read", "t"},
		{"any", "read,write", "t"},
		{"standby", "write", ""}, // only the primary: libpq must refuse
	}
	for _, c := range cases {
		t.Run(c.attrs+" "+c.order, func(t *testing.T) {
			env := pgEnv(p.WriteAddr(), "postgres", "postgres", "PGTARGETSESSIONATTRS="+c.attrs, "PGPORT="+hosts[c.order])
			if strings.Contains(c.order, ",") {
				env = append(env, "PGHOST=127.0.0.1,127.0.0.1")
			}
			r := psql(ctxT(t, 30*time.Second), env, "", "-c", "SELECT pg_is_in_recovery()")
			if c.want == "" {
				if r.err == nil || !strings.Contains(r.stderr, "server is not in hot standby mode") {
					t.Fatalf("want libpq to refuse the primary\n%s", r)
				}
				return
			}
			if r.err != nil || strings.TrimSpace(r.stdout) != c.want {
				t.Fatalf("want %s\n%s", c.want, r)
			}
		})
	}
}

// TestPsqlLargeObjects: psql's \lo_import and \lo_export use libpq's
// large-object API, which sends FunctionCall ('F') messages (lo_open,
// lowrite, loread, lo_close). 3 MiB go in through the write listener and
// come back byte for byte through both listeners.
func TestPsqlLargeObjects(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.bin")
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	if err := os.WriteFile(in, data, 0o600); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("\\lo_import '%s'\n\\echo oid=:LASTOID\n", in)
	r := run(ctxT(t, 60*time.Second), pgEnv(p.WriteAddr(), "postgres", "postgres"), script, psqlBin, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-")
	_, oid, ok := strings.Cut(lastLine(r.stdout), "oid=")
	if r.err != nil || !ok || oid == "" {
		t.Fatalf("\\lo_import: %s", r)
	}
	t.Cleanup(func() { _ = cluster.Primary().Exec(ctxT(t, 10*time.Second), "SELECT lo_unlink("+oid+")") })
	var size int
	primaryScalar(t, "SELECT length(lo_get("+oid+"))", &size)
	if size != len(data) {
		t.Fatalf("the primary holds %d bytes, want %d", size, len(data))
	}
	if err := cluster.WaitReplicasCaughtUp(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ name, addr string }{{"write", p.WriteAddr()}, {"read", p.ReadAddr()}} {
		out := filepath.Join(dir, l.name+".bin")
		r := psql(ctxT(t, 60*time.Second), pgEnv(l.addr, "postgres", "postgres"), "", "-c", fmt.Sprintf("\\lo_export %s '%s'", oid, out))
		if r.err != nil {
			t.Fatalf("%s: \\lo_export: %s", l.name, r)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: exported %d bytes (err %v), want the %d imported bytes", l.name, len(got), err, len(data))
		}
	}
}
