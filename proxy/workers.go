package proxy

import (
	"slices"
	"sync"
	"time"
)

// Goroutines for sessions, their server→client relays and resumed parked
// sessions are reused. A session's goroutine grows its stack during the
// login (authentication, the pool, logging) and a relay's while it relays;
// a new goroutine starts at the runtime's average stack size and copies its
// stack as it grows, again for every session: with pgbench -C (a session
// per transaction) runtime.copystack was about 6% of pgproxy's CPU.
//
// A goroutine that finished its task waits up to workerIdle for the next
// one, then exits; at most maxIdleWorkers wait, the most recently idle
// taken first (its stack is the likeliest to be warm). Server.Close and
// Shutdown stop the waiting ones once every session has ended, so a closed
// server leaves none behind; a task given after that runs on a goroutine
// of its own, which exits when the task returns.
const (
	maxIdleWorkers = 8
	workerIdle     = time.Second
)

type workers struct {
	mu      sync.Mutex
	idle    []*worker // LIFO
	stopped bool
}

type worker struct {
	tasks chan func() // one slot: run never blocks; closed by stop
}

// run runs f on an idle worker, or on a new goroutine.
func (w *workers) run(f func()) {
	w.mu.Lock()
	if n := len(w.idle); n > 0 {
		k := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		k.tasks <- f
		return
	}
	w.mu.Unlock()
	go w.loop(&worker{tasks: make(chan func(), 1)}, f)
}

func (w *workers) loop(k *worker, f func()) {
	var t *time.Timer
	for f != nil {
		f()
		f = nil
		w.mu.Lock()
		if w.stopped || len(w.idle) >= maxIdleWorkers {
			w.mu.Unlock()
			return
		}
		w.idle = append(w.idle, k)
		w.mu.Unlock()
		if t == nil {
			t = time.NewTimer(workerIdle)
		} else {
			t.Reset(workerIdle)
		}
		select {
		case f = <-k.tasks: // nil: stopped
		case <-t.C:
			w.mu.Lock()
			i := slices.Index(w.idle, k)
			if i >= 0 {
				w.idle = slices.Delete(w.idle, i, i+1)
			}
			w.mu.Unlock()
			if i < 0 { // taken as the timer fired: its task is on the way
				f = <-k.tasks
			}
		}
	}
	if t != nil {
		t.Stop()
	}
}

// stop ends the idle workers; later tasks get goroutines of their own.
func (w *workers) stop() {
	w.mu.Lock()
	w.stopped = true
	idle := w.idle
	w.idle = nil
	w.mu.Unlock()
	for _, k := range idle {
		close(k.tasks)
	}
}
