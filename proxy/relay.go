package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

// PostgreSQL's per-message limits (PQ_SMALL_MESSAGE_LIMIT, PQ_LARGE_MESSAGE_LIMIT).
const (
	smallMessageLimit = 10000
	largeMessageLimit = 0x3fffffff
)

const (
	// smallBufSize is each direction's own buffer (PgBouncer's pkt_buf is
	// 4 KiB too): what an idle session holds.
	smallBufSize = 4 << 10
	// relayBufSize is the pooled buffer a direction borrows while data
	// streams (reads fill the small one): one read, one write.
	relayBufSize = 64 << 10
	// maxHeld bounds a statement held back for the read-only check; a larger
	// one on an enforced read-only session is refused (54000).
	maxHeld = 16 << 20
	// maxInspect bounds what lineage copies of one statement.
	maxInspect = 1 << 20
)

type msgMode uint8

const (
	modePass    msgMode = iota // forward bytes as they arrive
	modeInspect                // forward as they arrive and keep a copy of the body (up to maxInspect)
	modeHold                   // hold the whole message, then forward it or a replacement
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}

var smallPool = sync.Pool{New: func() any { return new([smallBufSize]byte) }}

// pump relays one direction. It parses message framing (type + length) from
// the byte stream without decoding payloads it does not need, and writes
// everything one read brought in with one write ("flush when the input
// buffer is drained"), so pipelines and large results stream with bounded
// memory. A pump is used by one goroutine only.
type pump struct {
	s        *session
	pol      policy // what to do with the messages it frames (policy.go)
	toServer bool
	src      io.Reader
	dst      io.Writer
	buf      []byte
	bufp     *[]byte
	count    *atomic.Int64
	pending  []byte // read ahead before the relay started
	// small is the direction's own 4 KiB read buffer. On the raw path it
	// goes back to smallPool whenever the pump parks with nothing kept, so
	// an idle session holds no read buffer at all.
	small *[smallBufSize]byte

	inMsg   bool
	typ     byte
	rem     int // body bytes still to come
	mode    msgMode
	scratch []byte // body copy (inspect) or whole message (hold)
	tooBig  bool
	inq     inqReader // recvmsg state of the raw path (runRaw)

	// On an event loop (evloop_linux.go): the socket read, the
	// incomplete header kept between reads (the loop's read buffer is
	// shared by its sessions), and what the loop knows of the socket
	// (edge-triggered: it may hold more, read it until EAGAIN or its end,
	// queued for a read).
	lfd     int
	hdr     [8]byte
	lkeep   int
	lready  bool
	ldrain  bool
	lqueued bool
}

// errRelayEnd wraps the reason a relay direction stopped.
type relayEnd struct {
	reason string
	err    error
	// serverReset: a write to the server found it reset (EPIPE,
	// ECONNRESET). The server usually said why first, and its FATAL may
	// still be in its socket: the relay reads that socket to its end
	// before it closes the session (session.readServerToEnd).
	serverReset bool
}

func (e *relayEnd) Error() string {
	if e.err != nil {
		return e.reason + ": " + e.err.Error()
	}
	return e.reason
}
func (e *relayEnd) Unwrap() error { return e.err }

func (p *pump) run() error {
	defer p.releaseBufs()
	p.takeSmall()
	keep := 0
	if len(p.pending) > 0 { // bytes the authentication phase read ahead
		p.acquireBuf()
		keep = copy(p.buf, p.pending)
		p.pending = nil
		k, err := p.process(p.buf[:keep])
		if err != nil {
			return err
		}
		keep = k
	}
	if r, ok := p.src.(*rawIO); ok {
		return p.runRaw(r, keep)
	}
	for {
		n, err := p.src.Read(p.buf[keep:])
		if n > 0 {
			k, werr := p.got(keep, n)
			if werr != nil {
				return werr
			}
			keep = k
		}
		if err != nil {
			return p.end(err, keep)
		}
	}
}

