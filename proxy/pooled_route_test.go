package proxy

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLSNText(t *testing.T) {
	for _, tt := range []struct {
		s   string
		lsn int64
	}{{"0/0", 0}, {"0/16B3748", 0x16B3748}, {"16/B374D848", 0x16B374D848}, {"FFFF/0", 0xFFFF << 32}} {
		got, err := ParseLSN(tt.s)
		if err != nil || got != tt.lsn {
			t.Errorf("ParseLSN(%q) = %#x, %v", tt.s, got, err)
		}
		if f := FormatLSN(tt.lsn); f != tt.s {
			t.Errorf("FormatLSN(%#x) = %q, want %q", tt.lsn, f, tt.s)
		}
	}
	for _, bad := range []string{"", "0", "/1", "1/", "x/1", "1/123456789", "80000000/0"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
}

// An insert position just past a page header is the page's start for a
// replica (the end of the record that filled the page before it); any
// other position is the floor as it is.
func TestWALFloor(t *testing.T) {
	for _, tt := range []struct{ in, want int64 }{
		{0x4000000 + 8192*3 + 24, 0x4000000 + 8192*3},
		{0x4000000 + 8192*3 + 25, 0x4000000 + 8192*3 + 25},
		{0x4000000 + 8192*3, 0x4000000 + 8192*3},
		{0x4000000 + 40, 0x4000000 + 40}, // a segment's first page: left as it is
		{0x40065C8, 0x40065C8},
	} {
		if got := walFloor(tt.in); got != tt.want {
			t.Errorf("walFloor(%#x) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
}

// A read that arrives while a fetch is in flight must not take that
// fetch's position (it may predate a commit the reader saw acknowledged):
// it shares the next fetch, with every read that arrived meanwhile.
func TestWALFetcherNeverSharesAFetchInFlight(t *testing.T) {
	var f walFetcher
	var fetches atomic.Int64
	var wal atomic.Int64 // the primary's position: it moves while a fetch runs
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	fetch := func() (int64, error) {
		n := fetches.Add(1)
		at := wal.Load()
		started <- struct{}{}
		if n == 1 {
			<-release
		}
		return at, nil
	}
	wal.Store(100)
	first := make(chan int64)
	go func() {
		lsn, _ := f.position(fetch)
		first <- lsn
	}()
	<-started // fetch 1 read position 100 and is in flight
	wal.Store(200)
	const late = 50
	var wg sync.WaitGroup
	got := make([]int64, late)
	for i := 0; i < late; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = f.position(fetch)
		}()
	}
	time.Sleep(50 * time.Millisecond) // the late reads are waiting
	close(release)
	if lsn := <-first; lsn != 100 {
		t.Fatalf("first read got %d", lsn)
	}
	wg.Wait()
	for i, lsn := range got {
		if lsn < 200 {
			t.Fatalf("read %d that arrived during fetch 1 got %d, from before it arrived", i, lsn)
		}
	}
	if n := fetches.Load(); n != 2 {
		t.Errorf("%d fetches for 1 + %d reads, want 2 (the late ones share one)", n, late)
	}
}
