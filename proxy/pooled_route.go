package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
	"github.com/ofitec/pgproxy/internal/sqlscan"
	"github.com/ofitec/pgproxy/pool"
)

// Per-transaction routing (routing.unit: transaction) of a transaction-mode
// pooled session whose Target has a TxRouter.
//
// Between transactions the client holds no server. The messages that start
// its next transaction are held (holdForRoute, routeHeld) until the proxy
// can tell where they may run: a Query (its statements), or an
// extended-protocol batch up to its Sync (the statements its Parse and
// Bind messages name). A batch may run on a replica when sqlscan.Batch says
// it reads only and leaves no writable transaction open; a Flush, a
// FunctionCall, or more than maxRouteHold bytes decide for the primary.
// Nothing reaches a server before that decision, so a batch never starts
// on one server and ends on another; a transaction, once started, stays on
// its server to its end (a REPEATABLE READ snapshot cannot move).
//
// Read-your-writes (routing.consistency):
//
//   - session: when a server that ran a write transaction comes back at
//     ReadyForQuery 'I', the proxy asks it for pg_current_wal_insert_lsn()
//     before releasing it (afterTransaction) and raises the client's floor
//     to it. The insert position is at or after the end of the commit
//     record that transaction wrote, whatever synchronous_commit says
//     (pg_current_wal_lsn and the flush position may still be before it
//     with synchronous_commit off). pg_last_wal_replay_lsn() on a replica is
//     the end of the last record it replayed, so "caught up" is replay ≥
//     floor: on an idle primary the insert position is the commit record's
//     end exactly, and > would wait for a record that may never come. One
//     edge: an insert position at the start of a WAL page is reported past
//     the page header; the floor then drops to the page's start, the end
//     of the record that filled the page before it (walFloor).
//   - global: a read's floor is the primary's insert position fetched
//     after the read arrived; reads that arrive while a fetch is in flight
//     share the next one (walFetcher), so N concurrent reads cost at most
//     two primary round trips each and pgproxy instances share nothing.
//     (Sharing the fetch in flight would be wrong: it may have read the
//     position before a commit the reader saw acknowledged.)
//   - SET pgproxy.min_lsn raises the floor at any level.
//
// A replica is known to be at or past the floor from the health probes'
// replay position or from a check the proxy made itself (Server.replay,
// the highest position each replica was seen at). When none is known to
// be, the proxy takes a server on the replica seen furthest ahead and asks
// it, every 1 to 5 ms, until it reaches the floor or routing.consistency_wait
// passes; then the read runs on the primary (counted in
// pgproxy_consistency_fallbacks_total; the wait is observed in
// pgproxy_consistency_waits_seconds).

// TxRouter tells a session routed per transaction where its transactions
// may run. Implementations must be safe for concurrent use and must not
// block on I/O.
type TxRouter interface {
	// Primary returns the address of the current primary ("" = none).
	Primary() string
	// Replicas appends to dst the replicas a read may use now (up, within
	// the lag limits, not paused), best first, each with the replay
	// position the health probes last saw.
	Replicas(dst []Replica) []Replica
	// NoReplica is called when a read finds no replica it may use (none
	// in Replicas, or no server on the one chosen): nil lets the read run
	// on the primary (routing.fallback: primary); an error refuses it
	// (fallback: reject), with the SQLSTATE and message the client gets.
	NoReplica() error
}

// Replica is a replica a read may use.
type Replica struct {
	Addr      string
	ReplayLSN int64
}

// Consistency levels (routing.consistency).
const (
	ConsistencyEventual = "eventual"
	ConsistencySession  = "session"
	ConsistencyGlobal   = "global"
)

// TxRouting configures per-transaction routing.
type TxRouting struct {
	// Classify classifies statements (sqlscan.Classifier.Classify). Nil
	// disables per-transaction routing.
	Classify func(sql string) sqlscan.Class
	// Consistency is the default level of sessions whose Target names none.
	Consistency string
	// Wait is how long a read waits for a replica to reach its floor
	// before it runs on the primary.
	Wait time.Duration
}

