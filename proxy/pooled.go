package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/internal/pgauth"
	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
	"github.com/ofitec/pgproxy/pool"
)

// Pooled sessions (auth.mode: proxy). The proxy authenticates the client
// itself (SCRAM-SHA-256, or md5 for an md5 secret), keeps the credential it
// recovered (never a plaintext password) to log in to backends, and lends
// the session a server connection from package pool: for the whole
// session (pool.mode: session) or for one transaction at a time
// (transaction). The relay of a pooled session is pooled_relay.go.

// ProxyAuth configures proxy-side authentication.
type ProxyAuth struct {
	// Lookup returns user's secret: found=false for an unknown user (who
	// then goes through the same exchange against a fake secret and fails
	// the same way). An error is reported to the client as 08006.
	Lookup func(ctx context.Context, user string) (sec pgauth.Secret, found bool, err error)
	// MockKey makes the fake secrets of unknown users (pgauth.FakeSecret,
	// pgauth.MockKey): stable, so that an unknown user's salt is the same
	// on every restart and instance, as a real user's is. Empty: a random
	// key of this process.
	MockKey []byte
}

// PoolConfig configures the server pools of pooled sessions.
type PoolConfig struct {
	pool.Config
	// Transaction lends a server per transaction instead of per session.
	Transaction bool
	// ResetQuery runs on a server before another session gets it, when a
	// session-mode client leaves or a pinned client in transaction mode
	// does. Empty: none.
	ResetQuery string
	// MaxPrepared bounds the named prepared statements the proxy keeps per
	// client in transaction mode (the oldest is forgotten first).
	MaxPrepared int
}

// trackedParams are the settings a pooled session moves with the client
// to whichever server runs its next transaction, by their ParameterStatus
// names (PostgreSQL reports every change of each).
var trackedParams = []string{"application_name", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "standard_conforming_strings"}

func trackedName(k string) (string, bool) {
	for _, n := range trackedParams {
		if strings.EqualFold(n, k) {
			return n, true
		}
	}
	return "", false
}

// poolSet returns the Server's pools, made on first use.
func (s *Server) poolSet() *pool.Set {
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	if s.pools == nil {
		s.pools = pool.New(s.poolConfig(s.cfg.Load()), s.dialPooled)
	}
	return s.pools
}

// poolConfig is c's pool configuration.
func (s *Server) poolConfig(c *Config) pool.Config {
	return c.Pool.Config
}

// PoolStats describes every server pool (SHOW POOLS); nil without pooling.
func (s *Server) PoolStats() []pool.Stats {
	s.poolMu.Lock()
	p := s.pools
	s.poolMu.Unlock()
	if p == nil {
		return nil
	}
	return p.Stats()
}

// DrainBackend closes the pooled connections to addr (idle ones now, lent
// ones when released): the backend went down or changed role.
func (s *Server) DrainBackend(addr string) int {
	s.poolMu.Lock()
	p := s.pools
	s.poolMu.Unlock()
	s.replay.forget(addr)
	if p == nil {
		return 0
	}
	return p.Drain(addr)
}

// rememberCred keeps the newest credential per user for the pool's dialer.
func (s *Server) rememberCred(c *pgauth.Credential) {
	s.poolMu.Lock()
	if s.creds == nil {
		s.creds = make(map[string]*pgauth.Credential)
	}
	s.creds[c.User] = c
	s.poolMu.Unlock()
}

func (s *Server) credFor(user string) *pgauth.Credential {
	s.poolMu.Lock()
	defer s.poolMu.Unlock()
	return s.creds[user]
}

// forgetCred drops c as its user's newest credential (a backend refused
// it), unless a newer one replaced it meanwhile.
func (s *Server) forgetCred(c *pgauth.Credential) {
	s.poolMu.Lock()
	if s.creds[c.User] == c {
		delete(s.creds, c.User)
	}
	s.poolMu.Unlock()
}

// credKey carries, in an Acquire's context, the credential of the client
// asking: a server dialed for it logs in with it (dialPooled).
type credKey struct{}

func withCred(ctx context.Context, c *pgauth.Credential) context.Context {
	if c == nil {
		return ctx
	}
	return context.WithValue(ctx, credKey{}, c)
}

