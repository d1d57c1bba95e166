package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sys/unix"

	"github.com/ofitec/pgproxy/proxy"
)

// closingBackend answers a trust startup; on the first Query it waits
// (so that a pipelined second Query reaches its socket unread), writes a
// result, the whole of it with ReadyForQuery or (partial) only its first
// rows, and closes at once, with a FIN or (rst) an RST: the close reaches
// pgproxy together with the data.
func closingBackend(t *testing.T, partial, rst bool, wait time.Duration) string {
	var resp []byte
	resp, _ = (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}}).Encode(resp)
	resp, _ = (&pgproto3.DataRow{Values: [][]byte{[]byte("1")}}).Encode(resp)
	if !partial {
		resp, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}).Encode(resp)
		resp, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(resp)
	}
	return fakeServer(t, func(c net.Conn, buf []byte) {
		var hdr [5]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != 'Q' {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[1:]))
		if n < 4 || n-4 > len(buf) {
			return
		}
		if _, err := io.ReadFull(c, buf[:n-4]); err != nil {
			return
		}
		time.Sleep(wait)
		if rst {
			c.(*net.TCPConn).SetLinger(0) // close sends RST
		}
		c.Write(resp)
	})
}

// TestServerCloseWithData: a server that closes right after writing
// must never leave the client waiting: the client gets what was written
// and then FATAL 08006 or the end of the connection, within seconds, for
// a FIN or an RST, in the middle of a result or after ReadyForQuery, with
// or without a pipelined query. Both relays park on edge-triggered
// readiness, so each case hangs on a relay that parks after a read that
// did not reach EAGAIN or the socket's end: the goroutine relay reads to
// EAGAIN (runRaw), the event loop reads on to the end when a FIN or RST is
// reported with the data (pump.ldrain).
func TestServerCloseWithData(t *testing.T) {
	forRelays(t, serverCloseWithData)
}

func serverCloseWithData(t *testing.T, cfg proxy.Config) {
	checkLeaks(t)
	cases := []struct {
		name               string
		partial, rst, pipe bool
	}{
		{"mid-result fin", true, false, false},
		{"mid-result rst", true, true, false},
		{"after ReadyForQuery fin", false, false, false},
		{"after ReadyForQuery, pipelined: close with the next query unread (RST)", false, false, true},
		{"after ReadyForQuery, pipelined: linger-0 RST", false, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wait := time.Duration(0)
			if tc.pipe {
				wait = 50 * time.Millisecond
			}
			tp := startProxy(t, cfg, staticDirector{addr: closingBackend(t, tc.partial, tc.rst, wait)})
			for i := 0; i < 10; i++ {
				if err := closeWithData(t, tp, tc.pipe); err != nil {
					t.Fatalf("attempt %d: %v", i, err)
				}
			}
		})
	}
}

// closeWithData sends one Query (two if pipe) and reads until the
// connection ends, and fails if that takes 10 s.
func closeWithData(t *testing.T, tp *testProxy, pipe bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, tp.dsn("u", "d"))
	if err != nil {
		return err
	}
	hc, err := c.Hijack()
	if err != nil {
		return err
	}
	defer hc.Conn.Close()
	hc.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	fe := hc.Frontend
	fe.Send(&pgproto3.Query{String: "SELECT 1"})
	if pipe {
		fe.Send(&pgproto3.Query{String: "SELECT 2"})
	}
	if err := fe.Flush(); err != nil {
		return err
	}
	rows := 0
	for {
		msg, err := fe.Receive()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return errors.New("client still waiting 10 s after the server closed")
		}
		if err != nil { // the proxy closed the connection
			break
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			if e.Code != "08006" || e.Severity != "FATAL" {
				return errors.New("got " + e.Severity + " " + e.Code + " " + e.Message + ", want FATAL 08006")
			}
			continue // then the end of the connection
		}
		if _, ok := msg.(*pgproto3.DataRow); ok {
			rows++
		}
	}
	if rows != 1 {
		t.Errorf("client got %d DataRows before the end, want the 1 the server sent", rows)
	}
	return nil
}