// maxRouteHold bounds what a client may send before the proxy decides
// where its transaction runs; beyond it, the primary.
const maxRouteHold = 1 << 20

// txRoute is a session's per-transaction routing state. Everything but
// lastLSN, lost and learn belongs to the client→server goroutine.
type txRoute struct {
	router TxRouter
	level  string

	holding bool
	held    []byte // the messages held, whole
	batch   sqlscan.Batch
	names   map[string]sqlscan.Class // statements Parsed in the held batch
	proxy   bool                     // the held batch Parses a pgproxy.* statement
	unnamed sqlscan.Class            // the last unnamed Parse
	cands   []Replica

	minLSN int64 // SET pgproxy.min_lsn

	// Set by serveServer after a write transaction (afterTransaction).
	lastLSN atomic.Int64
	lost    atomic.Bool // the last write's position could not be learned
	learn   atomic.Bool // the server held now runs a write: learn its position at the end
	// nextLearn is learn for the server being attached: stored once the
	// last server's relay (which reads learn) has ended (attachConn).
	nextLearn bool
}

func newTxRoute(r TxRouter, level string) *txRoute {
	return &txRoute{router: r, level: level, names: make(map[string]sqlscan.Class)}
}

// nextKey is the pool key of a transaction that goes to the primary: the
// current primary's when routing per transaction, else the session's.
func (p *clientPolicy) nextKey() pool.Key {
	k := p.ps.key
	if r := p.ps.route; r != nil {
		if a := r.router.Primary(); a != "" {
			k.Addr, k.ReadOnly = a, false
		}
		r.nextLearn = r.level != ConsistencyEventual
		p.s.srv.metrics.routed("primary")
	}
	return k
}

// holdForRoute decides, at the header of a message that arrives while the
// client holds no server, whether to hold it until its batch is
// classified. held false: attach to the primary now (with what was held
// before it, which goes first).
func (p *clientPolicy) holdForRoute(typ byte, n int) (msgMode, bool) {
	r := p.ps.route
	if r == nil {
		return 0, false
	}
	switch typ {
	case 'Q', 'P', 'B', 'D', 'C', 'E', 'S', 'H':
		if len(r.held)+n+1 <= maxRouteHold {
			r.holding = true
			return modeHold, true
		}
	}
	if !r.holding {
		return 0, false
	}
	// Too much to hold, or a message only the primary can take
	// (FunctionCall): the primary gets what was held, then this message.
	out, err := p.replayHeld(p.nextKey(), nil)
	if err == nil {
		_, err = p.w.Write(out)
	}
	if err != nil {
		p.err = err
		return modeHold, true
	}
	return 0, false
}

// routeHeld holds msg (a copy) while the client holds no server and, at a
// message that ends what can be classified (Query, Sync, Flush), picks the
// server and returns every held message as that server must get it.
func (p *clientPolicy) routeHeld(typ byte, msg []byte) ([]byte, error) {
	r := p.ps.route
	r.held = append(r.held, msg...)
	classify := p.s.cfg.Routing.Classify
	body := msg[5:]
	switch typ {
	case 'Q':
		sql := pgwire.CString(body)
		cl := classify(sql)
		if cl == sqlscan.ClassProxy || cl == sqlscan.ClassProxyMixed {
			if len(r.held) == len(msg) {
				return nil, p.answerProxy(sql, cl)
			}
			cl = sqlscan.ClassWrite // after unsynced messages: the server answers
		}
		r.batch.Add(cl)
	case 'P':
		name, rest := pgwire.CutCString(body)
		sql, _ := pgwire.CutCString(rest)
		cl := classify(sql)
		if cl == sqlscan.ClassProxy || cl == sqlscan.ClassProxyMixed {
			r.proxy = true
		}
		if name == "" {
			r.unnamed = cl
		} else {
			r.names[name] = cl
		}
		r.batch.Add(cl)
	case 'B':
		_, rest := pgwire.CutCString(body)
		name, _ := pgwire.CutCString(rest)
		cl, ok := r.names[name]
		switch {
		case ok:
		case name == "":
			cl = r.unnamed
		case p.stmts[name] != nil:
			cl = p.stmts[name].class
		default:
			cl = sqlscan.ClassWrite // unknown: the server says so
		}
		r.batch.Add(cl)
	case 'S':
		if r.proxy {
			return nil, p.refuseProxyBatch()
		}
	case 'H':
		if !r.proxy {
			r.batch.Add(sqlscan.ClassWrite) // answers wanted before the batch is whole: it may still write
		}
	}
	if typ != 'Q' && typ != 'S' && (typ != 'H' || r.proxy) {
		return nil, nil
	}
	readOnly := r.batch.Len() > 0 && r.batch.ReadOnly()
	if !readOnly {
		return p.replayHeld(p.nextKey(), nil)
	}
	c, err := p.readServer()
	if rr, ok := err.(*readRefused); ok {
		return nil, p.refuseRead(rr.err)
	}
	if err != nil {
		p.resetHeld()
		p.s.sendError(err)
		return nil, &relayEnd{reason: "pool_error", err: err}
	}
	r.nextLearn = false
	if c == nil { // a read on the primary
		return p.replayHeld(p.nextPrimaryKey(), nil)
	}
	return p.replayHeld(pool.Key{}, c)
}

