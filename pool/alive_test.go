package pool

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestIdleClosedByServerNotLent: a server that closes an idle connection
// (a backend restarted, or shut down with a FATAL first) must not have it
// lent to the next session, which would fail on its first query; a
// healthy idle connection is still reused.
func TestIdleClosedByServerNotLent(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("idle connections are checked on Linux only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	var servers []net.Conn
	defer func() {
		for _, c := range servers {
			c.Close()
		}
	}()
	dial := func(ctx context.Context, key Key) (*Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		servers = append(servers, <-accepted)
		return &Conn{Net: c}, nil
	}
	s := New(Config{Size: 3, MaxWait: time.Second}, dial)
	defer s.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		server func(net.Conn)
	}{
		{"closed", func(c net.Conn) { c.Close() }},
		{"sent while idle", func(c net.Conn) { _, _ = c.Write([]byte("E...FATAL")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := s.Acquire(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			s.Release(c, true)
			again, _, err := s.Acquire(ctx, key)
			if err != nil || again != c {
				t.Fatalf("a healthy idle connection was not reused: %v", err)
			}
			s.Release(again, true)
			tc.server(servers[len(servers)-1])
			// The FIN or bytes reach our socket, and the connection has been
			// idle long enough to be looked at (checkAfter).
			time.Sleep(checkAfter + 50*time.Millisecond)
			next, _, err := s.Acquire(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if next == c {
				t.Fatal("the connection the server ended while idle was lent")
			}
			if st := s.Stats(); len(st) != 1 || st[0].Active != 1 || st[0].Idle != 0 {
				t.Fatalf("stats %+v: the dead connection is still counted", st)
			}
			s.Release(next, false)
		})
	}
}
