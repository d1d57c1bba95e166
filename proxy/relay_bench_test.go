package proxy_test

import (
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ofitec/pgproxy/proxy"
)

// fakeBackend answers a trust startup, then every Query with a canned
// result (RowDescription, rows DataRows, CommandComplete, ReadyForQuery),
// without allocating per query.
func fakeBackend(b testing.TB, rows int) (addr string, responseLen int) {
	var resp []byte
	resp, _ = (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("aid"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}, {Name: []byte("abalance"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}}).Encode(resp)
	for i := 0; i < rows; i++ {
		resp, _ = (&pgproto3.DataRow{Values: [][]byte{[]byte("12345"), []byte("-4711")}}).Encode(resp)
	}
	resp, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}).Encode(resp)
	resp, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(resp)
	addr = fakeServer(b, func(c net.Conn, buf []byte) {
		var hdr [5]byte
		for {
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			n := int(binary.BigEndian.Uint32(hdr[1:]))
			if n-4 > len(buf) { // hostile-length tests: stream it away
				if _, err := io.CopyN(io.Discard, c, int64(n-4)); err != nil {
					return
				}
				continue
			}
			if _, err := io.ReadFull(c, buf[:n-4]); err != nil {
				return
			}
			switch hdr[0] {
			case 'Q':
				c.Write(resp)
			case 'X':
				return
			}
		}
	})
	return addr, len(resp)
}

// fakeServer listens on loopback until the test ends and, for each
// connection, answers the startup packet as a trust server would
// (AuthenticationOk, a ParameterStatus, BackendKeyData, ReadyForQuery),
// then hands the connection and an 8 KiB buffer to serve, and closes it
// when serve returns.
func fakeServer(tb testing.TB, serve func(c net.Conn, buf []byte)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return fakeServerOn(tb, ln, serve)
}

// fakeServerOn is fakeServer on a listener of the caller's.
func fakeServerOn(tb testing.TB, ln net.Listener, serve func(c net.Conn, buf []byte)) string {
	tb.Cleanup(func() { ln.Close() })
	var hello []byte
	hello, _ = (&pgproto3.AuthenticationOk{}).Encode(hello)
	hello, _ = (&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"}).Encode(hello)
	hello, _ = (&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}).Encode(hello)
	hello, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(hello)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 8<<10)
				var hdr [4]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				n := int(binary.BigEndian.Uint32(hdr[:]))
				if n < 8 || n-4 > len(buf) {
					return
				}
				if _, err := io.ReadFull(c, buf[:n-4]); err != nil {
					return
				}
				if _, err := c.Write(hello); err != nil {
					return
				}
				serve(c, buf)
			}()
		}
	}()
	return ln.Addr().String()
}

// benchProxy serves a proxy in front of addr until the benchmark ends and
// returns its address.
func benchProxy(b *testing.B, addr string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := proxy.NewServer(proxy.Config{}, staticDirector{addr: addr}, nil, nil)
	go srv.Serve(ln, proxy.Listener{Addr: ln.Addr().String()})
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// BenchmarkRelayQuery measures one simple-protocol round trip through the
// proxy (Query → RowDescription, DataRow×rows, CommandComplete,
// ReadyForQuery) over loopback. allocs/op covers the whole process: the
// fake backend and the client allocate nothing per query, so it is the
// relay's own.
func BenchmarkRelayQuery(b *testing.B) {
	for _, rows := range []int{1, 100} {
		b.Run(map[int]string{1: "rows=1", 100: "rows=100"}[rows], func(b *testing.B) {
			addr, respLen := fakeBackend(b, rows)
			c, err := net.Dial("tcp", benchProxy(b, addr))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			startup := binary.BigEndian.AppendUint32(nil, 0)
			startup = binary.BigEndian.AppendUint32(startup, 3<<16)
			startup = append(startup, "user\x00bench\x00database\x00bench\x00\x00"...)
			binary.BigEndian.PutUint32(startup, uint32(len(startup)))
			c.Write(startup)
			buf := make([]byte, 64<<10)
			// Read the startup answer up to ReadyForQuery.
			for got := []byte{}; ; {
				n, err := c.Read(buf)
				if err != nil {
					b.Fatal(err)
				}
				got = append(got, buf[:n]...)
				if len(got) >= 6 && string(got[len(got)-6:]) == "Z\x00\x00\x00\x05I" {
					break
				}
			}
			query := append([]byte{'Q', 0, 0, 0, 0}, "SELECT aid, abalance FROM pgbench_accounts WHERE aid = 1\x00"...)
			binary.BigEndian.PutUint32(query[1:], uint32(len(query)-1))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(query); err != nil {
					b.Fatal(err)
				}
				for left := respLen; left > 0; {
					n, err := c.Read(buf[:min(left, len(buf))])
					if err != nil {
						b.Fatal(err)
					}
					left -= n
				}
			}
		})
	}
}

// BenchmarkConnect measures a whole session through the proxy against the
// fake backend: accept, startup, Director, backend dial and startup,
// authentication relay, one query, Terminate.
func BenchmarkConnect(b *testing.B) {
	addr, respLen := fakeBackend(b, 1)
	proxyAddr := benchProxy(b, addr)
	startup := binary.BigEndian.AppendUint32(nil, 0)
	startup = binary.BigEndian.AppendUint32(startup, 3<<16)
	startup = append(startup, "user\x00bench\x00database\x00bench\x00application_name\x00pgbench\x00\x00"...)
	binary.BigEndian.PutUint32(startup, uint32(len(startup)))
	query := append([]byte{'Q', 0, 0, 0, 0}, "SELECT 1\x00"...)
	binary.BigEndian.PutUint32(query[1:], uint32(len(query)-1))
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := net.Dial("tcp", proxyAddr)
		if err != nil {
			b.Fatal(err)
		}
		c.Write(startup)
		for got := 0; ; {
			n, err := c.Read(buf[got:])
			if err != nil {
				b.Fatal(err)
			}
			got += n
			if got >= 6 && string(buf[got-6:got]) == "Z\x00\x00\x00\x05I" {
				break
			}
		}
		c.Write(query)
		for left := respLen; left > 0; {
			n, err := c.Read(buf[:min(left, len(buf))])
			if err != nil {
				b.Fatal(err)
			}
			left -= n
		}
		c.Write([]byte{'X', 0, 0, 0, 4})
		c.Close()
	}
}