// replayHeld attaches the session to c (or a server of key) and returns
// the held messages as they go to it, counted as mode and decide count
// messages that arrive with a server.
func (p *clientPolicy) replayHeld(key pool.Key, c *pool.Conn) ([]byte, error) {
	r := p.ps.route
	var err error
	if c != nil {
		err = p.attachConn(c)
	} else {
		err = p.attach(key)
	}
	if err != nil {
		p.resetHeld()
		p.s.sendError(err)
		return nil, &relayEnd{reason: "pool_error", err: err}
	}
	held := r.held
	var out []byte
	l := &p.ps.link
	for len(held) >= 5 {
		n := 1 + int(uint32(held[1])<<24|uint32(held[2])<<16|uint32(held[3])<<8|uint32(held[4]))
		m, typ := held[:n], held[0]
		held = held[n:]
		l.mu.Lock()
		p.countLocked(typ)
		l.mu.Unlock()
		switch p.sentMode(typ) {
		case modeHold:
			b, err := p.rewrite(typ, m)
			if err != nil {
				p.resetHeld()
				return nil, err
			}
			out = append(out, b...)
		case modeInspect:
			out = append(out, m...)
			_ = p.inspect(true, typ, m[5:], false)
		default:
			out = append(out, m...)
		}
	}
	p.resetHeld()
	return out, nil
}

func (p *clientPolicy) resetHeld() {
	r := p.ps.route
	r.holding, r.proxy, r.batch = false, false, sqlscan.Batch{}
	if cap(r.held) > 64<<10 {
		r.held = nil
	} else {
		r.held = r.held[:0]
	}
	clear(r.names)
}

// floor is the LSN a read must see: the client's own writes (session,
// global), the primary's position now (global) and pgproxy.min_lsn. ok is
// false when it cannot be known (the read then runs on the primary).
func (p *clientPolicy) floor() (floor int64, ok bool) {
	r := p.ps.route
	floor = r.minLSN
	if r.level == ConsistencyEventual {
		return floor, true
	}
	if r.lost.Load() {
		return 0, false
	}
	floor = max(floor, r.lastLSN.Load())
	if r.level == ConsistencyGlobal {
		lsn, err := p.s.srv.walPosition(p.nextPrimaryKey())
		if err != nil {
			p.s.logger().Warn("could not read the primary's WAL position for a global read; it runs on the primary", zap.Error(err))
			return 0, false
		}
		floor = max(floor, lsn)
	}
	return floor, true
}

func (p *clientPolicy) nextPrimaryKey() pool.Key {
	k := p.ps.key
	if a := p.ps.route.router.Primary(); a != "" {
		k.Addr, k.ReadOnly = a, false
	}
	return k
}

