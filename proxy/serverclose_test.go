package proxy_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ofitec/pgproxy/proxy"
)

// closingBackend answers a trust startup and then, on the first Query,
// writes part of a result and closes the connection at once, with a FIN
// or (rst) an RST, so the close reaches pgproxy together with the data.
func closingBackend(t *testing.T, rst bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var hello, part []byte
	hello, _ = (&pgproto3.AuthenticationOk{}).Encode(hello)
	hello, _ = (&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}).Encode(hello)
	hello, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(hello)
	part, _ = (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("x"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}}).Encode(part)
	part, _ = (&pgproto3.DataRow{Values: [][]byte{[]byte("1")}}).Encode(part)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var hdr [5]byte
				buf := make([]byte, 8<<10)
				if _, err := io.ReadFull(c, hdr[:4]); err != nil {
					return
				}
				n := int(binary.BigEndian.Uint32(hdr[:4]))
				if n < 8 || n > len(buf) {
					return
				}
				if _, err := io.ReadFull(c, buf[:n-4]); err != nil {
					return
				}
				c.Write(hello)
				if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != 'Q' {
					return
				}
				if rst {
					c.(*net.TCPConn).SetLinger(0) // close sends RST
				}
				c.Write(part) // the Query itself stays unread
			}()
		}
	}()
	return ln.Addr().String()
}

// TestServerCloseRightAfterData: a server that writes part of a result
// and closes at once must not leave the client waiting: the client gets
// the data and then FATAL 08006 or the end of the connection. A relay that
// parks after a short read without reading again (edge-triggered
// shortcut) misses the close that arrived with the data and hangs here.
func TestServerCloseRightAfterData(t *testing.T) {
	checkLeaks(t)
	for _, rst := range []bool{false, true} {
		name := "fin"
		if rst {
			name = "rst"
		}
		t.Run(name, func(t *testing.T) {
			tp := startProxy(t, proxy.Config{}, staticDirector{addr: closingBackend(t, rst)})
			for i := 0; i < 20; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := pgconn.Connect(ctx, tp.dsn("u", "d"))
				if err != nil {
					cancel()
					t.Fatal(err)
				}
				_, err = c.Exec(ctx, "SELECT 1").ReadAll()
				timedOut := ctx.Err() != nil
				cancel()
				c.Close(context.Background())
				if err == nil {
					t.Fatalf("attempt %d: no error after the server closed mid-result", i)
				}
				if timedOut {
					t.Fatalf("attempt %d: client still waiting 10 s after the server closed: %v", i, err)
				}
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code != "08006" {
					t.Fatalf("attempt %d: got %s %q, want 08006 or a closed connection", i, pgErr.Code, pgErr.Message)
				}
			}
		})
	}
}