// dialPooled is the pool's Dialer. It logs in with the credential of the
// client asking for the server (from ctx; else the user's newest, as for
// min_size). A refusal of class 28 (the backend's password changed, so a
// credential recovered before is stale) forgets that credential and tries
// once more with the user's newest, if that is another one: PgBouncer and
// Multigres evict and retry once the same way. A second refusal reaches
// the client with the backend's SQLSTATE.
func (s *Server) dialPooled(ctx context.Context, key pool.Key) (*pool.Conn, error) {
	cred, _ := ctx.Value(credKey{}).(*pgauth.Credential)
	if cred == nil {
		cred = s.credFor(key.User)
	}
	if cred == nil || !cred.CanLogin() {
		return nil, fmt.Errorf("no credential for user %q yet (a client must log in first)", key.User)
	}
	c, err := s.dialWith(ctx, key, cred)
	if err == nil || !isAuthRefusal(err) {
		return c, err
	}
	s.forgetCred(cred)
	alt := s.credFor(key.User)
	if alt == nil || alt == cred || !alt.CanLogin() {
		return nil, err
	}
	s.log.Info("backend refused a pooled login; retrying once with the user's newest credential",
		zap.String("backend", key.Addr), zap.String("user", key.User), zap.Error(err))
	return s.dialWith(ctx, key, alt)
}

// isAuthRefusal: a backend error of class 28 (invalid authorization).
func isAuthRefusal(err error) bool {
	var coded pgerr.Coded
	return errors.As(err, &coded) && strings.HasPrefix(coded.SQLState(), "28")
}

// dialWith opens one server connection: TCP (+TLS per backend_tls), a
// StartupMessage with only user and database (and read-only for a
// read-only pool: the client's own settings are applied per session),
// login with cred, then ParameterStatus, BackendKeyData and
// ReadyForQuery.
func (s *Server) dialWith(ctx context.Context, key pool.Key, cred *pgauth.Credential) (*pool.Conn, error) {
	cfg := s.cfg.Load()
	deadline := time.Now().Add(cfg.ConnectTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	d := net.Dialer{Deadline: deadline}
	nc, err := d.DialContext(ctx, "tcp", key.Addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetKeepAlive(true)
	}
	_ = nc.SetDeadline(deadline)
	conn, err := backendTLS(cfg, nc, key.Addr)
	if err != nil {
		nc.Close()
		return nil, err
	}
	params := []Param{{Key: "user", Value: key.User}, {Key: "database", Value: key.Database}}
	if key.ReadOnly {
		params = append(params, Param{Key: "default_transaction_read_only", Value: "on"})
	}
	if _, err := conn.Write(pgwire.EncodeStartup(make([]byte, 0, 128), params)); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(conn, 4096)
	if err := pgauth.Login(conn, br, cred); err != nil {
		conn.Close()
		return nil, err
	}
	c := &pool.Conn{Net: conn, Initial: make(map[string]string, 16)}
	for {
		typ, body, err := pgwire.ReadMessage(br, maxAuthMessage)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("backend %s after login: %w", key.Addr, err)
		}
		switch typ {
		case 'S':
			if k, v, ok := pgwire.ParseParameterStatus(body); ok {
				c.Initial[k] = v
			}
		case 'K':
			if len(body) >= 8 {
				c.PID = binary.BigEndian.Uint32(body)
				c.Secret = bytes.Clone(body[4:])
			}
		case 'E':
			conn.Close()
			return nil, backendError(body)
		case 'Z':
			if n := br.Buffered(); n > 0 {
				b, _ := br.Peek(n)
				c.Pending = bytes.Clone(b)
			}
			_ = conn.SetDeadline(time.Time{})
			return c, nil
		}
	}
}

// backendError keeps a backend's ErrorResponse as a coded error.
func backendError(body []byte) error {
	var er pgproto3.ErrorResponse
	if er.Decode(body) != nil {
		return pgerr.New(pgerr.ProtocolViolation, "malformed ErrorResponse from backend")
	}
	sev := er.Severity
	if sev == "" {
		sev = "ERROR"
	}
	return &pgerr.Error{Code: er.Code, Severity: sev, Message: er.Message, Detail: er.Detail, Hint: er.Hint}
}

