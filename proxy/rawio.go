package proxy

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// rawIO reads or writes a TCP socket with raw, non-blocking system calls
// through syscall.RawConn, instead of net.Conn's Read and Write.
//
// Why: net.Conn's Read/Write enter the scheduler's "in syscall" state; a
// loopback send runs the receiver's TCP stack inline and often takes longer
// than sysmon's 20 µs tick, so sysmon hands the P to another thread, which
// costs futex wake-ups and context switches on every query (seen in perf:
// runtime.sysmon and findRunnable were ~60% of pgproxy's time, and it made
// ~3.8 context switches per query where PgBouncer makes 2). The sockets are
// non-blocking, so a raw call returns EAGAIN instead of blocking, and the
// runtime poller waits for readiness exactly as net.Conn does: the callback
// tries the call first and only asks to wait on EAGAIN, so data that arrived
// earlier is never missed. Deadlines and Close work as for net.Conn.
//
// A rawIO is used by one goroutine in one direction (read or write).
type rawIO struct {
	rc  syscall.RawConn
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool // built once: no allocation per call
}

// newRawReader and newRawWriter return nil when c is not a plain TCP socket
// (TLS, tests): the caller then uses c itself.
func newRawReader(c net.Conn) *rawIO { return newRawIO(c, true) }
func newRawWriter(c net.Conn) *rawIO { return newRawIO(c, false) }

func newRawIO(c net.Conn, read bool) *rawIO {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc}
	if read {
		r.fn = r.readOnce
	} else {
		r.fn = r.writeAll
	}
	return r
}

func (r *rawIO) readOnce(fd uintptr) bool {
	n, e := rawRead(fd, r.buf)
	switch {
	case e == syscall.EAGAIN:
		return false // wait for readability, then try again
	case e != nil:
		r.err = e
	case n == 0:
		r.err = io.EOF
	default:
		r.n = n
	}
	return true
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

func (r *rawIO) writeAll(fd uintptr) bool {
	for len(r.buf) > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return false // socket buffer full: wait for writability
		case e != 0:
			r.err = e
			return true
		}
		r.n += int(n)
		r.buf = r.buf[n:]
	}
	return true
}

func (r *rawIO) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.buf, r.n, r.err = b, 0, nil
	if err := r.rc.Read(r.fn); err != nil {
		return 0, err
	}
	r.buf = nil
	return r.n, r.err
}

func (r *rawIO) Write(b []byte) (int, error) {
	r.buf, r.n, r.err = b, 0, nil
	if err := r.rc.Write(r.fn); err != nil {
		return r.n, err
	}
	r.buf = nil
	return r.n, r.err
}
