package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
	"github.com/ofitec/pgproxy/internal/sqlscan"
	"github.com/ofitec/pgproxy/pool"
)

// The relay of a pooled session. Client→server runs on the session's
// goroutine as usual; server→client runs on a goroutine of its own for as
// long as the session holds a server (serveServer), one after the other.
//
// When the server goes back (transaction mode): the client→server pump
// counts, at each message's header, the ReadyForQuery the server will owe
// (Query, Sync, FunctionCall) and marks a batch open at any other message
// (Parse, Bind, Execute, Flush, ...) until the next Sync; the server→client
// pump counts each ReadyForQuery it relays. When a read it relayed ends with
// a ReadyForQuery 'I', nothing is owed, no batch is open and the client is
// not pinned, it gives the server back and stops: every byte the client
// sent for that server has been answered, so nothing can be in flight to or
// from it. The next client message that arrives acquires a server (perhaps
// another one), brings it to the client's settings and starts a new
// server→client goroutine. Both counts live under link.mu; each side checks
// them only at message boundaries.
//
// Named prepared statements (transaction mode): a client's Parse "S_1" is
// sent under a server-side name made from the statement's text and types
// (shared by clients that prepare the same statement); Bind, Describe and
// Close name it so. A server that lacks it when a Bind or Describe comes gets
// the Parse first, whose ParseComplete the proxy swallows; a Parse of a
// statement the server already has becomes a Close of a name that never
// exists, whose CloseComplete is turned into the ParseComplete the client
// waits for. A queue (link.fifo) pairs these answers with what asked for
// them; an ErrorResponse empties it up to the next Sync, as the server
// skips those messages.
//
// Session state that cannot move (sqlscan.SessionState: LISTEN, session
// advisory locks, temp tables, WITH HOLD cursors, plain SET of an untracked
// setting, ...) pins the client to its server for the rest of the session;
// the reset query then runs when it leaves. A plain SET of one setting to a
// constant is moved with the client instead (pooled_set.go).

// link is what a pooled session's two directions share.
type link struct {
	mu      sync.Mutex
	conn    *pool.Conn // the server the session holds; nil between transactions
	owed    int        // ReadyForQuery the server owes
	open    bool       // messages sent since the last Query/Sync/FunctionCall
	status  byte       // last ReadyForQuery status
	pinned  string     // why the client keeps its server ("" = not pinned)
	stop    bool       // the session ends: serveServer stops at the next boundary
	desired map[string]string
	fifo    []fifoEntry
	// s2cIdle (capacity 1) gets a token when the server→client relay has
	// let go of a server; the client→server side takes it before it
	// attaches the next one (waitRelayIdle, pooledState.relayIdle).
	s2cIdle chan struct{}
	s2cOK   bool // the last relay stopped at a message boundary (the server is reusable)
	errored bool // an ErrorResponse since the last ReadyForQuery

	// The client's unnamed statement (pooled_unnamed.go): what it is
	// after everything sent; uops counts the fifo entries that change it
	// and await their answer; uSpan is set when one of those is followed
	// by a Sync (a Bind may have to wait: clientPolicy.mayWait reads it
	// without the lock); uKick (capacity 1) is signalled when one is
	// answered.
	unnamed *unnamedStmt
	uops    int
	uSpan   atomic.Bool
	uKick   chan struct{}
}

type fifoEntry struct {
	kind byte // 'P' Parse, 'C' Close, 'Z' a Query, Sync or FunctionCall
	// swallow: the proxy's own Parse (its ParseComplete is not the
	// client's); asParse: a Close standing for a Parse the server already had.
	swallow, asParse bool
	name             string // server-side statement name of a Parse
	// sets: the plain SETs of the exchange this 'Z' ends (pooled_set.go).
	sets []Setting
	// uop: what the message does to the unnamed statement, and the state
	// before it (pooled_unnamed.go).
	uop   byte
	uprev unnamedState
}

// noSuchStatement is closed where the client's Close or a Parse the server
// already has must get a CloseComplete and nothing else.
const noSuchStatement = "pgproxy_no_such_statement"

// clientStmt is a named statement of a transaction-mode client.
type clientStmt struct {
	server string        // server-side name
	parse  []byte        // the Parse message under that name
	class  sqlscan.Class // per-transaction routing: what it does (pooled_route.go)
	// set: the statement is a plain SET that moves with the client
	// (pooled_set.go); each exchange that Binds it makes the setting the
	// client's again, as the exchange of its Parse did.
	set *Setting
}

// clientPolicy is the client→server policy of a pooled session.
type clientPolicy struct {
	s   *session
	ps  *pooledState
	trx bool // transaction mode
	w   *connWriter
	err error // acquiring failed: decide reports it

	stmts map[string]*clientStmt
	order []string // client names, oldest first (MaxPrepared)

	exch exchange // the statements sent since the last Query or Sync (pooled_set.go)
	// scsTouched: the client sent a statement naming
	// standard_conforming_strings (pin: backslashQuotes).
	scsTouched bool
	// untracked: messages whose answers the fifo does not track were sent
	// since its last entry (pooled_unnamed.go).
	untracked bool
}

