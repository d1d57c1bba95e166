//go:build linux

package proxy

import (
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	acc, err := ln.Accept()
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); acc.Close() })
	return acc.(*net.TCPConn), d.(*net.TCPConn)
}

// TestLoopTerminateBeforeAdd: terminate() that runs before the loop has
// taken the session (it finds no loop relay yet, and its deadlines hit
// sockets the session has already handed over) still ends the relay.
func TestLoopTerminateBeforeAdd(t *testing.T) {
	l, err := newEvLoop(nopLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	client, _ := tcpPair(t)
	server, _ := tcpPair(t)
	srv := NewServer(Config{}, nil, nil, nil)
	s := newSession(srv, client, Listener{Addr: "test"}, srv.cfg.Load(), 1)
	s.server = server
	reason := "test"
	s.terminating.Store(&reason)

	done := make(chan string, 1)
	go func() {
		r, ok := s.relayLoop(l)
		if !ok {
			r = "not relayed"
		}
		done <- r
	}()
	select {
	case r := <-done:
		if r != "shutdown" {
			t.Fatalf("relay ended with %q, want shutdown", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a session terminated before the loop took it is still relayed")
	}
}

// TestLoopStoppedRefusesSessions: a session handed to a loop that has
// stopped ends at once instead of waiting for a loop that will never run it,
// and pickLoop no longer hands that loop out.
func TestLoopStoppedRefusesSessions(t *testing.T) {
	srv := NewServer(Config{RelayLoops: 1}, nil, nil, nil)
	l := srv.pickLoop(1)
	if l == nil {
		t.Fatal("no loop")
	}
	l.close()
	if got := srv.pickLoop(1); got != nil {
		t.Fatal("pickLoop handed out a stopped loop")
	}
	client, _ := tcpPair(t)
	server, _ := tcpPair(t)
	s := newSession(srv, client, Listener{Addr: "test"}, srv.cfg.Load(), 1)
	s.server = server
	done := make(chan string, 1)
	go func() { r, _ := s.relayLoop(l); done <- r }()
	select {
	case r := <-done:
		if r != "error" {
			t.Fatalf("relay on a stopped loop ended with %q, want error", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a session handed to a stopped loop is still waiting")
	}
	srv.stopLoops()
}
