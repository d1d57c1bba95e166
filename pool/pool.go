// Package pool keeps pgproxy's server connections: logged-in connections to
// PostgreSQL backends, kept per Key (backend, database, user, read-only) and
// lent to client sessions, for a whole session (pool.mode: session) or one
// transaction at a time (pool.mode: transaction).
//
// The pool knows nothing of the wire protocol beyond what a Conn records:
// dialing and logging in is the Dialer's job (package proxy), and so is
// deciding whether a returned connection is clean (Release's reusable).
//
// # Concurrency contract
//
// A Set and its methods are safe for concurrent use. A Conn belongs to
// exactly one owner at a time: the Set while it is idle, the session that
// Acquired it until that session passes it to Release (once). Only the
// owner reads, writes or changes a Conn's fields; the Set touches an idle
// Conn only under its lock. Acquire blocks for at most Config.MaxWait (or
// until its context ends); Release never blocks on I/O except to close a
// connection. The Set owns one goroutine (the reaper), which Close stops and
// waits for; dials run on the acquiring session's goroutine.
package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"
)

// Key identifies one pool: connections in it are interchangeable.
type Key struct {
	Addr     string // backend host:port
	Database string
	User     string
	// ReadOnly connections log in with default_transaction_read_only=on
	// (read sessions that fell back to the primary).
	ReadOnly bool
}

func (k Key) String() string {
	s := k.User + "@" + k.Addr + "/" + k.Database
	if k.ReadOnly {
		s += " (read-only)"
	}
	return s
}

// Conn is one logged-in server connection.
type Conn struct {
	Net net.Conn
	Key Key
	// PID and Secret are the backend's BackendKeyData (for cancels).
	PID    uint32
	Secret []byte
	// Initial are the ParameterStatus values at login; Params the current
	// ones (the owner updates them from the ParameterStatus it relays).
	Initial, Params map[string]string
	// Applied are parameters that the server does not report (no
	// ParameterStatus) that the proxy SET on this connection.
	Applied map[string]string
	// Prepared are the server-side names of the statements prepared on it.
	Prepared map[string]struct{}
	// Unnamed is the owner's tag for the unnamed prepared statement the
	// server holds: the one the owner's client with that tag parsed on it
	// (0: none that any client may use).
	Unnamed uint64
	// Aux is the owner's to cache what it derives from Net (the proxy's
	// RawConn); it stays with the connection.
	Aux any
	// Pending is what was read from the server past the last message the
	// owner consumed; the next owner relays it first.
	Pending []byte

	created time.Time
	idleAt  time.Time
	gen     uint64 // the Set's generation for Key.Addr when it was dialed
}

// Created is when the connection logged in.
func (c *Conn) Created() time.Time { return c.created }

// Dialer opens and logs in a new server connection for key. It returns a
// Conn with Net, PID, Secret and Initial set (Params may be nil: the Set
// copies Initial).
type Dialer func(ctx context.Context, key Key) (*Conn, error)

// Config bounds each pool. Zero durations mean "never".
type Config struct {
	Size        int           // server connections per Key (>= 1)
	MinSize     int           // kept open per Key once it has been used
	MaxWait     time.Duration // longest an Acquire waits for a connection
	IdleTimeout time.Duration // an idle connection older than this is closed
	Lifetime    time.Duration // a connection older than this is closed when released
	// MaxPrepared bounds the statements a connection keeps prepared: one
	// that has more is closed when released.
	MaxPrepared int
}

// checkAfter: a connection idle at least this long is looked at
// (peerDone) before it is lent. One released a moment ago was answering its
// last client then; a busy pool (connections idle for microseconds) spares
// the system call on every transaction. PgBouncer's server_check_delay
// (30 s, with a query) is the same trade; a server that dies within this
// window before it is lent fails that client's transaction instead.
const checkAfter = 100 * time.Millisecond

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("pool: closed")

// ExhaustedError is returned when no connection became free within MaxWait.
type ExhaustedError struct {
	Key    Key
	Busy   int
	Waited time.Duration
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("pool %s exhausted: %d servers busy, waited %s", e.Key, e.Busy, e.Waited.Round(time.Millisecond))
}