// runRaw is run's loop for a plain TCP source (rawio.go): the whole loop
// runs inside one RawConn.Read, so there is no RawConn.Read call (lock,
// poller reset) per read, and the poller's readiness flag survives from
// one read to the next.
//
// It parks on the poller when a read says EAGAIN, or, to save that read
// (a third of the relay's system calls per query), right after a read
// that emptied the socket at the point where the conversation's turn
// passes to the other side (parkEarly). The poller is edge-triggered: data,
// a FIN or an RST arriving after the read raises a new event. What arrived
// before the read and was not read is the danger: TCP_INQ says whether
// data or a FIN is still queued, but not an RST, and parkEarly only allows
// the early park where an RST that is left unseen must surface on its own
// (see there). Without TCP_INQ (old kernels) every park follows EAGAIN.
func (p *pump) runRaw(r *rawIO, keep int) error {
	var err error
	inq := false
	_ = r.rc.Control(func(fd uintptr) { inq = enableInq(fd) })
	fn := func(fd uintptr) bool {
		for {
			if p.small == nil {
				p.takeSmall()
			}
			var n, left int
			var e error
			if inq {
				n, left, e = p.inq.read(fd, p.buf[keep:])
			} else {
				n, e = rawRead(fd, p.buf[keep:])
				left = -1
			}
			switch {
			case e == syscall.EAGAIN:
				p.idle(keep)
				return false // drained: wait for readability
			case e != nil:
				err = e
				return true
			case n == 0:
				err = io.EOF
				return true
			}
			if keep, err = p.got(keep, n); err != nil {
				return true
			}
			if left == 0 && keep == 0 && p.parkEarly() {
				p.idle(keep)
				return false
			}
		}
	}
	if rerr := r.rc.Read(fn); rerr != nil && err == nil {
		err = rerr
	}
	if re, ok := err.(*relayEnd); ok {
		return re // ended while relaying (write failed, violation)
	}
	return p.end(err, keep)
}

// parkEarly reports whether, with the socket empty and no FIN queued, the
// pump may park without reading again for EAGAIN: only when an RST that came
// with the data just read (and so raises no event of its own) cannot leave
// anyone waiting.
//
//   - client → server, after a Query, Sync or FunctionCall forwarded as
//     received: the server owes a reply, and writing it to a reset client
//     fails and ends the session.
//   - server → client, after ReadyForQuery with no reply owed to the client
//     (every Query, Sync and FunctionCall answered): the client waits for
//     nothing, and its next message fails on the reset server socket. A
//     pipelining client that is still owed replies is not in this case: a
//     server that dies there must be seen at once, to send the client 08006.
//
// Anything else (in the middle of a result or of COPY data, messages that
// await a Sync, a statement the read-only guard held back) reads again.
func (p *pump) parkEarly() bool {
	if p.inMsg {
		return false
	}
	if p.toServer {
		switch p.typ {
		case 'Q', 'S', 'F':
			return p.mode != modeHold
		}
		return false
	}
	return p.typ == 'Z' && p.s.owed.Load() == 0
}

// got relays n bytes just read after keep bytes already in p.buf and
// returns how many bytes (an incomplete header) it kept for the next read.
func (p *pump) got(keep, n int) (int, error) {
	p.count.Add(int64(n))
	full := keep+n == len(p.buf)
	k, err := p.process(p.buf[:keep+n])
	if err != nil {
		return 0, err
	}
	keep = k
	// Adapt the buffer: a read that filled the small one means data is
	// streaming (a large result, COPY): use a large pooled buffer; once
	// reads are small again, give it back, so an idle session holds only
	// its small buffers.
	switch {
	case full && p.bufp == nil:
		p.acquireBuf()
		copy(p.buf, p.small[:keep])
	case !full && p.bufp != nil && n < smallBufSize:
		copy(p.small[:], p.buf[:keep])
		p.releaseBuf()
	}
	return keep, nil
}

// countOwed keeps session.owed, the replies (ReadyForQuery) the server
// owes the client, as each message completes. It is counted before the
// message is forwarded, so it is never lower than the truth; a message the
// proxy answers itself keeps it higher, which only costs parkEarly's
// saving, and a ReadyForQuery never takes it below 0.
func (p *pump) countOwed() {
	if p.toServer {
		switch p.typ {
		case 'Q', 'S', 'F':
			p.s.owed.Add(1)
		}
		return
	}
	if p.typ != 'Z' {
		return
	}
	for {
		v := p.s.owed.Load()
		if v <= 0 || p.s.owed.CompareAndSwap(v, v-1) {
			return
		}
	}
}

func (p *pump) acquireBuf() {
	p.bufp = bufPool.Get().(*[]byte)
	p.buf = *p.bufp
}

func (p *pump) releaseBuf() {
	if p.bufp != nil {
		bufPool.Put(p.bufp)
		p.bufp = nil
		p.buf = p.small[:]
	}
}

// takeSmall gives the pump its small buffer (and reads into it unless the
// large one is in use).
func (p *pump) takeSmall() {
	p.small = smallPool.Get().(*[smallBufSize]byte)
	if p.bufp == nil {
		p.buf = p.small[:]
	}
}

// idle is called before the raw path parks: with nothing kept for the next
// read and no large buffer in use, the small buffer goes back to the pool.
func (p *pump) idle(keep int) {
	if keep == 0 && p.bufp == nil && p.small != nil {
		smallPool.Put(p.small)
		p.small, p.buf = nil, nil
	}
}

