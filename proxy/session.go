package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
)

// maxAuthMessage caps a message during startup and authentication.
const maxAuthMessage = 64 << 10

// session is one client connection: startup, routing, backend connect and
// authentication, then the relay. It is owned by the goroutine that runs
// run(); fields under mu are also read by info() and terminate().
type session struct {
	srv      *Server
	cfg      *Config
	id       uint64
	listener Listener
	raw      net.Conn // the accepted socket
	// logp is the session's logger, built by logger on first use: most
	// sessions log once, at their end, and an idle one holds none.
	logp    atomic.Pointer[zap.Logger]
	started time.Time

	client net.Conn // raw, or the TLS conn once negotiated
	server net.Conn
	// serverPending is what the authentication phase read ahead from the
	// server; the relay forwards it first.
	serverPending []byte
	// hs is how the handshake reads and writes a plain TCP client
	// (handshake.go); clientPending is what it read ahead of the client,
	// which the relay forwards first.
	hs            *handshakeIO
	clientPending []byte

	mu              sync.Mutex
	user, database  string
	applicationName string
	backend         string
	route           string
	readOnly        bool
	fallback        string // the NOTICE of a read session that fell back to the primary
	release         func()
	params          map[string]string // ParameterStatus values from the backend (nil when pooled: the servers change)
	serverVersion   string
	job             string

	txStatus         atomic.Uint32 // last ReadyForQuery status byte
	cancelKey        string
	lin              *lineageState  // nil unless lineage is enabled
	policies         []policy       // what the relay consults (policy.go), made with the first pump
	guard            *readOnlyGuard // among them on an enforced read-only or a masked session; closeConns stops its waits
	mask             *maskPolicy    // among them on a masked session (policy_masking.go); set under mu
	maskDecided      bool           // under mu: whether the session is masked was decided (mask)
	adminAuth        bool           // authenticating for the admin console
	terminating      atomic.Pointer[string]
	closeOnce        sync.Once
	closing          atomic.Bool  // closeConns has started: relay errors are ours
	clientTerminated atomic.Bool  // the client sent Terminate
	bytesIn          atomic.Int64 // client → server
	bytesOut         atomic.Int64 // server → client

	// While an event loop relays the session (evloop_linux.go): its relay,
	// for terminate, and the loop's writer to the client, for sendError
	// (the net.Conns are closed then).
	inLoop  atomic.Pointer[loopRelay]
	clientW io.Writer
	relayBy atomic.Uint32 // relayGoroutines or relayLoop once the relay started (SessionInfo.Relay)

	// A pooled session (auth.mode: proxy, pooled.go): nil otherwise.
	pooled    *pooledState
	pooledEnd atomic.Pointer[relayEnd] // why its server side ended it
	// parkedFd is the client socket while the parker holds the session
	// (park_linux.go), else -1; under the parker's mutex.
	parkedFd int32
	ends     []func()                 // what finish undoes (atEnd)
	poolWait atomic.Pointer[poolWait] // what it waits for now (pooled_info.go); nil: not waiting
}

// guarded: the session's statements are held and checked (an enforced
// read-only session, a masked one), so it relays on goroutines and writes
// what precedes each message before asking about it.
func (s *session) guarded() bool { return s.readOnly || s.mask != nil }

const (
	relayGoroutines = 1 + iota
	relayLoop
)

func newSession(srv *Server, conn net.Conn, l Listener, cfg *Config, id uint64) *session {
	return &session{
		srv: srv, cfg: cfg, id: id, listener: l, raw: conn, client: conn,
		started: time.Now(), parkedFd: -1,
	}
}

// logs reports whether the proxy logs at level: the lines every session
// writes check it first, so that a session that logs nothing does not
// build its logger (a zap.Logger.With per session, measured with pgbench -C).
func (s *session) logs(level zapcore.Level) bool { return s.srv.log.Core().Enabled(level) }

// logger is the session's logger: the server's, with the session's id,
// listener and client address.
func (s *session) logger() *zap.Logger {
	if l := s.logp.Load(); l != nil {
		return l
	}
	l := s.srv.log.With(zap.Uint64("session_id", s.id), zap.String("listener", s.listener.Addr), zap.String("client_addr", s.raw.RemoteAddr().String()))
	if !s.logp.CompareAndSwap(nil, l) {
		return s.logp.Load()
	}
	return l
}

