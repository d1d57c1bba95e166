package app

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/health"
	"github.com/ofitec/pgproxy/proxy"
	"github.com/ofitec/pgproxy/router"
)

// director adapts the router to proxy.Director: classify the session from
// its listener, the rules and its startup parameters, then pick a backend
// from the latest health snapshot.
type director struct {
	router *router.Router
	cfg    atomic.Pointer[configs.Config]
	paused sync.Map // addr → true: PAUSE'd backends get no new sessions
	// staleness observes, per read session, the lag of the backend it was given.
	staleness prometheus.Histogram
	snapshot  func() *health.Snapshot
}

var _ proxy.Director = (*director)(nil)

func (d *director) Direct(l proxy.Listener, params []proxy.Param, exclude []string) (*proxy.Target, error) {
	m := make(map[string]string, len(params))
	for _, p := range params {
		m[p.Key] = p.Value
	}
	rc := routerConfig(d.cfg.Load())
	sess, err := router.Classify(&rc, l.Route, m)
	if err != nil {
		return nil, err // a *router.ParamError: the client gets its SQLSTATE as a FATAL
	}
	if !l.Admin { // the admin console must stay reachable to RESUME
		d.paused.Range(func(k, _ any) bool {
			sess.Paused = append(sess.Paused, k.(string))
			return true
		})
	}
	dec, err := d.router.Pick(&sess, exclude)
	if err != nil {
		return nil, err
	}
	if dec.Route == router.RouteRead && d.staleness != nil {
		lag := 0.0
		if b := d.snapshot().Backend(dec.Backend); b != nil && b.Role == health.RoleReplica {
			lag = b.LagSeconds
		}
		d.staleness.Observe(lag)
	}
	d.router.Acquire(dec.Backend)
	// Forward in the client's order, as the classifier rewrote them.
	fwd := make([]proxy.Param, 0, len(sess.Params))
	for _, p := range params {
		if v, ok := sess.Params[p.Key]; ok {
			fwd = append(fwd, proxy.Param{Key: p.Key, Value: v})
		}
	}
	for k, v := range sess.Params {
		if _, ok := m[k]; !ok {
			fwd = append(fwd, proxy.Param{Key: k, Value: v})
		}
	}
	backend := dec.Backend
	t := &proxy.Target{
		Addr: backend, Params: fwd, ReadOnly: dec.Fallback,
		Route: dec.Route.String(), Reason: dec.Reason, Job: sess.Job, Fallback: dec.Why,
		Release: func() { d.router.Release(backend) },
	}
	if cfg := d.cfg.Load(); cfg.Routing.Unit == configs.UnitTransaction && dec.Route == router.RouteWrite && !l.Admin {
		// Routed per transaction: reads to replicas, the rest to the
		// primary. A session the listener, a rule or its startup
		// parameters made a read session stays one.
		t.Tx = &txRouter{d: d, sess: sess}
		t.Consistency = sess.Consistency
	}
	return t, nil
}

// txRouter is a session's proxy.TxRouter: the primary and the readable
// replicas of the latest snapshot, with the PAUSEs in force now.
type txRouter struct {
	d    *director
	sess router.Session
}

var _ proxy.TxRouter = (*txRouter)(nil)

func (t *txRouter) paused() []string {
	var out []string
	t.d.paused.Range(func(k, _ any) bool {
		out = append(out, k.(string))
		return true
	})
	return out
}

func (t *txRouter) Primary() string {
	p := t.d.snapshot().Primary()
	if p == nil {
		return ""
	}
	return p.Addr
}

func (t *txRouter) Replicas(dst []proxy.Replica) []proxy.Replica {
	s := t.sess
	s.Paused = t.paused()
	var buf [4]router.Candidate
	for _, c := range t.d.router.Readable(&s, buf[:0]) {
		dst = append(dst, proxy.Replica{Addr: c.Addr, ReplayLSN: c.ReplayLSN})
	}
	return dst
}

func (t *txRouter) NoReplica() error {
	s := t.sess
	s.Paused = t.paused()
	return t.d.router.NoReadable(&s) // a *router.NoBackendError (57P03) with fallback: reject
}

func routerConfig(cfg *configs.Config) router.Config {
	rc := router.Config{
		MaxLag: cfg.Routing.MaxLag, MaxLagBytes: cfg.Routing.MaxLagBytes, Fallback: cfg.Routing.Fallback,
	}
	for _, r := range cfg.Routing.Rules {
		route := router.RouteWrite
		if r.Route == "read" {
			route = router.RouteRead
		}
		rc.Rules = append(rc.Rules, router.Rule{
			User: r.Match.User, Database: r.Match.Database, ApplicationName: r.Match.ApplicationName,
			Route: route, StripSuffix: r.StripSuffix,
		})
	}
	return rc
}