// connWriter writes to the server the session holds (client→server only),
// with raw system calls on plain TCP (rawio.go). The writer is the
// session's; only the connection's RawConn (safe for concurrent use) is
// kept with the connection, in Conn.Aux.
type connWriter struct {
	c   *pool.Conn
	w   io.Writer
	raw *rawWriter // the session's, pointed at each server in turn
}

func (w *connWriter) set(c *pool.Conn) {
	w.c, w.w = c, nil
	if c == nil {
		return
	}
	rc := connRaw(c)
	if rc == nil {
		w.w = c.Net
		return
	}
	if w.raw == nil {
		w.raw = &rawWriter{}
		w.raw.fn = w.raw.writeAll
	}
	w.raw.rc = rc
	w.w = w.raw
}

func (w *connWriter) Write(b []byte) (int, error) {
	if w.w == nil {
		return 0, errors.New("no server")
	}
	return w.w.Write(b)
}

func (p *clientPolicy) mode(toServer bool, typ byte, n int) msgMode {
	if !toServer {
		return modePass
	}
	if typ == 'X' {
		return modeHold // Terminate stays with the proxy: the server is not the client's
	}
	l := &p.ps.link
	l.mu.Lock()
	if l.conn == nil {
		l.mu.Unlock()
		if m, held := p.holdForRoute(typ, n); held { // per-transaction routing (pooled_route.go)
			return m
		}
		if err := p.attach(p.nextKey()); err != nil {
			p.err = err
			return modeHold
		}
		l.mu.Lock()
	}
	p.countLocked(typ)
	l.mu.Unlock()
	return p.sentMode(typ)
}

// countLocked counts, under link.mu, what sending a message of type typ
// makes the server owe.
func (p *clientPolicy) countLocked(typ byte) {
	l := &p.ps.link
	switch typ {
	case 'Q', 'S', 'F':
		l.owed++
		l.open = false
		if p.trx {
			if typ == 'Q' {
				p.queryDropsUnnamedLocked()
			} else {
				l.fifo = append(l.fifo, fifoEntry{kind: 'Z'})
			}
			p.untracked = false
			if l.uops > 0 {
				l.uSpan.Store(true)
			}
		}
	case 'd', 'c', 'f': // COPY data belongs to the Query or batch that started it
	default:
		l.open = true
		if typ != 'P' && typ != 'C' { // rewrite queues those
			p.untracked = true
		}
	}
}

// sentMode is how a message of type typ, counted, is relayed.
func (p *clientPolicy) sentMode(typ byte) msgMode {
	if !p.trx {
		return modePass
	}
	switch typ {
	case 'S':
		p.endExchange()
	case 'F':
		p.exch.other = true
	}
	switch typ {
	case 'P', 'B', 'D', 'C':
		return modeHold
	case 'Q', 'F':
		return modeInspect
	}
	return modePass
}

// largeObjectFunctions are the built-in functions libpq's large-object
// interface calls with FunctionCall messages (lo_initialize looks them up
// by name; these are their OIDs in every PostgreSQL since 9.4). A large
// object descriptor lives for its transaction only, so they leave nothing
// for the session.
var largeObjectFunctions = map[uint32]bool{
	952: true, 953: true, 954: true, 955: true, 956: true, 957: true, 958: true, // lo_open, lo_close, loread, lowrite, lo_lseek, lo_creat, lo_tell
	964: true, 715: true, 1004: true, 3170: true, 3171: true, 3172: true, // lo_unlink, lo_create, lo_truncate, lo_lseek64, lo_tell64, lo_truncate64
}

// attach gets the session a server of key for its next transaction and
// starts relaying what it sends.
func (p *clientPolicy) attach(key pool.Key) error {
	c, err := p.acquire(key)
	if err != nil {
		return err
	}
	return p.attachConn(c)
}

// acquire waits until the last server's relay has let go of the client,
// then gets a server of key from the pool.
func (p *clientPolicy) acquire(key pool.Key) (*pool.Conn, error) {
	s := p.s
	s.waitRelayIdle()
	set := s.srv.poolSet()
	if c := set.TryAcquire(key); c != nil { // the usual case: no deadline, no timer
		if m := s.srv.metrics; m != nil {
			m.poolWait.Observe(0)
		}
		return c, nil
	}
	ctx, cancel := contextWithTimeout(s.cfg.Pool.MaxWait + time.Second /* the pool's own MaxWait timer answers first: 53300 */)
	c, waited, err := s.acquireServer(ctx, set, key)
	cancel()
	if m := s.srv.metrics; m != nil && err == nil {
		m.poolWait.Observe(waited.Seconds())
	}
	if err != nil {
		var ex *pool.ExhaustedError
		if errors.As(err, &ex) {
			return nil, &pgerr.Error{Code: pgerr.TooManyConnections, Severity: "FATAL", Message: "pgproxy: " + ex.Error()}
		}
		var coded pgerr.Coded
		if errors.As(err, &coded) {
			return nil, err
		}
		return nil, &pgerr.Error{Code: pgerr.ConnectionFailure, Severity: "FATAL", Message: "pgproxy: could not get a server connection", Err: err}
	}
	return c, nil
}

