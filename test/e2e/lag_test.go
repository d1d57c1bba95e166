package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/health"
	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

// readPorts opens n read sessions one after another and returns the ports
// that served them (each session closed before the next).
func readPorts(t *testing.T, addr string, n int) map[int]int {
	t.Helper()
	out := map[int]int{}
	for i := 0; i < n; i++ {
		conn := connectQuiet(t, proxytest.DSN(addr, "postgres", "postgres"))
		port, _ := servedBy(t, conn)
		conn.Close(context.Background())
		out[port]++
	}
	return out
}

func connectQuiet(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	return conn
}

// waitState waits until backend addr reaches state in the proxy's snapshot.
func waitState(t *testing.T, p *proxytest.Proxy, addr string, state health.State, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if b := p.App.Monitor().Snapshot().Backend(addr); b != nil && b.State == state {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b := p.App.Monitor().Snapshot().Backend(addr)
	t.Fatalf("%s did not become %v within %v (now %+v)", addr, state, within, b)
	return 0
}

func TestPausedReplicaGetsNoNewReads(t *testing.T) {
	reset(t)
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: "routing:\n  max_lag: 1s\n"})
	ctx := ctxT(t, 2*time.Minute)
	r1, r2 := cluster.Replicas()[0], cluster.Replicas()[1]
	if err := r1.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r1.ResumeReplay(context.Background()) })
	if err := cluster.GenerateWAL(ctx, 4<<20); err != nil {
		t.Fatal(err)
	}
	// max_lag 1s + 2 probe intervals of 250 ms.
	waitState(t, p, r1.Addr(), health.StateLagging, 1500*time.Millisecond+2*250*time.Millisecond+time.Second)
	ports := readPorts(t, p.ReadAddr(), 10)
	if ports[r1.Port] != 0 || ports[r2.Port] != 10 {
		t.Fatalf("while replica 1 lags, read sessions went to %v (r1=%d r2=%d)", ports, r1.Port, r2.Port)
	}
	if err := r1.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	waitState(t, p, r1.Addr(), health.StateUp, 10*time.Second)
	// Back in rotation: with equal lag, ties go to fewest sessions then round-robin.
	ports = readPorts(t, p.ReadAddr(), 10)
	if ports[r1.Port] == 0 {
		t.Fatalf("caught-up replica 1 got no read session: %v", ports)
	}
}

func TestIdlePrimaryKeepsReplicasFresh(t *testing.T) {
	reset(t)
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: "routing:\n  max_lag: 2s\n"})
	time.Sleep(10 * time.Second) // no writes at all
	snap := p.App.Monitor().Snapshot()
	for _, r := range cluster.Replicas() {
		b := snap.Backend(r.Addr())
		if b == nil || b.State != health.StateUp || b.LagSeconds > 1 {
			t.Fatalf("idle primary: replica %s is %+v", r.Addr(), b)
		}
	}
	ports := readPorts(t, p.ReadAddr(), 4)
	if ports[cluster.Primary().Port] != 0 {
		t.Fatalf("read sessions fell back to the primary on an idle cluster: %v", ports)
	}
	_, metrics := p.Get(t, "/metrics")
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "pgproxy_fallbacks_total") && !strings.HasSuffix(line, " 0") {
			t.Fatalf("fallback counted on an idle cluster: %s", line)
		}
	}
}

func pauseAllReplicas(t *testing.T, ctx context.Context) {
	t.Helper()
	for _, r := range cluster.Replicas() {
		if err := r.PauseReplay(ctx); err != nil {
			t.Fatal(err)
		}
		r := r
		t.Cleanup(func() { _ = r.ResumeReplay(context.Background()) })
	}
	if err := cluster.GenerateWAL(ctx, 2<<20); err != nil {
		t.Fatal(err)
	}
}

