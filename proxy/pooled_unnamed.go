package proxy

import (
	"sync/atomic"
)

// The unnamed prepared statement of a transaction-mode client.
//
// PostgreSQL keeps one unnamed statement per backend, across transactions:
// a Parse of "" replaces it (and drops it first, so a Parse that fails
// leaves none), a simple Query drops it (exec_simple_query), a Close of
// statement "" closes it; a message skipped after an error (up to the next
// Sync) changes nothing. A client that Parses it, lets its server go back
// at ReadyForQuery 'I' and Binds it in a later batch may land on another
// server, which has none or, worse, another client's. So the proxy keeps,
// per client, the last unnamed Parse it sent (link.unnamed), under a tag
// unique to that Parse, and per server the tag of the unnamed statement it
// holds (pool.Conn.Unnamed). At a Bind or Describe of "":
//
//   - the server holds the client's statement (same tag): as it is;
//   - the client has one and the server does not: the proxy sends the
//     client's Parse first and swallows its ParseComplete;
//   - the client has none: the proxy sends a Close of "" first (its
//     CloseComplete swallowed), so the server answers the Bind as
//     PostgreSQL would: 26000 "unnamed prepared statement does not exist".
//
// Either way a server never runs one client's unnamed statement for
// another.
//
// What the proxy knows is what the client sent, before the server answers;
// an ErrorResponse then says some of it did not run (serverPolicy.inspect,
// resolveUnnamed). Each fifo entry that changes the unnamed statement (uop)
// keeps the state before it (uprev). At an ErrorResponse the first such
// entry not yet answered either failed (a Parse whose entry heads the
// queue: everything before it was answered, so the error is its own; no
// statement is left) or was skipped with everything after it up to the
// Sync (the state before it stands). That a Parse heading the queue failed
// itself holds because the proxy puts a Close of a name that never exists
// (a sentinel, whose CloseComplete it swallows) right before any unnamed
// Parse that follows messages the queue does not track (Bind, Execute,
// Describe, Flush) in the same batch: an error in those leaves the sentinel
// unanswered, at the head. Within a batch a Bind runs only if what came
// before it did, so deciding on what the client sent is right. A Bind in a
// later batch while an earlier batch's changes are unanswered (a client
// that pipelines across Syncs) waits for their answers first
// (waitUnnamed): the client→server pump flushes what came before it
// (mayWait), so the answers come.

// unnamedStmt is one unnamed Parse of a client.
type unnamedStmt struct {
	tag   uint64
	parse []byte // the client's Parse message; nil when too big to keep (it cannot be re-sent)
}

// unnamedState is what the client and the server hold as the unnamed
// statement.
type unnamedState struct {
	client *unnamedStmt
	server uint64
}

// unnamedTags numbers unnamed Parses over the process (0 is none).
var unnamedTags atomic.Uint64

// Kinds of fifoEntry.uop.
const (
	uopParse    = 'P' // the client's Parse of ""
	uopReparse  = 'R' // the proxy's Parse of the client's statement
	uopClose    = 'C' // the client's Close of statement ""
	uopForget   = 'X' // the proxy's Close of "" (the client has none)
	uopQuery    = 'Q' // a simple Query (on its 'Z' entry): drops it
	unnamedNone = 0
)

// pending: an entry whose answer may still undo or change what it did.
func uopPending(op byte) bool { return op != unnamedNone && op != uopQuery }

// pushUnnamedLocked queues e, which changes the unnamed statement, with
// the state before it (under link.mu).
func (p *clientPolicy) pushUnnamedLocked(e fifoEntry) {
	l := &p.ps.link
	e.uprev = unnamedState{client: l.unnamed, server: l.conn.Unnamed}
	l.fifo = append(l.fifo, e)
	if uopPending(e.uop) {
		l.uops++
	}
	p.untracked = false
}

// sentinelLocked returns the sentinel Close that goes before an unnamed
// Parse following untracked messages of its batch, queued; nil when none
// is needed.
func (p *clientPolicy) sentinelLocked() []byte {
	if !p.untracked {
		return nil
	}
	l := &p.ps.link
	l.fifo = append(l.fifo, fifoEntry{kind: 'C', swallow: true})
	p.untracked = false
	return closeMsg('S', noSuchStatement)
}

// parseUnnamed records the client's Parse of "" (msg, whole; nil when too
// big to keep) and returns what must go before it.
func (p *clientPolicy) parseUnnamed(msg []byte) ([]byte, error) {
	l := &p.ps.link
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil, &relayEnd{reason: "server_closed"}
	}
	var out []byte
	if msg != nil {
		out = p.sentinelLocked()
	}
	st := &unnamedStmt{tag: unnamedTags.Add(1)}
	if msg != nil {
		st.parse = append([]byte(nil), msg...)
	}
	p.pushUnnamedLocked(fifoEntry{kind: 'P', uop: uopParse})
	l.unnamed, l.conn.Unnamed = st, st.tag
	return out, nil
}