// attachConn makes c (acquired) the session's server for its next
// transaction, brought to the client's settings, and starts relaying it.
func (p *clientPolicy) attachConn(c *pool.Conn) error {
	s, ps := p.s, p.ps
	l := &ps.link
	if err := s.syncParams(c); err != nil {
		s.srv.poolSet().Release(c, false)
		return err
	}
	p.w.set(c)
	if r := ps.route; r != nil {
		r.learn.Store(r.nextLearn) // the last server's relay has ended (acquire)
	}
	l.mu.Lock()
	l.conn, l.owed, l.open, l.status, l.fifo = c, 0, false, 'I', l.fifo[:0]
	l.s2cOK = false
	l.uops = 0
	l.uSpan.Store(false)
	p.untracked = false
	l.mu.Unlock()
	s.relayServer(c)
	return nil
}

// waitRelayIdle returns once no server→client relay runs: at once when the
// client→server side already knows (it holds link.s2cIdle's token), else
// when the relay hands the token back.
func (s *session) waitRelayIdle() {
	ps := s.pooled
	if !ps.relayIdle {
		<-ps.link.s2cIdle
		ps.relayIdle = true
	}
}

func (p *clientPolicy) inspect(toServer bool, typ byte, body []byte, truncated bool) error {
	if typ == 'F' {
		// A FunctionCall names its function by OID, with no SQL to check:
		// any function but large-object access may leave session state
		// (set_config, pg_advisory_lock), so the client is pinned.
		if len(body) < 4 || !largeObjectFunctions[binary.BigEndian.Uint32(body)] {
			p.pinFor("function_call")
		}
		return nil
	}
	if typ == 'Q' {
		if truncated {
			// Too big to check (over maxInspect): it may hold anything.
			p.exch.other = true
			p.pinFor("unchecked")
		} else {
			p.pin(pgwire.CString(body))
		}
		if p.trx {
			p.endExchange()
		}
	}
	return nil
}

// pin pins the client to its server when sql leaves session state.
func (p *clientPolicy) pin(sql string) {
	f := p.s.cfg.SessionState
	if f == nil {
		return
	}
	if !p.scsTouched && sqlscan.ContainsFold(sql, "standard_conforming_strings") {
		// Its ParameterStatus comes back only after the server ran it, and
		// a statement sent meanwhile is checked now: from here on, assume
		// it may be off.
		p.scsTouched = true
	}
	reason := f(sql)
	if reason == "" && strings.IndexByte(sql, '\\') >= 0 && (p.scsTouched || p.backslashQuotes()) {
		// The parser reads strings as standard_conforming_strings = on.
		// With it off, a backslash can end a string where the parser sees
		// none, so a statement the server runs may be hidden from it.
		p.pinFor("set")
		return
	}
	if p.trx && p.movable(sql, reason) {
		return
	}
	if reason == "" {
		return
	}
	p.pinFor(reason)
}

// backslashQuotes: the client's strings are not standard conforming (its
// standard_conforming_strings, else its server's, is off).
func (p *clientPolicy) backslashQuotes() bool {
	l := &p.ps.link
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.desired["standard_conforming_strings"]
	if !ok && l.conn != nil {
		v = l.conn.Params["standard_conforming_strings"]
	}
	return strings.EqualFold(v, "off")
}

// foreignName: name, which the client did not prepare, is in the proxy's
// own namespace (pgproxy_…: the servers' statements, named by the proxy and
// shared by clients with the same text, max_prepared_statements > 0), and
// the client is not pinned. It must then reach no server as it is: it
// could be another client's statement. (A pinned client's server is its
// own; other names are the client's, and DISCARD ALL, the default
// reset_query, drops what a pinned client PREPAREd under them.)
func (p *clientPolicy) foreignName(name string) bool {
	if p.s.cfg.Pool.MaxPrepared == 0 || !strings.HasPrefix(name, "pgproxy_") {
		return false
	}
	l := &p.ps.link
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pinned == ""
}

// pinFor pins the client to its server (the first reason is kept).
func (p *clientPolicy) pinFor(reason string) {
	l := &p.ps.link
	l.mu.Lock()
	first := l.pinned == ""
	if first {
		l.pinned = reason
	}
	l.mu.Unlock()
	if first {
		p.s.logger().Debug("client pinned to its server", zap.String("reason", reason))
		if m := p.s.srv.metrics; m != nil {
			m.poolPins.WithLabelValues(reason).Inc()
		}
	}
}

func (p *clientPolicy) decide(toServer bool, typ byte, msg []byte, tooBig bool) ([]byte, error) {
	if typ == 'X' {
		p.s.clientTerminated.Store(true)
		return nil, &relayEnd{reason: "client_closed"}
	}
	if p.err != nil {
		err := p.err
		p.s.sendError(err)
		return nil, &relayEnd{reason: "pool_error", err: err}
	}
	if r := p.ps.route; r != nil && r.holding {
		return p.routeHeld(typ, msg) // pooled_route.go
	}
	if tooBig {
		return p.rewriteBig(typ, msg)
	}
	return p.rewrite(typ, msg)
}