// pooledState is what a pooled session keeps beyond a plain one. link
// (pooled_relay.go) is shared by the session's two relay directions; the
// rest belongs to the session's goroutine.
type pooledState struct {
	key  pool.Key
	cred *pgauth.Credential
	// extra are the client's startup settings outside trackedParams,
	// applied on every server it gets.
	extra    map[string]string
	proxyKey [8]byte   // the BackendKeyData the client got: pid, secret
	doneKey  func()    // uncounts the client from its pool (SHOW POOLS)
	clientW  io.Writer // what the server→client relays write with
	// c2s is the client→server pump, kept while the session is parked;
	// parkable: it parks when idle (startPooledRelay).
	c2s      *pump
	parkable bool
	// next hands the server→client goroutine its next server (nil: none
	// runs); s2cExit is closed when it ends (pooled_relay.go).
	next    chan *pool.Conn
	s2cExit chan struct{}
	// relayIdle: no server→client relay runs, and the client→server side
	// knows it (it took link.s2cIdle's token).
	relayIdle bool
	route     *txRoute // per-transaction routing (pooled_route.go); nil: none

	link link
}

// authenticateClient runs the proxy's side of authentication and sends
// AuthenticationOk. Every failure is 28P01 with PostgreSQL's own message,
// whether the user is unknown or the password wrong, after the same
// exchange.
func (s *session) authenticateClient(ctx context.Context) (*pgauth.Credential, error) {
	sec, found, err := s.cfg.Auth.Lookup(ctx, s.user)
	if err != nil {
		s.logger().Warn("client login failed: user lookup failed", zap.String("user", s.user), zap.Error(err))
		return nil, &pgerr.Error{Code: pgerr.ConnectionFailure, Severity: "FATAL", Message: "pgproxy: could not look up user: " + err.Error()}
	}
	if !found {
		key := s.cfg.Auth.MockKey
		if len(key) == 0 {
			key = s.srv.fakeKey[:]
		}
		sec = pgauth.FakeSecret(s.user, key)
	}
	failed := &pgerr.Error{Code: pgerr.InvalidPassword, Severity: "FATAL", Message: fmt.Sprintf("password authentication failed for user %q", s.user)}
	readPassword := func() ([]byte, error) {
		typ, body, err := pgwire.ReadMessage(s.clientIO(), maxAuthMessage)
		if err != nil {
			return nil, err
		}
		if typ != 'p' {
			return nil, pgerr.New(pgerr.ProtocolViolation, "expected password response, got message type %q", typ)
		}
		return body, nil
	}
	write := func(body []byte) error {
		_, err := s.clientIO().Write(pgwire.AppendMessage(nil, 'R', body))
		return err
	}
	var cred pgauth.Credential
	if sec.Kind == pgauth.KindMD5 {
		salt := pgauth.MD5Challenge()
		if err := write(append(binary.BigEndian.AppendUint32(nil, 5), salt[:]...)); err != nil {
			return nil, err
		}
		body, err := readPassword()
		if err != nil {
			return nil, err
		}
		if cred, err = pgauth.VerifyMD5(s.user, sec, salt, body); err != nil {
			return nil, s.loginFailed(failed, found, err)
		}
	} else {
		sc := pgauth.NewSCRAMServer(s.user, sec)
		if _, isTLS := s.client.(*tls.Conn); isTLS {
			sc.OfferChannelBinding(s.srv.tlsEndPoint(s.cfg.TLS, s.logger())) // SCRAM-SHA-256-PLUS
		}
		if err := write(sc.Mechanisms()); err != nil {
			return nil, err
		}
		body, err := readPassword()
		if err != nil {
			return nil, err
		}
		out, err := sc.ClientFirst(body)
		if err != nil {
			return nil, s.loginFailed(failed, found, err)
		}
		if err := write(out); err != nil {
			return nil, err
		}
		if body, err = readPassword(); err != nil {
			return nil, err
		}
		if out, err = sc.ClientFinal(body); err != nil {
			return nil, s.loginFailed(failed, found, err)
		}
		if !found { // cannot happen: nobody knows a fake secret's password
			return nil, s.loginFailed(failed, found, errors.New("unknown user"))
		}
		// AuthenticationSASLFinal and AuthenticationOk go out with the
		// welcome: the client answers neither.
		if err := s.queueClient(pgwire.AppendMessage(nil, 'R', out)); err != nil {
			return nil, err
		}
		cred = sc.Credential()
	}
	if err := s.queueClient(pgwire.AppendMessage(nil, 'R', binary.BigEndian.AppendUint32(nil, 0))); err != nil {
		return nil, err
	}
	return &cred, nil
}