// run drives the session to its end, or until its relay parks it
// (park_linux.go): then the parker owns it and resume continues it on a
// goroutine of its own. It never panics: a panic is logged with its stack
// and ends only this session.
func (s *session) run() {
	parked := false
	defer s.endUnlessParked(&parked)
	if n := s.srv.active.Add(1); n > int64(s.cfg.MaxSessions) {
		s.srv.active.Add(-1)
		_ = s.raw.SetWriteDeadline(time.Now().Add(time.Second))
		s.sendError(pgerr.New(pgerr.TooManyConnections, "sorry, too many clients already"))
		s.srv.countRejected(pgerr.TooManyConnections)
		s.logger().Warn("session refused: max_sessions reached", zap.Int("max_sessions", s.cfg.MaxSessions))
		return
	}
	s.atEnd(func() { s.srv.active.Add(-1) })

	deadline := time.Now().Add(s.cfg.StartupTimeout)
	_ = s.raw.SetDeadline(deadline)
	sp, err := s.startup()
	if err != nil {
		s.failStartup(err)
		return
	}
	if sp.Kind == pgwire.KindCancel {
		s.handleCancel(sp)
		return
	}
	if unrec, need := sp.Negotiation(); need {
		msg, _ := (&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unrec}).Encode(nil)
		if err := s.queueClient(msg); err != nil { // goes out with the authentication request
			return
		}
	}
	s.mu.Lock()
	s.user, _ = sp.Get("user")
	s.database, _ = sp.Get("database")
	if s.database == "" {
		s.database = s.user
	}
	s.applicationName, _ = sp.Get("application_name")
	s.mu.Unlock()

	if s.database == AdminDatabase {
		if err := s.serveAdmin(sp, deadline); err != nil {
			s.failStartup(err)
		}
		return
	}
	t0 := time.Now()
	connect := s.connect
	if s.cfg.Auth != nil {
		connect = s.connectPooled
	}
	if err := connect(sp, deadline); err != nil {
		s.failStartup(err)
		return
	}
	if err := s.endHandshake(); err != nil {
		return
	}
	if s.pooled != nil && s.pooled.doneKey != nil {
		s.atEnd(s.pooled.doneKey)
	}
	if s.srv.metrics != nil {
		s.srv.metrics.connectTime.WithLabelValues(s.backend).Observe(time.Since(t0).Seconds())
	}
	_ = s.client.SetDeadline(time.Time{})
	if s.server != nil {
		_ = s.server.SetDeadline(time.Time{})
	}
	if s.terminating.Load() != nil {
		// terminate() ran during startup: its deadline was just cleared.
		if s.server != nil {
			_ = s.server.SetReadDeadline(time.Now())
		} else {
			_ = s.raw.SetReadDeadline(time.Now())
		}
	}
	if s.srv.metrics != nil {
		g := s.srv.metrics.sessions.WithLabelValues(s.listener.Addr, s.route)
		g.Inc()
		s.atEnd(g.Dec)
	}
	if s.logs(zapcore.DebugLevel) {
		s.logger().Debug("session started", zap.String("backend", s.backend), zap.String("route", s.route))
	}
	// Under mu, with the server's configuration in force: a RELOAD that
	// comes meanwhile either finds the session decided or is seen by it
	// (Server.SetConfig).
	s.mu.Lock()
	if mcfg := s.srv.cfg.Load(); mcfg.Masking != nil {
		if set, cat := mcfg.Masking(s.user, s.database, s.applicationName, s.backend); set != nil {
			s.mask = newMaskPolicy(s, set, cat, mcfg)
			s.logger().Info("session masked", zap.String("user", s.user), zap.Int("rule", set.Rule))
		}
	}
	s.maskDecided = true
	s.mu.Unlock()
	if s.cfg.Lineage != nil {
		s.mu.Lock()
		s.lin = &lineageState{sink: s.cfg.Lineage, info: LineageSession{
			Database: s.database, User: s.user, ApplicationName: s.applicationName,
			ServerVersion: s.serverVersion, Job: s.job,
		}}
		s.mu.Unlock()
	}
	parked = s.serve()
}

