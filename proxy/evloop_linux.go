package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// An event loop relays many sessions on one goroutine, the way PgBouncer's
// single C loop does: one wake-up serves every session that became ready
// meanwhile, instead of one goroutine wake-up (netpoll → runqueue → switch)
// per socket event. On a machine whose cores are busy with PostgreSQL and
// its clients that per-wake-up cost is most of what a Go relay spends over
// a C one (docs/benchmarks.md).
//
// The loop's epoll instance is itself registered with Go's poller (an
// epoll descriptor is readable while it has ready events), so the loop
// goroutine parks and wakes like any other: no thread blocks outside the
// scheduler, GC and preemption work as usual. A wake-up takes the ready
// events with non-blocking epoll_pwait calls, relays, and parks again once
// one finds nothing.
//
// Sockets are registered edge-triggered, once, for reading and writing:
// an event says something changed, and the loop keeps its own account of
// what is left (pump.lready: the socket may hold more; pump.ldrain: a short
// read does not mean it is empty, read until EAGAIN or the end). A read
// that does not fill the buffer took all the socket had (TCP), so the next
// data brings a new event; a full read queues the direction for one more
// read after this batch (one read per direction per pass keeps a bulk
// transfer from starving the other sessions). Two cases break the short
// read rule and set ldrain: a FIN, RST or error reported with the data
// (EPOLLRDHUP, EPOLLHUP, EPOLLERR; one that comes later brings its own
// event), and urgent data (EPOLLPRI: a read stops short at the urgent
// mark). Why not level-triggered: each epoll_pwait would poll again every
// socket the previous one reported, a blocked direction would need an
// epoll_ctl to stop and resume its reads, and a reset reported while a
// direction is blocked would be reported again and again, ending the
// session before what the socket still held is delivered.
//
// Ownership: a session hands its two sockets to a loop (relayLoop) and
// waits for the result. The loop owns the descriptors from then on (the
// session dup'ed them and closed its net.Conns, so Go's poller no longer
// watches them) until it has removed them from its epoll set and reported
// the end; the session goroutine then flushes what the client has not taken
// yet and closes them. A client that goes away ends the session at the
// first write to it that fails, as in the goroutine relay; a panic ends
// only the session being relayed (recoverPanic). Requests from other
// goroutines (a new session, terminate) are posted under a mutex and
// signalled through an eventfd; the loop's tables are touched by the loop
// goroutine only.
//
// A server that resets while the loop is writing to it (its socket says
// EPIPE or ECONNRESET) usually said why first: its FATAL is in the
// socket. The writer then drops what is written to the server, the
// client is no longer read, and the server's socket is read to its end,
// so the client gets the server's last messages (loopWriter.gone).

const loopEvents = 128

type evLoop struct {
	log  *zap.Logger
	epfd int
	efd  int      // eventfd: posted requests
	file *os.File // epfd, registered with Go's poller
	rc   syscall.RawConn

	mu        sync.Mutex
	posted    []loopReq
	stop      bool
	stopped   bool // the loop goroutine has returned: nothing posted will run
	closeOnce sync.Once

	// owned by the loop goroutine
	byFd   []*loopRelay // by descriptor
	serial int32        // registrations, to tell a stale event from a new owner of the same fd
	events [loopEvents]unix.EpollEvent
	buf    []byte // the read buffer all sessions share: a read is processed before the next
	more   []loopPull
	next   []loopPull // more's spare backing
	done   chan struct{}
}

// loopPull is a direction that may hold more than its last read took (it
// filled the buffer, or the socket is read to its end): it is read again
// after the current batch of events.
type loopPull struct {
	lr *loopRelay
	p  *pump
}

type loopReq struct {
	lr        *loopRelay
	terminate bool
}

// loopRelay is one session's relay on a loop.
type loopRelay struct {
	loop     *evLoop
	s        *session
	c2s, s2c *pump
	cfd, sfd int
	cw, sw   *loopWriter // to the client, to the server
	serial   int32
	added    bool
	finished bool
	result   chan *relayEnd // buffered: the loop never waits for the session
}

