package health

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

var cluster *pgcluster.Cluster

func TestMain(m *testing.M) { os.Exit(pgcluster.Main(m, pgcluster.Options{Replicas: 2}, &cluster)) }

const testInterval = 250 * time.Millisecond

// startMonitor runs a monitor for the test and stops it (checking that every
// goroutine ended) in Cleanup.
func startMonitor(t *testing.T, cfg Config) (*Monitor, *prometheus.Registry, *observer.ObservedLogs) {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = testInterval
	}
	if cfg.User == "" {
		cfg.User, cfg.Password = pgcluster.MonitorUser, pgcluster.MonitorPassword
	}
	core, logs := observer.New(zapcore.InfoLevel)
	reg := prometheus.NewRegistry()
	m, err := NewMonitor(cfg, zap.New(core), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		goleak.VerifyNone(t)
	})
	return m, reg, logs
}

// waitFor polls the snapshot until cond holds (the deadline is a safety net,
// not the assertion).
func waitFor(t *testing.T, m *Monitor, what string, cond func(*Snapshot) bool) *Snapshot {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := m.Snapshot()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; snapshot:\n%s", what, dump(s))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dump(s *Snapshot) string {
	var b strings.Builder
	for _, be := range s.Backends {
		b.WriteString(be.Addr + " " + be.Role.String() + " " + be.State.String() + " (" + be.Reason + ") err=" + be.LastError + "\n")
	}
	return b.String()
}

func allUp(s *Snapshot) bool {
	if s.Primary() == nil {
		return false
	}
	for _, b := range s.Backends {
		if b.State != StateUp || (b.Role == RoleReplica && !b.LagKnown) {
			return false
		}
	}
	return true
}