// endUnlessParked is run's and resume's deferred end: it finishes the
// session unless the parker took it, and turns a panic into a log line
// and the end of only this session.
func (s *session) endUnlessParked(parked *bool) {
	if r := recover(); r != nil {
		*parked = false
		s.logger().Error("session panic", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
	}
	if !*parked {
		s.finish()
	}
}

// resume continues a parked session on a goroutine of its own (started by
// the parker) until it ends or parks again.
func (s *session) resume() {
	parked := false
	defer s.endUnlessParked(&parked)
	parked = s.serve()
}

// serve relays until the session ends (it then reports the end and
// returns false) or the parker took it (true: the caller must not touch
// the session again).
func (s *session) serve() bool {
	for {
		reason, idle := s.relay()
		if !idle {
			s.report(reason)
			return false
		}
		if s.srv.park(s) {
			return true
		}
		// Not parked (terminating, no parker): relay on, here.
	}
}

// report logs and counts the session's end.
func (s *session) report(reason string) {
	if s.lin != nil {
		s.lin.failPending(reason)
	}
	dur := time.Since(s.started)
	if s.logs(zapcore.InfoLevel) {
		s.logger().Info("session ended",
			zap.String("user", s.user), zap.String("database", s.database),
			zap.String("application_name", s.applicationName),
			zap.String("backend", s.backend), zap.String("route", s.route), zap.Bool("read_only_enforced", s.readOnly),
			zap.Duration("duration", dur), zap.Int64("bytes_in", s.bytesIn.Load()), zap.Int64("bytes_out", s.bytesOut.Load()),
			zap.String("reason", reason))
	}
	if m := s.srv.metrics; m != nil {
		m.sessionsTotal.WithLabelValues(s.listener.Addr, s.route, reason).Inc()
		m.duration.WithLabelValues(s.route).Observe(dur.Seconds())
		m.bytes.WithLabelValues("client_to_server").Add(float64(s.bytesIn.Load()))
		m.bytes.WithLabelValues("server_to_client").Add(float64(s.bytesOut.Load()))
	}
}

// atEnd registers what finish undoes, last registered first.
func (s *session) atEnd(f func()) { s.ends = append(s.ends, f) }

// finish releases what the session holds, on whichever goroutine ends it.
func (s *session) finish() {
	for i := len(s.ends) - 1; i >= 0; i-- {
		s.ends[i]()
	}
	s.ends = nil
	if s.hs != nil { // ended during the handshake
		s.hs.release()
		s.hs = nil
	}
	s.closeConns()
	if s.cancelKey != "" {
		s.srv.cancels.remove(s.cancelKey)
	}
	s.srv.endSession(s)
}

// failStartup reports a startup/connect error to the client (when it has a
// SQLSTATE) and logs it once.
func (s *session) failStartup(err error) {
	var coded pgerr.Coded
	if errors.As(err, &coded) {
		s.sendError(err)
		s.srv.countRejected(coded.SQLState())
		s.logger().Info("session refused", zap.String("user", s.user), zap.String("database", s.database),
			zap.String("sqlstate", coded.SQLState()), zap.Error(err))
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		s.logger().Info("session closed: startup_timeout", zap.Duration("startup_timeout", s.cfg.StartupTimeout))
		return
	}
	if errors.Is(err, errAlreadyReported) {
		return
	}
	s.logger().Debug("session closed during startup", zap.String("error", describeStartupErr(err)))
}

var errAlreadyReported = errors.New("error already relayed to the client")

func describeStartupErr(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "client closed during startup"
	}
	return fmt.Sprint(err)
}

func (s *Server) countRejected(code string) {
	if s.metrics != nil {
		s.metrics.rejected.WithLabelValues(code).Inc()
	}
}

// sendError writes err as an ErrorResponse to the client (best effort).
func (s *session) sendError(err error) {
	resp := pgerr.Response(err, pgerr.InternalError, "internal error in pgproxy")
	b, encErr := resp.Encode(nil)
	if encErr != nil {
		return
	}
	if s.clientW != nil {
		_, _ = s.clientW.Write(b)
		return
	}
	_, _ = s.clientIO().Write(b)
}