// releaseBufs returns both buffers when the pump ends.
func (p *pump) releaseBufs() {
	if p.bufp != nil {
		bufPool.Put(p.bufp)
		p.bufp = nil
	}
	if p.small != nil {
		smallPool.Put(p.small)
		p.small = nil
	}
	p.buf = nil
}

func (p *pump) end(err error, keep int) error {
	side := "client_closed"
	if p.toServer {
		if t := p.s.terminating.Load(); t != nil {
			return &relayEnd{reason: "shutdown"}
		}
	} else {
		side = "server_closed"
		atBoundary := !p.inMsg && keep == 0
		if t := p.s.terminating.Load(); t != nil {
			if atBoundary {
				p.s.sendError(&pgerr.Error{Code: pgerr.AdminShutdown, Severity: "FATAL", Message: "terminating connection: " + *t})
			}
			return &relayEnd{reason: "shutdown"}
		}
		// The server went away on its own (crash, kill -9, network): tell
		// the client with a FATAL instead of a bare EOF, unless the server
		// already said why (its last message was an ErrorResponse) or the
		// client asked to terminate.
		if atBoundary && !p.s.closing.Load() && !p.s.clientTerminated.Load() && p.typ != 'E' {
			p.s.sendError(&pgerr.Error{Code: pgerr.ConnectionFailure, Severity: "FATAL",
				Message: "pgproxy: the server closed the connection unexpectedly"})
		}
	}
	if errors.Is(err, io.EOF) {
		return &relayEnd{reason: side}
	}
	return &relayEnd{reason: side, err: err}
}

// process frames data (which starts at a message boundary or inside the
// current message) and forwards it. It returns how many trailing bytes (an
// incomplete header) it moved to the front of p.buf for the next read.
func (p *pump) process(data []byte) (int, error) {
	start, i := 0, 0
	for i < len(data) {
		if !p.inMsg {
			if len(data)-i < 5 {
				if err := p.write(data[start:i]); err != nil {
					return 0, err
				}
				return copy(p.buf, data[i:]), nil
			}
			typ := data[i]
			n := int(binary.BigEndian.Uint32(data[i+1:]))
			if err := p.checkLength(typ, n); err != nil {
				return 0, err
			}
			p.typ, p.rem, p.inMsg, p.tooBig = typ, n-4, true, false
			p.mode = p.pol.mode(p.toServer, typ, n)
			switch p.mode {
			case modeHold:
				if err := p.write(data[start:i]); err != nil {
					return 0, err
				}
				p.scratch = append(p.scratch[:0], data[i:i+5]...)
				i += 5
				start = i
			case modeInspect:
				p.scratch = p.scratch[:0]
				i += 5
			default:
				i += 5
			}
		} else {
			k := min(p.rem, len(data)-i)
			switch p.mode {
			case modeInspect:
				if len(p.scratch)+k <= maxInspect {
					p.scratch = append(p.scratch, data[i:i+k]...)
				} else {
					p.tooBig = true
				}
			case modeHold:
				if len(p.scratch)+k <= maxHeld {
					p.scratch = append(p.scratch, data[i:i+k]...)
				} else {
					p.tooBig = true
				}
				start = i + k
			}
			i += k
			p.rem -= k
		}
		if p.inMsg && p.rem == 0 {
			p.inMsg = false
			p.countOwed()
			switch p.mode {
			case modeInspect:
				if err := p.pol.inspect(p.toServer, p.typ, p.scratch, p.tooBig); err != nil {
					if err := p.write(data[start:i]); err != nil {
						return 0, err
					}
					return 0, err
				}
			case modeHold:
				out, err := p.pol.decide(p.toServer, p.typ, p.scratch, p.tooBig)
				if err != nil {
					return 0, err
				}
				if err := p.write(out); err != nil {
					return 0, err
				}
			}
			if cap(p.scratch) > maxInspect {
				p.scratch = nil // do not keep a large buffer for the session's lifetime
			}
		}
	}
	return 0, p.write(data[start:])
}

func (p *pump) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := p.dst.Write(b); err != nil {
		return writeEnd(p.toServer, err)
	}
	return nil
}

// writeEnd is the end of a session whose write to the server (toServer) or
// the client failed: the peer went away, or something unexpected.
func writeEnd(toServer bool, err error) *relayEnd {
	side := "server_closed"
	if !toServer {
		side = "client_closed"
	}
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return &relayEnd{reason: side, serverReset: toServer}
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
		return &relayEnd{reason: side}
	}
	return &relayEnd{reason: side, err: err}
}

