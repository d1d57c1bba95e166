//go:build linux

package proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/proxy"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestRelayChoice: a plain TCP session is relayed by an event loop unless
// runtime.event_loops is -1, and SessionInfo (SHOW SESSIONS) says which.
func TestRelayChoice(t *testing.T) {
	for _, r := range relays {
		t.Run(r.name, func(t *testing.T) {
			tp := primaryProxy(t, proxy.Config{RelayLoops: r.loops})
			pc := rawSession(t, tp)
			if err := pc.Exec(ctxT(t, 5*time.Second), "SELECT 1").Close(); err != nil {
				t.Fatal(err)
			}
			list := tp.srv.Sessions()
			if len(list) != 1 || list[0].Relay != r.want {
				t.Fatalf("sessions %+v, want one relayed by %q", list, r.want)
			}
		})
	}
}

// TestEventLoopBackpressure: on one loop, a client that stops reading a
// large result holds back only its own session: another session on the
// same loop keeps answering, the proxy does not buffer the result, and the
// slow client gets every byte once it reads again.
func TestEventLoopBackpressure(t *testing.T) {
	forRelays(t, func(t *testing.T, cfg proxy.Config) {
		if cfg.RelayLoops == 0 {
			cfg.RelayLoops = 1 // both sessions on the same loop
		}
		tp := primaryProxy(t, cfg)
		slow := rawSession(t, tp).Conn()
		other := rawSession(t, tp)

		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		const size = 32 << 20
		q := append([]byte("SELECT repeat('x', 32*1024*1024)"), 0)
		msg := append([]byte{'Q'}, binary.BigEndian.AppendUint32(nil, uint32(4+len(q)))...)
		if _, err := slow.Write(append(msg, q...)); err != nil {
			t.Fatal(err)
		}
		// The slow client reads nothing for a while: the socket buffers
		// fill and the relay must stop reading the server for it.
		time.Sleep(300 * time.Millisecond)
		for i := range 20 {
			if err := other.Exec(ctxT(t, 5*time.Second), "SELECT 1").Close(); err != nil {
				t.Fatalf("query %d of the other session while the slow one is blocked: %v", i, err)
			}
		}
		runtime.ReadMemStats(&ms1)
		if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 8<<20 {
			t.Fatalf("the proxy allocated %d MiB while the slow client did not read", d>>20)
		}
		_ = slow.SetReadDeadline(time.Now().Add(60 * time.Second))
		var total int64
		buf := make([]byte, 64<<10)
		var tail []byte
		for {
			n, err := slow.Read(buf)
			total += int64(n)
			tail = append(tail, buf[:n]...)
			if len(tail) > 6 {
				tail = tail[len(tail)-6:]
			}
			if bytes.Equal(tail, []byte{'Z', 0, 0, 0, 5, 'I'}) {
				break
			}
			if err != nil {
				t.Fatalf("after %d bytes: %v", total, err)
			}
		}
		if total < size {
			t.Fatalf("slow client got %d bytes, want more than %d", total, size)
		}
	})
}

// panicSink is a lineage sink whose Begin panics for statements that
// contain "boom".
type panicSink struct{ begun atomic.Int64 }

func (s *panicSink) Tagged(sql []byte) bool { return bytes.Contains(sql, []byte("boom")) }
func (s *panicSink) Begin(proxy.LineageSession, string) proxy.LineageRun {
	s.begun.Add(1)
	panic("test: lineage sink panics")
}

// TestRelayPanicEndsOnlyItsSession: a panic while relaying one session
// (here in a lineage hook) ends that session and no other: on an event
// loop, the loop and the other sessions on it carry on.
func TestRelayPanicEndsOnlyItsSession(t *testing.T) {
	forRelays(t, func(t *testing.T, cfg proxy.Config) {
		if cfg.RelayLoops == 0 {
			cfg.RelayLoops = 1
		}
		sink := &panicSink{}
		cfg.Lineage = sink
		tp := primaryProxy(t, cfg)
		victim := rawSession(t, tp)
		other := rawSession(t, tp)
		err := victim.Exec(ctxT(t, 5*time.Second), "SELECT 'boom'").Close()
		if err == nil || sink.begun.Load() != 1 {
			t.Fatalf("statement that panics the sink: err %v, Begin called %d times", err, sink.begun.Load())
		}
		for i := range 5 {
			if err := other.Exec(ctxT(t, 5*time.Second), "SELECT 1").Close(); err != nil {
				t.Fatalf("other session, query %d after the panic: %v", i, err)
			}
		}
		// New sessions still work too.
		if err := rawSession(t, tp).Exec(ctxT(t, 5*time.Second), "SELECT 1").Close(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestShutdownRace: Shutdown while sessions are connecting, authenticating
// and being handed to the relay (terminate may come before the loop has
// taken a session, or during startup) ends every one of them and returns.
func TestShutdownRace(t *testing.T) {
	pgcluster.Require(t, cluster)
	forRelays(t, shutdownRace)
}

func shutdownRace(t *testing.T, cfg proxy.Config) {
	checkLeaks(t)
	if cfg.RelayLoops == 0 {
		cfg.RelayLoops = 1
	}
	tp := startProxy(t, cfg, staticDirector{addr: cluster.Primary().Addr()})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				pc, err := pgconn.Connect(ctx, tp.dsn("postgres", "postgres"))
				if err == nil {
					_ = pc.Exec(ctx, "SELECT 1").Close()
					pc.Close(ctx)
				}
				cancel()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tp.srv.Shutdown(ctx) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	close(stop)
	wg.Wait()
	if n := tp.srv.SessionCount(); n != 0 {
		t.Fatalf("%d sessions left after Shutdown", n)
	}
}
