package proxy_test

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/ofitec/pgproxy/proxy"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgcluster.Main(m, pgcluster.Options{Replicas: 1}, &cluster))
}

// staticDirector sends every session to one address.
type staticDirector struct {
	addr     string
	readOnly bool
}

func (d staticDirector) Direct(l proxy.Listener, params []proxy.Param, exclude []string) (*proxy.Target, error) {
	return &proxy.Target{Addr: d.addr, Route: "write", Reason: "static", ReadOnly: d.readOnly}, nil
}

// checkLeaks verifies, after every other cleanup of the test (the proxy's
// shutdown included), that no goroutine started by the test is left.
func checkLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

type testProxy struct {
	srv  *proxy.Server
	addr string
	done chan error
}

func startProxy(t *testing.T, cfg proxy.Config, d proxy.Director) *testProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.NewServer(cfg, d, zaptest.NewLogger(t), nil)
	tp := &testProxy{srv: srv, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { tp.done <- srv.Serve(ln, proxy.Listener{Addr: ln.Addr().String()}) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-tp.done; err != proxy.ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
	})
	return tp
}

// benchProxy serves a proxy in front of addr until the benchmark ends and
// returns its address.
func benchProxy(b *testing.B, addr string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := proxy.NewServer(proxy.Config{}, staticDirector{addr: addr}, nil, nil)
	go srv.Serve(ln, proxy.Listener{Addr: ln.Addr().String()})
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func (tp *testProxy) dsn(user, db string) string {
	return "postgres://" + user + "@" + tp.addr + "/" + db + "?sslmode=disable"
}

func TestSimpleQueryThroughProxy(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, proxy.Config{}, staticDirector{addr: cluster.Primary().Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, tp.dsn("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var port int
	var rec bool
	if err := conn.QueryRow(ctx, "SELECT inet_server_port(), pg_is_in_recovery()").Scan(&port, &rec); err != nil {
		t.Fatal(err)
	}
	if port != cluster.Primary().Port || rec {
		t.Fatalf("served by port %d recovery=%v, want primary %d", port, rec, cluster.Primary().Port)
	}
}

// relays are the two ways a plain TCP session is relayed: the event loops
// (the default) and a goroutine per direction (runtime.event_loops: -1).
var relays = []struct {
	name  string
	loops int
	want  string // SessionInfo.Relay
}{
	{"event_loop", 0, "event_loop"},
	{"goroutines", -1, "goroutines"},
}

// forRelays runs test once per relay.
func forRelays(t *testing.T, test func(t *testing.T, cfg proxy.Config)) {
	for _, r := range relays {
		t.Run(r.name, func(t *testing.T) { test(t, proxy.Config{RelayLoops: r.loops}) })
	}
}
