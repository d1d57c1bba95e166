package router

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/health"
	"github.com/ofitec/pgproxy/test/pgcluster"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

var cluster *pgcluster.Cluster

func TestMain(m *testing.M) { os.Exit(pgcluster.Main(m, pgcluster.Options{Replicas: 2}, &cluster)) }

// TestRoutingFollowsRealReplicaLag runs the monitor on the real cluster and
// picks through the router: a paused replica with MBs of WAL behind gets no
// new read sessions; with both replicas behind, reads fall back to the
// primary (or are rejected with the reasons).
func TestRoutingFollowsRealReplicaLag(t *testing.T) {
	pgcluster.Require(t, cluster)
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		rctx, rcancel := context.WithTimeout(context.Background(), time.Minute)
		defer rcancel()
		if err := cluster.Reset(rctx); err != nil {
			t.Error(err)
		}
	})
	p, r1, r2 := cluster.Primary(), cluster.Replicas()[0], cluster.Replicas()[1]
	mon, err := health.NewMonitor(health.Config{
		Backends: cluster.Addrs(), Interval: 250 * time.Millisecond, Timeout: time.Second,
		User: pgcluster.MonitorUser, Password: pgcluster.MonitorPassword,
		MaxLag: 2 * time.Second, MaxLagBytes: 1 << 20,
	}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mon.Run(runCtx) }()
	defer func() { stop(); <-done }()
	r := New(Config{MaxLag: 2 * time.Second, MaxLagBytes: 1 << 20}, mon.Snapshot, nil)

	spread := func() map[string]int {
		got := map[string]int{}
		for range 40 {
			d, err := r.Pick(&Session{Route: RouteRead}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d.Fallback {
				got["fallback:"+d.Backend]++
			} else {
				got[d.Backend]++
			}
		}
		return got
	}
	wait := func(what string, cond func(*health.Snapshot) bool) {
		t.Helper()
		for !cond(mon.Snapshot()) {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	state := func(s *health.Snapshot, n *pgcluster.Node) health.State { return s.Backend(n.Addr()).State }

	wait("all up", func(s *health.Snapshot) bool {
		return s.Primary() != nil && state(s, r1) == health.StateUp && state(s, r2) == health.StateUp &&
			s.Backend(r1.Addr()).LagKnown && s.Backend(r2.Addr()).LagKnown
	})
	if got := spread(); got[r1.Addr()] == 0 || got[r2.Addr()] == 0 || got[r1.Addr()]+got[r2.Addr()] != 40 {
		t.Fatalf("reads not spread over both replicas: %v", got)
	}
	if d, err := r.Pick(&Session{Route: RouteWrite}, nil); err != nil || d.Backend != p.Addr() {
		t.Fatalf("write: %+v %v", d, err)
	}

	if err := r1.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cluster.GenerateWAL(ctx, 4<<20); err != nil {
		t.Fatal(err)
	}
	wait("replica 1 lagging", func(s *health.Snapshot) bool { return state(s, r1) == health.StateLagging })
	wait("replica 2 caught up", func(s *health.Snapshot) bool { return state(s, r2) == health.StateUp })
	if got := spread(); got[r2.Addr()] != 40 {
		t.Fatalf("reads with replica 1 paused: %v, want all on replica 2", got)
	}

	if err := r2.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cluster.GenerateWAL(ctx, 4<<20); err != nil {
		t.Fatal(err)
	}
	wait("replica 2 lagging", func(s *health.Snapshot) bool { return state(s, r2) == health.StateLagging })
	if got := spread(); got["fallback:"+p.Addr()] != 40 {
		t.Fatalf("reads with both replicas paused: %v, want all on the primary as fallback", got)
	}
	r.SetConfig(Config{MaxLag: 2 * time.Second, MaxLagBytes: 1 << 20, Fallback: FallbackReject})
	_, err = r.Pick(&Session{Route: RouteRead}, nil)
	var nb *NoBackendError
	if !errors.As(err, &nb) || nb.SQLState() != "57P03" ||
		!strings.Contains(nb.Error(), r1.Addr()+" lag ") || !strings.Contains(nb.Error(), r2.Addr()+" lag ") {
		t.Fatalf("reject: %v", err)
	}
	t.Logf("57P03 message: %s", nb.Error())

	for _, n := range []*pgcluster.Node{r1, r2} {
		if err := n.ResumeReplay(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wait("both replicas back", func(s *health.Snapshot) bool {
		return state(s, r1) == health.StateUp && state(s, r2) == health.StateUp
	})
	if got := spread(); got[r1.Addr()] == 0 || got[r2.Addr()] == 0 {
		t.Fatalf("reads after catch-up: %v", got)
	}
}
