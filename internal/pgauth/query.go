package pgauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

const (
	// DefaultQueryTimeout bounds one lookup (connect and query) when
	// QuerySource.Timeout is zero.
	DefaultQueryTimeout = 5 * time.Second
	maxQueryConns       = 2
	maxCacheEntries     = 10000
)

// QuerySource is auth_query: it looks users' secrets up on the primary with
// Query (one parameter, the user name; two result columns, user name and
// secret, as PgBouncer's), logged in as User/Password to Database
// ("postgres" when empty).
//
// Answers, found and not found, are cached for TTL (zero: not cached);
// errors are not. At most 2 connections of its own are open at once; one
// that fails is closed and the next lookup connects again (to whatever
// Addr says is the primary then; an idle connection to a former primary is
// dropped). Concurrent lookups of the same user share one query.
//
// Set the fields, then use it; do not change them afterwards. A QuerySource
// is safe for concurrent use. It starts no goroutines; Close closes its idle
// connections, and those in use when their lookup ends.
type QuerySource struct {
	Addr     func() (string, error) // the current primary, host:port
	User     string
	Password string
	Database string
	Query    string
	TTL      time.Duration
	Timeout  time.Duration // one lookup, connect included (0: DefaultQueryTimeout)
	TLS      *tls.Config   // nil: plaintext

	mu      sync.Mutex
	cache   map[string]cacheEntry
	flights map[string]*flight
	idle    []*authConn
	sem     chan struct{} // one token per open connection
	closed  bool
	queries atomic.Int64 // queries sent (tests)
}

type cacheEntry struct {
	sec     Secret
	found   bool
	expires time.Time
}

// flight is one lookup in progress that others wait for.
type flight struct {
	done     chan struct{}
	sec      Secret
	found    bool
	err      error
	canceled bool // err came from the leader's own context
}

type authConn struct {
	pc   *pgconn.PgConn
	addr string
}

// Lookup returns user's secret; found is false when Query returns no row or
// a NULL secret. The returned Secret's byte slices are shared with the
// cache: read-only. Errors are *pgerr.Error 08006 whose message names the
// reason (no primary, connect failed, query failed, bad secret format, …),
// safe to send to the client, wrapping the cause for logs; neither contains
// the auth user's password.
func (q *QuerySource) Lookup(ctx context.Context, user string) (Secret, bool, error) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return Secret{}, false, lookupError("authentication lookup is closed", nil)
		}
		if e, ok := q.cache[user]; ok {
			if time.Now().Before(e.expires) {
				q.mu.Unlock()
				return e.sec, e.found, nil
			}
			delete(q.cache, user)
		}
		if f := q.flights[user]; f != nil {
			q.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return Secret{}, false, lookupError("authentication lookup canceled", ctx.Err())
			}
			if f.canceled && ctx.Err() == nil {
				continue // the leader gave up, not us: try again
			}
			return f.sec, f.found, f.err
		}
		if q.flights == nil {
			q.flights = map[string]*flight{}
		}
		f := &flight{done: make(chan struct{})}
		q.flights[user] = f
		q.mu.Unlock()

		f.sec, f.found, f.err = q.lookup(ctx, user)
		f.canceled = f.err != nil && ctx.Err() != nil

		q.mu.Lock()
		delete(q.flights, user)
		if f.err == nil && q.TTL > 0 && !q.closed {
			q.store(user, cacheEntry{sec: f.sec, found: f.found, expires: time.Now().Add(q.TTL)})
		}
		q.mu.Unlock()
		close(f.done)
		return f.sec, f.found, f.err
	}
}

// store adds an entry, keeping the cache bounded (unknown user names are
// cached too, and anyone can send those). q.mu is held.
func (q *QuerySource) store(user string, e cacheEntry) {
	if q.cache == nil {
		q.cache = map[string]cacheEntry{}
	}
	if len(q.cache) >= maxCacheEntries {
		now := time.Now()
		for k, v := range q.cache {
			if !now.Before(v.expires) {
				delete(q.cache, k)
			}
		}
		for k := range q.cache {
			if len(q.cache) < maxCacheEntries {
				break
			}
			delete(q.cache, k)
		}
	}
	q.cache[user] = e
}

// lookup runs the query once, on a pooled connection or a new one; a pooled
// connection that turns out broken is replaced once.
func (q *QuerySource) lookup(ctx context.Context, user string) (Secret, bool, error) {
	timeout := q.Timeout
	if timeout <= 0 {
		timeout = DefaultQueryTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := q.acquire(ctx); err != nil {
		return Secret{}, false, err
	}
	defer q.releaseToken()
	for attempt := 0; ; attempt++ {
		ac, reused, err := q.conn(ctx)
		if err != nil {
			return Secret{}, false, err
		}
		sec, found, healthy, err := q.run(ctx, ac, user)
		q.putBack(ac, healthy)
		if err != nil && !healthy && reused && attempt == 0 && ctx.Err() == nil {
			continue // a stale idle connection (restart, failover): once more on a new one
		}
		return sec, found, err
	}
}

// acquire takes a connection token (at most maxQueryConns lookups run at once).
func (q *QuerySource) acquire(ctx context.Context) error {
	q.mu.Lock()
	if q.sem == nil {
		q.sem = make(chan struct{}, maxQueryConns)
	}
	sem := q.sem
	q.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return lookupError("authentication lookup timed out waiting for a connection", ctx.Err())
	}
}

func (q *QuerySource) releaseToken() { <-q.sem }

