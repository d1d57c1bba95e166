package proxy

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"time"

	"github.com/ofitec/pgproxy/internal/pgwire"
)

// cancelMap maps the BackendKeyData a backend gave a session to that
// backend's address, so a CancelRequest arriving on a new connection can be
// forwarded to the server that owns the key. Keys are never logged.
type cancelMap struct {
	mu sync.Mutex
	m  map[string]cancelTarget
}

// cancelTarget is a backend address (the key is the backend's own) or a
// pooled session (the key is the proxy's: the session knows which server
// runs its query).
type cancelTarget struct {
	addr string
	s    *session
}

func (c *cancelMap) init() { c.m = make(map[string]cancelTarget) }

func cancelKeyOf(pid uint32, secret []byte) string {
	b := make([]byte, 4, 4+len(secret))
	binary.BigEndian.PutUint32(b, pid)
	return string(append(b, secret...))
}

func (c *cancelMap) add(key, addr string) {
	c.mu.Lock()
	c.m[key] = cancelTarget{addr: addr}
	c.mu.Unlock()
}

func (c *cancelMap) addSession(key string, s *session) {
	c.mu.Lock()
	c.m[key] = cancelTarget{s: s}
	c.mu.Unlock()
}

func (c *cancelMap) remove(key string) {
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}

func (c *cancelMap) lookup(key string) (cancelTarget, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.m[key]
	return a, ok
}

// forwardCancel sends a CancelRequest to addr over plain TCP (PostgreSQL
// processes cancel requests before authentication and TLS requirements).
func forwardCancel(ctx context.Context, addr string, pid uint32, secret []byte) error {
	d := net.Dialer{Timeout: 3 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write(pgwire.EncodeCancel(nil, pid, secret)); err != nil {
		return err
	}
	// The server closes the connection once it has processed the request;
	// waiting for that makes the cancel take effect before we return.
	var b [1]byte
	_, _ = conn.Read(b[:])
	return nil
}