// TestServerResetWhileClientBlocked: a server that sends a result the
// client does not read yet, then resets the connection. Every whole row
// the server got through (acknowledged) must still reach the client
// before the session ends: the reset arrives while pgproxy is blocked
// writing to the client with the rest waiting in its receive buffer. The
// client shrinks its receive buffer and MSS so that pgproxy's send buffer
// towards it stays small and the blocked state is reached with little
// data. Fails on a relay that ends the session when the reset is reported
// (the event loop did while level-triggered).
func TestServerResetWhileClientBlocked(t *testing.T) {
	forRelays(t, serverResetWhileClientBlocked)
}

func serverResetWhileClientBlocked(t *testing.T, cfg proxy.Config) {
	checkLeaks(t)
	type sent struct {
		acked, rows int
		blocked     bool
	}
	done := make(chan sent, 1)
	var rd, row []byte
	rd, _ = (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x"), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1}}}).Encode(rd)
	row, _ = (&pgproto3.DataRow{Values: [][]byte{bytes.Repeat([]byte("r"), 1000)}}).Encode(row)
	chunk := bytes.Repeat(row, 8)
	addr := fakeServer(t, func(c net.Conn, buf []byte) {
		defer close(done)
		var hdr [5]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != 'Q' {
			return
		}
		if _, err := io.ReadFull(c, buf[:int(binary.BigEndian.Uint32(hdr[1:]))-4]); err != nil {
			return
		}
		tc := c.(*net.TCPConn)
		written, rows := 0, 0
		if n, err := c.Write(rd); err != nil {
			return
		} else {
			written += n
		}
		blocked := false
		for rows < 20000 && !blocked {
			n, err := c.Write(chunk)
			written += n
			if err != nil {
				return
			}
			rows += 8
			// The proxy takes it all within 50 ms unless it stopped
			// reading: blocked on the client, its receive buffer full.
			// (Well below TCP's 200 ms minimum RTO, so a zero-window
			// probe does not move part of a row meanwhile.)
			blocked = true
			for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if outq(t, tc) == 0 {
					blocked = false
					break
				}
			}
		}
		acked := written - outq(t, tc)
		tc.SetLinger(0) // close sends RST; what is unsent is dropped
		tc.Close()
		done <- sent{acked: acked, rows: rows, blocked: blocked}
	})
	tp := startProxy(t, cfg, staticDirector{addr: addr})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hc := hijacked(ctx, t, tp, smallBufs)
	hc.Frontend.Send(&pgproto3.Query{String: "SELECT big"})
	if err := hc.Frontend.Flush(); err != nil {
		t.Fatal(err)
	}
	var s sent
	select {
	case s = <-done:
	case <-ctx.Done():
		t.Fatal("server did not finish")
	}
	if !s.blocked {
		t.Fatalf("pgproxy never stopped reading the server (sent %d rows): the test did not reach its blocked state", s.rows)
	}
	time.Sleep(100 * time.Millisecond) // the reset reaches pgproxy while it is blocked
	rows, fatal := 0, ""
	receiveToEnd(t, hc, func(msg pgproto3.BackendMessage) {
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			if fatal != "" {
				t.Fatal("DataRow after the FATAL")
			}
			rows++
		case *pgproto3.ErrorResponse:
			fatal = m.Severity + " " + m.Code
		}
	})
	want := (s.acked - len(rd)) / len(row) // rows wholly acknowledged by pgproxy's kernel
	t.Logf("server sent %d rows, %d bytes acknowledged (%d whole rows); client got %d rows, then %q", s.rows, s.acked, want, rows, fatal)
	if rows < want || rows > s.rows {
		t.Errorf("client got %d DataRows, want at least the %d pgproxy had received (at most %d sent)", rows, want, s.rows)
	}
	// pgproxy adds its FATAL 08006 when the server's stream ended at a
	// message boundary, and only closes the connection otherwise (what
	// the server got through may end inside a row).
	if fatal != "" && fatal != "FATAL 08006" {
		t.Errorf("the session ended with %q, want FATAL 08006 or the end of the connection", fatal)
	}
}

