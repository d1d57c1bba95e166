package proxy_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/pool"
	"github.com/ofitec/pgproxy/proxy"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestQueryPreparedOncePerServer: the proxy's own WAL-position queries are
// prepared once per server and then only bound (a second Parse of the
// name would fail with 42P05); a server that lost the statement behind
// the proxy's back gets it again (no 26000).
func TestQueryPreparedOncePerServer(t *testing.T) {
	pgcluster.Require(t, cluster)
	ctx := ctxT(t, 30*time.Second)
	pc, err := pgconn.Connect(ctx, cluster.Primary().DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
	c := &pool.Conn{Net: hc.Conn, Params: map[string]string{}, Prepared: map[string]struct{}{}}
	const name, sql = "pgproxy_test_lsn", "SELECT pg_catalog.pg_current_wal_insert_lsn()"
	count := func() string {
		v, err := proxy.QueryValue(c, "SELECT count(*) FROM pg_prepared_statements WHERE name = '"+name+"'", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for i := 0; i < 3; i++ {
		v, err := proxy.QueryPrepared(c, name, sql, 5*time.Second)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if _, err := proxy.ParseLSN(v); err != nil {
			t.Fatalf("call %d: %q: %v", i, v, err)
		}
		if n := count(); n != "1" {
			t.Fatalf("call %d: %s statements named %s on the server, want 1", i, n, name)
		}
	}
	if _, err := proxy.QueryValue(c, "DEALLOCATE ALL", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if v, err := proxy.QueryPrepared(c, name, sql, 5*time.Second); err != nil {
		t.Fatalf("after DEALLOCATE ALL: %v", err)
	} else if _, err := proxy.ParseLSN(v); err != nil {
		t.Fatalf("after DEALLOCATE ALL: %q: %v", v, err)
	}
	if n := count(); n != "1" {
		t.Fatalf("after DEALLOCATE ALL: %s statements named %s, want 1", n, name)
	}
}