func TestFallbackPrimaryIsReadOnly(t *testing.T) {
	reset(t)
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: "routing:\n  max_lag: 1s\n  fallback: primary\n"})
	ctx := ctxT(t, 2*time.Minute)
	if err := cluster.Primary().Exec(ctx, "DROP TABLE IF EXISTS fb_t; CREATE TABLE fb_t(v int)"); err != nil {
		t.Fatal(err)
	}
	pauseAllReplicas(t, ctx)
	for _, r := range cluster.Replicas() {
		waitState(t, p, r.Addr(), health.StateLagging, 5*time.Second)
	}
	bypasses := []string{
		"SET default_transaction_read_only = off",
		"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
		"BEGIN READ WRITE",
		"SELECT set_config('default_transaction_read_only', 'off', false)",
		"RESET default_transaction_read_only",
		"DO $$BEGIN INSERT INTO fb_t VALUES (1); END$$",
		"INSERT INTO fb_t VALUES (1)",
		"SET default_transaction_read_only = off; INSERT INTO fb_t VALUES (1)",
	}
	// The client is told why its read session is on the primary.
	notices := make(chan string, 1)
	cfg, err := pgx.ParseConfig(proxytest.DSN(p.ReadAddr(), "postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		select {
		case notices <- n.Message:
		default:
		}
	}
	nc, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close(ctx)
	select {
	case msg := <-notices:
		if !strings.HasPrefix(msg, "pgproxy: no replica within max_lag 1s") || !strings.HasSuffix(msg, "this session runs on the primary, read-only") {
			t.Errorf("fallback notice = %q", msg)
		}
	default:
		t.Error("no NOTICE on a fallback session")
	}
	if len(p.Logs.FilterMessage("read session fell back to the primary, read-only").All()) == 0 {
		t.Error("fallback not logged at info")
	}
	for _, mode := range []string{"simple_protocol", "cache_statement"} {
		conn := connect(t, proxytest.DSN(p.ReadAddr(), "postgres", "postgres")+"&default_query_exec_mode="+mode)
		port, rec := servedBy(t, conn)
		if port != cluster.Primary().Port || rec {
			t.Fatalf("fallback session served by %d (recovery=%v), want the primary", port, rec)
		}
		for _, q := range bypasses {
			_, err := conn.Exec(ctx, q)
			if sqlState(err) != "25006" {
				t.Errorf("%s: %q: %v, want 25006", mode, q, err)
			}
			// pgproxy's own refusals come from pgproxy, not from a block the server ran.
			var pe *pgconn.PgError
			if errors.As(err, &pe) && strings.HasPrefix(pe.Message, "pgproxy:") && (pe.Where != "" || pe.File != "") {
				t.Errorf("%s: %q: the refusal carries server context %q (%s)", mode, q, pe.Where, pe.File)
			}
			if conn.PgConn().TxStatus() != 'I' {
				_, _ = conn.Exec(ctx, "ROLLBACK")
			}
		}
	}
	var n int
	if err := cluster.Primary().QueryRow(ctx, "SELECT count(*) FROM fb_t", &n); err != nil || n != 0 {
		t.Fatalf("the primary's data changed through a fallback session: %d rows %v", n, err)
	}
	_, metrics := p.Get(t, "/metrics")
	if !strings.Contains(metrics, `pgproxy_fallbacks_total{reason="lag"}`) {
		t.Errorf("no lag fallback counted:\n%s", grep(metrics, "fallbacks"))
	}
}

func TestFallbackRejectListsReplicas(t *testing.T) {
	reset(t)
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: "routing:\n  max_lag: 1s\n  fallback: reject\n"})
	ctx := ctxT(t, 2*time.Minute)
	pauseAllReplicas(t, ctx)
	for _, r := range cluster.Replicas() {
		waitState(t, p, r.Addr(), health.StateLagging, 5*time.Second)
	}
	_, err := pgx.Connect(ctx, proxytest.DSN(p.ReadAddr(), "postgres", "postgres"))
	if sqlState(err) != "57P03" {
		t.Fatalf("reject fallback: %v, want 57P03", err)
	}
	for _, r := range cluster.Replicas() {
		if !strings.Contains(err.Error(), r.Addr()) {
			t.Errorf("57P03 message does not name %s: %v", r.Addr(), err)
		}
	}
	if !strings.Contains(err.Error(), "lag") {
		t.Errorf("57P03 message does not say why: %v", err)
	}
	// Writes are unaffected.
	conn := connect(t, proxytest.DSN(p.WriteAddr(), "postgres", "postgres"))
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
}

