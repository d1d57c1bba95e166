package proxy_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

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
// owed-replies count for a pipelining client. The event loop (level-triggered
// epoll) must pass them too.
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
