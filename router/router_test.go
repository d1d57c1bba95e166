package router

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/health"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	pg1 = "10.0.0.1:5432"
	pg2 = "10.0.0.2:5432"
	pg3 = "10.0.0.3:5432"
	pg4 = "10.0.0.4:5432"
)

func prim(addr string) health.Backend {
	return health.Backend{Addr: addr, Role: health.RolePrimary, State: health.StateUp, Reason: "primary on timeline 1", Timeline: 1}
}

func repl(addr string, lag float64, bytes int64) health.Backend {
	return health.Backend{Addr: addr, Role: health.RoleReplica, State: health.StateUp, LagSeconds: lag, LagBytes: bytes, LagKnown: true, Streaming: true}
}

func lagging(addr string, lag float64, reason string) health.Backend {
	b := repl(addr, lag, 1<<20)
	b.State, b.Reason = health.StateLagging, reason
	return b
}

func down(addr string, role health.Role, reason string) health.Backend {
	return health.Backend{Addr: addr, Role: role, State: health.StateDown, Reason: reason}
}

func fenced(addr string) health.Backend {
	b := prim(addr)
	b.State, b.Reason = health.StateFenced, "not in recovery on timeline 1, below timeline 2 of the current primary"
	return b
}

// mkSnap builds a snapshot; the primary is the first backend with role
// primary and state up.
func mkSnap(bs ...health.Backend) *health.Snapshot {
	s := &health.Snapshot{Taken: time.Unix(1e9, 0), Interval: 500 * time.Millisecond, Backends: bs, PrimaryIndex: -1}
	for i, b := range bs {
		if b.Role == health.RolePrimary && b.State == health.StateUp {
			s.PrimaryIndex = i
			break
		}
	}
	return s
}

