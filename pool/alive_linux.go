package pool

import (
	"errors"
	"net"
	"syscall"
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
		_, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(e, syscall.EAGAIN), errors.Is(e, syscall.EINTR):
			// nothing to read: alive
		default:
			done = true // an error, EOF (n == 0) or bytes while idle
		}
		return true // never wait
	})
	return done || err != nil
}
