package proxy_test

import (
	"encoding/binary"
	"net"
	"testing"
)

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
