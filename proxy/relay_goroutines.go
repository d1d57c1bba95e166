package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// The goroutine relay: a goroutine per direction, for sessions an event loop
// does not take (TLS on either side, enforced read-only sessions, loops off,
// other systems). Each direction reads into its own 4 KiB buffer (a pooled
// 64 KiB one while data streams). On plain TCP sockets it reads and writes
// with raw non-blocking system calls under syscall.RawConn (rawio.go) and
// gives the small buffer back to its pool whenever it parks with nothing
// half-read.

func (p *pump) run() error {
	defer p.releaseBufs()
	p.takeSmall()
	keep := 0
	if len(p.pending) > 0 { // bytes the authentication phase read ahead
		// The large buffer only when they do not fit in the small one:
		// taken here, it would stay with a client that sent its first
		// query with its password and then went idle (64 KiB per idle
		// session, until its next read).
		if len(p.pending) > smallBufSize {
			p.acquireBuf()
		}
		keep = copy(p.buf, p.pending)
		p.pending = nil
		k, err := p.process(p.buf[:keep])
		if err != nil {
			return err
		}
		keep = k
	}
	if p.rawSrc != nil {
		return p.runRaw(keep)
	}
	for {
		if p.stopped(keep, nil) {
			return nil
		}
		n, err := p.src.Read(p.buf[keep:])
		if n > 0 {
			k, werr := p.got(keep, n)
			if werr != nil {
				return werr
			}
			keep = k
		}
		if err != nil {
			if p.stopped(keep, err) {
				return nil
			}
			return p.end(err, keep)
		}
	}
}

// stopped reports whether a pump with a stop (a pooled session's server
// side, pooled_relay.go) is to let go of its source now: at a message
// boundary, after a read or after the read deadline that asks it to look
// (err); any other error is not a stop.
func (p *pump) stopped(keep int, err error) bool {
	if p.stop == nil || keep != 0 || p.inMsg {
		return false
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	return p.stop()
}

// runRaw is run's loop for a plain TCP source (rawio.go): the whole loop
// runs inside one RawConn.Read, so there is no RawConn.Read call (lock,
// poller reset) per read, and the poller's readiness flag survives from
// one read to the next. It reads until EAGAIN, then parks on the poller
// (edge-triggered: what arrives after that read raises a new event), so
// data, a FIN or an RST that came with the last read is never left unseen.
func (p *pump) runRaw(keep int) error {
	var err error
	stopped := false
	fn := func(fd uintptr) bool {
		for {
			if p.small == nil {
				p.takeSmall()
			}
			if p.large && p.bufp == nil {
				p.acquireBuf()
				copy(p.buf, p.small[:keep])
			}
			n, e := rawRead(fd, p.buf[keep:])
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
			if p.stopped(keep, nil) {
				stopped = true
				return true
			}
		}
	}
	if p.stopped(keep, nil) {
		return nil
	}
	var rerr error
	for {
		rerr = p.rawSrc.Read(fn)
		if stopped || rerr != nil && err == nil && p.stopped(keep, rerr) {
			return nil
		}
		if p.park == nil || err != nil || !errors.Is(rerr, os.ErrDeadlineExceeded) || p.s.terminating.Load() != nil {
			break
		}
		// The idle deadline of a pooled client, not a terminate.
		if p.park(keep == 0 && !p.inMsg) {
			return errParked
		}
		if p.s.terminating.Load() != nil {
			break // terminate's deadline came meanwhile: end as it asks
		}
	}
	if rerr != nil && err == nil {
		err = rerr
	}
	if re, ok := err.(*relayEnd); ok {
		return re // ended while relaying (write failed, violation)
	}
	return p.end(err, keep)
}

// relay runs both directions until one ends, closes both sides once, waits
// for the other, and returns the end reason. Plain TCP sessions are relayed
// by an event loop (evloop_linux.go); the rest (TLS on either side,
// enforced read-only sessions, loops off, other systems) by a goroutine per
// direction. Pooled sessions have their own relay (pooled_relay.go), which
// reports idle when the session is to be parked (park_linux.go).
func (s *session) relay() (reason string, idle bool) {
	if s.pooled != nil {
		return s.relayPooled()
	}
	// An enforced read-only session parses every statement it holds (up to
	// 16 MiB), and its client→server direction waits for the server's answer
	// to a refusal (policy_readonly.go): on a loop that would stall every
	// session the loop serves, so these (rare) fallback sessions keep a
	// goroutine per direction.
	guarded := s.guarded() // masked sessions too: their catalog lookups block
	if s.cfg.RelayLoops >= 0 && !guarded {
		if l := s.srv.pickLoop(s.id); l != nil {
			if reason, ok := s.relayLoop(l); ok {
				return reason, false
			}
		}
	}
	s.relayBy.Store(relayGoroutines)
	c2s := newPump(s, true, s.client, s.server, &s.bytesIn)
	s2c := newPump(s, false, s.server, s.client, &s.bytesOut)
	useRaw(c2s, s.client, s.server)
	useRaw(s2c, s.server, s.client)
	s2c.pending = s.serverPending
	s.serverPending = nil
	c2s.pending = s.clientPending
	s.clientPending = nil
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
	return s.endReason(first.Load()), false
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

// useRaw switches a pump to raw system calls on plain TCP sockets (rawio.go).
func useRaw(p *pump, src, dst net.Conn) {
	p.rawSrc = rawConn(src)
	if w := newRawWriter(dst); w != nil {
		p.dst = w
	}
}
