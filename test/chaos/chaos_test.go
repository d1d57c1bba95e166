// Package chaos runs steady read and write load through pgproxy while
// backends are killed, stopped and restarted, and Marquez hangs. Assertions
// are on counts of errors per class, never on timings. `make test` runs one
// short round; `make chaos` runs more (-chaos.rounds).
package chaos

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/health"
	"github.com/ofitec/pgproxy/test/fakemarquez"
	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

var (
	cluster *pgcluster.Cluster
	rounds  = flag.Int("chaos.rounds", 1, "how many kill/restart rounds to run")
)

func TestMain(m *testing.M) {
	os.Exit(pgcluster.MainNoLeaks(m, pgcluster.Options{Replicas: 2}, &cluster))
}

// tally counts outcomes per class, and per backend port.
type tally struct {
	mu     sync.Mutex
	counts map[string]int
}

func (t *tally) add(class string) {
	t.mu.Lock()
	if t.counts == nil {
		t.counts = map[string]int{}
	}
	t.counts[class]++
	t.mu.Unlock()
}

func (t *tally) snapshot() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.counts))
	for k, v := range t.counts {
		out[k] = v
	}
	return out
}

func (t *tally) String() string {
	m := t.snapshot()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-40s %d\n", k, m[k])
	}
	return b.String()
}

func classify(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return "conn"
}

// worker keeps one session open and runs queries on it; on an error it
// records the class with the port the session was on, and reconnects.
type worker struct {
	name, dsn, query string
	tags             *tally
	mu               sync.Mutex
	port             int
}

func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := pgx.Connect(cctx, w.dsn)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				w.tags.add(w.name + " connect " + classify(err))
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		var port int
		if err := conn.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
			conn.Close(context.Background())
			continue
		}
		w.mu.Lock()
		w.port = port
		w.mu.Unlock()
		for ctx.Err() == nil {
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := conn.Exec(qctx, w.query)
			cancel()
			if ctx.Err() != nil {
				break
			}
			if err != nil {
				w.tags.add(fmt.Sprintf("%s on %d: %s", w.name, port, classify(err)))
				break
			}
			w.tags.add(fmt.Sprintf("%s on %d: ok", w.name, port))
			time.Sleep(5 * time.Millisecond)
		}
		conn.Close(context.Background())
	}
}

func waitState(t *testing.T, p *proxytest.Proxy, addr string, want health.State, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if b := p.App.Monitor().Snapshot().Backend(addr); b != nil && b.State == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not %v within %v", addr, want, within)
}

