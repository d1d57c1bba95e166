package proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
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
// a FIN or an RST, in the middle of a result or after ReadyForQuery. Each
// case fails (hangs) without one of the relay's guards for parking without
// reading until EAGAIN (runRaw, parkEarly): reading to EAGAIN in the
// middle of a result, TCP_INQ's FIN report after ReadyForQuery, and the
// owed-replies count for a pipelining client. The event loop must pass
// them too: its sockets are edge-triggered, and a FIN or RST reported with
// the data (pump.lhup) must make it read on to the end.
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
// client does not read yet, then resets the connection. Every byte the
// server got through (acknowledged) must still reach the client, in
// order, before the session ends: the reset arrives while pgproxy is
// blocked writing to the client with the rest waiting in its receive
// buffer. The client shrinks its receive buffer and MSS so that pgproxy's
// send buffer towards it stays small and the blocked state is reached
// with little data. Fails on a relay that ends the session when the
// reset is reported (the event loop did while level-triggered).
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
			// The proxy takes it all within 200 ms unless it stopped
			// reading: blocked on the client, its receive buffer full.
			blocked = true
			for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
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
	pc, err := pgconn.ParseConfig(tp.dsn("u", "d"))
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096),
				unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, 1024))
		})
		return errors.Join(err, serr)
	}}
	pc.DialFunc = d.DialContext
	c, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := c.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
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
	hc.Conn.SetDeadline(time.Now().Add(15 * time.Second))
	rows, fatal := 0, ""
	for {
		msg, err := hc.Frontend.Receive()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("client still waiting 15 s after the server reset")
			}
			break
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			if fatal != "" {
				t.Fatal("DataRow after the FATAL")
			}
			rows++
		case *pgproto3.ErrorResponse:
			fatal = m.Severity + " " + m.Code
		}
	}
	want := (s.acked - len(rd)) / len(row) // rows wholly acknowledged by pgproxy's kernel
	t.Logf("server sent %d rows, %d bytes acknowledged (%d whole rows); client got %d rows, then %q", s.rows, s.acked, want, rows, fatal)
	if rows < want || rows > s.rows {
		t.Errorf("client got %d DataRows, want at least the %d pgproxy had received (at most %d sent)", rows, want, s.rows)
	}
	if fatal != "FATAL 08006" {
		t.Errorf("the session ended with %q, want FATAL 08006 after the rows", fatal)
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
