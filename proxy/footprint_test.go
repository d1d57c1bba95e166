package proxy_test

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/internal/pgauth"
	"github.com/ofitec/pgproxy/internal/pgwire"
	"github.com/ofitec/pgproxy/proxy"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

// md5Login logs c in as pgcluster.MD5User through proxy authentication
// and runs one query, reading with a reader it then drops (the client's
// own memory stays small: a parked-client measure counts the proxy's).
func md5Login(tb testing.TB, c net.Conn) {
	tb.Helper()
	br := bufio.NewReaderSize(c, 512)
	if _, err := c.Write(startupMsg(pgcluster.MD5User)); err != nil {
		tb.Fatal(err)
	}
	typ, body, err := pgwire.ReadMessage(br, 1024)
	if err != nil || typ != 'R' || len(body) != 8 || binary.BigEndian.Uint32(body) != 5 {
		tb.Fatalf("want AuthenticationMD5Password, got %q %x %v", typ, body, err)
	}
	inner := md5.Sum([]byte(pgcluster.MD5Password + pgcluster.MD5User))
	outer := md5.Sum(append([]byte(hex.EncodeToString(inner[:])), body[4:]...))
	pw := pgwire.AppendMessage(nil, 'p', append([]byte("md5"+hex.EncodeToString(outer[:])), 0))
	if _, err := c.Write(append(pw, queryMsg("SELECT 1")...)); err != nil {
		tb.Fatal(err)
	}
	for z := 0; z < 2; {
		typ, _, err := pgwire.ReadMessage(br, 1<<20)
		if err != nil {
			tb.Fatal(err)
		}
		if typ == 'E' {
			tb.Fatal("error from the proxy")
		}
		if typ == 'Z' {
			z++
		}
	}
}

// liveHeap is the heap in use after two GCs (what is reachable).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkParkedClientFootprint measures the proxy's heap per idle
// transaction-mode client (parked: park_linux.go) as the metric
// heap-B/client: the in-use heap with n clients parked, minus before, over
// n, after a GC. PGPROXY_FOOTPRINT_PROFILE=FILE also writes a heap profile
// with them parked (go tool pprof -sample_index=inuse_space FILE).
//
//	go test ./proxy -run '^$' -bench ParkedClientFootprint -benchtime 1x
func BenchmarkParkedClientFootprint(b *testing.B) {
	pgcluster.Require(b, cluster)
	const n = 1000
	if os.Getenv("PGPROXY_FOOTPRINT_PROFILE") != "" {
		defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
		runtime.MemProfileRate = 1 // every allocation
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := proxy.NewServer(pooledConfig(true, 4), staticDirector{addr: cluster.Primary().Addr()}, nil, nil)
	go srv.Serve(ln, proxy.Listener{Addr: ln.Addr().String()})
	b.Cleanup(func() { srv.Close() })
	for b.Loop() {
		warm, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		md5Login(b, warm)
		time.Sleep(500 * time.Millisecond)
		before := liveHeap()
		conns := make([]net.Conn, n)
		for i := range conns {
			if conns[i], err = net.Dial("tcp", ln.Addr().String()); err != nil {
				b.Fatal(err)
			}
			md5Login(b, conns[i])
		}
		time.Sleep(time.Second) // all parked (parkAfter is 250 ms)
		after := liveHeap()
		if f := os.Getenv("PGPROXY_FOOTPRINT_PROFILE"); f != "" {
			out, err := os.Create(f)
			if err != nil {
				b.Fatal(err)
			}
			_ = pprof.WriteHeapProfile(out)
			out.Close()
		}
		b.ReportMetric(float64(after-before)/n, "heap-B/client")
		for _, c := range conns {
			c.Close()
		}
		warm.Close()
	}
}

// TestIdleSessionHoldsNoLargeBuffer: a client that sends its first query
// in the same packet as its password (md5Login does) leaves bytes the
// authentication read ahead; relaying them must not leave the session
// holding a 64 KiB relay buffer while it then sits idle. Session mode,
// where an idle client never parks: before the fix each such client kept
// one (about 70 KiB of heap per client).
func TestIdleSessionHoldsNoLargeBuffer(t *testing.T) {
	pgcluster.Require(t, cluster)
	const n = 40
	tp := startProxy(t, pooledConfig(false, n+1), staticDirector{addr: cluster.Primary().Addr()})
	warm, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer warm.Close()
	md5Login(t, warm)
	time.Sleep(100 * time.Millisecond)
	before := liveHeap()
	conns := make([]net.Conn, n)
	for i := range conns {
		if conns[i], err = net.Dial("tcp", tp.addr); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
		md5Login(t, conns[i])
	}
	time.Sleep(100 * time.Millisecond)
	after := liveHeap()
	per := (int64(after) - int64(before)) / n
	t.Logf("heap per idle session-mode client: %d B", per)
	if per > 24<<10 {
		t.Fatalf("each idle client holds %d B of heap: more than its state (a relay buffer kept?)", per)
	}
}

// BenchmarkPooledConnect measures what pgbench -C costs the proxy in
// transaction mode, one connection at a time: accept, startup, md5
// authentication by the proxy, one query on a pooled server, Terminate
// (run it with -cpuprofile or -memprofile to see where that goes).
//
//	go test ./proxy -run '^$' -bench PooledConnect -benchtime 2000x
func BenchmarkPooledConnect(b *testing.B) {
	pgcluster.Require(b, cluster)
	// The secret is looked up once: authidLookup connects to the cluster
	// for every login (about 4 ms), which would hide the proxy's own cost.
	sec, found, err := authidLookup(context.Background(), pgcluster.MD5User)
	if err != nil || !found {
		b.Fatalf("look up %s: %v %v", pgcluster.MD5User, found, err)
	}
	cfg := pooledConfig(true, 4)
	cfg.Auth = &proxy.ProxyAuth{Lookup: func(context.Context, string) (pgauth.Secret, bool, error) { return sec, true, nil }}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := proxy.NewServer(cfg, staticDirector{addr: cluster.Primary().Addr()}, nil, nil)
	go srv.Serve(ln, proxy.Listener{Addr: ln.Addr().String()})
	b.Cleanup(func() { srv.Close() })
	terminate := []byte{'X', 0, 0, 0, 4}
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		md5Login(b, c)
		if _, err := c.Write(terminate); err != nil {
			b.Fatal(err)
		}
		// Wait for the proxy to close, so that sessions do not pile up.
		var one [1]byte
		_, _ = c.Read(one[:])
		c.Close()
	}
}
