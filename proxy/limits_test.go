package proxy_test

import (
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/proxy"
)

// TestHostileLengthsBoundedMemory opens 100 sessions that announce a 1 GB
// Query and send only its first bytes, and 100 sockets that announce a 2 GB
// startup packet, and checks the proxy's heap grows by a small buffer per
// connection, not by what the lengths announce.
func TestHostileLengthsBoundedMemory(t *testing.T) {
	checkLeaks(t)
	addr, _ := fakeBackend(t, 1)
	tp := startProxy(t, proxy.Config{StartupTimeout: 5 * time.Second}, staticDirector{addr: addr})
	startup := binary.BigEndian.AppendUint32(nil, 0)
	startup = binary.BigEndian.AppendUint32(startup, 3<<16)
	startup = append(startup, "user\x00u\x00database\x00d\x00\x00"...)
	binary.BigEndian.PutUint32(startup, uint32(len(startup)))
	hugeQuery := append([]byte{'Q'}, binary.BigEndian.AppendUint32(nil, 1<<30)...)
	hugeQuery = append(hugeQuery, make([]byte, 8192)...)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	buf := make([]byte, 4096)
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", tp.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.Write(startup)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAtLeast(c, buf, 1); err != nil { // AuthenticationOk ... ReadyForQuery
			t.Fatal(err)
		}
		if _, err := c.Write(hugeQuery); err != nil {
			t.Fatal(err)
		}
		s, err := net.Dial("tcp", tp.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, s)
		s.Write(binary.BigEndian.AppendUint32(nil, 2<<30))
	}
	time.Sleep(500 * time.Millisecond) // let the proxy read what was sent
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %d KiB for 100 huge-Query sessions + 100 huge startups", growth>>10)
	if growth > 20<<20 { // 200 KiB per session, fake backend included: nothing like the announced 1-2 GB
		t.Fatalf("heap grew by %d MiB", growth>>20)
	}
	if after.TotalAlloc-before.TotalAlloc > 64<<20 {
		t.Fatalf("allocated %d MiB in total", (after.TotalAlloc-before.TotalAlloc)>>20)
	}
}
