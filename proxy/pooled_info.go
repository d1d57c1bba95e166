package proxy

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ofitec/pgproxy/pool"
)

// What the admin console and the metrics read of pooled sessions and the
// server pools (SHOW POOLS, SHOW CLIENTS, SHOW SERVERS, KILL, RECONNECT;
// pgproxy_pool_servers, pgproxy_pool_clients_waiting). Nothing here runs
// per message: the numbers are read when asked for.

// PoolClient describes the pooling side of a session (SessionInfo.Pool).
// Mode is "" for a session that is not pooled (auth.mode: passthrough, the
// admin console).
type PoolClient struct {
	// Mode is "session" or "transaction".
	Mode string
	// Key is the pool the session uses (or waits on); zero before the
	// backend is chosen.
	Key pool.Key
	// LoggedIn: the client has authenticated and its session counts in its
	// pool (pool.Stats.Clients).
	LoggedIn bool
	// HoldsServer: the session holds a server connection now (in session
	// mode for its whole life, in transaction mode inside a transaction);
	// ServerPID is that server's backend process id.
	HoldsServer bool
	ServerPID   uint32
	// WaitingSince is when the session started to wait for a server (at
	// login, or in transaction mode before a transaction): queued behind
	// busy servers, or while a new one is opened. Zero: not waiting.
	WaitingSince time.Time
	// Pinned is why a transaction-mode client keeps its server for the
	// rest of its session (sqlscan.SessionState: "listen", "temp_table",
	// ...); "" = not pinned.
	Pinned string
}

// poolWait is what a session waits for (session.poolWait).
type poolWait struct {
	key   pool.Key
	since time.Time
}

// acquireServer is set.Acquire, with the wait shown in SHOW CLIENTS.
func (s *session) acquireServer(ctx context.Context, set *pool.Set, key pool.Key) (*pool.Conn, time.Duration, error) {
	s.poolWait.Store(&poolWait{key: key, since: time.Now()})
	defer s.poolWait.Store(nil)
	if ps := s.pooled; ps != nil {
		ctx = withCred(ctx, ps.cred)
	}
	return set.Acquire(ctx, key)
}

// poolInfo fills si.Pool. It takes link.mu, so the caller must not hold
// s.mu; ps is s.pooled as read under s.mu.
func (s *session) poolInfo(si *SessionInfo, ps *pooledState) {
	if s.cfg.Auth == nil || si.Database == AdminDatabase {
		return
	}
	si.Pool.Mode = "session"
	if s.cfg.Pool.Transaction {
		si.Pool.Mode = "transaction"
	}
	if w := s.poolWait.Load(); w != nil {
		si.Pool.Key, si.Pool.WaitingSince = w.key, w.since
	}
	if ps == nil {
		return // authenticating, or waiting for its first server
	}
	si.Pool.Key, si.Pool.LoggedIn = ps.key, true
	if s.relayBy.Load() == 0 {
		// Still in connectPooled, which sets link.conn without its lock:
		// the relay has not started, so the client holds nothing yet.
		return
	}
	l := &ps.link
	l.mu.Lock()
	if c := l.conn; c != nil {
		si.Pool.HoldsServer, si.Pool.ServerPID = true, c.PID
	}
	si.Pool.Pinned = l.pinned
	l.mu.Unlock()
}

// PoolServers lists every open pooled server connection (SHOW SERVERS);
// nil without pooling.
func (s *Server) PoolServers() []pool.Server {
	s.poolMu.Lock()
	p := s.pools
	s.poolMu.Unlock()
	if p == nil {
		return nil
	}
	return p.Servers()
}

// PoolMode is the pool mode of new sessions: "session" or "transaction",
// or "" when the proxy does not pool (auth.mode: passthrough).
func (s *Server) PoolMode() string {
	cfg := s.cfg.Load()
	switch {
	case cfg.Auth == nil:
		return ""
	case cfg.Pool.Transaction:
		return "transaction"
	}
	return "session"
}

// KillDatabase ends every client session of database (its clients get
// 57P01 between messages, as from pg_terminate_backend), waits until they
// have ended or ctx is done, then closes the idle pooled servers of that
// database, which now include those the sessions gave back. It returns
// how many sessions it ended and servers it closed. A session of the
// database is one whose client asked for it, or whose pool is for it (a
// database the router rewrote).
func (s *Server) KillDatabase(ctx context.Context, database, reason string) (sessions, servers int) {
	s.mu.Lock()
	all := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	var victims []*session
	for _, sess := range all {
		sess.mu.Lock()
		match := sess.database == database || (sess.pooled != nil && sess.pooled.key.Database == database)
		sess.mu.Unlock()
		if match {
			victims = append(victims, sess)
		}
	}
	for _, sess := range victims {
		sess.terminate(reason)
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for left := slices.Clone(victims); len(left) > 0; {
		s.mu.Lock()
		left = slicesDeleteEnded(left, s.sessions)
		s.mu.Unlock()
		if len(left) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			left = nil
		case <-t.C:
		}
	}
	s.poolMu.Lock()
	p := s.pools
	s.poolMu.Unlock()
	if p != nil {
		servers = p.CloseIdle(func(k pool.Key) bool { return k.Database == database })
	}
	return len(victims), servers
}

// slicesDeleteEnded keeps the sessions of list still in open.
func slicesDeleteEnded(list []*session, open map[*session]struct{}) []*session {
	keep := list[:0]
	for _, sess := range list {
		if _, ok := open[sess]; ok {
			keep = append(keep, sess)
		}
	}
	return keep
}

// PoolCollector exports the pools' state at scrape time:
// pgproxy_pool_servers{backend,state} (active, idle, opening; summed over
// the pools of each backend, every configured backend listed, 0 without
// pooling) and pgproxy_pool_clients_waiting (clients queued for a server
// because their pool is at pool.size).
func (s *Server) PoolCollector() prometheus.Collector { return poolCollector{s} }

var (
	poolServersDesc = prometheus.NewDesc("pgproxy_pool_servers",
		"Pooled server connections by backend and state: active (lent to a client), idle, opening (being dialed).",
		[]string{"backend", "state"}, nil)
	poolWaitingDesc = prometheus.NewDesc("pgproxy_pool_clients_waiting",
		"Clients waiting for a server connection because every server of their pool is busy and the pool is at pool.size.",
		nil, nil)
)

type poolCollector struct{ s *Server }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolServersDesc
	ch <- poolWaitingDesc
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	type counts struct{ active, idle, opening int }
	per := map[string]*counts{}
	var order []string
	add := func(addr string) *counts {
		if n := per[addr]; n != nil {
			return n
		}
		n := &counts{}
		per[addr] = n
		order = append(order, addr)
		return n
	}
	for _, addr := range c.s.cfg.Load().Backends {
		add(addr)
	}
	waiting := 0
	for _, st := range c.s.PoolStats() {
		n := add(st.Key.Addr)
		n.active += st.Active
		n.idle += st.Idle
		n.opening += st.Opening
		waiting += st.Waiting
	}
	for _, addr := range order {
		n := per[addr]
		ch <- prometheus.MustNewConstMetric(poolServersDesc, prometheus.GaugeValue, float64(n.active), addr, "active")
		ch <- prometheus.MustNewConstMetric(poolServersDesc, prometheus.GaugeValue, float64(n.idle), addr, "idle")
		ch <- prometheus.MustNewConstMetric(poolServersDesc, prometheus.GaugeValue, float64(n.opening), addr, "opening")
	}
	ch <- prometheus.MustNewConstMetric(poolWaitingDesc, prometheus.GaugeValue, float64(waiting))
}
