// Package clients runs real PostgreSQL client programs (psql, pgbench,
// psycopg2 under the system python3, pgjdbc under the JDK) through a
// complete pgproxy in front of a real primary and one streaming replica, and
// checks what they report. Each client is driven the way the applications
// the proxy serves use it (CLIENTS.md: Odoo on psycopg2, Metabase on pgjdbc).
package clients

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgcluster.MainNoLeaks(m, pgcluster.Options{Replicas: 1}, &cluster))
}

const (
	psqlBin    = "/usr/bin/psql"
	pgbenchBin = "/usr/lib/postgresql/15/bin/pgbench"
	python3Bin = "/usr/bin/python3" // Debian's, which has python3-psycopg2
	jdbcJar    = "/usr/share/java/postgresql.jar"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startProxy runs a pgproxy in front of the package cluster for this test.
func startProxy(t *testing.T) *proxytest.Proxy { return startProxyWith(t, nil) }

// startProxyWith is startProxy with configuration options.
func startProxyWith(t *testing.T, opts *proxytest.Options) *proxytest.Proxy {
	t.Helper()
	pgcluster.Require(t, cluster)
	if err := cluster.Reset(ctxT(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	var p *proxytest.Proxy
	// Registered before the proxy's own cleanup, so it runs after the proxy
	// has stopped and every session has logged its end.
	t.Cleanup(func() {
		if p != nil {
			checkSessionEnds(t, p)
		}
	})
	p = proxytest.Start(t, cluster, opts)
	return p
}

// checkSessionEnds fails the test when a session ended for a reason that
// real, well-behaved clients must never cause (a proxy error, a protocol
// violation the proxy detected, a panic), or anything logged at error level.
func checkSessionEnds(t *testing.T, p *proxytest.Proxy) {
	t.Helper()
	for _, e := range p.Logs.All() {
		if e.Level >= zapcore.ErrorLevel {
			t.Errorf("proxy logged at %s: %s %v", e.Level, e.Message, e.ContextMap())
		}
		if e.Message != "session ended" {
			continue
		}
		switch reason, _ := e.ContextMap()["reason"].(string); reason {
		case "client_closed", "server_closed":
		default:
			t.Errorf("a session ended with reason %q: %v", reason, e.ContextMap())
		}
	}
}

// needTool fails (CI) or skips (elsewhere) when a client program is missing.
func needTool(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			if isCI() {
				t.Fatalf("%s is missing (CI installs it in .ci/run): %v", p, err)
			}
			t.Skipf("%s is missing: %v", p, err)
		}
	}
}

// needPsycopg2 fails (CI) or skips (elsewhere) when python3 or its
// psycopg2 module is missing.
func needPsycopg2(t *testing.T) {
	t.Helper()
	needTool(t, python3Bin)
	if out, err := runCmd(t, python3Bin, "-c", "import psycopg2"); err != nil {
		if isCI() {
			t.Fatalf("python3-psycopg2 is missing (CI installs it): %v %s", err, out)
		}
		t.Skipf("python3-psycopg2 is missing: %v %s", err, out)
	}
}

// result is what a client program did.
type result struct {
	stdout, stderr string
	err            error
	elapsed        time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("err=%v\n--- stdout\n%s\n--- stderr\n%s", r.err, r.stdout, r.stderr)
}

// pgEnv is the libpq environment for user/db through the listener at addr.
// PGPASSWORD is set for the password roles; a ~/.pgpass or service file of
// the machine is ignored.
func pgEnv(addr, user, db string, extra ...string) []string {
	host, port, _ := strings.Cut(addr, ":")
	env := []string{
		"PATH=/usr/bin:/bin",
		"HOME=" + os.TempDir(),
		"LANG=C.UTF-8",
		"PGHOST=" + host, "PGPORT=" + port, "PGUSER=" + user, "PGDATABASE=" + db,
		"PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10",
		"PGPASSFILE=/nonexistent/pgpass", "PGSYSCONFDIR=/nonexistent",
	}
	switch user {
	case pgcluster.MD5User:
		env = append(env, "PGPASSWORD="+pgcluster.MD5Password)
	case pgcluster.ScramUser:
		env = append(env, "PGPASSWORD="+pgcluster.ScramPassword)
	}
	return append(env, extra...)
}

// run executes a client program with env and stdin, bounded by ctx.
func run(ctx context.Context, env []string, stdin string, name string, args ...string) result {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), err: err, elapsed: time.Since(start)}
	if ctx.Err() != nil {
		r.err = errors.Join(r.err, ctx.Err())
	}
	return r
}

// psql runs psql without ~/.psqlrc, unaligned, tuples only, stopping at the
// first error; args are extra arguments (-c ... or -f ...).
func psql(ctx context.Context, env []string, stdin string, args ...string) result {
	base := []string{"-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"}
	return run(ctx, env, stdin, psqlBin, append(base, args...)...)
}

// primaryScalar reads one value straight from the primary (not through the proxy).
func primaryScalar(t *testing.T, sql string, dest any) {
	t.Helper()
	if err := cluster.Primary().QueryRow(ctxT(t, 20*time.Second), sql, dest); err != nil {
		t.Fatalf("%s on the primary: %v", sql, err)
	}
}

func primaryExec(t *testing.T, sql string) {
	t.Helper()
	if err := cluster.Primary().Exec(ctxT(t, 30*time.Second), sql); err != nil {
		t.Fatalf("%s on the primary: %v", sql, err)
	}
}

func isCI() bool { return os.Getenv("CI") == "true" }

// runCmd runs a short local command (a tool probe) and returns its output.
func runCmd(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.CommandContext(ctxT(t, 60*time.Second), name, args...).CombinedOutput()
	return string(out), err
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