// bigStmtName is a server-side name for a statement too big to keep: random,
// so that no other client can Bind it by guessing (the other names come
// from their statement's text, which a client that knows it may as well
// send itself).
func bigStmtName() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "pgproxy_big_" + hex.EncodeToString(b[:])
}

// rewriteBig is what the server gets for the start of a Parse or Bind
// larger than maxHeld (msg: its header and first bytes; the rest streams
// behind what is returned, relay.go's overflow).
//
//   - An unnamed Parse goes as it came: the client's unnamed statement is
//     then one only this server holds (pooled_unnamed.go).
//   - A named Parse goes under a name of its own (pgproxy_big_<random>), never
//     shared with another client (a name from its text, as for the others,
//     would need all of it) and not kept to prepare again: a Bind of it on
//     another server gets PostgreSQL's 26000, and a Close of it closes it.
//   - A Bind goes under its statement's server-side name.
func (p *clientPolicy) rewriteBig(typ byte, msg []byte) ([]byte, error) {
	p.exch.other = true
	if typ == 'P' {
		p.pinFor("unchecked") // its statement is too big to check
	}
	body := msg[5:]
	name, rest, ok := cutName(body)
	switch {
	case typ == 'P' && ok && name == "":
		if _, err := p.parseUnnamed(nil); err != nil {
			return nil, err
		}
		p.untracked = true
		return msg, nil
	case typ == 'P' && ok && p.s.cfg.Pool.MaxPrepared != 0: // 0: names are the client's, as they are
		st := &clientStmt{server: bigStmtName(), class: sqlscan.ClassWrite}
		p.remember(name, st)
		l := &p.ps.link
		l.mu.Lock()
		l.conn.Prepared[st.server] = struct{}{}
		l.fifo = append(l.fifo, fifoEntry{kind: 'P', name: st.server})
		p.untracked = false
		l.mu.Unlock()
		return renamed(nil, msg, nil, st.server, rest), nil
	case typ == 'B' && ok:
		portal := name
		name, rest, ok = cutName(rest)
		if !ok {
			break
		}
		defer func() { p.untracked = true }()
		if name == "" {
			out, err := p.useUnnamed() // pooled_unnamed.go
			if err != nil {
				return nil, err
			}
			return append(out, msg...), nil
		}
		st := p.stmts[name]
		if st == nil {
			return msg, nil // unknown: the server says so
		}
		out := p.ensurePrepared(st)
		return renamed(out, msg, append([]byte(portal), 0), st.server, rest), nil
	}
	p.untracked = true
	return msg, nil // no name in the first maxHeld bytes: the server says what is wrong
}