// startup negotiates SSL/GSS encryption and returns the StartupMessage or
// CancelRequest.
func (s *session) startup() (*pgwire.StartupPacket, error) {
	var r io.Reader = s.raw
	if s.hs = newHandshakeIO(s.raw); s.hs != nil {
		r = s.hs
	}
	var first [1]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		return nil, err
	}
	tlsDone := false
	if first[0] == 0x16 { // TLS ClientHello: direct TLS (PostgreSQL 17 sslnegotiation=direct)
		if s.cfg.TLS == nil {
			return nil, errors.New("direct TLS connection but no tls configured")
		}
		prefix := first[:]
		if s.hs != nil { // the rest of what the first read brought
			prefix = append(prefix, s.hs.release()...)
			s.hs = nil
		}
		tc := tls.Server(&prefixConn{Conn: s.raw, prefix: prefix}, directTLSConfig(s.cfg.TLS))
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("direct TLS handshake: %w", err)
		}
		if tc.ConnectionState().NegotiatedProtocol != "postgresql" {
			return nil, errors.New("direct TLS connection without ALPN postgresql")
		}
		s.client, r, tlsDone = tc, tc, true
	} else {
		r = io.MultiReader(bytes.NewReader(first[:]), r)
	}
	gssDone := false
	for {
		sp, err := pgwire.ReadStartupPacket(r)
		if err != nil {
			return nil, err
		}
		switch sp.Kind {
		case pgwire.KindSSLRequest:
			if tlsDone {
				return nil, pgerr.New(pgerr.ProtocolViolation, "SSLRequest received after TLS was established")
			}
			if s.cfg.TLS == nil {
				if _, err := s.clientIO().Write([]byte{'N'}); err != nil {
					return nil, err
				}
				tlsDone = true // a second SSLRequest is refused all the same
				continue
			}
			// Plaintext the client sent after the request and before the
			// TLS handshake would be taken as the session's: refused, as
			// PostgreSQL does.
			if s.hs != nil && s.hs.buffered() > 0 {
				return nil, pgerr.New(pgerr.ProtocolViolation, "received unencrypted data after SSL request")
			}
			if _, err := s.clientIO().Write([]byte{'S'}); err != nil {
				return nil, err
			}
			if s.hs != nil {
				s.hs.release()
				s.hs = nil
			}
			tc := tls.Server(s.raw, s.cfg.TLS)
			if err := tc.Handshake(); err != nil {
				return nil, fmt.Errorf("TLS handshake: %w", err)
			}
			s.client, r, tlsDone = tc, tc, true
		case pgwire.KindGSSENCRequest:
			if gssDone || s.client != s.raw {
				return nil, pgerr.New(pgerr.ProtocolViolation, "unexpected GSSENCRequest")
			}
			gssDone = true
			if _, err := s.clientIO().Write([]byte{'N'}); err != nil {
				return nil, err
			}
		default:
			return sp, nil
		}
	}
}

func directTLSConfig(base *tls.Config) *tls.Config {
	c := base.Clone()
	c.NextProtos = []string{"postgresql"}
	return c
}

// prefixConn replays bytes already read from the socket before reading more.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// handleCancel forwards a CancelRequest to the backend that owns the key,
// or to every backend when the key is not ours (another pgproxy instance
// behind the same load balancer may own it; servers ignore foreign keys).
func (s *session) handleCancel(sp *pgwire.StartupPacket) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := cancelKeyOf(sp.CancelPID, sp.CancelKey)
	if t, ok := s.srv.cancels.lookup(key); ok && t.s != nil {
		addr, err := t.s.cancelPooled(ctx)
		switch {
		case err != nil:
			s.logger().Warn("cancel request not delivered", zap.String("backend", addr), zap.Error(err))
			s.srv.countCancel("failed")
		case addr == "":
			s.srv.countCancel("idle") // between transactions: nothing to cancel
		default:
			s.srv.countCancel("forwarded")
		}
		return
	} else if ok {
		addr := t.addr
		if err := forwardCancel(ctx, addr, sp.CancelPID, sp.CancelKey); err != nil {
			s.logger().Warn("cancel request not delivered", zap.String("backend", addr), zap.Error(err))
			s.srv.countCancel("failed")
			return
		}
		s.logger().Debug("cancel request forwarded", zap.String("backend", addr))
		s.srv.countCancel("forwarded")
		return
	}
	var wg sync.WaitGroup
	for _, addr := range s.cfg.Backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = forwardCancel(ctx, addr, sp.CancelPID, sp.CancelKey)
		}()
	}
	wg.Wait()
	s.srv.countCancel("broadcast")
}