func startNode(t *testing.T, n *pgcluster.Node) {
	t.Helper()
	// After a kill -9 the old backends may take a moment to exit.
	var err error
	for i := 0; i < 50; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err = n.Start(ctx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("restart %s: %v", n.Name, err)
}

func TestChaosUnderLoad(t *testing.T) {
	pgcluster.Require(t, cluster)
	ctx0 := context.Background()
	if err := cluster.Primary().Exec(ctx0, "CREATE TABLE IF NOT EXISTS chaos_w(v int)"); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReplicasCaughtUp(ctx0); err != nil {
		t.Fatal(err)
	}
	m := fakemarquez.New()
	defer m.Close()
	m.SetMode(fakemarquez.ModeHang) // Marquez hangs throughout
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: fmt.Sprintf(`routing:
  max_lag: 2s
lineage:
  enabled: true
  dataset_namespace: postgres://db:5432
  transport:
    type: http
    url: %s
    queue: 1000
    timeout: 500ms
`, m.URL)})
	var tags tally
	ctx, stop := context.WithCancel(ctx0)
	var wg sync.WaitGroup
	var readers, writers []*worker
	for i := 0; i < 4; i++ {
		w := &worker{name: "read", dsn: proxytest.DSN(p.ReadAddr(), "postgres", "postgres"), query: "SELECT count(*) FROM pg_class", tags: &tags}
		readers = append(readers, w)
	}
	for i := 0; i < 2; i++ {
		w := &worker{name: "write", dsn: proxytest.DSN(p.WriteAddr(), "postgres", "postgres"), query: "/*job='chaos_load'*/ INSERT INTO chaos_w VALUES (1)", tags: &tags}
		writers = append(writers, w)
	}
	for _, w := range append(readers, writers...) {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(ctx) }()
	}
	defer func() { stop(); wg.Wait() }()

	r1, r2 := cluster.Replicas()[0], cluster.Replicas()[1]
	primary := cluster.Primary()
	for round := 0; round < *rounds; round++ {
		time.Sleep(2 * time.Second)
		// 1. kill -9 of replica 1's postmaster.
		if err := r1.Kill(); err != nil {
			t.Fatal(err)
		}
		waitState(t, p, r1.Addr(), health.StateDown, 5*time.Second)
		time.Sleep(2 * time.Second)
		// 2. restart it: back in rotation.
		startNode(t, r1)
		waitState(t, p, r1.Addr(), health.StateUp, 20*time.Second)
		time.Sleep(time.Second)
		// 3. primary stopped: writes get 57P03 quickly, reads go on.
		if err := primary.Stop(ctx0, "fast"); err != nil {
			t.Fatal(err)
		}
		waitState(t, p, primary.Addr(), health.StateDown, 5*time.Second)
		start := time.Now()
		_, err := pgx.Connect(ctx0, proxytest.DSN(p.WriteAddr(), "postgres", "postgres"))
		if classify(err) != "57P03" || time.Since(start) > 5*time.Second {
			t.Errorf("write session while the primary is down: %v after %v, want 57P03 at once", err, time.Since(start))
		} else if !strings.Contains(err.Error(), "primary") {
			t.Errorf("57P03 without a clear message: %v", err)
		}
		readsBefore := okCount(&tags, "read")
		time.Sleep(2 * time.Second)
		if okCount(&tags, "read") <= readsBefore {
			t.Errorf("reads stopped while the primary was down")
		}
		startNode(t, primary)
		waitState(t, p, primary.Addr(), health.StateUp, 20*time.Second)
		time.Sleep(2 * time.Second)
	}
	stop()
	wg.Wait()
	counts := tags.snapshot()
	t.Logf("outcomes:\n%s", tags.String())
	for class, n := range counts {
		onR2 := strings.Contains(class, fmt.Sprintf(" on %d:", r2.Port))
		switch {
		case strings.HasSuffix(class, ": ok"):
		case onR2:
			t.Errorf("%d errors on sessions served by the healthy replica: %s", n, class)
		case strings.HasPrefix(class, "read connect"):
			t.Errorf("new read sessions failed: %s × %d", class, n)
		case strings.HasPrefix(class, "write connect 57P03"), strings.HasPrefix(class, "write connect conn"):
			// expected while the primary is down
		case strings.HasSuffix(class, ": 08006"), strings.HasSuffix(class, ": 57P01"), strings.HasSuffix(class, ": conn"):
			// sessions on the killed replica or the stopped primary end with
			// a FATAL (or a closed socket), not a hang
		case proxytest.PoolMode() != "" && strings.HasSuffix(class, ": 57P03"):
			// pooled: a session between transactions holds no server; its
			// next one needs a new server connection, which the backend
			// shutting down refuses with 57P03 (FATAL), as to any client
		default:
			t.Errorf("unexpected outcome %s × %d", class, n)
		}
	}
	if okCount(&tags, "read") == 0 || okCount(&tags, "write") == 0 {
		t.Fatalf("no successful load: %v", counts)
	}
	_, metrics := p.Get(t, "/metrics")
	if !strings.Contains(metrics, `pgproxy_lineage_events_total{result="dropped"}`) && !strings.Contains(metrics, `pgproxy_lineage_events_total{result="failed"}`) {
		t.Errorf("Marquez hung throughout, yet no lineage event was dropped or failed")
	}
	m.SetMode(fakemarquez.ModeOK)
}

func okCount(t *tally, prefix string) int {
	n := 0
	for k, v := range t.snapshot() {
		if strings.HasPrefix(k, prefix+" on ") && strings.HasSuffix(k, ": ok") {
			n += v
		}
	}
	return n
}