// cutName cuts the NUL-terminated name at the start of body; ok false
// when body holds no NUL.
func cutName(body []byte) (name string, rest []byte, ok bool) {
	i := bytes.IndexByte(body, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(body[:i]), body[i+1:], true
}

// renamed appends to out the start of a message too big to hold (msg:
// its header and the bytes held) under a new name: its type, its length
// changed by the difference, prefix (a Bind's portal and NUL), name, NUL,
// and rest (the bytes held after the old name). The rest of the message
// streams behind it.
func renamed(out, msg, prefix []byte, name string, rest []byte) []byte {
	held := len(prefix) + len(name) + 1 + len(rest)
	n := int(binary.BigEndian.Uint32(msg[1:5])) + held - (len(msg) - 5)
	out = append(out, msg[0])
	out = binary.BigEndian.AppendUint32(out, uint32(n))
	out = append(out, prefix...)
	out = append(append(out, name...), 0)
	return append(out, rest...)
}

// rewrite is what the server gets for a held Parse, Bind, Describe or
// Close of a transaction-mode client.
func (p *clientPolicy) rewrite(typ byte, msg []byte) ([]byte, error) {
	body := msg[5:]
	switch typ {
	case 'P':
		name, rest := pgwire.CutCString(body)
		sql, _ := pgwire.CutCString(rest)
		nsets := len(p.exch.sets)
		p.pin(sql)
		var set *Setting
		if len(p.exch.sets) > nsets { // a movable SET (pin → movable)
			st := p.exch.sets[len(p.exch.sets)-1]
			set = &st
		}
		if name == "" {
			out, err := p.parseUnnamed(msg) // pooled_unnamed.go
			if err != nil {
				return nil, err
			}
			return append(out, msg...), nil
		}
		if p.s.cfg.Pool.MaxPrepared == 0 {
			p.push(fifoEntry{kind: 'P'}) // max_prepared_statements 0: as it is
			return msg, nil
		}
		server := serverStmtName(rest)
		st := &clientStmt{server: server, parse: pgwire.AppendMessage(nil, 'P', append(append([]byte(server), 0), rest...)), set: set}
		if p.ps.route != nil {
			st.class = p.s.cfg.Routing.Classify(sql) // cached by its text
		}
		p.remember(name, st)
		l := &p.ps.link
		l.mu.Lock()
		_, has := l.conn.Prepared[server]
		if !has {
			l.conn.Prepared[server] = struct{}{}
			l.fifo = append(l.fifo, fifoEntry{kind: 'P', name: server})
		} else {
			l.fifo = append(l.fifo, fifoEntry{kind: 'C', asParse: true})
		}
		p.untracked = false
		l.mu.Unlock()
		if has {
			return closeMsg('S', noSuchStatement), nil
		}
		return st.parse, nil
	case 'B':
		portal, rest := pgwire.CutCString(body)
		name, rest := pgwire.CutCString(rest)
		if name != "" {
			if st := p.stmts[name]; st != nil && st.set != nil {
				// A prepared SET run again (pgx's statement cache, pgjdbc's
				// named statements): the setting is the client's once
				// more when this exchange succeeds (it may have been RESET
				// since the exchange that parsed it).
				p.exch.sets = append(p.exch.sets, *st.set)
			} else {
				p.exch.other = true // a statement prepared before: not one of this exchange's SETs
			}
		}
		defer func() { p.untracked = true }()
		if name == "" {
			out, err := p.useUnnamed() // pooled_unnamed.go
			if err != nil {
				return nil, err
			}
			return append(out, msg...), nil
		}
		st := p.stmts[name]
		if st == nil {
			if p.foreignName(name) {
				// Not the client's: under a name no server has, so that
				// the server answers 26000 instead of running another
				// client's statement that happens to have this name.
				nb := append(append([]byte(portal), 0), noSuchStatement...)
				return pgwire.AppendMessage(nil, 'B', append(append(nb, 0), rest...)), nil
			}
			return msg, nil // unknown: the server says so
		}
		out := p.ensurePrepared(st)
		nb := append(append([]byte(portal), 0), st.server...)
		nb = append(append(nb, 0), rest...)
		return pgwire.AppendMessage(out, 'B', nb), nil
	case 'D', 'C':
		if len(body) < 2 || body[0] != 'S' {
			if typ == 'C' {
				p.push(fifoEntry{kind: 'C'})
			}
			return msg, nil
		}
		name, _ := pgwire.CutCString(body[1:])
		st := p.stmts[name]
		if typ == 'C' {
			if name == "" {
				if err := p.closeUnnamed(); err != nil { // pooled_unnamed.go
					return nil, err
				}
				return msg, nil
			}
			p.push(fifoEntry{kind: 'C'})
			if st == nil {
				if p.foreignName(name) {
					return closeMsg('S', noSuchStatement), nil // not the client's: closes nothing (nor another client's)
				}
				return msg, nil
			}
			p.forget(name)
			if st.parse == nil { // too big to keep (rewriteBig): no other client has it
				l := &p.ps.link
				l.mu.Lock()
				delete(l.conn.Prepared, st.server)
				l.mu.Unlock()
				return closeMsg('S', st.server), nil
			}
			return closeMsg('S', noSuchStatement), nil // other clients may share it on the server
		}
		defer func() { p.untracked = true }()
		if name == "" {
			out, err := p.useUnnamed()
			if err != nil {
				return nil, err
			}
			return append(out, msg...), nil
		}
		if st == nil {
			if p.foreignName(name) {
				return pgwire.AppendMessage(nil, 'D', append(append([]byte{'S'}, noSuchStatement...), 0)), nil
			}
			return msg, nil
		}
		out := p.ensurePrepared(st)
		return pgwire.AppendMessage(out, 'D', append(append([]byte{'S'}, st.server...), 0)), nil
	}
	return msg, nil
}

// ensurePrepared returns the proxy's own Parse of st when the server lacks
// it (its ParseComplete is swallowed), else nothing.
func (p *clientPolicy) ensurePrepared(st *clientStmt) []byte {
	l := &p.ps.link
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, has := l.conn.Prepared[st.server]; has || st.parse == nil {
		return nil // on this server; or too big to keep (rewriteBig): PostgreSQL says 26000
	}
	l.conn.Prepared[st.server] = struct{}{}
	l.fifo = append(l.fifo, fifoEntry{kind: 'P', swallow: true, name: st.server})
	return append([]byte(nil), st.parse...)
}

func (p *clientPolicy) push(e fifoEntry) {
	l := &p.ps.link
	l.mu.Lock()
	l.fifo = append(l.fifo, e)
	p.untracked = false
	l.mu.Unlock()
}

func (p *clientPolicy) remember(name string, st *clientStmt) {
	if p.stmts == nil {
		p.stmts = make(map[string]*clientStmt)
	}
	if _, ok := p.stmts[name]; !ok {
		p.order = append(p.order, name)
	}
	p.stmts[name] = st
	for max := p.s.cfg.Pool.MaxPrepared; max > 0 && len(p.stmts) > max && len(p.order) > 0; {
		old := p.order[0]
		p.order = p.order[1:]
		delete(p.stmts, old)
	}
}

func (p *clientPolicy) forget(name string) {
	delete(p.stmts, name)
	if len(p.order) > 2*len(p.stmts)+16 { // compact the names closed meanwhile
		keep := p.order[:0]
		for _, n := range p.order {
			if _, ok := p.stmts[n]; ok {
				keep = append(keep, n)
			}
		}
		p.order = keep
	}
}

// serverStmtName names a statement on the servers by what defines it: the
// query text and the parameter types (the rest of its Parse message).
func serverStmtName(def []byte) string {
	h := sha256.Sum256(def)
	return "pgproxy_" + hex.EncodeToString(h[:12])
}

func closeMsg(kind byte, name string) []byte {
	return pgwire.AppendMessage(nil, 'C', append(append([]byte{kind}, name...), 0))
}

// serverPolicy is the server→client policy of a pooled session (ahead of
// the session's own policies, which see what it forwards).
type serverPolicy struct {
	s      *session
	ps     *pooledState
	c      *pool.Conn
	trx    bool
	action fifoEntry // the entry the current '1' or '3' answers
}

var parseComplete = []byte{'1', 0, 0, 0, 4}

func (p *serverPolicy) mode(toServer bool, typ byte, n int) msgMode {
	switch typ {
	case 'Z', 'S', 'E':
		return modeInspect
	case '1', '3':
		if !p.trx {
			return modePass
		}
		l := &p.ps.link
		l.mu.Lock()
		p.action = fifoEntry{}
		if len(l.fifo) > 0 && l.fifo[0].kind != 'Z' {
			p.action = l.fifo[0]
			l.fifo = l.fifo[1:]
			l.answeredUnnamedLocked(&p.action)
		}
		l.mu.Unlock()
		if p.action.swallow {
			return modeDrop // the answer to the proxy's own message: no policy after this one sees it
		}
		if p.action.asParse {
			return modeHold
		}
	}
	return modePass
}

func (p *serverPolicy) inspect(toServer bool, typ byte, body []byte, truncated bool) error {
	l := &p.ps.link
	l.mu.Lock()
	defer l.mu.Unlock()
	switch typ {
	case 'Z':
		if l.owed > 0 {
			l.owed--
		}
		if len(body) == 1 {
			l.status = body[0]
		}
		var sets []Setting
		for len(l.fifo) > 0 { // through the first marker
			e := l.fifo[0]
			l.fifo = l.fifo[1:]
			if e.kind == 'Z' {
				sets = e.sets
				break
			}
			l.answeredUnnamedLocked(&e)
		}
		if len(sets) > 0 && !l.errored {
			p.settled(sets)
		}
		l.errored = false
	case 'S':
		if k, v, ok := pgwire.ParseParameterStatus(body); ok {
			p.c.Params[k] = v
			if _, tracked := trackedName(k); tracked {
				l.desired[k] = v
			}
		}
	case 'E':
		l.errored = true
		// The server skips to the next Sync: what it skipped is not prepared.
		var first fifoEntry
		failed := false
		for i := 0; len(l.fifo) > 0 && l.fifo[0].kind != 'Z'; i++ {
			e := l.fifo[0]
			if e.kind == 'P' && e.name != "" {
				delete(p.c.Prepared, e.name)
			}
			if uopPending(e.uop) && first.uop == unnamedNone {
				// At the head, a Parse's entry is the error's own.
				first, failed = e, i == 0 && e.kind == 'P'
			}
			l.fifo = l.fifo[1:]
			l.answeredUnnamedLocked(&e)
		}
		if first.uop != unnamedNone {
			p.resolveUnnamedLocked(first, failed)
		}
	}
	return nil
}

func (p *serverPolicy) decide(toServer bool, typ byte, msg []byte, tooBig bool) ([]byte, error) {
	switch {
	case p.action.swallow:
		return nil, nil
	case p.action.asParse:
		return parseComplete, nil
	}
	return msg, nil
}

// The server→client relay runs on one goroutine per session (serverLoop)
// that serves the servers the session holds one after the other: a
// transaction in transaction mode costs a channel hand-off, not a new
// goroutine (whose stack would grow again each time). The goroutine ends
// when the session does or parks. next and s2cExit belong to the
// client→server side (relayServer, stopServerRelay).

// relayServer hands c to the session's server→client goroutine, starting
// it if none runs.
func (s *session) relayServer(c *pool.Conn) {
	ps := s.pooled
	ps.relayIdle = false // the relay puts link.s2cIdle's token back when it lets go of c
	if ps.next != nil && s.oneShotRelay() {
		<-ps.s2cExit // the last one returned after its only server
		ps.next = nil
	}
	if ps.next == nil {
		next, exit := make(chan *pool.Conn, 1), make(chan struct{})
		ps.next, ps.s2cExit = next, exit
		s.srv.workers.run(func() { s.serverLoop(next, exit) })
	}
	ps.next <- c
}

// stopServerRelay ends the server→client goroutine; no server is being
// relayed (waitRelayIdle).
func (s *session) stopServerRelay() {
	ps := s.pooled
	if ps.next == nil {
		return
	}
	close(ps.next)
	<-ps.s2cExit
	ps.next, ps.s2cExit = nil, nil
}

// serverRelay is what serverLoop keeps from one server to the next.
type serverRelay struct {
	sp   serverPolicy
	pol  policy
	p    pump
	ok   bool
	stop func() bool
}

func (s *session) serverLoop(next <-chan *pool.Conn, exit chan<- struct{}) {
	defer close(exit)
	ps := s.pooled
	l := &ps.link
	r := &serverRelay{sp: serverPolicy{s: s, ps: ps, trx: s.cfg.Pool.Transaction}}
	r.pol = &r.sp
	if base := s.pumpPolicy(); base != nil {
		r.pol = &chain{ps: []policy{&r.sp, base}, modes: make([]msgMode, 2)}
	}
	r.stop = func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.stop || (r.sp.trx && l.owed == 0 && !l.open && l.status == 'I' && l.pinned == "" && r.p.typ == 'Z') {
			if !l.stop && ps.parkable {
				s.armPark()
			}
			l.conn, r.ok = nil, true
			return true
		}
		return false
	}
	oneShot := s.oneShotRelay()
	for c := range next {
		s.serveServer(c, r)
		l.s2cIdle <- struct{}{}
		if oneShot {
			return
		}
	}
}