func (s *Server) countCancel(result string) {
	if s.metrics != nil {
		s.metrics.cancels.WithLabelValues(result).Inc()
	}
}

// connect asks the Director for a backend, connects (trying the next
// candidate while nothing was relayed yet), sends the StartupMessage and
// relays authentication until the backend's first ReadyForQuery.
func (s *session) connect(sp *pgwire.StartupPacket, deadline time.Time) error {
	params := slices.Clone(sp.Params)
	var exclude []string
	var lastErr error
	l := s.listener
	if s.adminAuth {
		l.Route, l.Admin = "write", true // the admin console authenticates at the primary, paused or not
	}
	for attempt := 0; attempt < 8; attempt++ {
		t, err := s.srv.director.Direct(l, params, exclude)
		if err != nil {
			return err
		}
		conn, br, err := s.dialBackend(t, params, deadline)
		if err != nil {
			if t.Release != nil {
				t.Release()
			}
			s.logger().Warn("backend connect failed; trying the next candidate", zap.String("backend", t.Addr), zap.Error(err))
			exclude = append(exclude, t.Addr)
			lastErr = err
			if time.Now().After(deadline) {
				break
			}
			continue
		}
		s.mu.Lock()
		s.server, s.backend, s.route, s.readOnly, s.job = conn, t.Addr, t.Route, t.ReadOnly, t.Job
		s.mu.Unlock()
		if t.ReadOnly && t.Fallback != "" {
			s.fallback = "pgproxy: " + t.Fallback + "; this session runs on the primary, read-only"
			s.logger().Info("read session fell back to the primary, read-only", zap.String("backend", t.Addr), zap.String("why", t.Fallback))
		}
		s.release = t.Release // called once by closeConns
		return s.relayAuth(br)
	}
	return &pgerr.Error{Code: pgerr.CannotConnectNow, Severity: "FATAL",
		Message: "pgproxy could not connect to any backend for this session", Err: lastErr}
}

// dialBackend opens the TCP (and TLS) connection, sends the startup packet
// and reads the backend's first message. A backend that refuses before
// authentication starts (not accepting connections) counts as a failed
// connect, so the next candidate is tried.
func (s *session) dialBackend(t *Target, clientParams []Param, deadline time.Time) (net.Conn, *bufio.Reader, error) {
	timeout := min(s.cfg.ConnectTimeout, time.Until(deadline))
	if timeout <= 0 {
		return nil, nil, errors.New("startup deadline passed")
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.Dial("tcp", t.Addr)
	if err != nil {
		return nil, nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetKeepAlive(true)
	}
	_ = conn.SetDeadline(deadline)
	tconn, err := backendTLS(s.cfg, conn, t.Addr)
	if err != nil {
		conn.Close() // backendTLS returns nil on error: close the TCP socket it was given
		return nil, nil, err
	}
	conn = tconn
	params := t.Params
	if params == nil {
		params = clientParams
	}
	if t.ReadOnly {
		// A startup parameter, not a SET: RESET and DISCARD ALL return to it.
		params = withParam(params, "default_transaction_read_only", "on")
	}
	if _, err := conn.Write(pgwire.EncodeStartup(make([]byte, 0, 256), params)); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 8192)
	hdr, err := br.Peek(5)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("reading backend's first message: %w", err)
	}
	if hdr[0] == 'E' {
		n := int(binary.BigEndian.Uint32(hdr[1:]))
		if n >= 4 && n <= maxAuthMessage {
			if b, err := br.Peek(1 + n); err == nil {
				var er pgproto3.ErrorResponse
				if er.Decode(b[5:]) == nil && (er.Code == pgerr.CannotConnectNow || er.Code == pgerr.TooManyConnections || er.Code == pgerr.AdminShutdown) {
					conn.Close()
					return nil, nil, fmt.Errorf("backend refused the connection: %s (SQLSTATE %s)", er.Message, er.Code)
				}
			}
		}
	}
	return conn, br, nil
}

func withParam(params []Param, key, value string) []Param {
	out := make([]Param, 0, len(params)+1)
	found := false
	for _, p := range params {
		if p.Key == key {
			p.Value = value
			found = true
		}
		out = append(out, p)
	}
	if !found {
		out = append(out, Param{Key: key, Value: value})
	}
	return out
}