// loopWriter writes to a socket without blocking the loop: what the socket
// does not take is kept in out, and the loop stops reading the source of
// that direction until out is flushed (backpressure; one read's output at
// most is ever kept). Write and flush always end at EAGAIN when they keep
// something, which arms the socket's next EPOLLOUT edge.
type loopWriter struct {
	fd   int
	out  []byte
	outp *[]byte // pooled backing of out
	// To the server only: the pump reading the same socket. When a write
	// finds the server reset (EPIPE, ECONNRESET), gone is set: what is
	// written is dropped from then on, the client is no longer read, and
	// rd reads the server's socket to its end, which ends the session
	// after the server's last messages.
	lr   *loopRelay
	rd   *pump
	gone bool
}

// failed handles a write error; nil when the socket reset and the session
// goes on to read it to its end.
func (w *loopWriter) failed(e syscall.Errno) error {
	if w.rd == nil || (e != syscall.EPIPE && e != syscall.ECONNRESET) {
		return e
	}
	w.gone = true
	w.release()
	w.lr.drain(w.rd)
	return nil
}

func (w *loopWriter) Write(b []byte) (int, error) {
	n := len(b)
	if w.gone {
		return n, nil
	}
	if len(w.out) == 0 {
		for len(b) > 0 {
			m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(w.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			if e == syscall.EINTR {
				continue
			}
			if e == syscall.EAGAIN {
				break
			}
			if e != 0 {
				if err := w.failed(e); err != nil {
					return n - len(b), err
				}
				return n, nil
			}
			b = b[m:]
		}
		if len(b) == 0 {
			return n, nil
		}
		if w.outp == nil {
			w.outp = bufPool.Get().(*[]byte)
			w.out = (*w.outp)[:0]
		}
	}
	w.out = append(w.out, b...)
	return n, nil
}

// flush writes what is kept; it stops at EAGAIN.
func (w *loopWriter) flush() error {
	for len(w.out) > 0 {
		m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(w.fd), uintptr(unsafe.Pointer(&w.out[0])), uintptr(len(w.out)))
		if e == syscall.EINTR {
			continue
		}
		if e == syscall.EAGAIN {
			return nil
		}
		if e != 0 {
			return w.failed(e)
		}
		w.out = w.out[m:]
	}
	w.release()
	return nil
}

func (w *loopWriter) release() {
	if w.outp != nil {
		bufPool.Put(w.outp)
		w.outp = nil
	}
	w.out = nil
}

// flushBlocking writes what is kept, waiting up to timeout for the socket
// (the session goroutine, after the loop let go of the descriptor). It
// waits through Go's poller on a duplicate of the descriptor, so a
// thousand stalled clients at shutdown park a thousand goroutines, not
// block as many threads.
func (w *loopWriter) flushBlocking(timeout time.Duration) {
	defer w.release()
	if err := w.flush(); err != nil || len(w.out) == 0 {
		return
	}
	fd, err := unix.FcntlInt(uintptr(w.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "client")
	c, err := net.FileConn(f) // its own duplicate, watched by Go's poller
	f.Close()
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	_, _ = c.Write(w.out)
}

func newEvLoop(log *zap.Logger) (*evLoop, error) {
	epfd, efd, f, rc, err := pollableEpoll("pgproxy-relay-loop", unix.EPOLLIN|unix.EPOLLET)
	if err != nil {
		return nil, err
	}
	l := &evLoop{log: log, epfd: epfd, efd: efd, file: f, rc: rc, buf: make([]byte, relayBufSize), done: make(chan struct{})}
	go l.run()
	return l, nil
}

// pollableEpoll makes an epoll set holding an eventfd (registered with
// efdEvents) whose own descriptor is registered with Go's poller, so the
// goroutine that waits on it parks and wakes like any other (an event
// loop here, the parker in park_linux.go).
func pollableEpoll(name string, efdEvents uint32) (epfd, efd int, f *os.File, rc syscall.RawConn, err error) {
	epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return 0, 0, nil, nil, fmt.Errorf("epoll_create1: %w", err)
	}
	efd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return 0, 0, nil, nil, fmt.Errorf("eventfd: %w", err)
	}
	if err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: efdEvents, Fd: int32(efd)}); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return 0, 0, nil, nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	// Non-blocking, so that os.NewFile registers it with Go's poller.
	if err = unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return 0, 0, nil, nil, err
	}
	f = os.NewFile(uintptr(epfd), name)
	if rc, err = f.SyscallConn(); err != nil {
		f.Close()
		unix.Close(efd)
		return 0, 0, nil, nil, err
	}
	return epfd, efd, f, rc, nil
}