func resetCluster(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cluster.Reset(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestMonitorDiscoversRoles(t *testing.T) {
	pgcluster.Require(t, cluster)
	// Replicas first: the order of the configuration says nothing about roles.
	addrs := []string{cluster.Replicas()[1].Addr(), cluster.Primary().Addr(), cluster.Replicas()[0].Addr()}
	m, reg, _ := startMonitor(t, Config{Backends: addrs, MaxLag: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, m, "all backends up", allUp)
	if s.PrimaryIndex != 1 || s.Primary().Addr != cluster.Primary().Addr() || s.Primary().Timeline != 1 {
		t.Fatalf("primary index %d:\n%s", s.PrimaryIndex, dump(s))
	}
	for _, i := range []int{0, 2} {
		b := s.Backends[i]
		if b.Role != RoleReplica || !b.Streaming || b.ReplayPaused || b.Timeline != 1 {
			t.Fatalf("replica %s: %+v", b.Addr, b)
		}
	}
	for _, b := range s.Backends {
		for _, r := range []Role{RolePrimary, RoleReplica, RoleUnknown} {
			want := 0.0
			if b.Role == r {
				want = 1
			}
			if got := metricValue(t, reg, "pgproxy_backend_role", map[string]string{"backend": b.Addr, "role": r.String()}); got != want {
				t.Fatalf("pgproxy_backend_role{%s,%s} = %v, want %v", b.Addr, r, got, want)
			}
		}
	}
	if n, err := testutil.GatherAndCount(reg, "pgproxy_backend_up"); err != nil || n != 3 {
		t.Fatalf("pgproxy_backend_up series = %d, %v", n, err)
	}
}

func TestMonitorReplayPausedBecomesLaggingAndReturns(t *testing.T) {
	pgcluster.Require(t, cluster)
	t.Cleanup(func() { resetCluster(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, r1, r2 := cluster.Primary(), cluster.Replicas()[0], cluster.Replicas()[1]
	m, reg, _ := startMonitor(t, Config{Backends: cluster.Addrs(), MaxLag: 2 * time.Second, MaxLagBytes: 1 << 20})
	waitFor(t, m, "all up", allUp)

	if err := r1.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cluster.GenerateWAL(ctx, 4<<20); err != nil {
		t.Fatal(err)
	}
	var target int64
	if err := p.QueryRow(ctx, "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &target); err != nil {
		t.Fatal(err)
	}
	// From the first snapshot whose primary sample has the new WAL, replica 1
	// must be lagging within 2 of its own probes.
	s := waitFor(t, m, "primary sample past the WAL", func(s *Snapshot) bool { return s.Backend(p.Addr()).LSN >= target })
	probes := s.Backend(r1.Addr()).Probes
	s = waitFor(t, m, "replica 1 lagging", func(s *Snapshot) bool {
		return s.Backend(r1.Addr()).State == StateLagging || s.Backend(r1.Addr()).Probes > probes+2
	})
	b1 := s.Backend(r1.Addr())
	if b1.State != StateLagging {
		t.Fatalf("replica 1 not lagging after 2 probes:\n%s", dump(s))
	}
	if !b1.ReplayPaused || b1.LagBytes < 1<<20 || !strings.Contains(b1.Reason, " > 1024 kB") {
		t.Fatalf("replica 1: %+v", *b1)
	}
	// Replica 2 replays the same WAL: on a loaded machine it may be past the
	// byte limit for a moment too, but it is up again while replica 1, paused,
	// is still lagging.
	s2 := waitFor(t, m, "replica 2 up", func(s *Snapshot) bool { return s.Backend(r2.Addr()).State == StateUp })
	if s2.Backend(r1.Addr()).State != StateLagging {
		t.Fatalf("replica 1 should still be lagging while replica 2 is up:\n%s", dump(s2))
	}
	if v := metricValue(t, reg, "pgproxy_replica_lag_bytes", map[string]string{"backend": r1.Addr()}); v < 1<<20 {
		t.Fatalf("pgproxy_replica_lag_bytes = %v", v)
	}

	// Still paused: the lag in seconds keeps growing on the proxy's clock.
	firstSecs := b1.LagSeconds
	s = waitFor(t, m, "lag seconds above max_lag", func(s *Snapshot) bool { return s.Backend(r1.Addr()).LagSeconds > 2 })
	if s.Backend(r1.Addr()).LagSeconds <= firstSecs {
		t.Fatalf("lag seconds did not grow: %v then %v", firstSecs, s.Backend(r1.Addr()).LagSeconds)
	}

	if err := r1.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, m, "replica 1 up again", func(s *Snapshot) bool { return s.Backend(r1.Addr()).State == StateUp })
	if b := s.Backend(r1.Addr()); b.LagSeconds >= 1 || b.LagBytes >= 512<<10 || b.ReplayPaused {
		t.Fatalf("returned above half the limits: %+v", *b)
	}
}

func TestMonitorIdlePrimaryNoFalseLag(t *testing.T) {
	pgcluster.Require(t, cluster)
	m, _, _ := startMonitor(t, Config{Backends: cluster.Addrs(), MaxLag: 2 * time.Second})
	waitFor(t, m, "all up", allUp)
	// No writes for 10 s: every replica stays up with lag ≈ 0 at every probe.
	end := time.Now().Add(10 * time.Second)
	var maxLag float64
	for time.Now().Before(end) {
		s := m.Snapshot()
		for _, b := range s.Backends {
			if b.State != StateUp {
				t.Fatalf("%s left up during an idle period:\n%s", b.Addr, dump(s))
			}
			maxLag = max(maxLag, b.LagSeconds)
		}
		time.Sleep(testInterval / 2)
	}
	if maxLag >= 1 {
		t.Fatalf("max lag seen on an idle primary = %.3fs, want ≈ 0", maxLag)
	}
	var naive float64
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cluster.Replicas()[0].QueryRow(ctx, "SELECT coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8", &naive); err != nil {
		t.Fatal(err)
	}
	t.Logf("idle primary: max measured lag %.3fs; now()-pg_last_xact_replay_timestamp() would say %.1fs", maxLag, naive)
}

func TestMonitorReplicaKilledDownAndBack(t *testing.T) {
	pgcluster.Require(t, cluster)
	t.Cleanup(func() { resetCluster(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r2 := cluster.Replicas()[1]
	m, reg, logs := startMonitor(t, Config{Backends: cluster.Addrs(), MaxLag: 5 * time.Second})
	waitFor(t, m, "all up", allUp)

	if err := r2.Stop(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	probes := m.Snapshot().Backend(r2.Addr()).Probes
	s := waitFor(t, m, "replica 2 down", func(s *Snapshot) bool {
		return s.Backend(r2.Addr()).State == StateDown || s.Backend(r2.Addr()).Probes > probes+2
	})
	b := s.Backend(r2.Addr())
	// The probe in flight when the server stopped may still succeed; the next one must not.
	if b.State != StateDown || b.Probes > probes+2 {
		t.Fatalf("replica 2 not down within one probe interval (probes %d → %d):\n%s", probes, b.Probes, dump(s))
	}
	if b.Role != RoleReplica || b.LastError == "" {
		t.Fatalf("down replica: %+v", *b)
	}
	if v := metricValue(t, reg, "pgproxy_backend_up", map[string]string{"backend": r2.Addr()}); v != 0 {
		t.Fatalf("pgproxy_backend_up = %v", v)
	}
	if s.Primary() == nil || s.Backend(cluster.Replicas()[0].Addr()).State != StateUp {
		t.Fatalf("others affected:\n%s", dump(s))
	}

	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, "replica 2 up again", func(s *Snapshot) bool { return s.Backend(r2.Addr()).State == StateUp })
	lines := logs.FilterMessage("backend state changed").FilterField(zap.String("backend", r2.Addr())).All()
	var seq []string
	for _, l := range lines {
		seq = append(seq, l.ContextMap()["state"].(string))
	}
	if strings.Join(seq, ",") != "up,down,up" {
		t.Fatalf("state change log lines for replica 2: %v, want up,down,up", seq)
	}
}

func TestMonitorUpdateAddsAndRemovesBackends(t *testing.T) {
	pgcluster.Require(t, cluster)
	p, r1 := cluster.Primary(), cluster.Replicas()[0]
	m, _, _ := startMonitor(t, Config{Backends: []string{p.Addr()}})
	waitFor(t, m, "primary", func(s *Snapshot) bool { return s.Primary() != nil })
	cfg := Config{Backends: []string{p.Addr(), r1.Addr()}, Interval: testInterval,
		User: pgcluster.MonitorUser, Password: pgcluster.MonitorPassword, MaxLag: time.Second}
	if err := m.Update(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, "added replica up", func(s *Snapshot) bool {
		b := s.Backend(r1.Addr())
		return b != nil && b.State == StateUp && b.LagKnown
	})
	cfg.Backends = []string{r1.Addr()}
	if err := m.Update(cfg); err != nil {
		t.Fatal(err)
	}
	s := m.Snapshot()
	if len(s.Backends) != 1 || s.PrimaryIndex != -1 || s.Backends[0].Addr != r1.Addr() {
		t.Fatalf("after removing the primary:\n%s", dump(s))
	}
	if err := m.Update(Config{Backends: []string{"no-port"}}); err == nil {
		t.Fatal("invalid config accepted")
	}
	if got := m.Snapshot().Backends[0].Addr; got != r1.Addr() {
		t.Fatalf("refused update changed the monitor: %s", got)
	}
}

// Probes of unreachable backends: these need no cluster and run with -short.
func TestMonitorUnreachableBackends(t *testing.T) {
	refused := closedPort(t)
	// A server that accepts and never answers: the probe must give up at Timeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	m, reg, _ := startMonitor(t, Config{Backends: []string{refused, silent.Addr().String()}, Interval: 50 * time.Millisecond, Timeout: 200 * time.Millisecond})
	// Registered after startMonitor, so it runs before its leak check.
	t.Cleanup(func() { silent.Close(); <-acceptDone })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := m.WaitReady(ctx); err == nil {
		t.Fatal("ready without a primary")
	}
	s := waitFor(t, m, "both probed", func(s *Snapshot) bool { return s.Backends[0].Probes > 0 && s.Backends[1].Probes > 0 })
	if b := s.Backends[0]; b.State != StateDown || b.Reason != "connection refused" || b.Role != RoleUnknown {
		t.Fatalf("refused: %+v", b)
	}
	if b := s.Backends[1]; b.State != StateDown || b.Reason != "probe timed out" || !strings.Contains(b.LastError, "200ms") {
		t.Fatalf("silent: %+v", b)
	}
	if s.PrimaryIndex != -1 || m.Ready() {
		t.Fatal("primary without any backend up")
	}
	if v := metricValue(t, reg, "pgproxy_backend_up", map[string]string{"backend": refused}); v != 0 {
		t.Fatalf("pgproxy_backend_up = %v", v)
	}
}

func TestMonitorRunTwiceAndBadConfig(t *testing.T) {
	if _, err := NewMonitor(Config{Backends: []string{"a:1", "a:1"}}, nil, nil); err == nil {
		t.Fatal("duplicate backend accepted")
	}
	if _, err := NewMonitor(Config{Interval: -1}, nil, nil); err == nil {
		t.Fatal("negative interval accepted")
	}
	m, err := NewMonitor(Config{Backends: []string{closedPort(t)}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Snapshot(); s == nil || len(s.Backends) != 1 || s.Backends[0].State != StateDown || s.PrimaryIndex != -1 {
		t.Fatalf("initial snapshot: %+v", s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Run(ctx); err == nil {
		t.Fatal("second Run accepted")
	}
	goleak.VerifyNone(t)
}

func TestPromotionAndFencedOldPrimary(t *testing.T) {
	pgcluster.Require(t, cluster)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Promotion changes the cluster for good: this test has its own.
	c, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	old, r2 := c.Primary(), c.Replicas()[1]
	m, _, logs := startMonitor(t, Config{Backends: c.Addrs(), MaxLag: 5 * time.Second})
	waitFor(t, m, "all up", allUp)

	if err := old.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, "no primary", func(s *Snapshot) bool { return s.Primary() == nil })
	if err := r2.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	probes := m.Snapshot().Backend(r2.Addr()).Probes
	s := waitFor(t, m, "replica 2 primary", func(s *Snapshot) bool {
		return (s.Primary() != nil && s.Primary().Addr == r2.Addr()) || s.Backend(r2.Addr()).Probes > probes+2
	})
	if p := s.Primary(); p == nil || p.Addr != r2.Addr() || p.Timeline != 2 {
		t.Fatalf("replica 2 not primary within 2 probes:\n%s", dump(s))
	}

	// The old primary comes back as a primary on timeline 1: fenced.
	if err := old.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, m, "old primary fenced", func(s *Snapshot) bool { return s.Backend(old.Addr()).State == StateFenced })
	if p := s.Primary(); p == nil || p.Addr != r2.Addr() {
		t.Fatalf("primary changed by the old primary's return:\n%s", dump(s))
	}
	if b := s.Backend(old.Addr()); b.Role != RolePrimary || b.Timeline != 1 || !strings.Contains(b.Reason, "below timeline 2") {
		t.Fatalf("fenced: %+v", *b)
	}
	fenced := logs.FilterMessageSnippet("fenced").All()
	if len(fenced) != 1 || fenced[0].Level != zapcore.ErrorLevel {
		t.Fatalf("fencing log lines: %v", fenced)
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// metricValue returns the value of the series of name with exactly labels.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}