// outq is what c has not had acknowledged yet (SIOCOUTQ).
func outq(t *testing.T, c *net.TCPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Error(err)
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
	if err != nil {
		t.Error(err)
	}
	return n
}

// hijacked connects a client to tp (through a dialer with control, when
// not nil) and takes its connection over at the protocol level; it is
// closed when the test ends.
func hijacked(ctx context.Context, t *testing.T, tp *testProxy, control func(_, _ string, rc syscall.RawConn) error) *pgconn.HijackedConn {
	t.Helper()
	pc, err := pgconn.ParseConfig(tp.dsn("u", "d"))
	if err != nil {
		t.Fatal(err)
	}
	if control != nil {
		d := net.Dialer{Control: control}
		pc.DialFunc = d.DialContext
	}
	c, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := c.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Conn.Close() })
	return hc
}

// receiveToEnd hands every message the client gets to each until the
// connection ends, and fails the test if that takes 15 s.
func receiveToEnd(t *testing.T, hc *pgconn.HijackedConn, each func(pgproto3.BackendMessage)) {
	t.Helper()
	hc.Conn.SetDeadline(time.Now().Add(15 * time.Second))
	for {
		msg, err := hc.Frontend.Receive()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("client still waiting 15 s after the server reset")
			}
			return
		}
		each(msg)
	}
}

// smallBufListener listens with a 4 KiB receive buffer and a 1 KiB MSS
// (inherited by accepted sockets; the MSS also keeps the peer's send
// buffer small), so that a peer not reading backs a relay up with little
// data.
func smallBufListener(t *testing.T) net.Listener {
	lc := net.ListenConfig{Control: smallBufs}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func smallBufs(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096),
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, 1024))
	})
	return errors.Join(err, serr)
}

// TestServerResetWhileServerBlocked: the client pipelines more than the
// server reads; the server gives up: it sends a FATAL and resets the
// connection while pgproxy is blocked writing to it. The client must get
// the server's FATAL, not a bare end of the connection. On the event loop
// the write that finds the reset comes first in the same event as the
// FATAL; the loop then reads the server's socket to its end
// (loopWriter.gone). In the goroutine relay the direction writing to the
// server finds the reset and, without readServerToEnd, closed both sockets
// while the other direction had yet to read the FATAL (a race it lost in
// 7 of 10 runs: the client got no ErrorResponse at all, a bare EOF).
func TestServerResetWhileServerBlocked(t *testing.T) {
	forRelays(t, serverResetWhileServerBlocked)
}