func (l *evLoop) run() {
	defer close(l.done)
	err := l.rc.Read(l.poll)
	if err != nil {
		l.log.Error("relay loop stopped", zap.Error(err))
		l.failAll(err)
	}
	// A session posted after the loop's last look would wait forever:
	// end those here, and make post end any later one at once.
	l.mu.Lock()
	l.stopped = true
	left := l.posted
	l.posted = nil
	l.mu.Unlock()
	for _, r := range left {
		if !r.terminate {
			r.lr.result <- errLoopStopped
		}
	}
}

var errLoopStopped = &relayEnd{reason: "error", err: errors.New("relay event loop stopped")}

// poll is the loop: it takes the ready events, relays, reads again the
// directions that filled the buffer, and goes on until a non-blocking
// epoll_pwait finds nothing and nothing is queued; then it returns false
// to park on Go's poller until the epoll descriptor is readable again.
// Looking once more before parking pays: under load it usually finds the
// events that came in while the loop relayed, for one system call, where
// parking would cost Go's poller two (a non-blocking look, then the
// blocking wait) and a goroutine switch. With edge-triggered sockets that
// look is cheap when it finds nothing (level-triggered epoll polls every
// socket it reported last time again).
func (l *evLoop) poll(uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(l.epfd),
			uintptr(unsafe.Pointer(&l.events[0])), loopEvents, 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			l.log.Error("relay loop: epoll_pwait", zap.Error(e))
			l.failAll(e)
			return true
		}
		for i := range int(n) {
			ev := &l.events[i]
			if int(ev.Fd) == l.efd {
				if l.takePosted() {
					return true
				}
				continue
			}
			if fd := int(ev.Fd); fd < len(l.byFd) {
				if lr := l.byFd[fd]; lr != nil && lr.serial == ev.Pad {
					lr.handle(fd, ev.Events)
				}
			}
		}
		if n == 0 && len(l.more) == 0 {
			return false
		}
		l.pullMore()
	}
}

// pullMore reads once more each direction whose last read filled the
// buffer (it queues itself again while it keeps doing so).
func (l *evLoop) pullMore() {
	if len(l.more) == 0 {
		return
	}
	cur := l.more
	l.more = l.next[:0]
	for i, m := range cur {
		m.lr.pullAgain(m.p)
		cur[i] = loopPull{}
	}
	l.next = cur[:0]
}

// alive reports whether the loop still runs (it stops only on Server
// close, or on an epoll error it cannot go on after).
func (l *evLoop) alive() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.stopped && !l.stop
}

// post hands a request to the loop.
func (l *evLoop) post(r loopReq) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		if !r.terminate {
			r.lr.result <- errLoopStopped
		}
		return
	}
	l.posted = append(l.posted, r)
	l.signal() // under mu: close() closes the eventfd only after stopped is set
	l.mu.Unlock()
}

func (l *evLoop) signal() {
	one := uint64(1)
	_, _ = unix.Write(l.efd, (*[8]byte)(unsafe.Pointer(&one))[:])
}

// close stops the loop (ending any session still on it), waits for its
// goroutine and closes its descriptors; later calls do nothing.
func (l *evLoop) close() {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.stop = true
		l.signal()
		l.mu.Unlock()
		<-l.done
		l.file.Close()
		l.mu.Lock()
		unix.Close(l.efd)
		l.mu.Unlock()
	})
}

// takePosted runs the posted requests; true when the loop must stop.
func (l *evLoop) takePosted() bool {
	var cnt [8]byte
	_, _ = unix.Read(l.efd, cnt[:])
	l.mu.Lock()
	reqs, stop := l.posted, l.stop
	l.posted = nil
	l.mu.Unlock()
	for _, r := range reqs {
		switch {
		case r.terminate:
			if r.lr.added && !r.lr.finished {
				r.lr.terminated()
			}
		default:
			l.add(r.lr)
		}
	}
	if stop {
		l.failAll(errLoopStopped)
	}
	return stop
}