// endPoint is the tls-server-end-point channel binding data of the
// certificate of one tls.Config (nil: none can be given).
type endPoint struct {
	cfg  *tls.Config
	data []byte
}

// tlsEndPoint returns the channel binding data of the certificate cfg
// shows every client (SCRAM-SHA-256-PLUS), computed once per cfg; nil when
// it cannot be known: a cfg that picks a certificate per client
// (GetCertificate, several Certificates), or a signature algorithm with no
// tls-server-end-point hash. -PLUS is then not offered.
func (srv *Server) tlsEndPoint(cfg *tls.Config, log *zap.Logger) []byte {
	if e := srv.endPoint.Load(); e != nil && e.cfg == cfg {
		return e.data
	}
	e := &endPoint{cfg: cfg}
	if cfg != nil && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil && len(cfg.Certificates) == 1 && len(cfg.Certificates[0].Certificate) > 0 {
		leaf := cfg.Certificates[0].Leaf
		var err error
		if leaf == nil {
			leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
		}
		if err == nil {
			e.data, err = pgauth.TLSServerEndPoint(leaf)
		}
		if err != nil {
			log.Warn("SCRAM-SHA-256-PLUS (channel binding) not offered", zap.Error(err))
		}
	}
	srv.endPoint.Store(e)
	return e.data
}

// loginFailed logs a failed login with the client's address (the backend
// never sees it) and returns what the client is told.
func (s *session) loginFailed(failed error, found bool, why error) error {
	reason := "wrong password"
	if !found {
		reason = "unknown user"
	} else if !errors.Is(why, pgauth.ErrPasswordMismatch) {
		reason = why.Error()
	}
	told, code := failed, pgerr.InvalidPassword
	var coded pgerr.Coded
	if errors.As(why, &coded) {
		switch coded.SQLState() {
		case pgerr.ProtocolViolation, pgerr.InvalidAuthorization: // malformed; channel binding (as PostgreSQL says)
			told, code = why, coded.SQLState()
		}
	}
	// sqlstate as in pass-through mode's line: what the client was told.
	s.logger().Warn("client login failed", zap.String("user", s.user), zap.String("database", s.database),
		zap.String("sqlstate", code), zap.String("reason", reason))
	if s.srv.metrics != nil {
		s.srv.countRejected(pgerr.InvalidPassword)
	}
	return told
}