func serverResetWhileServerBlocked(t *testing.T, cfg proxy.Config) {
	checkLeaks(t)
	release := make(chan struct{})
	var fatal []byte
	fatal, _ = (&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "57P01", Message: "bye from the server"}).Encode(fatal)
	addr := fakeServerOn(t, smallBufListener(t), func(c net.Conn, buf []byte) {
		<-release // reads nothing more: the client's queries back up
		c.Write(fatal)
		c.(*net.TCPConn).SetLinger(0) // RST
	})
	tp := startProxy(t, cfg, staticDirector{addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hc := hijacked(ctx, t, tp, nil)
	want := "event_loop"
	if cfg.RelayLoops < 0 {
		want = "goroutines"
	}
	for s := tp.srv.Sessions(); len(s) != 1 || s[0].Relay != want; s = tp.srv.Sessions() {
		if ctx.Err() != nil {
			t.Fatalf("sessions %+v, want one relayed by %s", s, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Pipeline queries until the writes stall: the server, pgproxy and
	// the client's own buffers are full.
	var q []byte
	q, _ = (&pgproto3.Query{String: "SELECT '" + strings.Repeat("q", 1000) + "'"}).Encode(q)
	var progress atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		hc.Conn.SetWriteDeadline(time.Now().Add(15 * time.Second))
		for {
			if _, err := hc.Conn.Write(q); err != nil {
				return
			}
			progress.Store(time.Now().UnixNano())
		}
	}()
	for {
		time.Sleep(50 * time.Millisecond)
		if last := progress.Load(); last != 0 && time.Since(time.Unix(0, last)) > 300*time.Millisecond {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the client's writes never stalled")
		}
	}
	close(release)
	var got *pgproto3.ErrorResponse
	receiveToEnd(t, hc, func(msg pgproto3.BackendMessage) {
		if e, ok := msg.(*pgproto3.ErrorResponse); ok && got == nil {
			c := *e // Receive reuses its messages
			got = &c
		}
	})
	hc.Conn.Close()
	<-writerDone
	if got == nil || got.Message != "bye from the server" || got.Code != "57P01" {
		t.Fatalf("the client got %+v first, want the server's own FATAL 57P01", got)
	}
}

// TestClientUrgentData: a client sends a byte as TCP urgent data (a
// PostgreSQL client never does; a confused or hostile one may) between
// two queries. Linux stops a read short at the urgent mark, so "a short
// read took everything" is false there: the event loop must read on
// (EPOLLPRI) or the second query waits forever. The queries are made to
// queue up in pgproxy's socket behind data the server is slow to take,
// so that one read meets the urgent mark with the second query behind it.
func TestClientUrgentData(t *testing.T) {
	forRelays(t, clientUrgentData)
}

func clientUrgentData(t *testing.T, cfg proxy.Config) {
	checkLeaks(t)
	release := make(chan struct{})
	var reply []byte
	reply, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}).Encode(reply)
	reply, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(reply)
	addr := fakeServerOn(t, smallBufListener(t), func(c net.Conn, buf []byte) {
		<-release
		br := bufio.NewReader(c)
		for {
			var hdr [5]byte
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				return
			}
			if _, err := br.Discard(int(binary.BigEndian.Uint32(hdr[1:])) - 4); err != nil {
				return
			}
			if hdr[0] == 'Q' {
				if _, err := c.Write(reply); err != nil {
					return
				}
			}
		}
	})
	tp := startProxy(t, cfg, staticDirector{addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hc := hijacked(ctx, t, tp, nil)
	tc := hc.Conn.(*net.TCPConn)
	// 2 MB of queries the server does not read yet: pgproxy stops reading
	// the client, and what follows waits in its socket.
	var filler, q1, q2 []byte
	filler, _ = (&pgproto3.Query{String: "SELECT '" + strings.Repeat("f", 2<<20) + "'"}).Encode(filler)
	q1, _ = (&pgproto3.Query{String: "SELECT 1"}).Encode(q1)
	q2, _ = (&pgproto3.Query{String: "SELECT 2"}).Encode(q2)
	sent := make(chan error, 1)
	go func() {
		tc.SetWriteDeadline(time.Now().Add(15 * time.Second))
		if _, err := tc.Write(filler); err != nil {
			sent <- err
			return
		}
		rc, err := tc.SyscallConn()
		if err != nil {
			sent <- err
			return
		}
		var serr error
		// q1 and an urgent byte after it in one send (MSG_OOB marks the
		// last byte), then q2.
		err = rc.Write(func(fd uintptr) bool {
			serr = unix.Sendto(int(fd), append(append([]byte{}, q1...), '!'), unix.MSG_OOB, nil)
			return serr != unix.EAGAIN
		})
		if err == nil {
			err = serr
		}
		if err == nil {
			_, err = tc.Write(q2)
		}
		sent <- err
	}()
	time.Sleep(200 * time.Millisecond) // the urgent byte and q2 queue up in pgproxy's socket
	close(release)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < 3; i++ { // filler, q1, q2
		for {
			msg, err := hc.Frontend.Receive()
			if err != nil {
				t.Fatalf("reply %d of 3: %v (a query never reached the server)", i+1, err)
			}
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
	}
}
