package proxy

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// The goroutine relay reads and writes plain TCP sockets with raw,
// non-blocking system calls under syscall.RawConn instead of net.Conn's
// Read and Write. Why: net.Conn's calls enter the scheduler's "in syscall"
// state, and a loopback send (which runs the receiver's TCP stack inline)
// often outlasts sysmon's tick, so the P is handed to another thread at a
// cost of wake-ups and context switches on every query (A/B in
// docs/benchmarks.md). The sockets are non-blocking, so a raw call returns
// EAGAIN instead of blocking, and the runtime poller waits for readiness
// exactly as net.Conn does: the callback tries the call first and only asks
// to wait on EAGAIN, so data that arrived earlier is never missed.
// Deadlines and Close work as for net.Conn.

// rawConn returns c's RawConn, or nil when c is not a plain TCP socket
// (TLS, tests): the caller then uses c itself.
func rawConn(c net.Conn) syscall.RawConn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// rawWriter writes a TCP socket with raw system calls. It is used by one
// goroutine (one direction's pump).
type rawWriter struct {
	rc  syscall.RawConn
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool // built once: no allocation per call
}

// newRawWriter returns nil when c is not a plain TCP socket.
func newRawWriter(c net.Conn) *rawWriter {
	rc := rawConn(c)
	if rc == nil {
		return nil
	}
	w := &rawWriter{rc: rc}
	w.fn = w.writeAll
	return w
}

// rawRead is read(2) on a non-blocking descriptor, retried on EINTR. A nil
// error with n == 0 is end of file.
func rawRead(fd uintptr, b []byte) (int, error) {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

func (w *rawWriter) writeAll(fd uintptr) bool {
	for len(w.buf) > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.buf[0])), uintptr(len(w.buf)))
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false // socket buffer full: wait for writability
		case e != 0:
			w.err = e
			return true
		}
		w.n += int(n)
		w.buf = w.buf[n:]
	}
	return true
}

func (w *rawWriter) Write(b []byte) (int, error) {
	w.buf, w.n, w.err = b, 0, nil
	if err := w.rc.Write(w.fn); err != nil {
		return w.n, err
	}
	w.buf = nil
	return w.n, w.err
}

// rawReader reads a plain TCP socket with raw system calls, waiting in
// Go's poller (which honours the connection's deadlines) when it is empty.
// The proxy's own round trips on pooled servers use it, as the relays do:
// an ordinary system call wakes the runtime's sysmon thread after the
// process was idle (docs/benchmarks.md, issue 17).
type rawReader struct {
	rc  syscall.RawConn
	b   []byte
	n   int
	err error
	fn  func(fd uintptr) bool // built once: no allocation per call
}

func newRawReader(rc syscall.RawConn) *rawReader {
	r := &rawReader{rc: rc}
	r.fn = r.readOnce
	return r
}

func (r *rawReader) readOnce(fd uintptr) bool {
	r.n, r.err = rawRead(fd, r.b)
	return r.err != syscall.EAGAIN
}

func (r *rawReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.b, r.n, r.err = b, 0, nil
	err := r.rc.Read(r.fn)
	r.b = nil
	switch {
	case err != nil:
		return 0, err
	case r.err != nil:
		return 0, r.err
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}