// connectPooled authenticates the client, picks a backend as connect
// does, gets a server from the pool, applies the client's settings and
// sends the client its welcome (ParameterStatus, the proxy's own
// BackendKeyData, ReadyForQuery). In transaction mode the server goes back
// to the pool right away.
func (s *session) connectPooled(sp *pgwire.StartupPacket, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cred, err := s.authenticateClient(ctx)
	if err != nil {
		return err
	}
	s.srv.rememberCred(cred)
	ps := &pooledState{cred: cred}
	set := s.srv.poolSet()
	var exclude []string
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		t, err := s.srv.director.Direct(s.listener, sp.Params, exclude)
		if err != nil {
			return err
		}
		params := t.Params
		if params == nil {
			params = sp.Params
		}
		database := s.database
		for _, kv := range params {
			if kv.Key == "database" && kv.Value != "" {
				database = kv.Value // the router may have rewritten it (strip_suffix)
			}
		}
		ps.setParams(params)
		if s.cfg.Pool.Transaction && tempSearchPath(ps.extra) {
			// An unqualified CREATE makes a temporary object: the client
			// keeps its server, as a statement naming pg_temp does.
			ps.link.pinned = "temp_table"
			if m := s.srv.metrics; m != nil {
				m.poolPins.WithLabelValues("temp_table").Inc()
			}
		}
		key := pool.Key{Addr: t.Addr, Database: database, User: s.user, ReadOnly: t.ReadOnly}
		actx, acancel := context.WithTimeout(context.Background(), s.cfg.Pool.MaxWait+time.Second /* the pool's own MaxWait timer answers first: 53300 */)
		c, waited, err := s.acquireServer(withCred(actx, cred), set, key)
		acancel()
		if s.srv.metrics != nil && err == nil {
			s.srv.metrics.poolWait.Observe(waited.Seconds())
		}
		if err != nil {
			if t.Release != nil {
				t.Release()
			}
			var ex *pool.ExhaustedError
			var coded pgerr.Coded
			switch {
			case errors.As(err, &ex):
				return &pgerr.Error{Code: pgerr.TooManyConnections, Severity: "FATAL", Message: "pgproxy: " + ex.Error()}
			case errors.As(err, &coded):
				return err // the backend refused the proxy's login: another backend would too
			}
			s.logger().Warn("backend connect failed; trying the next candidate", zap.String("backend", t.Addr), zap.Error(err))
			exclude = append(exclude, t.Addr)
			lastErr = err
			if time.Now().After(deadline) {
				break
			}
			continue
		}
		ps.key = key
		ps.doneKey = set.AddClient(key)
		s.mu.Lock()
		s.backend, s.route, s.readOnly, s.job = t.Addr, t.Route, t.ReadOnly, t.Job
		s.pooled = ps
		s.mu.Unlock()
		if t.ReadOnly && t.Fallback != "" {
			s.fallback = "pgproxy: " + t.Fallback + "; this session runs on the primary, read-only"
			s.logger().Info("read session fell back to the primary, read-only", zap.String("backend", t.Addr), zap.String("why", t.Fallback))
		}
		s.release = t.Release
		if t.Tx != nil && s.cfg.Pool.Transaction && s.cfg.Routing.Classify != nil {
			level := t.Consistency
			if level == "" {
				level = s.cfg.Routing.Consistency
			}
			ps.route = newTxRoute(t.Tx, level)
		}
		if err := s.syncParams(c); err != nil {
			set.Release(c, false)
			return err
		}
		if err := s.welcome(c); err != nil {
			set.Release(c, false)
			return err
		}
		if s.cfg.Pool.Transaction {
			set.Release(c, true)
		} else {
			ps.link.conn = c
		}
		return nil
	}
	return &pgerr.Error{Code: pgerr.CannotConnectNow, Severity: "FATAL",
		Message: "pgproxy could not connect to any backend for this session", Err: lastErr}
}

// tempSearchPath: the client's startup search_path names pg_temp (the
// session's temporary schema).
func tempSearchPath(extra map[string]string) bool {
	for k, v := range extra {
		if strings.EqualFold(k, "search_path") && strings.Contains(strings.ToLower(v), "pg_temp") {
			return true
		}
	}
	return false
}

// setParams splits the startup parameters forwarded for the session into
// tracked settings and the others (options' -c settings included).
func (ps *pooledState) setParams(params []Param) {
	ps.extra = make(map[string]string)
	ps.link.desired = make(map[string]string)
	for _, kv := range params {
		switch kv.Key {
		case "user", "database", "replication":
		case "options":
			for k, v := range parseOptions(kv.Value) {
				if strings.HasPrefix(k, "pgproxy.") {
					continue
				}
				if n, ok := trackedName(k); ok {
					ps.link.desired[n] = v
				} else {
					ps.extra[k] = v
				}
			}
		default:
			if n, ok := trackedName(kv.Key); ok {
				ps.link.desired[n] = kv.Value
			} else if !strings.HasPrefix(kv.Key, "_pq_.") {
				ps.extra[kv.Key] = kv.Value
			}
		}
	}
}

// welcome sends what PostgreSQL sends after AuthenticationOk.
func (s *session) welcome(c *pool.Conn) error {
	ps := s.pooled
	if _, err := rand.Read(ps.proxyKey[:]); err != nil {
		return err
	}
	out := make([]byte, 0, 512)
	for k, v := range c.Params {
		out = pgwire.AppendMessage(out, 'S', append(append(append([]byte(k), 0), v...), 0))
	}
	out = pgwire.AppendMessage(out, 'K', ps.proxyKey[:])
	if s.fallback != "" {
		notice := pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: pgerr.SuccessfulCompletion, Message: s.fallback}
		if b, err := notice.Encode(out); err == nil {
			out = b
		}
	}
	out = pgwire.AppendMessage(out, 'Z', []byte{'I'})
	s.mu.Lock()
	s.serverVersion = c.Params["server_version"]
	s.mu.Unlock()
	s.txStatus.Store('I')
	key := cancelKeyOf(binary.BigEndian.Uint32(ps.proxyKey[:4]), ps.proxyKey[4:])
	s.cancelKey = key
	s.srv.cancels.addSession(key, s)
	_, err := s.clientIO().Write(out)
	s.bytesOut.Add(int64(len(out)))
	return err
}

