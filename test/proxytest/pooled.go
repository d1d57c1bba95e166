package proxytest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// PoolEnv is the environment variable that makes every proxy Start runs a
// pooled one: "transaction" or "session". Start then sets auth.mode proxy
// (auth.file with the verifiers of the harness roles from pg_authid, and
// auth.query as postgres for roles a test makes later), pool.mode to its
// value and pool.size to PooledSize, unless the test's own YAML sets auth.
// Unset or empty: pass-through, as configured by the test.
const PoolEnv = "PGPROXY_TEST_POOL"

// PooledSize is pool.size in a pooled run: small, so that sessions share
// server connections.
const PooledSize = 2

// PostgresPassword is given to the superuser postgres (ALTER ROLE) by a
// pooled Start: the proxy needs a verifier to authenticate it. Direct
// connections to the cluster stay trust.
const PostgresPassword = "postgres_pass"

// PoolMode is the pool.mode of a pooled run ("" = pass-through).
func PoolMode() string { return os.Getenv(PoolEnv) }

// Password is the password of a role the harness made ("" if none or
// unknown). postgres has PostgresPassword only once a pooled Start gave it.
func Password(user string) string {
	switch user {
	case pgcluster.ScramUser:
		return pgcluster.ScramPassword
	case pgcluster.MD5User:
		return pgcluster.MD5Password
	case "postgres":
		return PostgresPassword
	}
	return ""
}

// Userlist writes an auth.file (PgBouncer's userlist format) holding the
// verifiers (rolpassword of pg_authid: SCRAM-SHA-256 or md5, never a
// password) of users, read as postgres over trust on c's primary, and
// returns its path. A user without a password fails the test.
func Userlist(t testing.TB, c *pgcluster.Cluster, users ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := c.Primary().Connect(ctx)
	if err != nil {
		t.Fatalf("proxytest: userlist: %v", err)
	}
	defer conn.Close(context.Background())
	var b strings.Builder
	for _, u := range users {
		var pw *string
		if err := conn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", u).Scan(&pw); err != nil {
			t.Fatalf("proxytest: userlist: role %q: %v", u, err)
		}
		if pw == nil {
			t.Fatalf("proxytest: userlist: role %q has no password", u)
		}
		fmt.Fprintf(&b, "%s %s\n", userlistQuote(u), userlistQuote(*pw))
	}
	path := filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func userlistQuote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// pooledYAML gives postgres its password and returns the auth and pool
// sections of a pooled run.
func pooledYAML(t testing.TB, c *pgcluster.Cluster, mode string) string {
	t.Helper()
	if mode != "transaction" && mode != "session" {
		t.Fatalf("proxytest: %s=%q: want transaction or session", PoolEnv, mode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Primary().Exec(ctx, "ALTER ROLE postgres PASSWORD '"+PostgresPassword+"'"); err != nil {
		t.Fatalf("proxytest: pooled run: %v", err)
	}
	file := Userlist(t, c, "postgres", pgcluster.ScramUser, pgcluster.MD5User)
	t.Logf("proxytest: pooled run: auth.mode proxy, pool.mode %s, pool.size %d", mode, PooledSize)
	return fmt.Sprintf(`auth:
  mode: proxy
  file: %s
  user: postgres
pool:
  mode: %s
  size: %d
`, file, mode, PooledSize)
}

// setsAuth says whether a test's YAML has a top-level auth section.
func setsAuth(yaml string) bool {
	sc := bufio.NewScanner(strings.NewReader(yaml))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "auth:") {
			return true
		}
	}
	return false
}