func (l *evLoop) add(lr *loopRelay) {
	l.serial++
	lr.serial, lr.added = l.serial, true
	for _, fd := range []int{lr.cfd, lr.sfd} {
		for fd >= len(l.byFd) {
			l.byFd = append(l.byFd, make([]*loopRelay, len(l.byFd)+64)...)
		}
		l.byFd[fd] = lr
	}
	// Registered once for everything; what is already readable or
	// writable is reported by the next epoll_pwait.
	const events = unix.EPOLLIN | unix.EPOLLPRI | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	for _, fd := range []int{lr.cfd, lr.sfd} {
		if err := l.ctl(unix.EPOLL_CTL_ADD, fd, events, lr.serial); err != nil {
			lr.finish(&relayEnd{reason: "error", err: err})
			return
		}
	}
	if lr.s.terminating.Load() != nil { // terminate() ran before the session was posted
		lr.terminated()
	}
}

func (l *evLoop) ctl(op, fd int, events uint32, serial int32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: serial}
	if err := unix.EpollCtl(l.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// failAll ends every session still on the loop (it is stopping).
func (l *evLoop) failAll(err error) {
	for _, lr := range l.byFd {
		if lr != nil && !lr.finished {
			lr.finish(&relayEnd{reason: "error", err: err})
		}
	}
}

// recoverPanic ends the session whose relaying panicked (deferred around
// everything the loop runs for a session).
func (lr *loopRelay) recoverPanic() {
	if r := recover(); r != nil {
		lr.s.logger().Error("session panic", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		lr.finish(&relayEnd{reason: "panic"})
	}
}

// handle relays what one socket's event allows: flush what waits for it
// (and, when that is all gone, resume the direction it blocked), then read
// it.
func (lr *loopRelay) handle(fd int, ev uint32) {
	defer lr.recoverPanic()
	in, w, feeder := lr.c2s, lr.cw, lr.s2c // the socket's pump, its writer, the pump writing to it
	if fd == lr.sfd {
		in, w, feeder = lr.s2c, lr.sw, lr.c2s
	}
	if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 && len(w.out) > 0 {
		if err := w.flush(); err != nil {
			lr.finish(writeEnd(w == lr.sw, err))
			return
		}
		if len(w.out) == 0 {
			lr.pull(feeder)
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLPRI|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		in.lready = true
		if ev&(unix.EPOLLPRI|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			in.ldrain = true
		}
		lr.pull(in)
	}
}

// drain has p's socket read until it ends (its writer found it reset).
func (lr *loopRelay) drain(p *pump) {
	p.lready, p.ldrain = true, true
	if !p.lqueued {
		p.lqueued = true
		lr.loop.more = append(lr.loop.more, loopPull{lr, p})
	}
}

// pull reads p's socket once if it may hold something and p's destination
// has taken all it was given. A socket that hung up or failed while its
// destination was blocked is read when the destination drains, so what it
// still holds is delivered before the end (as the goroutine relay does).
func (lr *loopRelay) pull(p *pump) {
	dst := lr.sw
	if !p.toServer {
		dst = lr.cw
	}
	if lr.finished || !p.lready || len(dst.out) > 0 || dst.gone {
		return
	}
	full := lr.read(p)
	if lr.finished {
		return
	}
	if !full && !p.ldrain {
		p.lready = false // all it had: the next data is a new event
	}
	if p.lready && len(dst.out) == 0 && !p.lqueued {
		p.lqueued = true
		lr.loop.more = append(lr.loop.more, loopPull{lr, p})
	}
}

func (lr *loopRelay) pullAgain(p *pump) {
	defer lr.recoverPanic()
	p.lqueued = false
	lr.pull(p)
}

// read reads what one socket has (up to the shared buffer) and relays it;
// full reports that the read filled the buffer (the socket may hold more).
func (lr *loopRelay) read(p *pump) (full bool) {
	buf := lr.loop.buf
	keep := copy(buf, p.hdr[:p.lkeep])
	n, err := rawRead(uintptr(p.lfd), buf[keep:])
	switch {
	case err == syscall.EAGAIN:
		p.lready = false
		if !p.toServer && lr.sw.gone { // not expected of a reset socket: end rather than wait
			lr.finish(p.end(io.EOF, keep))
		}
		return false
	case err != nil:
		lr.finish(p.end(err, keep))
		return false
	case n == 0:
		lr.finish(p.end(io.EOF, keep))
		return false
	}
	p.count.Add(int64(n))
	p.buf = buf
	k, err := p.process(buf[:keep+n])
	p.buf = nil
	if err != nil {
		lr.finish(err)
		return false
	}
	p.lkeep = copy(p.hdr[:], buf[:k])
	return keep+n == len(buf)
}

// terminated ends the session as a server read deadline does in the
// goroutine relay (session.terminate).
func (lr *loopRelay) terminated() {
	defer lr.recoverPanic()
	lr.finish(lr.s2c.end(os.ErrDeadlineExceeded, lr.s2c.lkeep))
}

// finish takes the session off the loop and reports how it ended. The
// descriptors stay open: the session goroutine closes them.
func (lr *loopRelay) finish(err error) {
	if lr.finished {
		return
	}
	lr.finished = true
	l := lr.loop
	if lr.added {
		for _, fd := range []int{lr.cfd, lr.sfd} {
			_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
			if fd < len(l.byFd) && l.byFd[fd] == lr {
				l.byFd[fd] = nil
			}
		}
	}
	lr.result <- asRelayEnd(err)
}

// takeFd returns a descriptor of c's socket that Go's poller does not
// watch: a duplicate (same socket, still non-blocking). The caller closes c
// once it has all it needs, which leaves the duplicate the only one.
func takeFd(rc syscall.RawConn) (int, error) {
	fd := -1
	var err error
	cerr := rc.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, cerr
	}
	return fd, err
}

// relayLoop relays the session on l and returns the end reason; ok is
// false when it cannot (not two plain TCP sockets), and nothing was done.
func (s *session) relayLoop(l *evLoop) (reason string, ok bool) {
	ctc, ok1 := s.client.(*net.TCPConn)
	stc, ok2 := s.server.(*net.TCPConn)
	if !ok1 || !ok2 || s.client != s.raw || len(s.clientPending) > 0 {
		return "", false // (a client that sent ahead of the handshake's end: rare, the goroutine relay takes it)
	}
	crc, err1 := ctc.SyscallConn()
	src, err2 := stc.SyscallConn()
	if err1 != nil || err2 != nil {
		return "", false
	}
	cfd, err := takeFd(crc)
	if err != nil {
		return "", false
	}
	sfd, err := takeFd(src)
	if err != nil {
		unix.Close(cfd)
		return "", false
	}
	// The duplicates are the sockets from here on; closing the net.Conns
	// takes them out of Go's poller (closeConns closes them again, a no-op).
	s.client.Close()
	s.server.Close()
	defer unix.Close(sfd)
	defer unix.Close(cfd)

	lr := &loopRelay{loop: l, s: s, cfd: cfd, sfd: sfd, result: make(chan *relayEnd, 1),
		cw: &loopWriter{fd: cfd}, sw: &loopWriter{fd: sfd}}
	lr.sw.lr = lr
	lr.c2s = newPump(s, true, nil, lr.sw, &s.bytesIn)
	lr.s2c = newPump(s, false, nil, lr.cw, &s.bytesOut)
	for _, p := range []*pump{lr.c2s, lr.s2c} {
		p.buf = p.hdr[:] // process keeps an incomplete header there between reads
		defer p.releaseBufs()
	}
	lr.c2s.lfd, lr.s2c.lfd = cfd, sfd
	lr.sw.rd = lr.s2c
	s.clientW = lr.cw // sendError goes through the loop's writer
	defer func() { s.clientW = nil }()

	var re *relayEnd
	if pending := s.serverPending; len(pending) > 0 { // read ahead during authentication
		s.serverPending = nil
		k, err := lr.s2c.process(pending)
		if err != nil {
			re = asRelayEnd(err)
		}
		lr.s2c.lkeep = k
	}
	if re == nil {
		s.inLoop.Store(lr)
		s.relayBy.Store(relayLoop)
		l.post(loopReq{lr: lr})
		re = <-lr.result
		s.inLoop.Store(nil)
	}
	lr.cw.flushBlocking(time.Second) // an error the loop could not hand over yet
	lr.sw.release()
	return s.endReason(re), true
}
