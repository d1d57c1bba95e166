package pool

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeDialer hands out one end of a net.Pipe per dial and counts dials and
// closes (a closed Conn's far end reads EOF).
type fakeDialer struct {
	dials  atomic.Int32
	fail   atomic.Bool
	mu     sync.Mutex
	remote []net.Conn
}

func (f *fakeDialer) dial(ctx context.Context, key Key) (*Conn, error) {
	f.dials.Add(1)
	if f.fail.Load() {
		return nil, errors.New("dial refused")
	}
	a, b := net.Pipe()
	f.mu.Lock()
	f.remote = append(f.remote, b)
	f.mu.Unlock()
	return &Conn{Net: a, Initial: map[string]string{"application_name": ""}}, nil
}

// closed counts connections whose near end was closed.
func (f *fakeDialer) closed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.remote {
		_ = r.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		var b [1]byte
		_, err := r.Read(b[:])
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			n++ // EOF: the pool closed its end
		}
	}
	return n
}

func (f *fakeDialer) cleanup() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.remote {
		r.Close()
	}
}

var key = Key{Addr: "127.0.0.1:5432", Database: "db", User: "u"}

func newSet(t *testing.T, cfg Config) (*Set, *fakeDialer) {
	f := &fakeDialer{}
	s := New(cfg, f.dial)
	t.Cleanup(func() { s.Close(); f.cleanup() })
	return s, f
}

func TestReuseMostRecent(t *testing.T) {
	s, f := newSet(t, Config{Size: 2, MaxWait: time.Second})
	ctx := context.Background()
	a, _, err := s.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := s.Acquire(ctx, key)
	if a == b {
		t.Fatal("two acquires got the same connection")
	}
	a.Params["application_name"] = "x"
	s.Release(a, true)
	s.Release(b, true)
	c, _, _ := s.Acquire(ctx, key)
	if c != b {
		t.Fatal("Acquire did not return the most recently released connection")
	}
	if got := f.dials.Load(); got != 2 {
		t.Fatalf("dials = %d, want 2", got)
	}
	if a.Params["application_name"] != "x" || a.Initial["application_name"] != "" {
		t.Fatal("Params must start as a copy of Initial")
	}
	s.Release(c, false) // not reusable: closed
	if n := f.closed(); n != 1 {
		t.Fatalf("closed = %d, want 1", n)
	}
	st := s.Stats()
	if len(st) != 1 || st[0].Idle != 1 || st[0].Active != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestWaitHandoffAndExhausted(t *testing.T) {
	s, _ := newSet(t, Config{Size: 1, MaxWait: 300 * time.Millisecond})
	ctx := context.Background()
	a, _, err := s.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Conn)
	go func() {
		c, waited, err := s.Acquire(ctx, key)
		if err != nil || waited <= 0 {
			t.Errorf("waiter: %v waited %v", err, waited)
		}
		got <- c
	}()
	waitFor(t, func() bool { return s.Stats()[0].Waiting == 1 })
	s.Release(a, true)
	if c := <-got; c != a {
		t.Fatal("the waiter did not get the released connection")
	}
	// Nobody releases now: the next Acquire gives up after MaxWait.
	_, waited, err := s.Acquire(ctx, key)
	var ex *ExhaustedError
	if !errors.As(err, &ex) || ex.Busy != 1 || waited < 300*time.Millisecond {
		t.Fatalf("err = %v (waited %v), want ExhaustedError with 1 busy", err, waited)
	}
	if s.Stats()[0].Waiting != 0 {
		t.Fatal("a waiter that gave up is still queued")
	}
	s.Release(a, true)
}

func TestDialFailurePassesTheSlot(t *testing.T) {
	s, f := newSet(t, Config{Size: 1, MaxWait: time.Second})
	ctx := context.Background()
	f.fail.Store(true)
	if _, _, err := s.Acquire(ctx, key); err == nil {
		t.Fatal("Acquire succeeded with a failing dialer")
	}
	f.fail.Store(false)
	c, _, err := s.Acquire(ctx, key)
	if err != nil {
		t.Fatalf("the failed dial kept its slot: %v", err)
	}
	s.Release(c, true)
}

