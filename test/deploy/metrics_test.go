package deploy

import (
	"context"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zapcore"

	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

// configMetrics are the metric names CONFIG.md promises on /metrics, and
// the histograms issue 7 adds.
var configMetrics = []string{
	"pgproxy_backend_up",
	"pgproxy_backend_role",
	"pgproxy_replica_lag_seconds",
	"pgproxy_replica_lag_bytes",
	"pgproxy_client_sessions",
	"pgproxy_routing_decisions_total",
	"pgproxy_fallbacks_total",
	"pgproxy_lineage_events_total",
}

// pooledOnly are names used by the dashboard that a proxy in passthrough
// mode (this test's) never exports: they appear at the first pin of a
// transaction-mode client. test/e2e TestPoolAdminConsole checks them on a
// pooling proxy.
var pooledOnly = map[string]bool{"pgproxy_pool_pins_total": true}

var histograms = []string{
	"pgproxy_session_duration_seconds",
	"pgproxy_backend_connect_seconds",
	"pgproxy_read_session_staleness_seconds", // the freshness SLO view for BI
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{|\s)`)

// exposedNames are the sample names of a text exposition (histograms as
// name_bucket, name_sum, name_count) and the family names of its # TYPE lines.
func exposedNames(text string) (samples, families map[string]bool) {
	samples, families = map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			families[strings.Fields(f)[0]] = true
			continue
		}
		if m := sampleLine.FindStringSubmatch(line); m != nil {
			samples[m[1]] = true
		}
	}
	return samples, families
}

func connectT(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestLiveMetrics runs a proxy (lineage on, file transport) in front of a
// primary and a replica, makes a write session, a read session and a read
// that falls back to the primary (replica stopped), then checks /metrics:
// promtool check metrics accepts it, every CONFIG.md name and histogram is
// there, and every pgproxy_* name used by the alerts and the dashboard
// exists in it.
func TestLiveMetrics(t *testing.T) {
	pgcluster.Require(t, cluster)
	promtool := tool(t, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := cluster.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
		defer rcancel()
		if err := cluster.Reset(rctx); err != nil {
			t.Errorf("reset: %v", err)
		}
	})
	lineageFile := filepath.Join(t.TempDir(), "lineage.jsonl")
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: `lineage:
  enabled: true
  dataset_namespace: postgres://primary:5432
  catalog: ` + repoPath(t, "configs", "catalog.yaml") + `
  transport:
    type: file
    path: ` + lineageFile + `
`})
	t.Cleanup(func() {
		if t.Failed() { // the debug log tells a proxy hang from a test bug
			for _, e := range p.Logs.FilterLevelExact(zapcore.DebugLevel).All() {
				t.Logf("debug: %s %s %v", e.LoggerName, e.Message, e.ContextMap())
			}
		}
	})

	// A write session (with a CancelRequest) and a read session, both ended.
	for _, addr := range []string{p.WriteAddr(), p.ReadAddr()} {
		conn := connectT(t, proxytest.DSN(addr, "postgres", "postgres"))
		if err := conn.PgConn().CancelRequest(ctx); err != nil {
			t.Fatalf("cancel request: %v", err)
		}
		conn.Close(ctx)
	}
	// A session the proxy refuses itself (an invalid pgproxy.max_lag: 22023).
	if c, err := pgx.Connect(ctx, proxytest.DSN(p.WriteAddr(), "postgres", "postgres")+"&options=-c%20pgproxy.max_lag%3Dbogus"); err == nil {
		c.Close(ctx)
		t.Fatal("a session with pgproxy.max_lag=bogus was accepted")
	}
	// A read with no replica fit: stop the replica, wait for the monitor to
	// see it down, read through the read listener (fallback: primary).
	replica := cluster.Replicas()[0]
	if err := replica.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	for {
		if b := p.App.Monitor().Snapshot().Backend(replica.Addr()); b != nil && b.State.String() == "down" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the monitor never saw the stopped replica down")
		case <-time.After(50 * time.Millisecond):
		}
	}
	conn := connectT(t, proxytest.DSN(p.ReadAddr(), "postgres", "postgres"))
	conn.Close(ctx)

	// Session ends are counted when the proxy sees them: wait until every
	// expected family has samples.
	var text string
	var samples, families map[string]bool
	want := append(slices.Clone(configMetrics), "pgproxy_sessions_total", "pgproxy_rejected_sessions_total", "pgproxy_cancel_requests_total")
	for _, h := range histograms {
		want = append(want, h+"_bucket", h+"_sum", h+"_count")
	}
	for {
		code, body := p.Get(t, "/metrics")
		if code != 200 {
			t.Fatalf("/metrics = %d", code)
		}
		text = body
		samples, families = exposedNames(text)
		missing := slices.DeleteFunc(slices.Clone(want), func(n string) bool { return samples[n] })
		if len(missing) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/metrics lacks %v:\n%s", missing, text)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !strings.Contains(text, `pgproxy_fallbacks_total{reason="no_replica"} 1`) {
		t.Errorf("the fallback read is not counted:\n%s", grepLines(text, "pgproxy_fallbacks_total"))
	}
	// Two read sessions (one on the replica, one on the primary after the
	// fallback): two staleness observations.
	if !strings.Contains(text, "\npgproxy_read_session_staleness_seconds_count 2\n") {
		t.Errorf("want 2 read-session staleness observations:\n%s", grepLines(text, "pgproxy_read_session_staleness_seconds_count"))
	}
	for _, h := range histograms {
		if !families[h] || !strings.Contains(text, "# TYPE "+h+" histogram") {
			t.Errorf("%s is not exposed as a histogram", h)
		}
	}

	out, err := run(t, "", []byte(text), promtool, "check", "metrics")
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// Every pgproxy_* name in alerts.yml and pgproxy.json exists (as a
	// sample name, so histogram queries must use _bucket/_sum/_count).
	used := usedMetricNames(t)
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !samples[n] && !pooledOnly[n] {
			t.Errorf("%s (used by %s) is not on /metrics", n, strings.Join(slices.Compact(used[n]), ", "))
		}
	}
	t.Logf("checked %d pgproxy_* names used by alerts and dashboard against /metrics", len(names))
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