// syncParams makes c's settings the client's: tracked settings whose
// value on c differs, and the client's other startup settings (set, or
// reset when c has one the client does not). One simple Query; its
// answers stay with the proxy.
func (s *session) syncParams(c *pool.Conn) error {
	ps := s.pooled
	var q strings.Builder
	ps.link.mu.Lock()
	for _, k := range trackedParams {
		want, ok := ps.link.desired[k]
		if !ok {
			if want, ok = c.Initial[k]; !ok {
				continue
			}
		}
		if c.Params[k] != want {
			appendSetConfig(&q, k, want)
		}
	}
	ps.link.mu.Unlock()
	for k, v := range ps.extra {
		if cur, ok := c.Applied[k]; !ok || cur != v {
			appendSetConfig(&q, k, v)
		}
	}
	for k := range c.Applied {
		if _, ok := ps.extra[k]; !ok {
			q.WriteString("RESET " + quoteIdent(k) + ";")
		}
	}
	if q.Len() == 0 {
		return nil
	}
	if err := execSimple(c, q.String(), s.cfg.ConnectTimeout); err != nil {
		var pe *pgerr.Error
		if errors.As(err, &pe) {
			pe.Severity = "FATAL" // as PostgreSQL refuses a bad startup setting
		}
		return err
	}
	clear(c.Applied)
	for k, v := range ps.extra {
		c.Applied[k] = v
	}
	ps.link.mu.Lock()
	for k, v := range c.Params {
		if _, ok := trackedName(k); ok {
			if _, set := ps.link.desired[k]; set {
				ps.link.desired[k] = v
			}
		}
	}
	ps.link.mu.Unlock()
	return nil
}

func appendSetConfig(q *strings.Builder, k, v string) {
	q.WriteString("SELECT pg_catalog.set_config(" + quoteLiteral(k) + ", " + quoteLiteral(v) + ", false);")
}

