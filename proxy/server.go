package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/internal/pgauth"
	"github.com/ofitec/pgproxy/internal/pgwire"
	"github.com/ofitec/pgproxy/masking"
	"github.com/ofitec/pgproxy/pool"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Listener describes one client-facing listener.
type Listener struct {
	// Addr is the host:port it listens on (also its label in logs and metrics).
	Addr string
	// Route is "read", "write" or "" (the Director decides from rules).
	Route string
	// Admin is set by the session, not the operator: the session
	// authenticates for the admin console, which must be reachable while a
	// backend is PAUSEd.
	Admin bool
}

// Target is where a session goes, as decided by a Director.
type Target struct {
	// Addr is the backend's host:port.
	Addr string
	// Params are the startup parameters to forward, in order. Nil means the
	// client's own parameters unchanged.
	Params []Param
	// ReadOnly makes the proxy enforce a read-only session (a read session
	// that fell back to the primary).
	ReadOnly bool
	// Route and Reason label logs and metrics ("read", "write"; "rule:1", ...).
	Route, Reason string
	// Job is a session-wide lineage job (startup option pgproxy.job).
	Job string
	// Fallback, when ReadOnly, says why the session is not on a replica: it
	// is logged and sent to the client as a NOTICE before its first
	// ReadyForQuery.
	Fallback string
	// Release is called once when the session ends or the target is
	// abandoned (connect failure). May be nil.
	Release func()
	// Tx routes each transaction of a transaction-mode pooled session
	// (routing.unit: transaction; pooled_route.go). Nil: the session stays
	// on Addr's pool.
	Tx TxRouter
	// Consistency is the session's routing.consistency ("" = the
	// config's), from its startup option pgproxy.consistency.
	Consistency string
}

// Param is one startup parameter.
type Param = pgwire.Param

// Director decides which backend serves a new session. Implementations must
// be safe for concurrent use; Direct must not block on I/O.
type Director interface {
	// Direct returns the target for a session that arrived on l with the
	// client's startup parameters (in the client's order). exclude lists
	// backends this session already failed to connect to. An error that
	// implements pgerr.Coded reaches the client with its SQLSTATE (57P03
	// when no backend fits).
	Direct(l Listener, params []Param, exclude []string) (*Target, error)
}

// BackendTLS configures TLS from the proxy to backends.
type BackendTLS struct {
	// Mode is disable, prefer, require or verify-full.
	Mode string
	// Config is used for the handshake (ServerName is set per backend for
	// verify-full). Nil means a default config.
	Config *tls.Config
}

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// TLS terminates client TLS when non-nil (SSLRequest → 'S', direct TLS).
	TLS *tls.Config
	// BackendTLS: how the proxy talks to backends (default disable).
	BackendTLS BackendTLS
	// MaxSessions is the limit of concurrent client connections (default 10000).
	MaxSessions int
	// StartupTimeout bounds startup + authentication (default 10s).
	StartupTimeout time.Duration
	// ConnectTimeout bounds one TCP connect to a backend (default 5s, never
	// beyond the startup deadline).
	ConnectTimeout time.Duration
	// Backends are every configured backend; a CancelRequest with a key this
	// instance does not know is forwarded to all of them.
	Backends []string
	// ReadOnlyCheck reports whether sql would make a read-only session
	// writable (see internal/sqlscan.ReadOnlyViolation). Used on sessions whose
	// Target is ReadOnly. Nil: only the backend's own read-only setting and the
	// ParameterStatus backstop protect such sessions.
	ReadOnlyCheck func(sql string) (reason string, violated bool, err error)
	// Lineage receives tagged statements; nil disables lineage.
	Lineage LineageSink
	// Masking says which sessions are masked (masking.rules, through
	// package app): the rule's column set for a session, and the catalog
	// of its backend and database. Nil, or a nil Set: not masked
	// (policy_masking.go). Read once per session, at its start.
	Masking func(user, database, applicationName, backend string) (*masking.Set, masking.Catalog)
	// RelayLoops is how many event loops relay plain TCP sessions
	// (evloop_linux.go): 0 = one per GOMAXPROCS thread when the first
	// session needs one; < 0 = none (a goroutine per direction). The count
	// is fixed for the Server's life.
	RelayLoops int
	// Auth makes the proxy authenticate clients itself and pool server
	// connections (pooled.go); nil passes authentication through to the
	// backends (one server connection per client).
	Auth *ProxyAuth
	// Pool configures the server pools of Auth sessions.
	Pool PoolConfig
	// SessionState reports session state a statement leaves that cannot
	// move to another server (sqlscan.SessionState): in transaction mode the
	// client is then pinned to its server. Nil: nothing pins.
	SessionState func(sql string) string
	// SessionSetting recognizes a plain SET (or RESET) of one setting that
	// a transaction-mode client can take to its next server instead of
	// being pinned for it (sqlscan.SessionSetting; pooled_set.go). Nil:
	// every SessionState "set" pins.
	SessionSetting func(sql string) (Setting, bool)
	// Routing routes transactions of sessions whose Target has a TxRouter
	// (pooled_route.go).
	Routing TxRouting
	// Admin answers the admin console (database "pgproxy") for AdminUsers,
	// after they authenticated at the primary. Nil disables the console.
	Admin      AdminConsole
	AdminUsers []string
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.MaxSessions <= 0 {
		out.MaxSessions = 10000
	}
	if out.StartupTimeout <= 0 {
		out.StartupTimeout = 10 * time.Second
	}
	if out.ConnectTimeout <= 0 {
		out.ConnectTimeout = 5 * time.Second
	}
	if out.BackendTLS.Mode == "" {
		out.BackendTLS.Mode = "disable"
	}
	return out
}