// Set is every pool of one pgproxy instance.
type Set struct {
	dial Dialer

	mu     sync.Mutex
	cfg    Config
	pools  map[Key]*pool
	gens   map[string]uint64 // per backend address: bumped by Drain
	closed bool

	stop chan struct{}
	done chan struct{}
}

type pool struct {
	key     Key
	idle    []*Conn // most recently released last
	total   int     // open connections (idle + lent) + dials in progress
	lent    int
	out     map[*Conn]struct{} // lent connections (SHOW SERVERS)
	waiters []*waiter
	used    time.Time // last Acquire
	clients int       // sessions that use this pool (AddClient)
}

type waiter struct {
	since time.Time
	ch    chan grant // buffered 1
}

// grant answers a waiter: a connection, or the right to dial one (the
// slot is already counted in total).
type grant struct {
	c    *Conn
	dial bool
}

// New returns a Set. Its reaper closes idle connections past IdleTimeout
// and keeps MinSize open.
func New(cfg Config, dial Dialer) *Set {
	if cfg.Size < 1 {
		cfg.Size = 1
	}
	s := &Set{dial: dial, cfg: cfg, pools: make(map[Key]*pool), gens: make(map[string]uint64),
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.reaper()
	return s
}

// SetConfig changes the bounds for what happens next (a smaller Size takes
// effect as connections are released).
func (s *Set) SetConfig(cfg Config) {
	if cfg.Size < 1 {
		cfg.Size = 1
	}
	s.mu.Lock()
	s.cfg = cfg
	s.mu.Unlock()
}

func (s *Set) poolLocked(key Key) *pool {
	p := s.pools[key]
	if p == nil {
		p = &pool{key: key, out: make(map[*Conn]struct{})}
		s.pools[key] = p
	}
	return p
}

// AddClient counts a client session that uses key's pool (SHOW POOLS
// cl_active); the returned func uncounts it, once.
func (s *Set) AddClient(key Key) func() {
	s.mu.Lock()
	s.poolLocked(key).clients++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if p := s.pools[key]; p != nil {
				p.clients--
			}
			s.mu.Unlock()
		})
	}
}

// Acquire returns a connection of key's pool: an idle one (the most recently
// used; one that the server closed or sent something while it was idle is
// closed instead), a new one while the pool has fewer than Size, or the
// first one released within MaxWait. waited is how long it waited for one.
func (s *Set) Acquire(ctx context.Context, key Key) (c *Conn, waited time.Duration, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, 0, ErrClosed
	}
	p := s.poolLocked(key)
	if c := s.takeIdleLocked(p); c != nil {
		s.mu.Unlock()
		return c, 0, nil
	}
	if p.total < s.cfg.Size {
		p.total++
		s.mu.Unlock()
		return s.dialFor(ctx, p, 0)
	}
	w := &waiter{since: time.Now(), ch: make(chan grant, 1)}
	p.waiters = append(p.waiters, w)
	maxWait := s.cfg.MaxWait
	s.mu.Unlock()

	var timeout <-chan time.Time
	if maxWait > 0 {
		t := time.NewTimer(maxWait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case g := <-w.ch:
		return s.granted(ctx, p, g, time.Since(w.since))
	case <-ctx.Done():
		err = ctx.Err()
	case <-timeout:
	case <-s.stop:
		err = ErrClosed
	}
	s.mu.Lock()
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			break
		}
	}
	busy := p.lent
	s.mu.Unlock()
	select {
	case g := <-w.ch: // granted while we gave up: take it after all
		return s.granted(ctx, p, g, time.Since(w.since))
	default:
	}
	if err == nil {
		err = &ExhaustedError{Key: key, Busy: busy, Waited: time.Since(w.since)}
	}
	return nil, time.Since(w.since), err
}

// TryAcquire returns an idle connection of key's pool as Acquire would, or
// nil when there is none: it never dials or waits, so a caller that finds
// one needs no deadline (a transaction-mode client takes a server per
// transaction, nearly always an idle one).
func (s *Set) TryAcquire(key Key) *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	return s.takeIdleLocked(s.poolLocked(key))
}