// closeUnnamed records the client's Close of statement "".
func (p *clientPolicy) closeUnnamed() error {
	l := &p.ps.link
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return &relayEnd{reason: "server_closed"}
	}
	p.pushUnnamedLocked(fifoEntry{kind: 'C', uop: uopClose})
	l.unnamed, l.conn.Unnamed = nil, unnamedNone
	return nil
}

// queryDropsUnnamedLocked: a simple Query is sent (its 'Z' entry is e).
func (p *clientPolicy) queryDropsUnnamedLocked() {
	l := &p.ps.link
	p.pushUnnamedLocked(fifoEntry{kind: 'Z', uop: uopQuery})
	l.unnamed, l.conn.Unnamed = nil, unnamedNone
}

// useUnnamed returns what must go before a Bind or Describe of "" so that
// the server runs the client's own unnamed statement, or has none.
func (p *clientPolicy) useUnnamed() ([]byte, error) {
	l := &p.ps.link
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := p.waitUnnamedLocked(); err != nil {
		return nil, err
	}
	st := l.unnamed
	if st != nil && l.conn.Unnamed == st.tag {
		return nil, nil
	}
	if st != nil && st.parse != nil {
		out := p.sentinelLocked()
		p.pushUnnamedLocked(fifoEntry{kind: 'P', swallow: true, uop: uopReparse})
		l.conn.Unnamed = st.tag
		return append(out, st.parse...), nil
	}
	// None (or one too big to re-send): the server must have none either.
	p.pushUnnamedLocked(fifoEntry{kind: 'C', swallow: true, uop: uopForget})
	l.conn.Unnamed = unnamedNone
	return closeMsg('S', ""), nil
}

// waitUnnamedLocked returns once no change to the unnamed statement sent
// in an earlier batch than the current one awaits its answer (under
// link.mu, released while it waits).
func (p *clientPolicy) waitUnnamedLocked() error {
	l := &p.ps.link
	for {
		if l.conn == nil {
			return &relayEnd{reason: "server_closed"}
		}
		if l.uops == 0 || !unnamedBeforeSync(l.fifo) {
			return nil
		}
		l.mu.Unlock()
		select {
		case <-l.uKick:
			l.mu.Lock()
		case <-l.s2cIdle: // the server's relay ended (the server failed)
			p.ps.relayIdle = true
			l.mu.Lock()
			return &relayEnd{reason: "server_closed"}
		}
	}
}

// unnamedBeforeSync: fifo has an unanswered change to the unnamed
// statement followed by the end of its batch.
func unnamedBeforeSync(fifo []fifoEntry) bool {
	seen := false
	for i := range fifo {
		switch {
		case uopPending(fifo[i].uop):
			seen = true
		case fifo[i].kind == 'Z' && seen:
			return true
		}
	}
	return false
}

// mayWait (the client→server pump's, at each message header): a Bind or
// Describe may wait in useUnnamed, so what came before it must be sent
// first.
func (p *clientPolicy) mayWait(typ byte) bool {
	return (typ == 'B' || typ == 'D') && p.ps.link.uSpan.Load()
}

// answeredUnnamedLocked: the server answered e (popped from the fifo).
func (l *link) answeredUnnamedLocked(e *fifoEntry) {
	if !uopPending(e.uop) {
		return
	}
	l.uops--
	if l.uops == 0 {
		l.uSpan.Store(false)
	}
	select {
	case l.uKick <- struct{}{}:
	default:
	}
}

// resolveUnnamedLocked: an ErrorResponse came while first (the first
// pending change to the unnamed statement before the next Sync) was
// unanswered; failed says the error is first's own (a Parse heading the
// queue). The state is the one before first, or none after a failed Parse;
// the changes queued after the Sync start from it.
func (p *serverPolicy) resolveUnnamedLocked(first fifoEntry, failed bool) {
	l := &p.ps.link
	st := first.uprev
	if failed {
		st.server = unnamedNone
		if first.uop == uopParse {
			st.client = nil
		}
	}
	serverSet, clientSet := false, false
	for i := range l.fifo {
		e := &l.fifo[i]
		if e.uop == unnamedNone {
			continue
		}
		if !serverSet {
			e.uprev, serverSet = st, true
		} else {
			e.uprev.client = st.client
		}
		if e.uop == uopParse || e.uop == uopClose || e.uop == uopQuery {
			clientSet = true
			break
		}
	}
	if !serverSet {
		p.c.Unnamed = st.server
	}
	if !clientSet {
		l.unnamed = st.client
	}
}
