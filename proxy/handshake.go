package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
)

// The startup and authentication phases talk to a plain TCP client
// through handshakeIO: reads fill a read-ahead buffer with one raw read(2)
// each, so a startup packet or a password message costs one system call
// instead of one per header and body (the client sends each whole, then
// waits for an answer), and writes are raw too. Raw calls do not enter the
// scheduler's "in syscall" state: with the P idle between a client's
// messages, every such entry woke sysmon, which then spun on 20 µs sleeps
// (rawio.go says why that costs). A connection per transaction (pgbench
// -C) spent a sixth of pgproxy's CPU there.
//
// What the client sent past the last message the handshake read is not
// lost: endHandshake hands it to the relay (session.clientPending), as the
// server's read-ahead is (serverPending). After an SSLRequest nothing may
// be read ahead: PostgreSQL refuses unencrypted data that arrives before
// the TLS handshake (CVE-2021-23222), and so does startup.
type handshakeIO struct {
	rc    syscall.RawConn
	w     rawWriter
	small *[smallBufSize]byte // from smallPool while the handshake runs
	r, n  int                 // small[r:n] is read ahead, not yet consumed
	rerr  error
	fill  func(fd uintptr) bool // built once
	out   []byte                // written with the next Write (queue)
}

// newHandshakeIO returns nil when c is not a plain TCP socket.
func newHandshakeIO(c net.Conn) *handshakeIO {
	rc := rawConn(c)
	if rc == nil {
		return nil
	}
	h := &handshakeIO{rc: rc}
	h.w.rc = rc
	h.w.fn = h.w.writeAll
	h.fill = h.fillFd
	return h
}

func (h *handshakeIO) fillFd(fd uintptr) bool {
	n, err := rawRead(fd, h.small[h.n:])
	switch {
	case err == syscall.EAGAIN:
		return false // wait for readability
	case err != nil:
		h.rerr = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
	case n == 0:
		h.rerr = io.EOF
	default:
		h.n += n
	}
	return true
}

// Read serves the read-ahead, or reads the socket once into it.
func (h *handshakeIO) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if h.r == h.n {
		if h.small == nil {
			h.small = smallPool.Get().(*[smallBufSize]byte)
		}
		h.r, h.n, h.rerr = 0, 0, nil
		if err := h.rc.Read(h.fill); err != nil {
			return 0, err
		}
		if h.n == 0 {
			return 0, h.rerr
		}
	}
	k := copy(b, h.small[h.r:h.n])
	h.r += k
	return k, nil
}

// buffered is how many bytes were read ahead and not consumed.
func (h *handshakeIO) buffered() int { return h.n - h.r }

// queue keeps b to go out with the next Write: messages the client needs
// no answer to before more follow (AuthenticationOk before the welcome)
// share one packet, and one wake-up of the client.
func (h *handshakeIO) queue(b []byte) { h.out = append(h.out, b...) }

// Write writes what was queued, then b, in one raw write.
func (h *handshakeIO) Write(b []byte) (int, error) {
	buf := b
	if len(h.out) > 0 {
		buf = append(h.out, b...)
		h.out = nil
	}
	n, err := h.w.Write(buf)
	if n -= len(buf) - len(b); n < 0 {
		n = 0
	}
	if err != nil {
		err = &net.OpError{Op: "write", Net: "tcp", Err: err}
	}
	return n, err
}

// release returns the read buffer; what was read ahead is returned as a copy.
func (h *handshakeIO) release() []byte {
	var rest []byte
	if h.small != nil {
		if h.r < h.n {
			rest = append([]byte(nil), h.small[h.r:h.n]...)
		}
		smallPool.Put(h.small)
		h.small = nil
	}
	h.r, h.n = 0, 0
	return rest
}

// clientIO is what the handshake reads the client with and writes it with:
// the handshakeIO of a plain TCP client, else (TLS, tests) the connection.
func (s *session) clientIO() io.ReadWriter {
	if s.hs != nil && s.client == s.raw {
		return s.hs
	}
	return s.client
}

// queueClient keeps b to go out with the handshake's next write to the
// client when it can (plain TCP), else writes it now.
func (s *session) queueClient(b []byte) error {
	if s.hs != nil && s.client == s.raw {
		s.hs.queue(b)
		return nil
	}
	_, err := s.client.Write(b)
	return err
}

// endHandshake ends the handshake's use of the client socket before a
// relay takes it: what the client sent ahead becomes clientPending, and
// what was queued is written.
func (s *session) endHandshake() error {
	h := s.hs
	if h == nil {
		return nil
	}
	s.hs = nil
	var err error
	if len(h.out) > 0 {
		_, err = h.Write(nil)
	}
	if rest := h.release(); len(rest) > 0 {
		s.clientPending = rest
	}
	return err
}