// quoteLiteral quotes s as an escape string constant (E'...'), valid
// whatever standard_conforming_strings says.
func quoteLiteral(s string) string {
	return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// execSimple runs sql on c (which nobody else reads now) and reads to its
// ReadyForQuery, keeping the ParameterStatus values it reports. The first
// ErrorResponse is returned.
func execSimple(c *pool.Conn, sql string, timeout time.Duration) error {
	_, err := queryValue(c, sql, timeout)
	return err
}

// queryValue runs sql (one row, one column, or none) on c, which nobody
// else reads now, and returns the value ("" for NULL or no row).
func queryValue(c *pool.Conn, sql string, timeout time.Duration) (string, error) {
	c.Unnamed = 0 // a simple Query drops the unnamed statement (pooled_unnamed.go)
	v, _, err := roundTrip(c, pgwire.AppendMessage(nil, 'Q', append([]byte(sql), 0)), sql, timeout)
	return v, err
}

// queryPrepared is queryValue for a statement the proxy runs often on its
// own (the WAL positions of per-transaction routing): prepared once per
// server as name (kept in c.Prepared, which DISCARD ALL clears), then only
// bound and executed, which spares the server parsing and planning it
// each time. A server that lost it (26000) gets the Parse again.
func queryPrepared(c *pool.Conn, name, sql string, timeout time.Duration) (string, error) {
	for try := 0; ; try++ {
		_, has := c.Prepared[name]
		var req []byte
		if !has {
			req = pgwire.AppendMessage(req, 'P', append(append(append([]byte(name), 0), sql...), 0, 0, 0))
		}
		// Bind: unnamed portal, the statement, no parameter formats, no
		// parameters, no result formats (text).
		req = pgwire.AppendMessage(req, 'B', append(append([]byte{0}, name...), 0, 0, 0, 0, 0, 0, 0))
		req = pgwire.AppendMessage(req, 'E', []byte{0, 0, 0, 0, 0})
		req = pgwire.AppendMessage(req, 'S', nil)
		v, parsed, err := roundTrip(c, req, sql, timeout)
		if parsed {
			c.Prepared[name] = struct{}{}
		}
		var pe *pgerr.Error
		if has && try == 0 && errors.As(err, &pe) && pe.Code == pgerr.InvalidSQLStatementName {
			delete(c.Prepared, name)
			continue
		}
		return v, err
	}
}

// roundTripReaders are roundTrip's read buffers (a global read's WAL
// position is one round trip every few reads: not 4 KiB of garbage each).
var roundTripReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// roundTrip writes req (ending in a Query or a Sync) to c and reads the
// answers to their ReadyForQuery, keeping the ParameterStatus values they
// report. It returns the first column of the last DataRow, whether a
// ParseComplete came, and the first ErrorResponse.
func roundTrip(c *pool.Conn, req []byte, sql string, timeout time.Duration) (string, bool, error) {
	_ = c.Net.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = c.Net.SetDeadline(time.Time{}) }()
	// Raw system calls on plain TCP, as the relays (rawio.go).
	var w io.Writer = c.Net
	var src io.Reader = c.Net
	if rc := connRaw(c); rc != nil {
		rw := &rawWriter{rc: rc}
		rw.fn = rw.writeAll
		w, src = rw, newRawReader(rc)
	}
	if _, err := w.Write(req); err != nil {
		return "", false, err
	}
	if len(c.Pending) > 0 {
		src = io.MultiReader(bytes.NewReader(c.Pending), src)
		c.Pending = nil
	}
	br := roundTripReaders.Get().(*bufio.Reader)
	br.Reset(src)
	defer func() {
		br.Reset(nil)
		roundTripReaders.Put(br)
	}()
	var first error
	value, parsed := "", false
	for {
		typ, body, err := pgwire.ReadMessage(br, largeMessageLimit)
		if err != nil {
			return "", parsed, fmt.Errorf("server %s: %w", c.Key.Addr, err)
		}
		switch typ {
		case '1':
			parsed = true
		case 'S':
			if k, v, ok := pgwire.ParseParameterStatus(body); ok {
				c.Params[k] = v
			}
		case 'D':
			// int16 column count, int32 length, bytes.
			if len(body) >= 6 && body[0] == 0 && body[1] == 1 {
				n := int32(uint32(body[2])<<24 | uint32(body[3])<<16 | uint32(body[4])<<8 | uint32(body[5]))
				if n >= 0 && int(n) <= len(body)-6 {
					value = string(body[6 : 6+n])
				}
			}
		case 'E':
			if first == nil {
				first = backendError(body)
			}
		case 'Z':
			if n := br.Buffered(); n > 0 {
				b, _ := br.Peek(n)
				c.Pending = bytes.Clone(b)
			}
			if first == nil && (len(body) != 1 || body[0] != 'I') {
				first = fmt.Errorf("server %s not idle after %q", c.Key.Addr, sql)
			}
			return value, parsed, first
		}
	}
}

// parseOptions reads the -c name=value (and --name=value) settings of a
// startup "options" string, with PostgreSQL's backslash escapes.
func parseOptions(s string) map[string]string {
	var words []string
	var cur strings.Builder
	esc, in := false, false
	for _, r := range s {
		switch {
		case esc:
			cur.WriteRune(r)
			esc, in = false, true
		case r == '\\':
			esc = true
		case r == ' ' || r == '\t' || r == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	out := make(map[string]string)
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch {
		case w == "-c" && i+1 < len(words):
			i++
			w = words[i]
		case strings.HasPrefix(w, "-c"):
			w = w[2:]
		case strings.HasPrefix(w, "--"):
			w = w[2:]
		default:
			continue
		}
		if k, v, ok := strings.Cut(w, "="); ok {
			out[strings.ReplaceAll(k, "-", "_")] = v
		}
	}
	return out
}

// cancelPooled forwards a client's CancelRequest to the server currently
// running its query, with that server's own key. The link's lock is held
// meanwhile, so the server cannot pass to another client before the
// cancel has reached it.
func (s *session) cancelPooled(ctx context.Context) (string, error) {
	ps := s.pooled
	if ps == nil {
		return "", nil
	}
	ps.link.mu.Lock()
	defer ps.link.mu.Unlock()
	c := ps.link.conn
	if c == nil {
		return "", nil // between transactions: nothing runs
	}
	return c.Key.Addr, forwardCancel(ctx, c.Key.Addr, c.PID, c.Secret)
}