// oneShotRelay: a transaction-mode session that is never parked (TLS, a
// guarded session) gets a server→client goroutine per
// transaction, so that while idle it holds one goroutine, not two.
func (s *session) oneShotRelay() bool {
	return s.cfg.Pool.Transaction && !s.pooled.parkable
}

// serveServer relays c to the client until the session gives c back
// (link.stop, or a ReadyForQuery that ends its transaction in transaction
// mode) or c fails, which ends the session.
func (s *session) serveServer(c *pool.Conn, r *serverRelay) {
	ps := s.pooled
	l := &ps.link
	r.sp.c, r.sp.action, r.ok = c, fifoEntry{}, false
	r.p = pump{s: s, pol: r.pol, toServer: false, src: c.Net, dst: ps.clientW, count: &s.bytesOut, rawSrc: connRaw(c), stop: r.stop,
		large: s.mask != nil}
	if len(c.Pending) > 0 {
		r.p.pending, c.Pending = c.Pending, nil
	}
	err := r.p.run()
	ok := r.ok
	l.mu.Lock()
	l.s2cOK = ok
	if !ok {
		l.conn = nil
	}
	stopping := l.stop
	l.mu.Unlock()
	switch {
	case ok && !stopping:
		s.srv.poolSet().Release(c, s.afterTransaction(c)) // pooled_route.go
	case !ok:
		s.srv.poolSet().Release(c, false)
		if err != nil && !stopping {
			s.noteEnd(err)
			s.closeConns() // the server failed: the session ends (c2s sees its client closed)
		}
	}
}