// backendTLS negotiates TLS with a backend per the backend_tls mode.
func backendTLS(c *Config, conn net.Conn, addr string) (net.Conn, error) {
	mode := c.BackendTLS.Mode
	if mode == "disable" {
		return conn, nil
	}
	var req [8]byte
	binary.BigEndian.PutUint32(req[:], 8)
	binary.BigEndian.PutUint32(req[4:], pgwire.SSLRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		return nil, err
	}
	var resp [1]byte
	if _, err := io.ReadFull(conn, resp[:]); err != nil {
		return nil, err
	}
	switch resp[0] {
	case 'S':
	case 'N':
		if mode == "prefer" {
			return conn, nil
		}
		return nil, fmt.Errorf("backend %s does not support TLS (backend_tls: %s)", addr, mode)
	default:
		return nil, fmt.Errorf("backend %s: unexpected answer %q to SSLRequest", addr, resp[0])
	}
	var cfg *tls.Config
	if c.BackendTLS.Config != nil {
		cfg = c.BackendTLS.Config.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if mode == "verify-full" {
		host, _, _ := net.SplitHostPort(addr)
		cfg.ServerName = host
	} else {
		cfg.InsecureSkipVerify = true //nolint:gosec // prefer/require encrypt without verifying, like libpq's sslmode
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("backend %s TLS handshake: %w", addr, err)
	}
	return tc, nil
}

// relayAuth relays the authentication exchange between client and backend
// until the backend's first ReadyForQuery. It offers the client only
// SCRAM-SHA-256 (channel binding cannot cross a TLS-terminating proxy),
// records BackendKeyData for cancels and ParameterStatus values.
//
// Pass-through SCRAM has one limit: a client that speaks TLS to the proxy
// and supports channel binding sends the GS2 flag "y" (it saw no -PLUS
// mechanism); a backend that itself runs the session over TLS rejects that
// flag ("SCRAM channel binding negotiation error"). With backend_tls other
// than disable, such clients need channel_binding=disable; proxy-side
// authentication (auth.mode: proxy) removes the limit: there the proxy
// offers SCRAM-SHA-256-PLUS bound to its own certificate (pooled.go).
func (s *session) relayAuth(br *bufio.Reader) error {
	out := make([]byte, 0, 1024)
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		_, err := s.clientIO().Write(out)
		s.bytesOut.Add(int64(len(out)))
		out = out[:0]
		return err
	}
	params := make(map[string]string, 16)
	for {
		typ, body, err := pgwire.ReadMessage(br, maxAuthMessage)
		if err != nil {
			_ = flush()
			return fmt.Errorf("backend %s during authentication: %w", s.backend, err)
		}
		needReply := false
		switch typ {
		case 'R':
			if len(body) < 4 {
				return pgerr.New(pgerr.ProtocolViolation, "invalid authentication request from backend")
			}
			switch code := binary.BigEndian.Uint32(body); code {
			case 0, 12: // AuthenticationOk, SASLFinal
			case 3, 5, 11: // cleartext, MD5, SASLContinue
				needReply = true
			case 10: // SASL: drop the -PLUS mechanisms
				mechs := bytes.Split(bytes.TrimRight(body[4:], "\x00"), []byte{0})
				nb := binary.BigEndian.AppendUint32(nil, 10)
				for _, m := range mechs {
					if len(m) == 0 || bytes.HasSuffix(m, []byte("-PLUS")) {
						continue
					}
					nb = append(append(nb, m...), 0)
				}
				if len(nb) == 4 {
					return pgerr.New(pgerr.InvalidAuthorization, "backend offers only SASL mechanisms with channel binding, which cannot pass through pgproxy")
				}
				body = append(nb, 0)
				needReply = true
			default:
				_ = flush()
				return pgerr.New(pgerr.FeatureNotSupported, "authentication method %d requested by the backend is not supported by pgproxy", code)
			}
		case 'K':
			if len(body) >= 8 {
				key := cancelKeyOf(binary.BigEndian.Uint32(body), body[4:])
				s.cancelKey = key
				s.srv.cancels.add(key, s.backend)
			}
		case 'S':
			if k, v, ok := pgwire.ParseParameterStatus(body); ok {
				params[k] = v
			}
		case 'E':
			out = pgwire.AppendMessage(out, typ, body)
			_ = flush()
			// The backend only sees the proxy's address: say here who failed
			// to log in. PostgreSQL's message names the user, never the password.
			code, msg := pgwire.ErrorFields(body)
			s.logger().Warn("client login failed", zap.String("user", s.user), zap.String("database", s.database),
				zap.String("backend", s.backend), zap.String("sqlstate", code), zap.String("message", msg))
			return errAlreadyReported
		case 'N', 'v':
		case 'Z':
			if s.fallback != "" { // tell the client why it is not on a replica
				notice := pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: pgerr.SuccessfulCompletion, Message: s.fallback}
				if b, err := notice.Encode(out); err == nil {
					out = b
				}
			}
			out = pgwire.AppendMessage(out, typ, body)
			if err := flush(); err != nil {
				return err
			}
			s.mu.Lock()
			s.params, s.serverVersion = params, params["server_version"]
			s.mu.Unlock()
			if len(body) == 1 {
				s.txStatus.Store(uint32(body[0]))
			}
			if s.readOnly && params["default_transaction_read_only"] == "off" {
				return pgerr.New(pgerr.ReadOnlySQLTransaction, "pgproxy: this read session must be read-only but the backend reports default_transaction_read_only=off")
			}
			// Hand what the auth phase read ahead to the relay.
			if n := br.Buffered(); n > 0 {
				pending, _ := br.Peek(n)
				s.serverPending = slices.Clone(pending)
			}
			return nil
		default:
			return pgerr.New(pgerr.ProtocolViolation, "unexpected message %q from backend during authentication", typ)
		}
		out = pgwire.AppendMessage(out, typ, body)
		if needReply || br.Buffered() == 0 {
			if err := flush(); err != nil {
				return err
			}
		}
		if needReply {
			ctyp, cbody, err := pgwire.ReadMessage(s.clientIO(), maxAuthMessage)
			if err != nil {
				return err
			}
			if ctyp != 'p' {
				return pgerr.New(pgerr.ProtocolViolation, "expected password response, got message type %q", ctyp)
			}
			msg := pgwire.AppendMessage(nil, ctyp, cbody)
			s.bytesIn.Add(int64(len(msg)))
			if _, err := s.server.Write(msg); err != nil {
				return err
			}
		}
	}
}