func TestPick(t *testing.T) {
	healthy := mkSnap(prim(pg1), repl(pg2, 0.1, 100), repl(pg3, 0, 0))
	tests := []struct {
		name     string
		cfg      Config
		snap     *health.Snapshot
		session  Session
		sessions map[string]int // acquired before Pick
		exclude  []string
		want     string // backend, or "" for an error
		fallback bool
		reason   string
		errMsg   string // exact NoBackendError message
	}{
		{name: "write goes to the primary", snap: healthy, session: Session{Route: RouteWrite}, want: pg1, reason: "primary"},
		{name: "write: the primary is wherever the snapshot says", snap: mkSnap(down(pg1, health.RolePrimary, "connection refused"), prim(pg2), repl(pg3, 0, 0)),
			session: Session{Route: RouteWrite}, want: pg2, reason: "primary"},
		{name: "write with no primary: 57P03", snap: mkSnap(down(pg1, health.RolePrimary, "connection refused"), repl(pg2, 0, 0)),
			session: Session{Route: RouteWrite}, errMsg: "no primary available: 10.0.0.1:5432 down: connection refused"},
		{name: "write never goes to a fenced primary", snap: mkSnap(fenced(pg1), repl(pg2, 0, 0)),
			session: Session{Route: RouteWrite}, errMsg: "no primary available: 10.0.0.1:5432 fenced: not in recovery on timeline 1, below timeline 2 of the current primary"},
		{name: "write, primary excluded after a connect failure", snap: healthy, session: Session{Route: RouteWrite}, exclude: []string{pg1},
			errMsg: "no primary available: 10.0.0.1:5432 connection failed"},
		{name: "write, nothing ever probed", snap: mkSnap(down(pg1, health.RoleUnknown, "not probed yet")), session: Session{Route: RouteWrite},
			errMsg: "no primary available: no backend reports being a primary (10.0.0.1:5432 down: not probed yet)"},
		{name: "read: least lagged step wins over sessions", cfg: Config{MaxLag: 5 * time.Second},
			snap: mkSnap(prim(pg1), repl(pg2, 1.2, 100), repl(pg3, 0.7, 0)), sessions: map[string]int{pg3: 50},
			session: Session{Route: RouteRead}, want: pg3, reason: "replica"},
		{name: "read: lags within one probe interval tie, fewest sessions wins", cfg: Config{MaxLag: 5 * time.Second},
			snap: mkSnap(prim(pg1), repl(pg2, 0.1, 100), repl(pg3, 0.4, 900)), sessions: map[string]int{pg2: 3, pg3: 2},
			session: Session{Route: RouteRead}, want: pg3, reason: "replica"},
		{name: "read skips lagging, down and fenced backends", cfg: Config{MaxLag: 5 * time.Second},
			snap:    mkSnap(fenced(pg4), lagging(pg2, 9, "lag 9.0s > 5s"), down(pg3, health.RoleReplica, "connection refused"), repl("10.0.0.5:5432", 3, 10), prim(pg1)),
			session: Session{Route: RouteRead}, want: "10.0.0.5:5432", reason: "replica"},
		{name: "read: lag unknown (primary down) is still served", cfg: Config{MaxLag: 5 * time.Second},
			snap:    mkSnap(down(pg1, health.RolePrimary, "connection refused"), health.Backend{Addr: pg2, Role: health.RoleReplica, State: health.StateUp, LagSeconds: 0.2}),
			session: Session{Route: RouteRead}, want: pg2, reason: "replica"},
		{name: "read: the session's tighter max_lag", cfg: Config{MaxLag: 5 * time.Second},
			snap: mkSnap(prim(pg1), repl(pg2, 1.2, 100), repl(pg3, 2.5, 0)), session: Session{Route: RouteRead, MaxLag: time.Second},
			want: pg1, fallback: true, reason: "fallback_primary"},
		{name: "read: a looser session max_lag does not loosen the config", cfg: Config{MaxLag: 2 * time.Second, Fallback: "reject"},
			snap: mkSnap(prim(pg1), repl(pg2, 2.5, 100)), session: Session{Route: RouteRead, MaxLag: time.Minute},
			errMsg: "no replica within max_lag 2s: 10.0.0.2:5432 lag 2.5s > 2s"},
		{name: "read: byte limit", cfg: Config{MaxLagBytes: 1000, Fallback: "reject"},
			snap: mkSnap(prim(pg1), repl(pg2, 0, 1001)), session: Session{Route: RouteRead},
			errMsg: "no replica available: 10.0.0.2:5432 lag 1001 bytes > 1000 bytes"},
		{name: "read: excluded replica → the next candidate", cfg: Config{MaxLag: 5 * time.Second},
			snap: healthy, session: Session{Route: RouteRead}, exclude: []string{pg3}, want: pg2, reason: "replica"},
		{name: "read: no replica fits → primary, read-only", cfg: Config{MaxLag: 5 * time.Second},
			snap:    mkSnap(prim(pg1), lagging(pg2, 12.3, "lag 12.3s > 5s"), down(pg3, health.RoleReplica, "connection refused")),
			session: Session{Route: RouteRead}, want: pg1, fallback: true, reason: "fallback_primary"},
		{name: "read: fallback reject lists every replica and why", cfg: Config{MaxLag: 5 * time.Second, Fallback: "reject"},
			snap:    mkSnap(prim(pg1), lagging(pg2, 12.3, "lag 12.3s > 5s"), down(pg3, health.RoleReplica, "connection refused")),
			session: Session{Route: RouteRead},
			errMsg:  "no replica within max_lag 5s: 10.0.0.2:5432 lag 12.3s > 5s; 10.0.0.3:5432 down: connection refused"},
		{name: "read: session limit named in the message", cfg: Config{MaxLag: 5 * time.Second, Fallback: "reject"},
			snap: mkSnap(prim(pg1), repl(pg2, 1.5, 10)), session: Session{Route: RouteRead, MaxLag: time.Second},
			errMsg: "no replica within pgproxy.max_lag 1s: 10.0.0.2:5432 lag 1.5s > 1s"},
		{name: "read: fallback primary impossible too", cfg: Config{MaxLag: 5 * time.Second},
			snap:    mkSnap(down(pg1, health.RolePrimary, "probe timed out"), down(pg2, health.RoleReplica, "connection refused")),
			session: Session{Route: RouteRead},
			errMsg:  "no replica within max_lag 5s: 10.0.0.2:5432 down: connection refused; no primary for the read-only fallback: 10.0.0.1:5432 down: probe timed out"},
		{name: "read: no replica configured", cfg: Config{Fallback: "reject"}, snap: mkSnap(prim(pg1)), session: Session{Route: RouteRead},
			errMsg: "no replica available: no replica known"},
		{name: "read: every replica excluded", cfg: Config{Fallback: "reject"}, snap: healthy, session: Session{Route: RouteRead}, exclude: []string{pg2, pg3},
			errMsg: "no replica available: 10.0.0.2:5432 connection failed; 10.0.0.3:5432 connection failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(tt.cfg, func() *health.Snapshot { return tt.snap }, nil)
			for a, n := range tt.sessions {
				for range n {
					r.Acquire(a)
				}
			}
			d, err := r.Pick(&tt.session, tt.exclude)
			if tt.errMsg != "" {
				var nb *NoBackendError
				if !errors.As(err, &nb) || nb.SQLState() != "57P03" || nb.Error() != tt.errMsg || nb.Route != tt.session.Route {
					t.Fatalf("err = %v (decision %+v)\nwant 57P03 %q", err, d, tt.errMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Backend != tt.want || d.Fallback != tt.fallback || d.Reason != tt.reason || d.Route != tt.session.Route {
				t.Fatalf("decision %+v, want %s fallback=%v reason=%s", d, tt.want, tt.fallback, tt.reason)
			}
		})
	}
}

func TestPickRoundRobinAmongTies(t *testing.T) {
	snap := mkSnap(prim(pg1), repl(pg2, 0, 0), repl(pg3, 0.2, 50), repl(pg4, 0.9, 10))
	r := New(Config{MaxLag: 5 * time.Second}, func() *health.Snapshot { return snap }, nil)
	got := map[string]int{}
	for range 100 {
		d, err := r.Pick(&Session{Route: RouteRead}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got[d.Backend]++
	}
	// pg2 and pg3 are in the same 500ms step; pg4 is one step behind.
	if got[pg2] != 50 || got[pg3] != 50 || got[pg4] != 0 {
		t.Fatalf("spread %v, want 50/50 over pg2/pg3", got)
	}
}

func TestPickSpreadsBySessions(t *testing.T) {
	// The proxy acquires each picked backend: sessions even out.
	snap := mkSnap(prim(pg1), repl(pg2, 0, 0), repl(pg3, 0, 0), repl(pg4, 0, 0))
	r := New(Config{}, func() *health.Snapshot { return snap }, nil)
	r.Acquire(pg2)
	r.Acquire(pg2)
	for range 7 {
		d, err := r.Pick(&Session{Route: RouteRead}, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Acquire(d.Backend)
	}
	if a, b, c := r.Sessions(pg2), r.Sessions(pg3), r.Sessions(pg4); a != 3 || b != 3 || c != 3 {
		t.Fatalf("sessions %d %d %d, want 3 each", a, b, c)
	}
	r.Release(pg3)
	if r.Sessions(pg3) != 2 || r.Sessions("unknown:1") != 0 {
		t.Fatal("Release")
	}
}

func TestPickMetrics(t *testing.T) {
	snap := mkSnap(prim(pg1), lagging(pg2, 12, "lag 12.0s > 5s"), repl(pg3, 0.05, 0))
	reg := prometheus.NewRegistry()
	r := New(Config{MaxLag: 5 * time.Second}, func() *health.Snapshot { return snap }, reg)
	mustPick := func(s Session, exclude ...string) {
		t.Helper()
		if _, err := r.Pick(&s, exclude); err != nil {
			t.Fatal(err)
		}
	}
	mustPick(Session{Route: RouteWrite})
	mustPick(Session{Route: RouteRead})
	mustPick(Session{Route: RouteRead})
	mustPick(Session{Route: RouteRead}, pg3)                     // only the lagging one left: excluded wins as reason
	mustPick(Session{Route: RouteRead, MaxLag: time.Nanosecond}) // too tight for anyone reachable: lag
	r.SetConfig(Config{MaxLag: 5 * time.Second, Fallback: "reject"})
	if _, err := r.Pick(&Session{Route: RouteRead}, []string{pg3}); err == nil {
		t.Fatal("reject mode served a read")
	}
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"write", pg1, "primary"}, 1},
		{[]string{"read", pg3, "replica"}, 2},
		{[]string{"read", pg1, "fallback_primary"}, 2},
		{[]string{"read", "none", "reject"}, 1},
	} {
		if got := testutil.ToFloat64(r.decisions.WithLabelValues(c.labels...)); got != c.want {
			t.Errorf("decisions%v = %v, want %v", c.labels, got, c.want)
		}
	}
	for reason, want := range map[string]float64{"connect_failed": 2, "lag": 1, "no_replica": 0} {
		if got := testutil.ToFloat64(r.fallbacks.WithLabelValues(reason)); got != want {
			t.Errorf("fallbacks{%s} = %v, want %v", reason, got, want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "pgproxy_routing_decisions_total", "pgproxy_fallbacks_total"); err != nil || n < 5 {
		t.Fatalf("registered series: %d, %v", n, err)
	}
}

func TestStatusJSON(t *testing.T) {
	snap := mkSnap(prim(pg1), lagging(pg2, 12.3, "lag 12.3s > 5s"))
	r := New(Config{}, func() *health.Snapshot { return snap }, nil)
	r.Acquire(pg2)
	b, err := json.Marshal(r.Status())
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Primary  string
		Backends []map[string]any
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Primary != pg1 || len(got.Backends) != 2 {
		t.Fatalf("%s", b)
	}
	be := got.Backends[1]
	if be["addr"] != pg2 || be["role"] != "replica" || be["state"] != "lagging" || be["lag_seconds"] != 12.3 ||
		be["sessions"] != 1.0 || be["reason"] != "lag 12.3s > 5s" {
		t.Fatalf("backend JSON: %s", b)
	}
}

func TestConcurrentPickAcquireSetConfig(t *testing.T) {
	snap := mkSnap(prim(pg1), repl(pg2, 0, 0), repl(pg3, 0, 0))
	r := New(Config{}, func() *health.Snapshot { return snap }, nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				d, err := r.Pick(&Session{Route: RouteRead}, nil)
				if err != nil {
					t.Error(err)
					return
				}
				r.Acquire(d.Backend)
				if i%2 == g%2 {
					r.SetConfig(Config{MaxLag: time.Duration(i+1) * time.Second})
				}
				r.Release(d.Backend)
			}
		}()
	}
	wg.Wait()
	if r.Sessions(pg2) != 0 || r.Sessions(pg3) != 0 {
		t.Fatal("unbalanced session counts")
	}
}

var sink Decision

// BenchmarkPick measures Pick for a read on one primary + 2 replicas (the
// tie → round-robin path, metrics included), and for a write.
func BenchmarkPick(b *testing.B) {
	snap := mkSnap(prim(pg1), repl(pg2, 0.1, 100), repl(pg3, 0.2, 300))
	r := New(Config{MaxLag: 5 * time.Second}, func() *health.Snapshot { return snap }, prometheus.NewRegistry())
	for _, bc := range []struct {
		name string
		s    Session
	}{{"read", Session{Route: RouteRead}}, {"write", Session{Route: RouteWrite}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d, err := r.Pick(&bc.s, nil)
				if err != nil {
					b.Fatal(err)
				}
				sink = d
			}
		})
	}
	b.Run("read-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			s := Session{Route: RouteRead}
			for pb.Next() {
				if _, err := r.Pick(&s, nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkClassify(b *testing.B) {
	cfg := &Config{Rules: testRules}
	params := p("user", "odoo", "database", "sales_ro", "application_name", "odoo-1234",
		"options", "-c pgproxy.max_lag=2s -c statement_timeout=0")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Classify(cfg, "", params); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMessageHasNoTrailingSeparators(t *testing.T) {
	r := New(Config{Fallback: "reject"}, func() *health.Snapshot { return mkSnap(prim(pg1)) }, nil)
	_, err := r.Pick(&Session{Route: RouteRead}, nil)
	if err == nil || strings.HasSuffix(err.Error(), ": ") || strings.HasSuffix(err.Error(), "; ") {
		t.Fatalf("%v", err)
	}
}

func TestReadable(t *testing.T) {
	snap := mkSnap(prim(pg1), repl(pg2, 0.1, 10), repl(pg3, 0.2, 20), lagging(pg4, 30, "lag 30s > 5s"))
	snap.Backends[1].LSN, snap.Backends[2].LSN = 1000, 2000
	r := New(Config{MaxLag: 5 * time.Second}, func() *health.Snapshot { return snap }, nil)
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		got := r.Readable(&Session{Route: RouteRead}, nil)
		if len(got) != 2 {
			t.Fatalf("Readable = %+v, want the two fit replicas", got)
		}
		for _, c := range got {
			if want := map[string]int64{pg2: 1000, pg3: 2000}[c.Addr]; c.ReplayLSN != want {
				t.Errorf("%s replay %d, want %d", c.Addr, c.ReplayLSN, want)
			}
		}
		seen[got[0].Addr]++
	}
	if seen[pg2] == 0 || seen[pg3] == 0 {
		t.Errorf("first choices %v: equally lagged replicas must take turns", seen)
	}
	if got := r.Readable(&Session{Route: RouteRead, Paused: []string{pg2}, MaxLag: time.Second}, nil); len(got) != 1 || got[0].Addr != pg3 {
		t.Errorf("with %s paused: %+v", pg2, got)
	}
	snap.Backends[2].LagSeconds = 2
	for i := 0; i < 4; i++ {
		if got := r.Readable(&Session{Route: RouteRead}, nil); got[0].Addr != pg2 {
			t.Errorf("less lagged replica not first: %+v", got)
		}
	}
}

// TestNoReadable: a per-transaction read with no fit replica may run on
// the primary with fallback primary; with reject it gets a 57P03 naming
// each replica and why it is unfit.
func TestNoReadable(t *testing.T) {
	snap := mkSnap(prim(pg1), lagging(pg2, 30, "lag 30s > 5s"), repl(pg3, 0.1, 10))
	s := &Session{Route: RouteWrite, Paused: []string{pg3}}
	if err := New(Config{MaxLag: 5 * time.Second}, func() *health.Snapshot { return snap }, nil).NoReadable(s); err != nil {
		t.Errorf("fallback primary: %v", err)
	}
	err := New(Config{MaxLag: 5 * time.Second, Fallback: FallbackReject}, func() *health.Snapshot { return snap }, nil).NoReadable(s)
	var nb *NoBackendError
	if !errors.As(err, &nb) || nb.SQLState() != "57P03" || !strings.Contains(nb.Message, pg2+" lag 30s > 5s") || !strings.Contains(nb.Message, pg3+" "+pausedText) {
		t.Errorf("fallback reject: %v", err)
	}
}