// takeIdleLocked lends p's most recently used idle connection, closing the
// ones found stale or closed by their server on the way; nil when none is
// left. It may unlock s.mu while it closes one.
func (s *Set) takeIdleLocked(p *pool) *Conn {
	now := time.Now()
	p.used = now
	for len(p.idle) > 0 {
		c := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if s.staleLocked(c, now) || now.Sub(c.idleAt) >= checkAfter && peerDone(c.Net) {
			p.total--
			s.mu.Unlock()
			c.Net.Close()
			s.mu.Lock()
			now = time.Now()
			continue
		}
		p.lent++
		p.out[c] = struct{}{}
		return c
	}
	return nil
}

func (s *Set) granted(ctx context.Context, p *pool, g grant, waited time.Duration) (*Conn, time.Duration, error) {
	if g.dial {
		return s.dialFor(ctx, p, waited)
	}
	return g.c, waited, nil
}

// dialFor dials into a slot already counted in p.total.
func (s *Set) dialFor(ctx context.Context, p *pool, waited time.Duration) (*Conn, time.Duration, error) {
	s.mu.Lock()
	gen := s.gens[p.key.Addr]
	s.mu.Unlock()
	c, err := s.dial(ctx, p.key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		p.total--
		s.passSlotLocked(p)
		return nil, waited, err
	}
	c.Key, c.created, c.gen = p.key, time.Now(), gen
	if c.Params == nil {
		c.Params = make(map[string]string, len(c.Initial))
		for k, v := range c.Initial {
			c.Params[k] = v
		}
	}
	if c.Applied == nil {
		c.Applied = make(map[string]string)
	}
	if c.Prepared == nil {
		c.Prepared = make(map[string]struct{})
	}
	if s.closed {
		p.total--
		c.Net.Close()
		return nil, waited, ErrClosed
	}
	p.lent++
	p.out[c] = struct{}{}
	return c, waited, nil
}

// passSlotLocked lets the first waiter dial into a slot that just freed.
func (s *Set) passSlotLocked(p *pool) {
	if len(p.waiters) > 0 && p.total < s.cfg.Size {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.total++
		w.ch <- grant{dial: true}
	}
}

func (s *Set) staleLocked(c *Conn, now time.Time) bool {
	if c.gen != s.gens[c.Key.Addr] {
		return true
	}
	if s.cfg.Lifetime > 0 && now.Sub(c.created) > s.cfg.Lifetime {
		return true
	}
	return false
}

// Release gives back a connection that Acquire returned. reusable says the
// owner left it clean (idle, nothing owed, session state reset); otherwise,
// or when it is past Lifetime, was dialed before a Drain of its backend, or
// holds more than MaxPrepared statements, it is closed.
func (s *Set) Release(c *Conn, reusable bool) {
	s.mu.Lock()
	p := s.pools[c.Key]
	if p == nil { // cannot happen: pools are never deleted while lent
		s.mu.Unlock()
		c.Net.Close()
		return
	}
	p.lent--
	delete(p.out, c)
	now := time.Now()
	if !reusable || s.closed || s.staleLocked(c, now) || (s.cfg.MaxPrepared > 0 && len(c.Prepared) > s.cfg.MaxPrepared) ||
		p.total > s.cfg.Size {
		p.total--
		s.passSlotLocked(p)
		s.mu.Unlock()
		c.Net.Close()
		return
	}
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.lent++
		p.out[c] = struct{}{}
		w.ch <- grant{c: c} // buffered: never blocks; under the lock, so a waiter that gives up sees it
		s.mu.Unlock()
		return
	}
	c.idleAt = now
	p.idle = append(p.idle, c)
	s.mu.Unlock()
}

// Drain closes the idle connections to addr and makes those lent out close
// when they are released: the backend went down, or changed role.
func (s *Set) Drain(addr string) int {
	s.mu.Lock()
	s.gens[addr]++ // lent ones are stale from now on (staleLocked)
	s.mu.Unlock()
	return s.CloseIdle(func(k Key) bool { return k.Addr == addr })
}