// readServer returns a server on a replica at or past the client's floor,
// or nil when the read runs on the primary.
func (p *clientPolicy) readServer() (*pool.Conn, error) {
	r, s := p.ps.route, p.s
	s.waitRelayIdle() // the last transaction's position is learned
	cands := r.router.Replicas(r.cands[:0])
	r.cands = cands
	if len(cands) == 0 {
		return p.noReplica(nil)
	}
	floor, ok := p.floor()
	if !ok {
		s.srv.metrics.consistencyFallback()
		s.srv.metrics.routed("primary_fallback")
		return nil, nil
	}
	key := p.ps.key
	key.ReadOnly = false
	if floor > 0 {
		for i := range cands {
			cands[i].ReplayLSN = max(cands[i].ReplayLSN, s.srv.replay.get(cands[i].Addr))
		}
		best := -1
		for i := range cands {
			if cands[i].ReplayLSN >= floor {
				best = i
				break
			}
		}
		if best < 0 {
			return p.waitReplica(floor, cands)
		}
		cands[0] = cands[best]
	}
	key.Addr = cands[0].Addr
	c, err := p.acquire(key)
	if err != nil {
		return p.noReplica(fmt.Errorf("no server on replica %s: %w", key.Addr, err))
	}
	s.srv.metrics.routed("replica")
	return c, nil
}

// readRefused is readServer's answer to a read routing.fallback: reject
// keeps off the primary: the client gets err (an ERROR, 57P03) for its
// batch and the session goes on.
type readRefused struct{ err error }

func (e *readRefused) Error() string { return e.err.Error() }
func (e *readRefused) Unwrap() error { return e.err }

// noReplica decides a read no replica can take (none fits; or failed, no
// server on the chosen one): the primary (nil, nil) or, with
// routing.fallback: reject, a *readRefused. A failed server is refused
// with its own error (e.g. 53300), otherwise the router says why no
// replica fits.
func (p *clientPolicy) noReplica(failed error) (*pool.Conn, error) {
	s := p.s
	err := p.ps.route.router.NoReplica()
	if err == nil {
		if failed != nil {
			s.logger().Debug("the read runs on the primary", zap.Error(failed))
		}
		s.srv.metrics.routed("primary_no_replica")
		return nil, nil
	}
	if failed != nil {
		err = failed
	}
	s.srv.metrics.routed("rejected")
	return nil, &readRefused{err: err}
}

// refuseRead answers the held batch with err instead of running it: an
// ErrorResponse (its SQLSTATE, 57P03 when it has none) and ReadyForQuery
// 'I', as PostgreSQL answers a batch whose first message failed.
func (p *clientPolicy) refuseRead(err error) error {
	p.resetHeld()
	p.s.waitRelayIdle()
	resp := pgerr.Response(err, pgerr.CannotConnectNow, err.Error())
	resp.Severity, resp.SeverityUnlocalized = "ERROR", "ERROR"
	out, encErr := resp.Encode(nil)
	if encErr != nil {
		return encErr
	}
	out = pgwire.AppendMessage(out, 'Z', []byte{'I'})
	return p.toClient(out)
}

// waitReplica takes a server on the replica seen furthest ahead and asks
// it for its replay position until it reaches floor or the wait passes.
func (p *clientPolicy) waitReplica(floor int64, cands []Replica) (*pool.Conn, error) {
	s := p.s
	start := time.Now()
	slices.SortStableFunc(cands, func(a, b Replica) int {
		switch {
		case a.ReplayLSN > b.ReplayLSN:
			return -1
		case a.ReplayLSN < b.ReplayLSN:
			return 1
		}
		return 0
	})
	key := p.ps.key
	key.Addr, key.ReadOnly = cands[0].Addr, false
	c, err := p.acquire(key)
	if err != nil {
		return p.noReplica(fmt.Errorf("no server on replica %s: %w", key.Addr, err))
	}
	wait := s.cfg.Routing.Wait
	step := time.Millisecond
	for {
		lsn, err := replayPosition(c, s.cfg.ConnectTimeout)
		if err != nil {
			s.logger().Debug("replay position check failed; the read runs on the primary", zap.String("backend", key.Addr), zap.Error(err))
			s.srv.poolSet().Release(c, false)
			break
		}
		s.srv.replay.note(key.Addr, lsn)
		if lsn >= floor {
			s.srv.metrics.consistencyWait(time.Since(start))
			s.srv.metrics.routed("replica")
			return c, nil
		}
		left := wait - time.Since(start)
		if left <= 0 {
			s.srv.poolSet().Release(c, true)
			break
		}
		time.Sleep(min(step, left))
		step = min(2*step, 5*time.Millisecond)
	}
	s.srv.metrics.consistencyWait(time.Since(start))
	s.srv.metrics.consistencyFallback()
	s.srv.metrics.routed("primary_fallback")
	return nil, nil
}