// conn returns an idle connection to the current primary, or a new one.
func (q *QuerySource) conn(ctx context.Context) (*authConn, bool, error) {
	if q.Addr == nil {
		return nil, false, lookupError("authentication lookup has no primary", errors.New("no Addr"))
	}
	addr, err := q.Addr()
	if err != nil {
		return nil, false, lookupError("authentication lookup found no primary", err)
	}
	for {
		q.mu.Lock()
		if len(q.idle) == 0 {
			q.mu.Unlock()
			break
		}
		ac := q.idle[len(q.idle)-1]
		q.idle = q.idle[:len(q.idle)-1]
		q.mu.Unlock()
		if ac.addr == addr && !ac.pc.IsClosed() {
			return ac, true, nil
		}
		closeConn(ac)
	}
	ac, err := q.dial(ctx, addr)
	return ac, false, err
}

func (q *QuerySource) dial(ctx context.Context, addr string) (*authConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, lookupError("authentication lookup: bad primary address", err)
	}
	cfg, err := pgconn.ParseConfig("host=" + dsnQuote(host) + " port=" + dsnQuote(port) + " sslmode=disable")
	if err != nil {
		return nil, lookupError("authentication lookup: bad primary address", err)
	}
	cfg.User = q.User
	cfg.Password = q.Password
	cfg.Database = q.Database
	if cfg.Database == "" {
		cfg.Database = "postgres"
	}
	cfg.Fallbacks = nil
	if q.TLS != nil {
		t := q.TLS.Clone()
		if t.ServerName == "" {
			t.ServerName = host
		}
		cfg.TLSConfig = t
	}
	timeout := q.Timeout
	if timeout <= 0 {
		timeout = DefaultQueryTimeout
	}
	cfg.ConnectTimeout = timeout
	cfg.RuntimeParams = map[string]string{
		"application_name":  "pgproxy-auth-query",
		"statement_timeout": strconv.FormatInt(max(timeout.Milliseconds(), 1), 10),
	}
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, lookupError("authentication lookup could not connect to the primary", q.redact(err))
	}
	return &authConn{pc: pc, addr: addr}, nil
}

// run sends the query. healthy is false when the connection must not be
// reused.
func (q *QuerySource) run(ctx context.Context, ac *authConn, user string) (sec Secret, found bool, healthy bool, err error) {
	q.queries.Add(1)
	rr := ac.pc.ExecParams(ctx, q.Query, [][]byte{[]byte(user)}, nil, nil, nil)
	cols := len(rr.FieldDescriptions()) // loaded by ExecParams, also for no rows
	rows := 0
	var raw []byte
	for rr.NextRow() {
		if rows++; rows == 1 && cols == 2 {
			if v := rr.Values()[1]; v != nil {
				raw = append([]byte{}, v...)
			}
		}
	}
	if _, err := rr.Close(); err != nil {
		var pgErr *pgconn.PgError
		healthy = errors.As(err, &pgErr) && !ac.pc.IsClosed()
		return Secret{}, false, healthy, lookupError("authentication lookup query failed", q.redact(err))
	}
	if cols != 2 {
		return Secret{}, false, true, lookupError("authentication lookup query failed", fmt.Errorf("auth_query returned %d columns, want 2 (user name, secret)", cols))
	}
	if rows > 1 {
		return Secret{}, false, true, lookupError("authentication lookup query failed", fmt.Errorf("auth_query returned %d rows for user %q, want at most 1", rows, user))
	}
	if raw == nil { // no row, or a NULL secret
		return Secret{}, false, true, nil
	}
	sec, err = ParseSecret(string(raw))
	if err != nil {
		return Secret{}, false, true, lookupError("authentication lookup returned a bad secret format", fmt.Errorf("user %q: %w", user, err))
	}
	return sec.withDerivedSCRAM(user), true, true, nil
}

// putBack returns a connection to the idle list, or closes it.
func (q *QuerySource) putBack(ac *authConn, healthy bool) {
	q.mu.Lock()
	if healthy && !q.closed && !ac.pc.IsClosed() && len(q.idle) < maxQueryConns {
		q.idle = append(q.idle, ac)
		ac = nil
	}
	q.mu.Unlock()
	if ac != nil {
		closeConn(ac)
	}
}

// Close closes the idle connections; lookups after Close fail, and a lookup
// running during Close closes its connection when it ends.
func (q *QuerySource) Close() {
	q.mu.Lock()
	q.closed = true
	idle := q.idle
	q.idle = nil
	q.cache = nil
	q.mu.Unlock()
	for _, ac := range idle {
		closeConn(ac)
	}
}

func closeConn(ac *authConn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = ac.pc.Close(ctx)
}

// lookupError is what a failed lookup returns: 08006 with a reason the
// client may see; the cause (for logs) stays in Err.
func lookupError(reason string, cause error) error {
	e := pgerr.New(pgerr.ConnectionFailure, "%s", reason)
	e.Err = cause
	return e
}

// redact keeps the auth user's password out of an error's text (pgconn's
// errors do not contain it; this makes sure).
func (q *QuerySource) redact(err error) error {
	if err == nil || q.Password == "" || !strings.Contains(err.Error(), q.Password) {
		return err
	}
	return redacted{err, q.Password}
}

type redacted struct {
	err error
	pw  string
}

func (r redacted) Error() string { return strings.ReplaceAll(r.err.Error(), r.pw, "[password]") }

// Unwrap keeps errors.As working (pgconn.PgError's fields hold no password).
func (r redacted) Unwrap() error { return r.err }

func dsnQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
