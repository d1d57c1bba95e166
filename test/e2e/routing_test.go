package e2e

import (
	"strings"
	"testing"

	"github.com/ofitec/pgproxy/test/proxytest"
)

func TestListenersAndRules(t *testing.T) {
	reset(t)
	// A password for pooled runs (the proxy authenticates it, found by
	// auth.query); direct and pass-through logins are trust.
	if err := cluster.Primary().Exec(ctxT(t, 10e9), "DO $$BEGIN CREATE ROLE metabase LOGIN SUPERUSER; EXCEPTION WHEN duplicate_object THEN NULL; END$$; ALTER ROLE metabase PASSWORD 'metabase_pass'"); err != nil {
		t.Fatal(err)
	}
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: `routing:
  rules:
    - match: { user: metabase }
      route: read
    - match: { application_name: "Metabase*" }
      route: read
    - match: { database: "*_ro" }
      route: read
      strip_suffix: _ro
`})
	replicas := map[int]bool{}
	for _, r := range cluster.Replicas() {
		replicas[r.Port] = true
	}
	cases := []struct {
		name, dsn string
		read      bool
	}{
		{"write listener", proxytest.DSN(p.WriteAddr(), "postgres", "postgres"), false},
		{"read listener", proxytest.DSN(p.ReadAddr(), "postgres", "postgres"), true},
		{"rule user", strings.Replace(proxytest.DSN(p.WriteAddr(), "metabase", "postgres"), "metabase@", "metabase:metabase_pass@", 1), true},
		{"rule application_name", proxytest.DSN(p.WriteAddr(), "postgres", "postgres") + "&application_name=Metabase%20v0.50", true},
		{"rule database suffix", proxytest.DSN(p.WriteAddr(), "postgres", "postgres_ro"), true},
		{"startup default_transaction_read_only", proxytest.DSN(p.WriteAddr(), "postgres", "postgres") + "&default_transaction_read_only=on", true},
		{"options default_transaction_read_only", proxytest.DSN(p.WriteAddr(), "postgres", "postgres") + "&options=-c%20default_transaction_read_only%3Don", true},
	}
	for _, c := range cases {
		conn := connect(t, c.dsn)
		port, rec := servedBy(t, conn)
		if c.read && (!rec || !replicas[port]) {
			t.Errorf("%s: served by %d (recovery=%v), want a replica", c.name, port, rec)
		}
		if !c.read && (rec || port != cluster.Primary().Port) {
			t.Errorf("%s: served by %d (recovery=%v), want the primary", c.name, port, rec)
		}
		if c.name == "rule database suffix" {
			var db string
			_ = conn.QueryRow(ctxT(t, 5e9), "SELECT current_database()").Scan(&db)
			if db != "postgres" {
				t.Errorf("strip_suffix: connected to %q", db)
			}
		}
	}
	_, metrics := p.Get(t, "/metrics")
	for _, want := range []string{"pgproxy_routing_decisions_total", "pgproxy_backend_up", "pgproxy_replica_lag_seconds", "pgproxy_client_sessions"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	code, _ := p.Get(t, "/readyz")
	if code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	code, status := p.Get(t, "/status")
	if code != 200 || !strings.Contains(status, `"role": "replica"`) || !strings.Contains(status, `"role": "primary"`) {
		t.Errorf("/status = %d %s", code, status)
	}
}