// TestStalenessBound: a writer inserts a row every 50 ms on the primary and
// remembers when each committed (on the test's clock); readers through the
// read listener must never miss a row committed more than max_lag + 2 ×
// health.interval before their read, while replay is paused and resumed on
// the replicas in turn.
func TestStalenessBound(t *testing.T) {
	reset(t)
	const maxLag, interval = time.Second, 250 * time.Millisecond
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: "routing:\n  max_lag: 1s\n"})
	ctx := ctxT(t, 2*time.Minute)
	if err := cluster.Primary().Exec(ctx, "DROP TABLE IF EXISTS ticks; CREATE TABLE ticks(id int primary key)"); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReplicasCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	committed := map[int]time.Time{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // writer
		defer wg.Done()
		conn, err := pgx.Connect(ctx, cluster.Primary().DSN("postgres"))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		for id := 1; ; id++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := conn.Exec(ctx, "INSERT INTO ticks VALUES ($1)", id); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			committed[id] = time.Now()
			mu.Unlock()
		}
	}()
	var reads, violations atomic.Int64
	var worst atomic.Int64
	for i := 0; i < 2; i++ { // readers
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := pgx.Connect(ctx, proxytest.DSN(p.ReadAddr(), "postgres", "postgres"))
				if err != nil {
					t.Error(err)
					return
				}
				var maxID int
				err = conn.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM ticks").Scan(&maxID)
				readAt := time.Now()
				conn.Close(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				missed, ok := committed[maxID+1]
				mu.Unlock()
				reads.Add(1)
				if ok && missed.Before(readAt) {
					stale := readAt.Sub(missed)
					if int64(stale) > worst.Load() {
						worst.Store(int64(stale))
					}
					if stale > maxLag+2*interval {
						violations.Add(1)
						t.Errorf("read at %v missed row %d committed %v earlier", readAt.Format(time.StampMilli), maxID+1, stale)
					}
				}
			}
		}()
	}
	for _, r := range cluster.Replicas() {
		time.Sleep(time.Second)
		if err := r.PauseReplay(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		if err := r.ResumeReplay(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Both paused, 0.5 s apart: the least-lagged choice alone cannot avoid
	// stale data now; only the max_lag cut-off (then the fallback) can.
	for _, r := range cluster.Replicas() {
		if err := r.PauseReplay(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	for _, r := range cluster.Replicas() {
		if err := r.ResumeReplay(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d reads, worst staleness %v, %d violations of %v", reads.Load(), time.Duration(worst.Load()), violations.Load(), maxLag+2*interval)
	if worst.Load() < int64(maxLag/2) {
		t.Errorf("worst staleness %v: the test did not exercise stale replicas", time.Duration(worst.Load()))
	}
	if reads.Load() < 20 {
		t.Fatalf("only %d reads", reads.Load())
	}
}

func TestKilledReplicaInvisibleToNewSessions(t *testing.T) {
	reset(t)
	p := proxytest.Start(t, cluster, nil)
	r1, r2 := cluster.Replicas()[0], cluster.Replicas()[1]
	t.Cleanup(func() { _ = cluster.Reset(context.Background()) })
	// Sessions on both replicas first: a pooled proxy then holds idle
	// server connections to r1 that the kill breaks.
	if ports := readPorts(t, p.ReadAddr(), 4); ports[r1.Port] == 0 || ports[r2.Port] == 0 {
		t.Fatalf("read sessions before the kill went to %v", ports)
	}
	if err := r1.Stop(ctxT(t, 30*time.Second), "immediate"); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	// New read sessions right away: a connect failure moves to the next
	// candidate, so no client sees an error, even before the probe notices.
	var afterProbe map[int]int
	for time.Since(killedAt) < 2*time.Second {
		ports := readPorts(t, p.ReadAddr(), 1)
		if time.Since(killedAt) > 2*250*time.Millisecond {
			if afterProbe == nil {
				afterProbe = map[int]int{}
			}
			for k, v := range ports {
				afterProbe[k] += v
			}
		}
	}
	if afterProbe[r1.Port] != 0 || afterProbe[r2.Port] == 0 {
		t.Fatalf("after the kill, sessions went to %v", afterProbe)
	}
	waitState(t, p, r1.Addr(), health.StateDown, time.Second)
	if err := r1.Start(ctxT(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitState(t, p, r1.Addr(), health.StateUp, 15*time.Second)
	if ports := readPorts(t, p.ReadAddr(), 10); ports[r1.Port] == 0 {
		t.Fatalf("restarted replica got no session: %v", ports)
	}
}

// TestPromotion uses its own cluster: the old primary is stopped, replica 2
// promoted; write sessions must land on it within 2 probe intervals (plus
// the promotion itself) and writes succeed.
func TestPromotion(t *testing.T) {
	pgcluster.Require(t, cluster)
	ctx := ctxT(t, 3*time.Minute)
	c, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := proxytest.Start(t, c, nil)
	r2 := c.Replicas()[1]
	if err := c.Primary().Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if err := r2.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	var port int
	for {
		conn, err := pgx.Connect(ctx, proxytest.DSN(p.WriteAddr(), "postgres", "postgres"))
		if err == nil {
			port, _ = servedBy(t, conn)
			_, werr := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS after_promotion(v int); INSERT INTO after_promotion VALUES (1)")
			conn.Close(context.Background())
			if port == r2.Port && werr == nil {
				break
			}
		}
		if time.Since(promoted) > 2*250*time.Millisecond+2*time.Second {
			t.Fatalf("writes did not reach the promoted replica within %v (last: port %d err %v)", time.Since(promoted), port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("writes on the promoted replica %v after promotion", time.Since(promoted).Round(time.Millisecond))
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return fmt.Sprint(out)
}
