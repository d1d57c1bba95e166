package pool

import (
	"context"
	"testing"
	"time"
)

// CloseIdle closes the idle connections of the matching pools only, and
// leaves lent ones alone; the slots it frees can be dialed again.
func TestCloseIdle(t *testing.T) {
	s, f := newSet(t, Config{Size: 2, MaxWait: time.Second})
	ctx := context.Background()
	other := Key{Addr: key.Addr, Database: "other", User: key.User}
	a, _, _ := s.Acquire(ctx, key)
	b, _, _ := s.Acquire(ctx, key)
	o, _, _ := s.Acquire(ctx, other)
	s.Release(a, true)
	s.Release(o, true)
	if n := s.CloseIdle(func(k Key) bool { return k.Database == key.Database }); n != 1 {
		t.Fatalf("CloseIdle closed %d, want 1 (the idle one of db)", n)
	}
	if got := f.closed(); got != 1 {
		t.Fatalf("%d connections closed, want 1", got)
	}
	for _, st := range s.Stats() {
		switch st.Key {
		case key:
			if st.Active != 1 || st.Idle != 0 {
				t.Errorf("pool %s: active %d idle %d, want 1 0", st.Key, st.Active, st.Idle)
			}
		case other:
			if st.Idle != 1 {
				t.Errorf("pool %s: idle %d, want 1 (not matched)", st.Key, st.Idle)
			}
		}
	}
	// The freed slot is dialed again; the lent one is still usable.
	c, _, err := s.Acquire(ctx, key)
	if err != nil {
		t.Fatalf("acquire after CloseIdle: %v", err)
	}
	if f.dials.Load() != 4 {
		t.Errorf("%d dials, want 4 (the closed slot dialed again)", f.dials.Load())
	}
	s.Release(c, true)
	s.Release(b, true)
	if n := s.CloseIdle(func(Key) bool { return false }); n != 0 {
		t.Errorf("CloseIdle matching nothing closed %d", n)
	}
}
