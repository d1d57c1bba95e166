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
	modeDrop                   // forward nothing of the message (the read-only guard's discard to Sync)
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}

var smallPool = sync.Pool{New: func() any { return new([smallBufSize]byte) }}

// pump relays one direction. It parses message framing (type + length) from
// the byte stream without decoding payloads it does not need, and writes
// everything one read brought in with one write ("flush when the input
// buffer is drained"), so pipelines, COPY and huge DataRows stream with
// bounded memory and no allocation per message. Unprompted server messages
// (NotificationResponse, NoticeResponse, ParameterStatus) are forwarded as
// they come, whatever the client is doing. A pump is used by one goroutine
// only (a loop's, or its direction's in the goroutine relay).
//
// Order: each session's messages keep their order. Two sessions' messages
// keep the order in which they reached pgproxy only on one loop, whose
// epoll reports its sockets in the order they became readable. Loops and
// relay goroutines are each woken by Go's netpoller, which hands the
// goroutines one poll found ready to the scheduler last-first, so two
// sessions' messages that reach pgproxy within one wake-up may reach their
// clients in either order (TestRelayOrderAcrossSessions). PostgreSQL does
// not order them either: a pg_terminate_backend result and its victim's
// FATAL come either way, directly too (TestTerminateDuringCopy).
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
	// rawSrc is src's socket when it is plain TCP: the goroutine relay
	// reads it with raw system calls (runRaw, rawio.go).
	rawSrc syscall.RawConn
	// small is the direction's own 4 KiB read buffer. On the raw path it
	// goes back to smallPool whenever the pump parks with nothing kept, so
	// an idle session holds no read buffer at all.
	small *[smallBufSize]byte

	inMsg   bool
	typ     byte
	rem     int // body bytes still to come
	mode    msgMode
	scratch []byte // body copy (inspect) or whole message (hold)
	out     []byte // what one read forwards when it held messages (flush)
	// flushEach writes what precedes each message before asking the
	// policy about it: the read-only guard's client→server mode may wait
	// for the server. Never server→client, where no policy waits: held
	// messages (a masked session's DataRows) are written once per read.
	flushEach bool
	// mayWait, when set, says whether the policy's mode or decide may wait
	// now, at a message of type typ (the guard's readOnlyGuard.mayWait, a
	// pooled client's clientPolicy.mayWait): flushEach flushes only then, so a
	// batch the guard will not wait in goes out in one write.
	mayWait func(typ byte) bool
	// stop, when set, is asked at message boundaries whether to let go of
	// the source (a pooled session's server side): run then returns nil.
	stop func() bool
	// park, when set, is asked when the source's read deadline passes
	// (a pooled client's idle deadline, park_linux.go) whether to let go
	// of it: run then returns errParked.
	park   func(atBoundary bool) bool
	tooBig bool
	// large: on the raw path, read into the pooled large buffer from a
	// wake-up's first read, and give it back only when the pump parks (a
	// masked session's results, whose DataRows are all held and copied:
	// a 7 KiB result is then one read and one write, not a full 4 KiB
	// read, a write, the rest, another write). Idle, it holds nothing.
	large bool

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
	case !full && p.bufp != nil && n < smallBufSize && !(p.large && p.rawSrc != nil):
		copy(p.small[:], p.buf[:keep])
		p.releaseBuf()
	}
	return keep, nil
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
	if p.large && p.bufp != nil && keep <= smallBufSize && p.small != nil {
		copy(p.small[:], p.buf[:keep])
		p.releaseBuf()
	}
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
				if err := p.flush(data[start:i]); err != nil {
					return 0, err
				}
				return copy(p.buf, data[i:]), nil
			}
			typ := data[i]
			n := int(binary.BigEndian.Uint32(data[i+1:]))
			if err := p.checkLength(typ, n); err != nil {
				return 0, err
			}
			if p.flushEach && (i > start || len(p.out) > 0) && (p.mayWait == nil || p.mayWait(typ)) {
				// The read-only guard may wait in mode for the answer to
				// what came before: that must be on its way first.
				if err := p.flush(data[start:i]); err != nil {
					return 0, err
				}
				start = i
			}
			p.typ, p.rem, p.inMsg, p.tooBig = typ, n-4, true, false
			p.mode = p.pol.mode(p.toServer, typ, n)
			switch p.mode {
			case modeHold, modeDrop:
				p.out = append(p.out, data[start:i]...)
				if p.mode == modeHold {
					p.scratch = append(p.scratch[:0], data[i:i+5]...)
				}
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
					start = i + k
					break
				}
				// Too big to hold: the policy decides on what is held
				// (maxHeld bytes), and the rest of the message streams
				// behind what it returns, or is dropped (overflow).
				take := maxHeld - len(p.scratch)
				p.scratch = append(p.scratch, data[i:i+take]...)
				p.tooBig = true
				mode, err := p.overflow(p.rem - take)
				if err != nil {
					return 0, err
				}
				p.mode = mode
				p.scratch = nil
				if mode == modePass {
					start = i + take
				} else {
					start = i + k
				}
			case modeDrop:
				start = i + k
			}
			i += k
			p.rem -= k
		}
		if p.inMsg && p.rem == 0 {
			p.inMsg = false
			switch p.mode {
			case modeInspect:
				if err := p.pol.inspect(p.toServer, p.typ, p.scratch, p.tooBig); err != nil {
					if err := p.flush(data[start:i]); err != nil {
						return 0, err
					}
					return 0, err
				}
			case modeHold:
				out, err := p.pol.decide(p.toServer, p.typ, p.scratch, p.tooBig)
				if err != nil {
					_ = p.flush(nil) // what came before the message still goes
					return 0, err
				}
				p.out = append(p.out, out...)
			}
			if cap(p.scratch) > maxInspect {
				p.scratch = nil // do not keep a large buffer for the session's lifetime
			}
		}
	}
	return 0, p.flush(data[start:])
}