// Server accepts client connections on one or more listeners and runs a
// session for each. All methods are safe for concurrent use.
type Server struct {
	cfg      atomic.Pointer[Config]
	director Director
	log      *zap.Logger
	metrics  *Metrics
	cancels  cancelMap
	workers  workers // the goroutines sessions and their relays run on (workers.go)

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	closing   bool
	draining  atomic.Bool

	active   atomic.Int64 // sessions counted against MaxSessions
	nextID   atomic.Uint64
	sessWG   sync.WaitGroup // one per open session (running or parked)
	serveWG  sync.WaitGroup // one per Serve call
	shutdown chan struct{}  // closed on Shutdown/Close

	poolMu   sync.Mutex
	pools    *pool.Set                     // made on the first pooled session
	creds    map[string]*pgauth.Credential // per user, the newest: what the pools log in with
	fakeKey  [32]byte                      // fake secrets of unknown users
	endPoint atomic.Pointer[endPoint]      // channel binding data of Config.TLS's certificate (pooled.go)
	replay   replayCache                   // replay positions seen by the proxy's own checks (pooled_route.go)
	wal      walFetcher                    // the primary's WAL position for global reads

	loopMu      sync.Mutex
	loops       []*evLoop // started on first use, stopped after the last session
	loopsTried  bool
	parker      *parker // idle pooled clients (park_linux.go), under loopMu
	parkTried   bool
	loopsClosed bool
}

// NewServer returns a Server. metrics may be nil (no metrics).
func NewServer(cfg Config, director Director, log *zap.Logger, metrics *Metrics) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{
		director:  director,
		log:       log,
		metrics:   metrics,
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
		shutdown:  make(chan struct{}),
	}
	c := cfg.withDefaults()
	s.cfg.Store(&c)
	s.cancels.init()
	_, _ = rand.Read(s.fakeKey[:])
	return s
}

// SetConfig replaces the configuration for new sessions (hot reload).
// Open sessions keep the settings they started with, except masking: a
// masked session takes the new rules at its next transaction boundary
// (policy_masking.go), and a session that was not masked and that the new
// rules match is ended (57P01: its client reconnects, masked), since its
// relay has no place for the masking.
func (s *Server) SetConfig(cfg Config) {
	c := cfg.withDefaults()
	s.cfg.Store(&c)
	s.poolMu.Lock()
	if s.pools != nil {
		s.pools.SetConfig(s.poolConfig(&c))
	}
	s.poolMu.Unlock()
	if c.Masking != nil {
		s.endNewlyMasked(&c)
	}
}

// endNewlyMasked ends the open sessions that are not masked and that c's
// masking rules match. c is already in force: a session that decides
// after this looks decides with it (session.run).
func (s *Server) endNewlyMasked(c *Config) {
	for _, sess := range s.openSessions() {
		sess.mu.Lock()
		hit := false
		if sess.maskDecided && sess.mask == nil {
			set, _ := c.Masking(sess.user, sess.database, sess.applicationName, sess.backend)
			hit = set != nil
		}
		user := sess.user
		sess.mu.Unlock()
		if hit {
			sess.logger().Warn("session ended: masking.rules now mask it", zap.String("user", user))
			sess.terminate("masking.rules changed and now mask this session; reconnect")
		}
	}
}

// Serve accepts connections on ln until Shutdown or Close, then returns
// ErrServerClosed. Temporary accept errors are retried with backoff.
func (s *Server) Serve(ln net.Listener, l Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.serveWG.Add(1)
	s.mu.Unlock()
	defer s.serveWG.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			select {
			case <-s.shutdown:
				return ErrServerClosed
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				if backoff == 0 {
					backoff = 5 * time.Millisecond
				} else if backoff *= 2; backoff > time.Second {
					backoff = time.Second
				}
				s.log.Warn("accept failed; retrying", zap.String("listener", l.Addr), zap.Error(err), zap.Duration("backoff", backoff))
				select {
				case <-time.After(backoff):
				case <-s.shutdown:
					return ErrServerClosed
				}
				continue
			}
			return fmt.Errorf("proxy: accept on %s: %w", l.Addr, err)
		}
		backoff = 0
		s.startSession(conn, l)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) startSession(conn net.Conn, l Listener) {
	cfg := s.cfg.Load()
	sess := newSession(s, conn, l, cfg, s.nextID.Add(1))
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.sessions[sess] = struct{}{}
	s.sessWG.Add(1)
	s.mu.Unlock()
	s.workers.run(sess.run) // finish calls endSession, perhaps on another goroutine (park_linux.go)
}