func TestDrainAndLifetime(t *testing.T) {
	s, f := newSet(t, Config{Size: 3, MaxWait: time.Second, Lifetime: time.Hour})
	ctx := context.Background()
	a, _, _ := s.Acquire(ctx, key)
	b, _, _ := s.Acquire(ctx, key)
	s.Release(a, true)
	if n := s.Drain(key.Addr); n != 1 {
		t.Fatalf("Drain closed %d idle, want 1", n)
	}
	s.Release(b, true) // dialed before the drain: closed
	if n := f.closed(); n != 2 {
		t.Fatalf("closed = %d, want 2", n)
	}
	c, _, _ := s.Acquire(ctx, key)
	if c == a || c == b || f.dials.Load() != 3 {
		t.Fatal("after Drain a new connection must be dialed")
	}
	c.created = time.Now().Add(-2 * time.Hour)
	s.Release(c, true) // past Lifetime: closed
	if n := f.closed(); n != 3 {
		t.Fatalf("closed = %d, want 3", n)
	}
}

func TestReapIdle(t *testing.T) {
	s, f := newSet(t, Config{Size: 3, MinSize: 1, MaxWait: time.Second, IdleTimeout: time.Minute})
	ctx := context.Background()
	a, _, _ := s.Acquire(ctx, key)
	b, _, _ := s.Acquire(ctx, key)
	s.Release(a, true)
	s.Release(b, true)
	s.reap(time.Now().Add(2 * time.Minute))
	if n := f.closed(); n != 1 {
		t.Fatalf("reap closed %d, want 1 (MinSize 1 kept)", n)
	}
	if st := s.Stats(); st[0].Idle != 1 {
		t.Fatalf("idle after reap = %d, want 1", st[0].Idle)
	}
}

func TestCloseFailsWaiters(t *testing.T) {
	f := &fakeDialer{}
	defer f.cleanup()
	s := New(Config{Size: 1, MaxWait: 10 * time.Second}, f.dial)
	a, _, _ := s.Acquire(context.Background(), key)
	errc := make(chan error)
	go func() {
		_, _, err := s.Acquire(context.Background(), key)
		errc <- err
	}()
	waitFor(t, func() bool { return s.Stats()[0].Waiting == 1 })
	s.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiter got %v, want ErrClosed", err)
	}
	s.Release(a, true) // after Close: closed, not kept
	if n := f.closed(); n != 1 {
		t.Fatalf("closed = %d, want 1", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// TryAcquire lends an idle connection as Acquire does (the most recent,
// counted as lent) and otherwise returns nil without dialing or waiting.
func TestTryAcquire(t *testing.T) {
	s, f := newSet(t, Config{Size: 1, MaxWait: time.Second})
	if c := s.TryAcquire(key); c != nil {
		t.Fatal("TryAcquire on an empty pool returned a connection")
	}
	if got := f.dials.Load(); got != 0 {
		t.Fatalf("TryAcquire dialed (%d dials)", got)
	}
	a, _, err := s.Acquire(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.TryAcquire(key); c != nil {
		t.Fatal("TryAcquire returned a connection while the only one is lent")
	}
	s.Release(a, true)
	c := s.TryAcquire(key)
	if c != a {
		t.Fatalf("TryAcquire = %p, want the idle connection %p", c, a)
	}
	if st := s.Stats(); len(st) != 1 || st[0].Active != 1 || st[0].Idle != 0 {
		t.Fatalf("stats after TryAcquire = %+v, want it counted as lent", st)
	}
	s.Release(c, true)
	s.Drain(key.Addr) // the idle one is closed, and so is the pool's count
	if c := s.TryAcquire(key); c != nil {
		t.Fatal("TryAcquire returned a drained connection")
	}
	if got := f.dials.Load(); got != 1 {
		t.Fatalf("dials = %d, want 1", got)
	}
}
