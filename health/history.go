package health

import (
	"fmt"
	"time"
)

// maxHistoryRuns bounds the primary history whatever the window.
const maxHistoryRuns = 4096

// lsnRun is a run of primary samples that saw the same LSN: first and last
// are the local times of the first and the last sample of the run.
type lsnRun struct {
	lsn         int64
	first, last time.Time
}

// history is the primary's recent WAL positions on the proxy's clock. LSNs of
// consecutive runs strictly increase. Not safe for concurrent use.
type history struct {
	runs   []lsnRun // oldest first; a ring would save the copy, runs are few
	window time.Duration
}

// reset forgets every sample (the primary changed).
func (h *history) reset() { h.runs = h.runs[:0] }

// add records that the primary was at lsn at time t. An LSN lower than the
// newest one (which a primary never reports on one timeline) restarts the
// history.
func (h *history) add(t time.Time, lsn int64) {
	if n := len(h.runs); n > 0 {
		last := &h.runs[n-1]
		switch {
		case lsn == last.lsn:
			if t.After(last.last) {
				last.last = t
			}
			h.prune(t)
			return
		case lsn < last.lsn:
			h.reset()
		}
	}
	h.runs = append(h.runs, lsnRun{lsn: lsn, first: t, last: t})
	h.prune(t)
}

// prune drops runs that ended before t−window (keeping the newest run) and
// bounds the number of runs.
func (h *history) prune(t time.Time) {
	cut := 0
	limit := t.Add(-h.window)
	for cut < len(h.runs)-1 && h.runs[cut].last.Before(limit) {
		cut++
	}
	if over := len(h.runs) - cut - maxHistoryRuns; over > 0 {
		cut += over
	}
	if cut > 0 {
		h.runs = append(h.runs[:0], h.runs[cut:]...)
	}
}

// newest returns the newest primary LSN and whether there is one.
func (h *history) newest() (int64, bool) {
	if len(h.runs) == 0 {
		return 0, false
	}
	return h.runs[len(h.runs)-1].lsn, true
}

// lag returns the staleness and byte lag of a replica that had replayed
// replay at time t. ok is false when there is no primary sample.
//
// The replica holds everything the primary had at the last sample of the
// newest run whose LSN ≤ replay: staleness = t − that time (≥ 0). At or
// beyond the newest LSN the staleness is 0. Below the oldest run it is a
// lower bound: t − the first sample of the oldest run.
func (h *history) lag(t time.Time, replay int64) (seconds time.Duration, bytes int64, ok bool) {
	n := len(h.runs)
	if n == 0 {
		return 0, 0, false
	}
	newest := h.runs[n-1].lsn
	if replay >= newest {
		return 0, 0, true
	}
	bytes = newest - replay
	// Binary search: the last run with lsn ≤ replay.
	lo, hi := 0, n // invariant: runs[:lo] ≤ replay, runs[hi:] > replay
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if h.runs[mid].lsn <= replay {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	var since time.Time
	if lo == 0 {
		since = h.runs[0].first
	} else {
		since = h.runs[lo-1].last
	}
	seconds = t.Sub(since)
	if seconds < 0 {
		seconds = 0
	}
	return seconds, bytes, true
}

// FormatLSN renders an LSN the way PostgreSQL prints pg_lsn ("16/B374D848").
func FormatLSN(lsn int64) string {
	u := uint64(lsn)
	return fmt.Sprintf("%X/%X", u>>32, uint32(u))
}
