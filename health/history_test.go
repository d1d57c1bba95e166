package health

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

type sample struct {
	t   float64
	lsn int64
}

func TestHistoryLag(t *testing.T) {
	tests := []struct {
		name      string
		window    time.Duration
		samples   []sample
		at        float64
		replay    int64
		wantSecs  float64
		wantBytes int64
		wantOK    bool
		wantRuns  int
	}{
		{name: "no primary sample", window: time.Minute, at: 1, replay: 100, wantOK: false},
		{name: "idle primary, caught up replica: zero however long idle",
			window: time.Minute, samples: []sample{{0, 500}, {10, 500}, {20, 500}, {30, 500}},
			at: 30.2, replay: 500, wantSecs: 0, wantBytes: 0, wantOK: true, wantRuns: 1},
		{name: "replica ahead of the newest sample",
			window: time.Minute, samples: []sample{{0, 100}, {1, 200}},
			at: 1.1, replay: 250, wantOK: true, wantRuns: 2},
		{name: "replica between two samples: fresh as of the older one",
			window: time.Minute, samples: []sample{{0, 100}, {1, 200}, {2, 300}},
			at: 2.5, replay: 250, wantSecs: 1.5, wantBytes: 50, wantOK: true, wantRuns: 3},
		{name: "exactly at a sample LSN: the last time that LSN was seen",
			window: time.Minute, samples: []sample{{0, 100}, {1, 200}, {1.5, 200}, {2, 300}},
			at: 2.5, replay: 200, wantSecs: 1.0, wantBytes: 100, wantOK: true, wantRuns: 3},
		{name: "stuck behind an idle primary ages from when the primary moved on",
			window: time.Minute, samples: []sample{{0, 100}, {1, 200}, {2, 200}, {30, 200}},
			at: 30.1, replay: 100, wantSecs: 30.1, wantBytes: 100, wantOK: true, wantRuns: 2},
		{name: "below the oldest run after pruning: lower bound from its first sample",
			window: 5 * time.Second, samples: []sample{{0, 100}, {1, 200}, {2, 300}, {10, 400}, {11, 400}},
			at: 11, replay: 150, wantSecs: 1, wantBytes: 250, wantOK: true, wantRuns: 1},
		{name: "below the oldest run, idle primary since: grows with time",
			window: 5 * time.Second, samples: []sample{{0, 100}, {1, 200}, {100, 200}},
			at: 100, replay: 150, wantSecs: 99, wantBytes: 50, wantOK: true, wantRuns: 1},
		{name: "primary sample newer than the replica probe: never negative",
			window: time.Minute, samples: []sample{{0, 100}, {5, 200}, {6, 300}},
			at: 4, replay: 250, wantSecs: 0, wantBytes: 50, wantOK: true, wantRuns: 3},
		{name: "LSN going backwards restarts the history",
			window: time.Minute, samples: []sample{{0, 100}, {1, 900}, {2, 50}},
			at: 2.5, replay: 60, wantSecs: 0, wantBytes: 0, wantOK: true, wantRuns: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := history{window: tt.window}
			for _, s := range tt.samples {
				h.add(at(s.t), s.lsn)
			}
			secs, bytes, ok := h.lag(at(tt.at), tt.replay)
			if ok != tt.wantOK || bytes != tt.wantBytes || absDiff(secs.Seconds(), tt.wantSecs) > 1e-6 {
				t.Fatalf("lag = %v, %d, %v; want %vs, %d, %v", secs, bytes, ok, tt.wantSecs, tt.wantBytes, tt.wantOK)
			}
			if len(h.runs) != tt.wantRuns {
				t.Fatalf("runs = %d (%v), want %d", len(h.runs), h.runs, tt.wantRuns)
			}
		})
	}
}

func TestHistoryBounded(t *testing.T) {
	h := history{window: time.Hour}
	for i := 0; i < 3*maxHistoryRuns; i++ {
		h.add(at(float64(i)/100), int64(i+1)*10)
	}
	if len(h.runs) != maxHistoryRuns {
		t.Fatalf("runs = %d, want the cap %d", len(h.runs), maxHistoryRuns)
	}
	if n, _ := h.newest(); n != int64(3*maxHistoryRuns)*10 {
		t.Fatalf("newest = %d", n)
	}
}

func TestFormatLSN(t *testing.T) {
	for _, tt := range []struct {
		lsn  int64
		want string
	}{{0, "0/0"}, {0x16B374D848, "16/B374D848"}, {0x3000060, "0/3000060"}} {
		if got := FormatLSN(tt.lsn); got != tt.want {
			t.Errorf("FormatLSN(%#x) = %q, want %q", tt.lsn, got, tt.want)
		}
	}
}

func absDiff(a, b float64) float64 {
	if a > b {
		return a - b
	}
	return b - a
}

func TestFormatSize(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{{0, "0 bytes"}, {10239, "10239 bytes"}, {10240, "10 kB"}, {8150832, "7960 kB"}, {1 << 20, "1024 kB"},
		{10 << 20, "10 MB"}, {5 << 30, "5120 MB"}, {20 << 30, "20 GB"}, {1 << 50, "1024 TB"}, {1 << 60, "1048576 TB"}} {
		if got := FormatSize(tt.n); got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