// Close closes every idle connection, makes lent ones close when released,
// fails waiting and future Acquires with ErrClosed and stops the reaper.
func (s *Set) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return
	}
	s.closed = true
	var drop []*Conn
	for _, p := range s.pools {
		drop = append(drop, p.idle...)
		p.total -= len(p.idle)
		p.idle = nil
	}
	s.mu.Unlock()
	close(s.stop)
	for _, c := range drop {
		c.Net.Close()
	}
	<-s.done
}

func (s *Set) reaper() {
	defer close(s.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.reap(time.Now())
		}
	}
}

// reap closes idle connections past IdleTimeout or Lifetime (keeping
// MinSize per pool) and opens connections up to MinSize for pools used in
// the last IdleTimeout (a Dialer that cannot log in without a client, for
// lack of a credential, just fails).
func (s *Set) reap(now time.Time) {
	s.mu.Lock()
	var drop []*Conn
	var fill []*pool
	for k, p := range s.pools {
		keep := p.idle[:0]
		for _, c := range p.idle { // the longest idle first
			idleTooLong := s.cfg.IdleTimeout > 0 && now.Sub(c.idleAt) > s.cfg.IdleTimeout
			if s.staleLocked(c, now) || (idleTooLong && p.total > s.cfg.MinSize) {
				drop = append(drop, c)
				p.total--
				continue
			}
			keep = append(keep, c)
		}
		p.idle = keep
		if p.total == 0 && p.clients == 0 && len(p.waiters) == 0 && (s.cfg.IdleTimeout == 0 || now.Sub(p.used) > s.cfg.IdleTimeout) {
			delete(s.pools, k)
			continue
		}
		if p.total < s.cfg.MinSize && !s.closed && (s.cfg.IdleTimeout == 0 || now.Sub(p.used) < s.cfg.IdleTimeout) {
			p.total++
			fill = append(fill, p)
		}
	}
	s.mu.Unlock()
	for _, c := range drop {
		c.Net.Close()
	}
	for _, p := range fill {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, _, err := s.dialFor(ctx, p, 0)
		cancel()
		if err == nil {
			s.Release(c, true)
		}
	}
}

// Stats describes one pool (SHOW POOLS, metrics).
type Stats struct {
	Key                   Key
	Clients, Waiting      int
	Active, Idle, Opening int
	MaxWait               time.Duration
}

// Stats returns every pool's state, sorted by key.
func (s *Set) Stats() []Stats {
	s.mu.Lock()
	now := time.Now()
	out := make([]Stats, 0, len(s.pools))
	for k, p := range s.pools {
		st := Stats{Key: k, Clients: p.clients, Waiting: len(p.waiters), Active: p.lent, Idle: len(p.idle)}
		st.Opening = p.total - p.lent - len(p.idle)
		if len(p.waiters) > 0 {
			st.MaxWait = now.Sub(p.waiters[0].since)
		}
		out = append(out, st)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Key, out[j].Key
		if a.Addr != b.Addr {
			return a.Addr < b.Addr
		}
		if a.Database != b.Database {
			return a.Database < b.Database
		}
		if a.User != b.User {
			return a.User < b.User
		}
		return !a.ReadOnly && b.ReadOnly
	})
	return out
}

// Server describes one open server connection (SHOW SERVERS).
type Server struct {
	Key     Key
	PID     uint32
	Active  bool // lent to a session
	Created time.Time
	IdleAt  time.Time // when it was last released (zero while lent)
}

// Servers lists every open server connection, sorted by key then PID.
func (s *Set) Servers() []Server {
	s.mu.Lock()
	var out []Server
	for k, p := range s.pools {
		for c := range p.out {
			out = append(out, Server{Key: k, PID: c.PID, Active: true, Created: c.created})
		}
		for _, c := range p.idle {
			out = append(out, Server{Key: k, PID: c.PID, Created: c.created, IdleAt: c.idleAt})
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key.String() < out[j].Key.String()
		}
		return out[i].PID < out[j].PID
	})
	return out
}