// connRaw is c's RawConn (kept in c.Aux), nil when c is not plain TCP.
func connRaw(c *pool.Conn) syscall.RawConn {
	if rc, ok := c.Aux.(syscall.RawConn); ok {
		return rc
	}
	rc := rawConn(c.Net)
	if rc != nil {
		c.Aux = rc
	}
	return rc
}

// noteEnd records why a pooled session ended when the server side ended it.
func (s *session) noteEnd(err error) {
	re := asRelayEnd(err)
	s.pooledEnd.CompareAndSwap(nil, re)
}

// relayPooled relays a pooled session and, at its end, gives its server
// back clean or closes it. idle: the session is between transactions and
// has been idle for parkAfter; the caller parks it (park_linux.go) and a
// later call, on the goroutine that resumes it, relays on.
func (s *session) relayPooled() (reason string, idle bool) {
	ps := s.pooled
	var err error
	if ps.c2s == nil {
		ps.c2s = s.startPooledRelay()
		err = ps.c2s.run()
	} else {
		_ = s.client.SetReadDeadline(time.Time{}) // resumed: the idle deadline is spent
		if s.terminating.Load() != nil {
			err = &relayEnd{reason: "shutdown"} // woken to end (terminate)
		} else {
			err = ps.c2s.run()
		}
	}
	if err == errParked {
		s.waitRelayIdle() // the last transaction's relay has let go
		s.stopServerRelay()
		return "", true
	}
	var re *relayEnd
	if p := s.pooledEnd.Load(); p != nil {
		re = p
	} else {
		re = asRelayEnd(err)
	}
	s.giveBack()
	if t := s.terminating.Load(); t != nil && re.reason != "client_closed" {
		// Between messages (the server's relay stopped at a boundary, or
		// there is none): tell the client why, as a backend would.
		s.sendError(&pgerr.Error{Code: pgerr.AdminShutdown, Severity: "FATAL", Message: "terminating connection: " + *t})
		re = &relayEnd{reason: "shutdown"}
	}
	return s.endReason(re), false
}