// afterTransaction runs on the server→client goroutine when c comes back
// at a ReadyForQuery 'I' of a transaction-mode client routed per
// transaction: after a write (at consistency session or global) it reads
// c's WAL insert position and makes it the client's floor. It reports
// whether c may go back to the pool.
func (s *session) afterTransaction(c *pool.Conn) bool {
	r := s.pooled.route
	if r == nil || !r.learn.Load() {
		return true
	}
	lsn, err := walInsertPosition(c, s.cfg.ConnectTimeout)
	if err != nil {
		r.lost.Store(true)
		s.logger().Warn("could not read the WAL position after a write; this client's reads run on the primary until its next write", zap.String("backend", c.Key.Addr), zap.Error(err))
		return false
	}
	for {
		old := r.lastLSN.Load()
		if lsn <= old || r.lastLSN.CompareAndSwap(old, lsn) {
			break
		}
	}
	r.lost.Store(false)
	return true
}

// walInsertPosition reads the primary's WAL insert position on c as a
// floor (walFloor).
func walInsertPosition(c *pool.Conn, timeout time.Duration) (int64, error) {
	v, err := queryPrepared(c, "pgproxy_wal_insert_lsn", "SELECT pg_catalog.pg_current_wal_insert_lsn()", timeout)
	if err != nil {
		return 0, err
	}
	lsn, err := ParseLSN(v)
	if err != nil {
		return 0, err
	}
	return walFloor(lsn), nil
}

// replayPosition reads a replica's pg_last_wal_replay_lsn() on c; a
// server that is not in recovery (promoted) is an error.
func replayPosition(c *pool.Conn, timeout time.Duration) (int64, error) {
	v, err := queryPrepared(c, "pgproxy_wal_replay_lsn", "SELECT pg_catalog.pg_last_wal_replay_lsn()", timeout)
	if err != nil {
		return 0, err
	}
	if v == "" {
		return 0, errors.New("not a replica (no replay position)")
	}
	return ParseLSN(v)
}

// xlogPageSize and shortPageHeader are PostgreSQL's XLOG_BLCKSZ and
// SizeOfXLogShortPHD (the defaults; a server built with another page size
// only costs reads that land exactly on a page start a fallback).
const (
	xlogPageSize    = 8192
	shortPageHeader = 24
)

// walFloor maps an insert position to the end of the last record before
// it. PostgreSQL reports an insert position at a page boundary past the
// page header (XLogBytePosToRecPtr), while a replica reports the end of the
// record that filled the page before it, the boundary itself
// (XLogBytePosToEndRecPtr). No record ends 24 bytes into a page (the header
// takes them), so that offset can only mean the boundary. A segment's
// first page has a longer header (40 bytes), where a record may also end
// on other pages: left as it is (a read then falls back until the next
// record).
func walFloor(lsn int64) int64 {
	if lsn%xlogPageSize == shortPageHeader {
		return lsn - shortPageHeader
	}
	return lsn
}

