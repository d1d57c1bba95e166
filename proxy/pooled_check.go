package proxy

import (
	"crypto/tls"
	"syscall"
	"time"

	"github.com/ofitec/pgproxy/pool"
)

// idleCheckAfter is how long a pooled server may sit idle before it is
// checked (conncheck) when lent again: one system call, skipped for servers
// that were just in use.
const idleCheckAfter = time.Second

// conncheck is the pool's Check: an idle server has nothing to say, so a
// socket that is readable (a FATAL from pg_terminate_backend or
// idle_session_timeout, or its end) means the server is gone. It peeks
// without blocking and without consuming.
func conncheck(c *pool.Conn) bool {
	if len(c.Pending) > 0 {
		return false
	}
	nc := c.Net
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var b [1]byte
	cerr := rc.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err != syscall.EAGAIN && err != syscall.EINTR {
			alive = false // data, its end (n == 0) or an error
		}
		_ = n
	})
	return alive && cerr == nil
}