// startPooledRelay builds the pooled session's client→server pump (kept
// for the session's life: a parked session resumes with it) and, in
// session mode, starts relaying its server.
func (s *session) startPooledRelay() *pump {
	ps := s.pooled
	l := &ps.link
	s.relayBy.Store(relayGoroutines)
	cp := &clientPolicy{s: s, ps: ps, trx: s.cfg.Pool.Transaction, w: &connWriter{}}
	// One writer to the client for the server→client relays, which run
	// one after the other.
	ps.clientW = s.client
	if w := newRawWriter(s.client); w != nil {
		ps.clientW = w
	}
	var pol policy = cp
	if base := s.pumpPolicy(); base != nil {
		pol = &chain{ps: []policy{base, cp}, modes: make([]msgMode, 2)}
	}
	c2s := &pump{s: s, pol: pol, toServer: true, src: s.client, dst: cp.w, count: &s.bytesIn, rawSrc: rawConn(s.client), flushEach: s.guarded()}
	c2s.pending, s.clientPending = s.clientPending, nil
	if c2s.flushEach && s.guard != nil {
		g := s.guard
		c2s.mayWait = func(byte) bool { return g.mayWait() }
	}
	if cp.trx { // a Bind may wait for answers (pooled_unnamed.go)
		always, guard := c2s.flushEach && c2s.mayWait == nil, c2s.mayWait
		c2s.flushEach = true
		c2s.mayWait = func(typ byte) bool {
			return always || cp.mayWait(typ) || guard != nil && guard(typ)
		}
	}
	// Parked when idle (park_linux.go): transaction mode, a plain TCP
	// client (TLS reads go through crypto/tls), not a guarded session
	// (read-only fallback or masked: its guard may wait inside a read).
	if cp.trx && c2s.rawSrc != nil && !s.guarded() {
		ps.parkable = true
		c2s.park = cp.parkNow
	}
	l.s2cIdle = make(chan struct{}, 1)
	l.uKick = make(chan struct{}, 1)
	if c := l.conn; c != nil { // session mode: the server is the session's
		cp.w.set(c)
		s.relayServer(c)
	} else {
		ps.relayIdle = true // no server yet: no relay runs
		if ps.parkable {
			s.armPark() // idle from the start
		}
	}
	return c2s
}

// parkAfter is how long a transaction-mode client waits between
// transactions before its goroutine is let go (park_linux.go).
const parkAfter = 250 * time.Millisecond

// errParked is what the client→server pump returns when it let go of an
// idle client.
var errParked = errors.New("parked")

// armPark sets the client's idle deadline: the client→server pump wakes
// then and parks the session if it is still between transactions. A
// terminate that lands between the check and the deadline is seen at most
// parkAfter later.
func (s *session) armPark() {
	if s.terminating.Load() == nil {
		_ = s.client.SetReadDeadline(time.Now().Add(parkAfter))
	}
}

// parkNow is the client→server pump's question at the idle deadline
// (atBoundary: nothing half read): is the session between transactions?
// The deadline is cleared first either way, so a terminate's deadline set
// before this call is seen by the caller's check of terminating after it.
func (p *clientPolicy) parkNow(atBoundary bool) bool {
	_ = p.s.client.SetReadDeadline(time.Time{})
	if !atBoundary || p.err != nil {
		return false
	}
	l := &p.ps.link
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn == nil && l.pinned == "" && !l.stop
}

// giveBack ends the session's hold on its server: the server→client relay
// stops at a message boundary; a server left with nothing owed is rolled
// back if in a transaction, reset if the session changed it (session mode,
// or pinned) and returned to the pool; any other is closed.
func (s *session) giveBack() {
	ps := s.pooled
	l := &ps.link
	l.mu.Lock()
	c := l.conn
	clean := l.owed == 0 && !l.open
	pinned := l.pinned != "" || !s.cfg.Pool.Transaction
	status := l.status
	l.stop = true
	l.mu.Unlock()
	if c != nil {
		_ = c.Net.SetReadDeadline(time.Now()) // serveServer looks at stop
	}
	s.waitRelayIdle() // the server→client relay, if one ran, has stopped
	s.stopServerRelay()
	l.mu.Lock()
	ok := l.s2cOK
	l.mu.Unlock()
	if c == nil || !ok {
		return // serveServer gave it back, or closed it
	}
	set := s.srv.poolSet()
	if !clean {
		set.Release(c, false)
		return
	}
	_ = c.Net.SetReadDeadline(time.Time{})
	if status != 'I' {
		if err := execSimple(c, "ROLLBACK", 5*time.Second); err != nil {
			set.Release(c, false)
			return
		}
	}
	if pinned && s.cfg.Pool.ResetQuery != "" {
		if err := execSimple(c, s.cfg.Pool.ResetQuery, 5*time.Second); err != nil {
			s.logger().Warn("reset query failed; closing the server connection", zap.String("backend", c.Key.Addr), zap.Error(err))
			set.Release(c, false)
			return
		}
		if q := strings.ToUpper(s.cfg.Pool.ResetQuery); strings.Contains(q, "DISCARD ALL") || strings.Contains(q, "DEALLOCATE") {
			clear(c.Prepared)
		}
		if q := strings.ToUpper(s.cfg.Pool.ResetQuery); strings.Contains(q, "DISCARD ALL") || strings.Contains(q, "RESET ALL") {
			clear(c.Applied)
		}
	} else if pinned {
		set.Release(c, false) // no reset query: nobody else may inherit this session's state
		return
	}
	set.Release(c, true)
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
