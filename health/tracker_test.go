package health

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const (
	pA = "10.0.0.1:5432"
	rB = "10.0.0.2:5432"
	rC = "10.0.0.3:5432"
)

func prim(addr string, t float64, lsn int64, tl int) observation {
	return observation{addr: addr, start: at(t), end: at(t + 0.001), walLSN: lsn, timeline: tl}
}

func repl(addr string, t float64, replay int64) observation {
	return observation{addr: addr, start: at(t), end: at(t + 0.001), inRecovery: true, timeline: 1,
		hasReplay: true, replayLSN: replay, receiveLSN: replay, pauseState: "not paused", receiver: "streaming"}
}

func withTimeline(o observation, tl int) observation { o.timeline = tl; return o }

func fail(addr string, t float64) observation {
	err := fmt.Errorf("health: connect %s: %w", addr, &net.OpError{Op: "dial", Net: "tcp",
		Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	return observation{addr: addr, start: at(t), end: at(t + 0.001), err: err}
}

// want is the expected state of one backend after a step ("" fields unchecked).
type want struct {
	state    State
	role     Role
	reason   string // substring
	lagKnown *bool
	lagSecs  *float64
	lagBytes *int64
}

type step struct {
	obs     observation
	cfg     *Config // applied instead of obs when set
	primary string  // expected primary addr ("-" = none)
	want    map[string]want
}

func yes() *bool              { b := true; return &b }
func no() *bool               { b := false; return &b }
func secs(s float64) *float64 { return &s }
func byts(b int64) *int64     { return &b }

func runSteps(t *testing.T, cfg Config, steps []step) *observer.ObservedLogs {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	c, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker(c, zap.New(core), t0)
	for i, st := range steps {
		var now time.Time
		if st.cfg != nil {
			c, err := st.cfg.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			now = at(float64(i))
			tr.setConfig(c, now)
		} else {
			tr.observe(st.obs)
			now = st.obs.end
		}
		snap := tr.snapshot(now)
		if st.primary != "" {
			got := "-"
			if p := snap.Primary(); p != nil {
				got = p.Addr
			}
			if got != st.primary {
				t.Fatalf("step %d: primary = %s, want %s\n%+v", i, got, st.primary, snap.Backends)
			}
		}
		for addr, w := range st.want {
			b := snap.Backend(addr)
			if b == nil {
				t.Fatalf("step %d: %s missing from snapshot", i, addr)
			}
			if b.State != w.state || (w.role != RoleUnknown && b.Role != w.role) {
				t.Fatalf("step %d: %s state=%s role=%s (%s), want %s %s", i, addr, b.State, b.Role, b.Reason, w.state, w.role)
			}
			if !strings.Contains(b.Reason, w.reason) {
				t.Fatalf("step %d: %s reason %q, want it to contain %q", i, addr, b.Reason, w.reason)
			}
			if w.lagKnown != nil && b.LagKnown != *w.lagKnown {
				t.Fatalf("step %d: %s LagKnown = %v", i, addr, b.LagKnown)
			}
			if w.lagSecs != nil && absDiff(b.LagSeconds, *w.lagSecs) > 0.0015 {
				t.Fatalf("step %d: %s LagSeconds = %v, want %v", i, addr, b.LagSeconds, *w.lagSecs)
			}
			if w.lagBytes != nil && b.LagBytes != *w.lagBytes {
				t.Fatalf("step %d: %s LagBytes = %v, want %v", i, addr, b.LagBytes, *w.lagBytes)
			}
		}
	}
	return logs
}

func TestTrackerLagAndHysteresis(t *testing.T) {
	cfg := Config{Backends: []string{pA, rB, rC}, Interval: time.Second, MaxLag: 4 * time.Second}
	runSteps(t, cfg, []step{
		{obs: repl(rB, 0, 1000), primary: "-", want: map[string]want{
			rB: {state: StateUp, role: RoleReplica, reason: "lag unknown", lagKnown: no()},
			pA: {state: StateDown, reason: "not probed yet"}}},
		{obs: prim(pA, 0.1, 1000, 1), primary: pA, want: map[string]want{pA: {state: StateUp, role: RolePrimary}}},
		{obs: repl(rB, 1, 1000), want: map[string]want{rB: {state: StateUp, lagKnown: yes(), lagSecs: secs(0), lagBytes: byts(0)}}},
		// The primary writes, B pauses at 1000.
		{obs: prim(pA, 1.1, 5000, 1)},
		{obs: repl(rB, 2, 1000), want: map[string]want{rB: {state: StateUp, lagSecs: secs(1.901), lagBytes: byts(4000)}}},
		{obs: prim(pA, 2.1, 9000, 1)},
		{obs: prim(pA, 5.1, 9000, 1)},
		// 5.001 - 0.1 = 4.9s > 4s: lagging.
		{obs: repl(rB, 5, 1000), want: map[string]want{rB: {state: StateLagging, reason: "lag 4.9s > 4s"}}},
		// Caught up to 5000 (fresh as of 1.1): 3.9s, under the limit but above half: still lagging.
		{obs: repl(rB, 5.0, 5000), want: map[string]want{rB: {state: StateLagging, reason: "back below half", lagSecs: secs(3.901)}}},
		{obs: prim(pA, 6.1, 9500, 1)},
		// Replayed 9000 (last seen at 5.1): 1.401s < 2s: up again.
		{obs: repl(rB, 6.5, 9000), want: map[string]want{rB: {state: StateUp, lagSecs: secs(1.401), lagBytes: byts(500)}}},
		// Idle primary for a long time, replica caught up: lag stays 0.
		{obs: prim(pA, 60, 9500, 1)},
		{obs: repl(rB, 60.5, 9500), want: map[string]want{rB: {state: StateUp, lagSecs: secs(0), lagBytes: byts(0)}}},
		{obs: prim(pA, 120, 9500, 1)},
		{obs: repl(rB, 120.5, 9500), want: map[string]want{rB: {state: StateUp, lagSecs: secs(0)}}},
	})
}

func TestTrackerByteLimit(t *testing.T) {
	cfg := Config{Backends: []string{pA, rB}, Interval: time.Second, MaxLag: time.Hour, MaxLagBytes: 1000}
	runSteps(t, cfg, []step{
		{obs: prim(pA, 0, 10000, 1), primary: pA},
		{obs: repl(rB, 0.5, 9500), want: map[string]want{rB: {state: StateUp, lagBytes: byts(500)}}},
		{obs: repl(rB, 0.6, 8999), want: map[string]want{rB: {state: StateLagging, reason: "lag 1001 bytes > 1000 bytes"}}},
		{obs: repl(rB, 0.7, 9400), want: map[string]want{rB: {state: StateLagging}}}, // 600 ≥ 500
		{obs: repl(rB, 0.8, 9501), want: map[string]want{rB: {state: StateUp}}},      // 499 < 500
	})
}

func TestTrackerPrimaryDownFreezesLag(t *testing.T) {
	cfg := Config{Backends: []string{pA, rB, rC}, Interval: time.Second, MaxLag: 2 * time.Second}
	runSteps(t, cfg, []step{
		{obs: prim(pA, 0, 1000, 1)},
		{obs: prim(pA, 1, 2000, 1)},
		{obs: repl(rB, 4, 1000), want: map[string]want{rB: {state: StateLagging, lagSecs: secs(4.001)}}},
		{obs: repl(rC, 4, 2000), want: map[string]want{rC: {state: StateUp, lagSecs: secs(0)}}},
		{obs: fail(pA, 5), primary: "-", want: map[string]want{pA: {state: StateDown, role: RolePrimary, reason: "connection refused"}}},
		// Much later: B's lag is unknown, kept at its last value, and it stays lagging;
		// C stays up (an idle primary and a down one look alike from a replica).
		{obs: repl(rB, 100, 1000), want: map[string]want{rB: {state: StateLagging, lagKnown: no(), lagSecs: secs(4.001), reason: "lag 4.0s > 2s"}}},
		{obs: repl(rC, 100, 2000), want: map[string]want{rC: {state: StateUp, lagKnown: no(), lagSecs: secs(0), reason: "lag unknown"}}},
		// The primary is back: measured again.
		{obs: prim(pA, 101, 2000, 1), primary: pA},
		{obs: repl(rB, 101.5, 2000), want: map[string]want{rB: {state: StateUp, lagKnown: yes(), lagSecs: secs(0)}}},
	})
}

func TestTrackerPromotionAndFencing(t *testing.T) {
	cfg := Config{Backends: []string{pA, rB, rC}, Interval: time.Second, MaxLag: 5 * time.Second}
	logs := runSteps(t, cfg, []step{
		{obs: prim(pA, 0, 1000, 1), primary: pA},
		{obs: repl(rB, 0.1, 1000)},
		{obs: repl(rC, 0.1, 1000)},
		{obs: fail(pA, 1), primary: "-"},
		// B promoted: timeline 2.
		{obs: prim(rB, 2, 1200, 2), primary: rB, want: map[string]want{rB: {state: StateUp, role: RolePrimary, reason: "timeline 2"}}},
		// The old primary restarted as a primary on timeline 1: fenced.
		{obs: prim(pA, 3, 1100, 1), primary: rB, want: map[string]want{pA: {state: StateFenced, role: RolePrimary, reason: "below timeline 2"}}},
		// Fencing lasts even while B is down.
		{obs: fail(rB, 4), primary: "-"},
		{obs: prim(pA, 5, 1100, 1), primary: "-", want: map[string]want{pA: {state: StateFenced}}},
		{obs: prim(rB, 7, 1300, 2), primary: rB},
		// C still receives timeline 1 (from the fenced old primary): unfit.
		{obs: repl(rC, 7.5, 1300), want: map[string]want{rC: {state: StateLagging, reason: "receives timeline 1, below timeline 2"}}},
		// The old primary rebuilt as a replica of B: no longer fenced.
		{obs: withTimeline(repl(pA, 8, 1300), 2), want: map[string]want{pA: {state: StateUp, role: RoleReplica}}},
		{obs: withTimeline(repl(rC, 8, 1300), 2), want: map[string]want{rC: {state: StateUp}}},
	})
	fenced := logs.FilterMessageSnippet("fenced").All()
	if len(fenced) != 1 || fenced[0].Level != zapcore.ErrorLevel {
		t.Fatalf("want exactly one error-level fencing log line, got %d: %v", len(fenced), fenced)
	}
	if got := logs.FilterMessage("primary changed").Len(); got != 1 {
		t.Fatalf("primary changed logged %d times, want 1", got)
	}
}

func TestTrackerSameTimelineKeepsIncumbent(t *testing.T) {
	cfg := Config{Backends: []string{pA, rB}, Interval: time.Second}
	runSteps(t, cfg, []step{
		{obs: prim(rB, 0, 1000, 3), primary: rB},
		{obs: prim(pA, 1, 1000, 3), primary: rB, want: map[string]want{pA: {state: StateFenced, reason: "same as primary " + rB}}},
		{obs: prim(rB, 2, 1000, 3), primary: rB, want: map[string]want{pA: {state: StateFenced}, rB: {state: StateUp}}},
	})
	// With no incumbent, the first in configuration order wins.
	runSteps(t, cfg, []step{
		{obs: prim(pA, 0, 1000, 3)},
		{obs: prim(rB, 0, 1000, 3), primary: pA, want: map[string]want{rB: {state: StateFenced}}},
	})
}

func TestTrackerConfigUpdate(t *testing.T) {
	cfg := Config{Backends: []string{pA, rB, rC}, Interval: time.Second, MaxLag: 10 * time.Second}
	tighter := Config{Backends: []string{pA, rB}, Interval: time.Second, MaxLag: 2 * time.Second}
	runSteps(t, cfg, []step{
		{obs: prim(pA, 0, 1000, 1)},
		{obs: prim(pA, 1, 2000, 1)},
		{obs: repl(rB, 4, 1000), want: map[string]want{rB: {state: StateUp, lagSecs: secs(4.001)}}},
		{obs: repl(rC, 4, 2000)},
		// A tighter limit applies at once to the last measured lag; C is removed.
		{cfg: &tighter, want: map[string]want{rB: {state: StateLagging, reason: "> 2s"}}},
		{obs: repl(rC, 5, 2000), primary: pA},
	})
	c, _ := tighter.withDefaults()
	tr := newTracker(c, zap.NewNop(), t0)
	tr.observe(repl(rC, 5, 2000)) // a probe in flight when C was removed: ignored
	if s := tr.snapshot(at(5)); len(s.Backends) != 2 || s.Backend(rC) != nil {
		t.Fatalf("removed backend in snapshot: %+v", s.Backends)
	}
}

func TestTrackerLogsOncePerChange(t *testing.T) {
	cfg := Config{Backends: []string{pA, rB}, Interval: time.Second}
	logs := runSteps(t, cfg, []step{
		{obs: prim(pA, 0, 1000, 1)},
		{obs: repl(rB, 0, 1000)},
		{obs: repl(rB, 1, 1000)},
		{obs: repl(rB, 2, 1000)},
		{obs: fail(rB, 3)},
		{obs: fail(rB, 4)},
		{obs: repl(rB, 5, 1000), want: map[string]want{rB: {state: StateUp}}},
	})
	var lines []string
	for _, e := range logs.FilterMessage("backend state changed").All() {
		m := e.ContextMap()
		lines = append(lines, fmt.Sprintf("%s %s->%s", m["backend"], m["previous_state"], m["state"]))
	}
	want := []string{pA + " down->up", rB + " down->up", rB + " up->down", rB + " down->up"}
	if strings.Join(lines, ",") != strings.Join(want, ",") {
		t.Fatalf("state change log lines:\n got %v\nwant %v", lines, want)
	}
}

// A backend going down is a warning, and a refused health-check login is
// a warning that says what to check, logged once even when the backend
// was down already (issue 16: both were info lines).
func TestTrackerWarnsOnDownAndRefusedLogin(t *testing.T) {
	authFail := func(addr string, tm float64, code string) observation {
		o := fail(addr, tm)
		o.err = fmt.Errorf("health: connect %s: %w", addr, &pgconn.PgError{Severity: "FATAL", Code: code,
			Message: `password authentication failed for user "pgproxy_monitor"`})
		return o
	}
	cfg := Config{Backends: []string{pA, rB}, Interval: time.Second}
	logs := runSteps(t, cfg, []step{
		{obs: prim(pA, 0, 1000, 1)},
		{obs: repl(rB, 0, 1000)},
		{obs: fail(rB, 1)},              // up → down: warn
		{obs: authFail(rB, 2, "28P01")}, // still down, now the login: warn with the hint
		{obs: authFail(rB, 3, "28P01")}, // same: nothing
		{obs: repl(rB, 4, 1000)},        // up again: info
		{obs: authFail(pA, 5, "28000")}, // up → down by login: one warn with the hint
	})
	type line struct {
		level          zapcore.Level
		backend, state string
		hint           bool
	}
	var got []line
	for _, e := range logs.FilterMessage("backend state changed").All() {
		m := e.ContextMap()
		_, hint := m["hint"]
		got = append(got, line{e.Level, m["backend"].(string), m["state"].(string), hint})
	}
	want := []line{
		{zapcore.InfoLevel, pA, "up", false},
		{zapcore.InfoLevel, rB, "up", false},
		{zapcore.WarnLevel, rB, "down", false},
		{zapcore.WarnLevel, rB, "down", true},
		{zapcore.InfoLevel, rB, "up", false},
		{zapcore.WarnLevel, pA, "down", true},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("log lines:\n got %v\nwant %v", got, want)
	}
	for _, e := range logs.All() {
		if h, ok := e.ContextMap()["hint"].(string); ok && (!strings.Contains(h, "health.user") || !strings.Contains(h, "PGPROXY_HEALTH_PASSWORD") || !strings.Contains(h, "pg_hba.conf")) {
			t.Errorf("hint %q", h)
		}
	}
}

func TestTrackerSinceAndDownReason(t *testing.T) {
	c, _ := Config{Backends: []string{pA}, Interval: time.Second}.withDefaults()
	tr := newTracker(c, zap.NewNop(), t0)
	tr.observe(prim(pA, 0, 1, 1))
	tr.observe(prim(pA, 1, 1, 1))
	if b := tr.snapshot(at(1)).Backends[0]; !b.Since.Equal(at(0.001)) || b.Probes != 2 {
		t.Fatalf("since = %v probes = %d", b.Since, b.Probes)
	}
	tr.observe(observation{addr: pA, start: at(2), end: at(3), err: fmt.Errorf("%w after 1s: %w", errProbeTimeout, errors.New("context deadline exceeded"))})
	b := tr.snapshot(at(3)).Backends[0]
	if b.State != StateDown || b.Reason != "probe timed out" || !b.Since.Equal(at(3)) || b.ProbeFailures != 1 || b.LastError == "" {
		t.Fatalf("after timeout: %+v", b)
	}
}