// checkLength applies PostgreSQL's own frontend message limits to what the
// client sends (so a hostile length is refused before anything is
// allocated) and a sanity check to what the server sends.
func (p *pump) checkLength(typ byte, n int) error {
	if n < 4 {
		return p.violation(fmt.Sprintf("invalid message length %d", n))
	}
	if !p.toServer {
		return nil
	}
	limit := smallMessageLimit
	switch typ {
	case 'Q', 'P', 'B', 'F', 'd':
		limit = largeMessageLimit
	case 'X', 'C', 'D', 'E', 'H', 'S', 'c', 'f', 'p':
	default:
		return p.violation(fmt.Sprintf("invalid frontend message type %d", typ))
	}
	if n-4 > limit {
		return p.violation(fmt.Sprintf("invalid message length %d for message type %q", n, typ))
	}
	return nil
}

func (p *pump) violation(msg string) error {
	if p.toServer {
		p.s.sendError(pgerr.New(pgerr.ProtocolViolation, "%s", msg))
	}
	return &relayEnd{reason: "protocol_violation", err: errors.New(msg)}
}

// relay runs both directions until one ends, closes both sides once, waits
// for the other, and returns the end reason. Plain TCP sessions are relayed
// by an event loop (evloop_linux.go); the rest (TLS on either side,
// enforced read-only sessions, loops off, other systems) by a goroutine per
// direction.
func (s *session) relay() string {
	// An enforced read-only session parses every statement it holds (up to
	// 16 MiB): on a loop that would stall every session the loop serves, so
	// these (rare) fallback sessions keep a goroutine per direction.
	guarded := s.readOnly && s.cfg.ReadOnlyCheck != nil
	if !s.cfg.NoRawIO && s.cfg.RelayLoops >= 0 && !guarded {
		if l := s.srv.pickLoop(s.id); l != nil {
			if reason, ok := s.relayLoop(l); ok {
				return reason
			}
		}
	}
	s.relayBy.Store(relayGoroutines)
	c2s := newPump(s, true, s.client, s.server, &s.bytesIn)
	s2c := newPump(s, false, s.server, s.client, &s.bytesOut)
	if !s.cfg.NoRawIO {
		useRaw(c2s, s.client, s.server)
		useRaw(s2c, s.server, s.client)
	}
	s2c.pending = s.serverPending
	s.serverPending = nil
	// The server→client direction gets its own goroutine; client→server runs
	// on the session's goroutine. Whichever ends first closes both sockets,
	// which ends the other; the session waits for both. Except when
	// client→server ends because the server reset: server→client reads on
	// to the server's end first (readServerToEnd).
	var first atomic.Pointer[relayEnd]
	note := func(err error) { first.CompareAndSwap(nil, asRelayEnd(err)) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		note(s2c.run())
		s.closeConns()
	}()
	err := c2s.run()
	note(err)
	if re, ok := err.(*relayEnd); ok && re.serverReset {
		s.readServerToEnd(done)
	}
	s.closeConns()
	<-done
	return s.endReason(first.Load())
}

// serverDrainTimeout bounds how long a session whose server reset waits
// for the rest of what the server sent (a reset socket gives it at once).
const serverDrainTimeout = time.Second

// readServerToEnd is what the goroutine relay does when its client→server
// direction finds the server reset (the loop: loopWriter.gone). The server
// usually sent its reason first (a FATAL), and it may still be unread in
// the server's socket; closing both sockets now would lose it, or deliver
// it only if server→client happened to be quicker. The client is no longer
// read (client→server has returned); the server→client goroutine reads on
// to the socket's end, then closes the session. A read deadline bounds the
// wait for the server's end (a terminate that comes meanwhile may be
// delayed by up to that long); a client that does not read keeps its
// session until it reads or goes away, as any stalled client does, and as
// on a loop (what the server sent before the reset is the client's).
func (s *session) readServerToEnd(done <-chan struct{}) {
	if s.terminating.Load() == nil {
		_ = s.server.SetReadDeadline(time.Now().Add(serverDrainTimeout))
	}
	<-done
}

func asRelayEnd(err error) *relayEnd {
	if re, ok := err.(*relayEnd); ok {
		return re
	}
	return &relayEnd{reason: "error", err: err}
}

// endReason logs an unexpected end and returns the reason.
func (s *session) endReason(re *relayEnd) string {
	if re.err != nil && re.reason != "client_closed" && re.reason != "server_closed" {
		s.log.Info("session error", zap.String("reason", re.reason), zap.Error(re.err))
	}
	return re.reason
}

// useRaw switches a pump to raw system calls on plain TCP sockets (rawio.go).
func useRaw(p *pump, src, dst net.Conn) {
	if r := newRawReader(src); r != nil {
		p.src = r
	}
	if w := newRawWriter(dst); w != nil {
		p.dst = w
	}
}

func newPump(s *session, toServer bool, src io.Reader, dst io.Writer, count *atomic.Int64) *pump {
	return &pump{s: s, pol: s.pumpPolicy(), toServer: toServer, src: src, dst: dst, count: count}
}
