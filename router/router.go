package router

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ofitec/pgproxy/health"
	"github.com/prometheus/client_golang/prometheus"
)

// Fallback modes (Config.Fallback).
const (
	FallbackPrimary = "primary" // a read with no fitting replica goes to the primary, read-only
	FallbackReject  = "reject"  // ... fails with 57P03
)

// Config is the routing configuration. It is not modified by the router.
type Config struct {
	// Rules in order; the first match decides.
	Rules []Rule
	// MaxLag and MaxLagBytes: a read goes only to a replica within them
	// (0 = no limit). The health monitor's limits (with hysteresis) decide
	// whether a replica is up; these are checked again here, and a session's
	// tighter pgproxy.max_lag applies on top.
	MaxLag      time.Duration
	MaxLagBytes int64
	// Fallback is "primary" (default when empty) or "reject".
	Fallback string
}

// Validate reports configuration errors.
func (c *Config) Validate() error {
	var errs []error
	if c.Fallback != "" && c.Fallback != FallbackPrimary && c.Fallback != FallbackReject {
		errs = append(errs, fmt.Errorf("fallback %q: want primary or reject", c.Fallback))
	}
	if c.MaxLag < 0 || c.MaxLagBytes < 0 {
		errs = append(errs, errors.New("max_lag and max_lag_bytes must not be negative"))
	}
	for i, r := range c.Rules {
		if r.Route != RouteRead && r.Route != RouteWrite {
			errs = append(errs, fmt.Errorf("rule %d: route must be read or write", i))
		}
		if r.User == "" && r.Database == "" && r.ApplicationName == "" {
			errs = append(errs, fmt.Errorf("rule %d: matches every session (no user, database or application_name)", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("routing config: %w", err)
	}
	return nil
}

// Decision is the backend Pick chose.
type Decision struct {
	Backend string // host:port
	Route   Route  // the session's route
	// Fallback: a read served by the primary; the proxy must keep the
	// session read-only (default_transaction_read_only=on and the guard).
	Fallback bool
	// Reason is "primary", "replica" or "fallback_primary".
	Reason string
	// Why says, for a fallback, why no replica fitted ("no replica within
	// max_lag 5s: 10.0.0.2:5432 lag 12.3s > 5s; ...").
	Why string
}

// Decision reasons (also the reason label of pgproxy_routing_decisions_total,
// which has "reject" for a NoBackendError).
const (
	DecisionPrimary         = "primary"
	DecisionReplica         = "replica"
	DecisionFallbackPrimary = "fallback_primary"
	DecisionReject          = "reject"
)

// Reasons of pgproxy_fallbacks_total: why no replica fitted.
const (
	FallbackReasonExcluded = "connect_failed" // fitting replicas were excluded after connect failures
	FallbackReasonPaused   = "paused"         // replicas were PAUSEd in the admin console
	FallbackReasonLag      = "lag"            // replicas were reachable but too stale
	FallbackReasonDown     = "no_replica"     // no replica reachable (down, fenced, none configured)
)

// NoBackendError means no backend fits the session: the proxy sends a FATAL
// ErrorResponse with SQLSTATE 57P03 and Error() as the message, which lists
// every candidate and why it was unfit.
type NoBackendError struct {
	Route   Route
	Message string
}

func (e *NoBackendError) Error() string { return e.Message }

// SQLState returns 57P03 (cannot_connect_now).
func (e *NoBackendError) SQLState() string { return SQLStateCannotConnectNow }

// Router picks backends for sessions from the latest health snapshot. All
// methods are safe for concurrent use.
type Router struct {
	cfg  atomic.Pointer[Config]
	snap func() *health.Snapshot
	rr   atomic.Uint64

	// sessions maps addr → count. The map is copied on insert (rare: once
	// per backend), so readers never lock.
	mu       sync.Mutex
	sessions atomic.Pointer[map[string]*atomic.Int64]
	counters sync.Map // decisionKey → prometheus.Counter (WithLabelValues is slow)

	decisions *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
}

// New returns a router reading snapshots from snap (e.g. Monitor.Snapshot).
// Its metrics are registered on reg when reg is not nil (registering twice
// on one registry panics, like prometheus.MustRegister).
func New(cfg Config, snap func() *health.Snapshot, reg prometheus.Registerer) *Router {
	r := &Router{
		snap: snap,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgproxy_routing_decisions_total",
			Help: "Backend choices by route, backend (none when rejected) and reason (primary, replica, fallback_primary, reject).",
		}, []string{"route", "backend", "reason"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgproxy_fallbacks_total",
			Help: "Reads no replica could serve, by reason (lag, no_replica, connect_failed); counted whether served by the primary or rejected.",
		}, []string{"reason"}),
	}
	r.sessions.Store(&map[string]*atomic.Int64{})
	r.SetConfig(cfg)
	if reg != nil {
		reg.MustRegister(r.decisions, r.fallbacks)
	}
	return r
}

// SetConfig replaces the configuration for the next Pick (hot reload).
func (r *Router) SetConfig(cfg Config) {
	c := cfg
	c.Rules = slices.Clone(cfg.Rules)
	r.cfg.Store(&c)
}

// Config returns the configuration in force; the caller must not modify it.
func (r *Router) Config() *Config { return r.cfg.Load() }

// Classify is the package function Classify with the router's configuration.
func (r *Router) Classify(listenerRoute string, params map[string]string) (Session, error) {
	return Classify(r.cfg.Load(), listenerRoute, params)
}

func (r *Router) counter(addr string) *atomic.Int64 {
	if c := (*r.sessions.Load())[addr]; c != nil {
		return c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.sessions.Load()
	if c := old[addr]; c != nil {
		return c
	}
	m := make(map[string]*atomic.Int64, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	c := new(atomic.Int64)
	m[addr] = c
	r.sessions.Store(&m)
	return c
}

type decisionKey struct{ route, backend, reason string }

// decided counts one decision.
func (r *Router) decided(route Route, backend, reason string) {
	k := decisionKey{route.String(), backend, reason}
	if c, ok := r.counters.Load(k); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := r.decisions.WithLabelValues(k.route, k.backend, k.reason)
	r.counters.Store(k, c)
	c.Inc()
}

// Acquire counts a session on addr (call once connected); Release undoes it.
func (r *Router) Acquire(addr string) { r.counter(addr).Add(1) }

// Release ends a session counted by Acquire.
func (r *Router) Release(addr string) { r.counter(addr).Add(-1) }

// Sessions returns the number of acquired sessions on addr.
func (r *Router) Sessions(addr string) int {
	if c := (*r.sessions.Load())[addr]; c != nil {
		return int(c.Load())
	}
	return 0
}

// Pick chooses the backend for s, skipping the addresses in exclude (backends
// the proxy already failed to connect to for this session).
//
// Write: the current primary. Read: among replicas that are up, not excluded
// and within MaxLag/MaxLagBytes and the session's tighter MaxLag, the least
// lagged (lag seconds compared in steps of one probe interval, the precision
// of the measure), then the fewest sessions, then round-robin. No replica
// fits: the primary with Fallback set (fallback "primary"), or a
// *NoBackendError (fallback "reject", or no primary either).
func (r *Router) Pick(s *Session, exclude []string) (Decision, error) {
	snap := r.snap()
	failed := exclude
	exclude = append(slices.Clip(exclude), s.Paused...)
	if s.Route == RouteRead {
		return r.pickRead(snap, s, exclude, failed)
	}
	if p := snap.Primary(); p != nil && !slices.Contains(exclude, p.Addr) {
		r.decided(s.Route, p.Addr, DecisionPrimary)
		return Decision{Backend: p.Addr, Route: s.Route, Reason: DecisionPrimary}, nil
	}
	r.decided(s.Route, "none", DecisionReject)
	return Decision{}, &NoBackendError{Route: s.Route, Message: "no primary available: " + describePrimaries(snap, failed, s.Paused)}
}

// limits returns the effective lag limits of a read session.
func (r *Router) limits(s *Session) (maxLag time.Duration, maxBytes int64, cfg *Config) {
	cfg = r.cfg.Load()
	maxLag = cfg.MaxLag
	if s.MaxLag > 0 && (maxLag == 0 || s.MaxLag < maxLag) {
		maxLag = s.MaxLag
	}
	return maxLag, cfg.MaxLagBytes, cfg
}

func fits(b *health.Backend, maxLag time.Duration, maxBytes int64) bool {
	return b.Role == health.RoleReplica && b.State == health.StateUp &&
		(maxLag == 0 || b.LagSeconds <= maxLag.Seconds()) &&
		(maxBytes == 0 || b.LagBytes <= maxBytes)
}

func lagStep(b *health.Backend, interval time.Duration) float64 {
	if interval <= 0 {
		return b.LagSeconds
	}
	return float64(int64(b.LagSeconds / interval.Seconds()))
}

func (r *Router) pickRead(snap *health.Snapshot, s *Session, exclude, failed []string) (Decision, error) {
	maxLag, maxBytes, cfg := r.limits(s)
	// Pass 1: the best (lag step, sessions) and how many share it.
	best, ties := -1, 0
	var bestStep float64
	var bestSessions int
	for i := range snap.Backends {
		b := &snap.Backends[i]
		if !fits(b, maxLag, maxBytes) || slices.Contains(exclude, b.Addr) {
			continue
		}
		step, n := lagStep(b, snap.Interval), r.Sessions(b.Addr)
		switch {
		case best < 0 || step < bestStep || (step == bestStep && n < bestSessions):
			best, ties, bestStep, bestSessions = i, 1, step, n
		case step == bestStep && n == bestSessions:
			ties++
		}
	}
	if best >= 0 {
		if ties > 1 {
			// Pass 2: the k-th of the tied replicas, k round-robin.
			k := int(r.rr.Add(1) % uint64(ties))
			for i := range snap.Backends {
				b := &snap.Backends[i]
				if !fits(b, maxLag, maxBytes) || slices.Contains(exclude, b.Addr) ||
					lagStep(b, snap.Interval) != bestStep || r.Sessions(b.Addr) != bestSessions {
					continue
				}
				if k == 0 {
					best = i
					break
				}
				k--
			}
		}
		addr := snap.Backends[best].Addr
		r.decided(s.Route, addr, DecisionReplica)
		return Decision{Backend: addr, Route: s.Route, Reason: DecisionReplica}, nil
	}

	// No replica fits.
	r.fallbacks.WithLabelValues(fallbackReason(snap, failed, s.Paused)).Inc()
	msg := describeReplicas(snap, failed, s.Paused, maxLag, maxBytes, s.MaxLag > 0 && maxLag == s.MaxLag)
	if cfg.Fallback != FallbackReject {
		if p := snap.Primary(); p != nil && !slices.Contains(exclude, p.Addr) {
			r.decided(s.Route, p.Addr, DecisionFallbackPrimary)
			return Decision{Backend: p.Addr, Route: s.Route, Fallback: true, Reason: DecisionFallbackPrimary, Why: msg}, nil
		}
	}
	r.decided(s.Route, "none", DecisionReject)
	if cfg.Fallback != FallbackReject {
		msg += "; no primary for the read-only fallback: " + describePrimaries(snap, failed, s.Paused)
	}
	return Decision{}, &NoBackendError{Route: s.Route, Message: msg}
}

// fallbackReason says why no replica fitted, for pgproxy_fallbacks_total.
func fallbackReason(snap *health.Snapshot, exclude, paused []string) string {
	reason := FallbackReasonDown
	for i := range snap.Backends {
		b := &snap.Backends[i]
		if b.Role != health.RoleReplica {
			continue
		}
		switch {
		case slices.Contains(paused, b.Addr):
			return FallbackReasonPaused
		case slices.Contains(exclude, b.Addr):
			return FallbackReasonExcluded
		case b.State == health.StateUp || b.State == health.StateLagging:
			reason = FallbackReasonLag
		}
	}
	return reason
}

// describeReplicas builds the 57P03 message of a read: every replica (and
// every backend of unknown role) with why it was unfit, e.g.
// "no replica within max_lag 5s: 10.0.0.2:5432 lag 12.3s > 5s; 10.0.0.3:5432 down: connection refused".
func describeReplicas(snap *health.Snapshot, exclude, paused []string, maxLag time.Duration, maxBytes int64, sessionLimit bool) string {
	var b strings.Builder
	switch {
	case maxLag > 0 && sessionLimit:
		fmt.Fprintf(&b, "no replica within pgproxy.max_lag %s", maxLag)
	case maxLag > 0:
		fmt.Fprintf(&b, "no replica within max_lag %s", maxLag)
	default:
		b.WriteString("no replica available")
	}
	n := 0
	for i := range snap.Backends {
		be := &snap.Backends[i]
		if be.Role == health.RolePrimary {
			continue
		}
		if n == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		n++
		b.WriteString(be.Addr)
		b.WriteByte(' ')
		switch {
		case slices.Contains(paused, be.Addr):
			b.WriteString(pausedText)
		case slices.Contains(exclude, be.Addr):
			b.WriteString("connection failed")
		case be.State == health.StateDown:
			b.WriteString("down: " + be.Reason)
		case be.State == health.StateLagging:
			b.WriteString(be.Reason)
		case maxLag > 0 && be.LagSeconds > maxLag.Seconds():
			fmt.Fprintf(&b, "lag %.1fs > %s", be.LagSeconds, maxLag)
		case maxBytes > 0 && be.LagBytes > maxBytes:
			fmt.Fprintf(&b, "lag %s > %s", health.FormatSize(be.LagBytes), health.FormatSize(maxBytes))
		default:
			b.WriteString(be.State.String() + ": " + be.Reason)
		}
	}
	if n == 0 {
		b.WriteString(": no replica known")
	}
	return b.String()
}

const pausedText = "paused by PAUSE in the admin console (RESUME to undo)"

// describePrimaries lists the backends that are or were primaries, or says
// that none is known.
func describePrimaries(snap *health.Snapshot, exclude, paused []string) string {
	var parts []string
	for i := range snap.Backends {
		be := &snap.Backends[i]
		if be.Role != health.RolePrimary {
			continue
		}
		switch {
		case slices.Contains(paused, be.Addr):
			parts = append(parts, be.Addr+" "+pausedText)
		case slices.Contains(exclude, be.Addr):
			parts = append(parts, be.Addr+" connection failed")
		default:
			parts = append(parts, be.Addr+" "+be.State.String()+": "+be.Reason)
		}
	}
	if len(parts) == 0 {
		var down []string
		for i := range snap.Backends {
			if be := &snap.Backends[i]; be.State == health.StateDown {
				down = append(down, be.Addr+" down: "+be.Reason)
			}
		}
		if len(down) == 0 {
			return "no backend reports being a primary"
		}
		return "no backend reports being a primary (" + strings.Join(down, "; ") + ")"
	}
	return strings.Join(parts, "; ")
}

// Status is the /status document: every backend with its health and the
// sessions this proxy has on it.
type Status struct {
	Taken    time.Time       `json:"taken"`
	Primary  string          `json:"primary"`
	Backends []BackendStatus `json:"backends"`
}

// BackendStatus is one backend of Status (health.Backend's fields inline).
type BackendStatus struct {
	health.Backend
	Sessions int `json:"sessions"`
}

// Status returns the /status document for the latest snapshot.
func (r *Router) Status() Status {
	snap := r.snap()
	st := Status{Taken: snap.Taken, Backends: make([]BackendStatus, len(snap.Backends))}
	if p := snap.Primary(); p != nil {
		st.Primary = p.Addr
	}
	for i, b := range snap.Backends {
		st.Backends[i] = BackendStatus{Backend: b, Sessions: r.Sessions(b.Addr)}
	}
	return st
}

// NoReadable is what a read of s routed per transaction gets when
// Readable found no replica: nil with fallback "primary" (the read runs on
// the primary), or a *NoBackendError naming every replica and why it is
// unfit with fallback "reject" (the read is refused with 57P03, as a read
// session would be at startup). It counts pgproxy_fallbacks_total as Pick
// does.
func (r *Router) NoReadable(s *Session) error {
	snap := r.snap()
	maxLag, maxBytes, cfg := r.limits(s)
	if snap != nil {
		r.fallbacks.WithLabelValues(fallbackReason(snap, nil, s.Paused)).Inc()
	}
	if cfg.Fallback != FallbackReject {
		return nil
	}
	msg := "no replica available: no health snapshot yet"
	if snap != nil {
		msg = describeReplicas(snap, nil, s.Paused, maxLag, maxBytes, s.MaxLag > 0 && maxLag == s.MaxLag)
	}
	return &NoBackendError{Route: RouteRead, Message: msg}
}

// Candidate is a replica a read may use, with the replay position health
// last saw (Backend.LSN).
type Candidate struct {
	Addr      string
	ReplayLSN int64
}

// Readable appends to dst the replicas a read of s may use now, for
// per-transaction routing: up, not paused (s.Paused), within MaxLag,
// MaxLagBytes and s.MaxLag; best first (lag in steps of one probe interval,
// then round-robin among equals so reads spread). It counts nothing: the
// caller counts what it chose.
func (r *Router) Readable(s *Session, dst []Candidate) []Candidate {
	snap := r.snap()
	if snap == nil {
		return dst
	}
	maxLag, maxBytes, _ := r.limits(s)
	start := len(dst)
	for i := range snap.Backends {
		b := &snap.Backends[i]
		if fits(b, maxLag, maxBytes) && !slices.Contains(s.Paused, b.Addr) {
			dst = append(dst, Candidate{Addr: b.Addr, ReplayLSN: b.LSN})
		}
	}
	found := dst[start:]
	if len(found) > 1 {
		k := int(r.rr.Add(1) % uint64(len(found)))
		rotated := append(slices.Clone(found[k:]), found[:k]...)
		copy(found, rotated)
		slices.SortStableFunc(found, func(a, b Candidate) int {
			sa, sb := lagStep(snap.Backend(a.Addr), snap.Interval), lagStep(snap.Backend(b.Addr), snap.Interval)
			switch {
			case sa < sb:
				return -1
			case sa > sb:
				return 1
			}
			return 0
		})
	}
	return dst
}