// endSession forgets a session that ended.
func (s *Server) endSession(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.sessWG.Done()
}

// Draining reports whether Shutdown has started.
func (s *Server) Draining() bool { return s.draining.Load() }

// Shutdown stops accepting, lets open sessions finish until ctx is done,
// then closes the rest (their clients get 57P01), and waits for every
// session goroutine. It returns ctx.Err() if sessions had to be cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClose()
	done := make(chan struct{})
	go func() {
		s.sessWG.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.closeSessions("pgproxy is shutting down")
		<-done
	}
	s.serveWG.Wait()
	s.workers.stop()
	s.stopLoops()
	s.closePools()
	return err
}

func (s *Server) closePools() {
	s.poolMu.Lock()
	p := s.pools
	s.poolMu.Unlock()
	if p != nil {
		p.Close()
	}
}

// Close closes listeners and every session at once and waits for them.
func (s *Server) Close() error {
	s.beginClose()
	s.closeSessions("pgproxy is shutting down")
	s.sessWG.Wait()
	s.serveWG.Wait()
	s.workers.stop()
	s.stopLoops()
	s.closePools()
	return nil
}

// pickLoop returns the event loop for session id, starting the loops on
// first use (Config.RelayLoops, one per GOMAXPROCS thread by default) and
// spreading sessions over them by id; nil when there are none (off,
// unsupported, failed, closed).
func (s *Server) pickLoop(id uint64) *evLoop {
	s.loopMu.Lock()
	defer s.loopMu.Unlock()
	if s.loopsClosed {
		return nil
	}
	if !s.loopsTried {
		s.loopsTried = true
		n := s.cfg.Load().RelayLoops
		if n == 0 {
			n = runtime.GOMAXPROCS(0)
		}
		for range n {
			l, err := newEvLoop(s.log)
			if err != nil {
				s.log.Warn("relay event loops unavailable; relaying with a goroutine per direction", zap.Error(err))
				break
			}
			s.loops = append(s.loops, l)
		}
	}
	if len(s.loops) == 0 {
		return nil
	}
	if l := s.loops[id%uint64(len(s.loops))]; l.alive() {
		return l
	}
	return nil // a loop that failed: this session gets the goroutine relay
}

// park hands an idle pooled session to the parker (park_linux.go),
// starting it on first use; false when it did not take the session.
func (s *Server) park(sess *session) bool {
	rc := rawConn(sess.client)
	if rc == nil {
		return false
	}
	s.loopMu.Lock()
	if s.loopsClosed {
		s.loopMu.Unlock()
		return false
	}
	if !s.parkTried {
		s.parkTried = true
		p, err := newParker(s.log)
		if err != nil {
			s.log.Warn("idle clients cannot be parked; each keeps its goroutine", zap.Error(err))
		}
		s.parker = p
	}
	p := s.parker
	s.loopMu.Unlock()
	if p == nil {
		return false
	}
	ok := false
	if err := rc.Control(func(fd uintptr) { ok = p.park(sess, int(fd)) }); err != nil {
		return false
	}
	return ok
}

// wakeParked resumes sess at once if it is parked.
func (s *Server) wakeParked(sess *session) bool {
	s.loopMu.Lock()
	p := s.parker
	s.loopMu.Unlock()
	return p != nil && p.wake(sess)
}

// stopLoops stops the event loops and the parker; every session has ended.
func (s *Server) stopLoops() {
	s.loopMu.Lock()
	loops, p := s.loops, s.parker
	s.loops, s.loopsClosed = nil, true
	s.loopMu.Unlock()
	for _, l := range loops {
		l.close()
	}
	if p != nil {
		p.close()
	}
}

func (s *Server) beginClose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return
	}
	s.closing = true
	s.draining.Store(true)
	close(s.shutdown)
	for ln := range s.listeners {
		ln.Close()
	}
}

// openSessions is a snapshot of the open sessions (to act on each without
// holding s.mu).
func (s *Server) openSessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		list = append(list, sess)
	}
	return list
}

func (s *Server) closeSessions(reason string) {
	for _, sess := range s.openSessions() {
		sess.terminate(reason)
	}
}

// SessionCount is the number of open client connections.
func (s *Server) SessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// SessionInfo describes an open session (admin console, /status).
type SessionInfo struct {
	ID              uint64
	Listener        string
	Client          string
	User, Database  string
	ApplicationName string
	Backend         string
	Route           string
	ReadOnly        bool
	State           string
	Started         time.Time
	// Relay is what relays the session once it started: "event_loop" or
	// "goroutines" (a goroutine per direction: TLS, runtime.event_loops -1).
	Relay string
	// Pool is the pooling side of a pooled session (auth.mode: proxy);
	// Pool.Mode is "" for any other.
	Pool PoolClient
}

// Sessions lists the open sessions.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		list = append(list, sess)
	}
	s.mu.Unlock()
	out := make([]SessionInfo, 0, len(list))
	for _, sess := range list {
		out = append(out, sess.info())
	}
	return out
}