// terminate ends the session from outside (shutdown, admin): the relay
// notices, tells the client why when it can do so between messages, and
// closes both sides.
func (s *session) terminate(reason string) {
	s.terminating.CompareAndSwap(nil, &reason)
	if lr := s.inLoop.Load(); lr != nil {
		lr.loop.post(loopReq{lr: lr, terminate: true})
		return
	}
	s.mu.Lock()
	srv, pooled := s.server, s.pooled
	s.mu.Unlock()
	switch {
	case srv != nil:
		_ = srv.SetReadDeadline(time.Now())
	case pooled != nil:
		if s.srv.wakeParked(s) {
			return // resumed: it sees terminating and ends
		}
		_ = s.raw.SetReadDeadline(time.Now()) // the relay ends and tells the client why
	default:
		_ = s.raw.SetDeadline(time.Now())
	}
}

func (s *session) closeConns() {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		if s.guard != nil {
			// First: a guard waiting in the client→server pump does so
			// inside that socket's RawConn.Read, and Close waits for it.
			s.guard.end()
		}
		s.client.Close()
		if s.client != s.raw {
			s.raw.Close()
		}
		s.mu.Lock()
		srv := s.server
		s.mu.Unlock()
		if srv != nil {
			srv.Close()
		}
		if s.release != nil {
			s.release()
		}
	})
}

func (s *session) info() SessionInfo {
	s.mu.Lock()
	state := "startup"
	switch s.txStatus.Load() {
	case 'I':
		state = "idle"
	case 'T':
		state = "in transaction"
	case 'E':
		state = "failed transaction"
	}
	relay := ""
	switch s.relayBy.Load() {
	case relayGoroutines:
		relay = "goroutines"
	case relayLoop:
		relay = "event_loop"
	}
	si := SessionInfo{
		ID: s.id, Listener: s.listener.Addr, Client: s.raw.RemoteAddr().String(),
		User: s.user, Database: s.database, ApplicationName: s.applicationName,
		Backend: s.backend, Route: s.route, ReadOnly: s.readOnly, State: state, Started: s.started,
		Relay: relay,
	}
	ps := s.pooled
	s.mu.Unlock()
	s.poolInfo(&si, ps)
	return si
}