// ParseLSN parses PostgreSQL's text form of a pg_lsn ("16/B374D848").
func ParseLSN(s string) (int64, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("invalid LSN %q: want hex/hex such as 0/16B3748", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil || h >= 1<<31 {
		return 0, fmt.Errorf("invalid LSN %q: want hex/hex such as 0/16B3748", s)
	}
	return int64(h<<32 | l), nil
}

// FormatLSN is PostgreSQL's text form of a pg_lsn.
func FormatLSN(lsn int64) string {
	return fmt.Sprintf("%X/%X", uint64(lsn)>>32, uint32(lsn))
}

// replayCache is the highest replay position the proxy has seen each
// replica at (its own checks); health probes add theirs per read. A
// drained backend (down, role change) is forgotten.
type replayCache struct {
	m sync.Map // addr → *atomic.Int64
}

func (c *replayCache) get(addr string) int64 {
	if v, ok := c.m.Load(addr); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

func (c *replayCache) note(addr string, lsn int64) {
	v, ok := c.m.Load(addr)
	if !ok {
		v, _ = c.m.LoadOrStore(addr, new(atomic.Int64))
	}
	a := v.(*atomic.Int64)
	for {
		old := a.Load()
		if lsn <= old || a.CompareAndSwap(old, lsn) {
			return
		}
	}
}

func (c *replayCache) forget(addr string) { c.m.Delete(addr) }

// walFetcher reads the primary's WAL position for global reads: a read
// joins the next fetch that starts after it arrived; while one fetch is in
// flight, every read that arrives waits for it to end and shares the one
// after it.
type walFetcher struct {
	mu       sync.Mutex
	inflight *walFetch // started, not yet done
	pending  *walFetch // the next one: collecting reads
}

type walFetch struct {
	done chan struct{}
	prev *walFetch
	lsn  int64
	err  error
}

// position returns a WAL position read on the primary after the call
// began; fetch reads it.
func (f *walFetcher) position(fetch func() (int64, error)) (int64, error) {
	f.mu.Lock()
	r := f.pending
	leader := r == nil
	if leader {
		r = &walFetch{done: make(chan struct{}), prev: f.inflight}
		f.pending = r
	}
	f.mu.Unlock()
	if !leader {
		<-r.done
		return r.lsn, r.err
	}
	if r.prev != nil {
		<-r.prev.done
	}
	f.mu.Lock()
	f.pending, f.inflight = nil, r // reads from now on join the next fetch
	f.mu.Unlock()
	r.lsn, r.err = fetch()
	r.prev = nil
	close(r.done)
	return r.lsn, r.err
}

// walPosition is the primary's WAL insert position now, as a floor, read
// on a server of key's pool (one fetch for the reads that arrive meanwhile).
func (srv *Server) walPosition(key pool.Key) (int64, error) {
	cfg := srv.cfg.Load()
	return srv.wal.position(func() (int64, error) {
		set := srv.poolSet()
		c := set.TryAcquire(key) // an idle one, the usual case: no deadline, no timer
		if c == nil {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Pool.MaxWait+time.Second)
			var err error
			c, _, err = set.Acquire(ctx, key)
			cancel()
			if err != nil {
				return 0, err
			}
		}
		lsn, err := walInsertPosition(c, cfg.ConnectTimeout)
		set.Release(c, err == nil)
		return lsn, err
	})
}

// answerProxy answers a Query of pgproxy.* statements itself: SHOW
// pgproxy.last_lsn (the client's floor), pgproxy.min_lsn,
// pgproxy.consistency; SET/RESET pgproxy.min_lsn and pgproxy.consistency.
func (p *clientPolicy) answerProxy(sql string, cl sqlscan.Class) error {
	r := p.ps.route
	p.resetHeld()
	p.s.waitRelayIdle() // the last server's relay is done writing to the client, and the last position is learned
	// A simple Query drops the unnamed statement (exec_simple_query): one
	// the proxy answers too (pooled_unnamed.go).
	l := &p.ps.link
	l.mu.Lock()
	l.unnamed = nil
	l.mu.Unlock()
	var out []byte
	fail := func(code, msg string) {
		out = pgerr.Encode(out, "ERROR", code, msg)
	}
	st, ok := sqlscan.ParseProxyStatement(sql)
	switch {
	case cl == sqlscan.ClassProxyMixed || !ok:
		fail(pgerr.FeatureNotSupported, "pgproxy: a SHOW or SET of a pgproxy.* setting must be the only statement of its query")
	case st.Show:
		var v string
		switch st.Name {
		case "pgproxy.last_lsn":
			floor := max(r.minLSN, r.lastLSN.Load())
			v = FormatLSN(floor)
		case "pgproxy.min_lsn":
			v = FormatLSN(r.minLSN)
		case "pgproxy.consistency":
			v = r.level
		default:
			fail(pgerr.UndefinedObject, fmt.Sprintf("unrecognized configuration parameter %q", st.Name))
		}
		if len(out) == 0 {
			out = appendShow(out, st.Name, v)
		}
	default:
		switch st.Name {
		case "pgproxy.min_lsn":
			if st.Reset {
				r.minLSN = 0
				break
			}
			lsn, err := ParseLSN(st.Value)
			if err != nil {
				fail(pgerr.InvalidParameterValue, fmt.Sprintf("invalid value for parameter \"pgproxy.min_lsn\": %q (want an LSN such as 0/16B3748, from SHOW pgproxy.last_lsn)", st.Value))
				break
			}
			r.minLSN = lsn
		case "pgproxy.consistency":
			v := strings.ToLower(st.Value)
			if st.Reset {
				v = p.s.cfg.Routing.Consistency
			}
			switch v {
			case ConsistencyEventual, ConsistencySession, ConsistencyGlobal:
				r.level = v
			default:
				fail(pgerr.InvalidParameterValue, fmt.Sprintf("invalid value for parameter \"pgproxy.consistency\": %q (want eventual, session or global)", st.Value))
			}
		case "pgproxy.last_lsn":
			fail(pgerr.CantChangeRuntimeParam, "parameter \"pgproxy.last_lsn\" cannot be changed (SET pgproxy.min_lsn raises the floor)")
		default:
			fail(pgerr.UndefinedObject, fmt.Sprintf("unrecognized configuration parameter %q", st.Name))
		}
		if len(out) == 0 {
			out = pgwire.AppendMessage(out, 'C', []byte("SET\x00"))
		}
	}
	out = pgwire.AppendMessage(out, 'Z', []byte{'I'})
	return p.toClient(out)
}

// refuseProxyBatch answers an extended-protocol batch that Parses a
// pgproxy.* statement, at its Sync: the proxy answers those only in the
// simple query protocol.
func (p *clientPolicy) refuseProxyBatch() error {
	p.resetHeld()
	p.s.waitRelayIdle()
	out := pgerr.Encode(nil, "ERROR", pgerr.FeatureNotSupported,
		"pgproxy: SHOW and SET of pgproxy.* settings are answered in the simple query protocol only")
	out = pgwire.AppendMessage(out, 'Z', []byte{'I'})
	return p.toClient(out)
}

func (p *clientPolicy) toClient(b []byte) error {
	if _, err := p.ps.clientW.Write(b); err != nil {
		return writeEnd(false, err)
	}
	p.s.bytesOut.Add(int64(len(b)))
	return nil
}

// appendShow appends what SHOW name answers: one text column, one row.
func appendShow(dst []byte, name, value string) []byte {
	rd := make([]byte, 0, 32+len(name))
	rd = append(rd, 0, 1)
	rd = append(append(rd, name...), 0)
	rd = append(rd, 0, 0, 0, 0, 0, 0) // table oid, column number
	rd = append(rd, 0, 0, 0, 25)      // text
	rd = append(rd, 0xff, 0xff)       // typlen -1
	rd = append(rd, 0xff, 0xff, 0xff, 0xff, 0, 0)
	dst = pgwire.AppendMessage(dst, 'T', rd)
	dr := []byte{0, 1, byte(len(value) >> 24), byte(len(value) >> 16), byte(len(value) >> 8), byte(len(value))}
	dst = pgwire.AppendMessage(dst, 'D', append(dr, value...))
	return pgwire.AppendMessage(dst, 'C', []byte("SHOW\x00"))
}
