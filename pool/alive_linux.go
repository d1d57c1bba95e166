package pool

import (
	"net"
	"syscall"
	"unsafe"
)

// peerDone reports whether the server ended an idle connection (EOF, a
// reset) or sent it something while idle (PostgreSQL's FATAL before it
// exits on a shutdown or a crash of another backend): either way it must
// not be lent. It peeks at the socket without blocking or consuming
// anything; a connection it cannot look at (not a socket) counts as
// alive.
func peerDone(c net.Conn) bool {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok { // TLS: the socket under it
		c = nc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	done := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		// A raw call: it never blocks, so the P need not be handed off
		// (syscall.Recvfrom enters the scheduler's syscall state).
		_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch {
		case e == syscall.EAGAIN, e == syscall.EINTR:
			// nothing to read: alive
		default:
			done = true // an error, EOF (n == 0) or bytes while idle
		}
		return true // never wait
	})
	return done || err != nil
}
