//go:build linux

package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// relayOnLoop runs a session between two fresh loopback connections on l
// (prepare sees the session first) and returns how the relay ended, or
// fails the test if it has not ended within 5 s.
func relayOnLoop(t *testing.T, srv *Server, l *evLoop, prepare func(*session)) string {
	t.Helper()
	client, _ := tcpPair(t)
	server, _ := tcpPair(t)
	s := newSession(srv, client, Listener{Addr: "test"}, srv.cfg.Load(), 1)
	s.server = server
	if prepare != nil {
		prepare(s)
	}
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
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the session is still relayed after 5 s")
		return ""
	}
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
	srv := NewServer(Config{}, nil, nil, nil)
	reason := "test"
	r := relayOnLoop(t, srv, l, func(s *session) { s.terminating.Store(&reason) })
	if r != "shutdown" {
		t.Fatalf("relay ended with %q, want shutdown", r)
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
	if r := relayOnLoop(t, srv, l, nil); r != "error" {
		t.Fatalf("relay on a stopped loop ended with %q, want error", r)
	}
	srv.stopLoops()
}

// TestLoopWriterFlushBlocking: output the loop could not hand to a slow
// client is written once the client reads (within the timeout), through
// Go's poller, and the writer's descriptor stays the caller's to close.
func TestLoopWriterFlushBlocking(t *testing.T) {
	a, peer := tcpPair(t)
	rc, _ := a.SyscallConn()
	fd, err := takeFd(rc)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	defer unix.Close(fd)
	w := &loopWriter{fd: fd}
	msg := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB: more than the socket buffers take
	if _, err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	if len(w.out) == 0 {
		t.Fatal("the socket took 16 MiB without a reader: nothing kept to flush")
	}
	got := make(chan int, 1)
	go func() {
		time.Sleep(100 * time.Millisecond) // not reading yet when the flush starts
		_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.Copy(io.Discard, io.LimitReader(peer, int64(len(msg))))
		got <- int(n)
	}()
	w.flushBlocking(10 * time.Second)
	if n := <-got; n != len(msg) {
		t.Fatalf("client got %d of %d bytes", n, len(msg))
	}
	if w.out != nil || w.outp != nil {
		t.Fatal("kept output not released")
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Fatalf("the writer's descriptor was closed by the flush: %v", err)
	}
}