// overflow decides on a held message that grew past maxHeld, with rest of
// its bytes still to come: the policy's answer goes out, and the rest
// streams (modePass) when the answer's last message is a header and start
// that wants exactly rest more bytes (the message itself, or a rewritten
// start of it: a pooled Bind under its server-side name), else it is
// dropped (modeDrop: a refusal, whose answer is whole messages).
func (p *pump) overflow(rest int) (msgMode, error) {
	out, err := p.pol.decide(p.toServer, p.typ, p.scratch, true)
	if err != nil {
		_ = p.flush(nil) // what came before the message still goes
		return 0, err
	}
	p.out = append(p.out, out...)
	b := out
	for len(b) >= 5 {
		n := 1 + int(binary.BigEndian.Uint32(b[1:5]))
		if n < 5 {
			break
		}
		if n > len(b) {
			if n-len(b) == rest {
				return modePass, nil
			}
			break
		}
		b = b[n:]
	}
	if len(b) != 0 {
		return 0, &relayEnd{reason: "internal_error", err: fmt.Errorf("pgproxy: a policy's answer to a message too big to hold does not frame (type %q)", p.typ)}
	}
	return modeDrop, nil
}

// flush writes what the held messages of one read left in p.out, then
// rest: a read with held messages still costs one write. Without held
// messages rest is written as it is, uncopied.
func (p *pump) flush(rest []byte) error {
	if len(p.out) == 0 {
		return p.write(rest)
	}
	p.out = append(p.out, rest...)
	err := p.write(p.out)
	if cap(p.out) > maxInspect {
		p.out = nil // do not keep a large buffer for the session's lifetime
	} else {
		p.out = p.out[:0]
	}
	return err
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

func asRelayEnd(err error) *relayEnd {
	if re, ok := err.(*relayEnd); ok {
		return re
	}
	return &relayEnd{reason: "error", err: err}
}

// endReason logs an unexpected end and returns the reason.
func (s *session) endReason(re *relayEnd) string {
	if re.err != nil && re.reason != "client_closed" && re.reason != "server_closed" {
		s.logger().Info("session error", zap.String("reason", re.reason), zap.Error(re.err))
	}
	return re.reason
}

func newPump(s *session, toServer bool, src io.Reader, dst io.Writer, count *atomic.Int64) *pump {
	p := &pump{s: s, pol: s.pumpPolicy(), toServer: toServer, src: src, dst: dst, count: count, flushEach: toServer && s.guarded(),
		large: !toServer && s.mask != nil}
	if p.flushEach && s.guard != nil {
		g := s.guard
		p.mayWait = func(byte) bool { return g.mayWait() }
	}
	return p
}
