package proxy

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func idleWorkers(w *workers) []*worker {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*worker(nil), w.idle...)
}

func waitIdle(t *testing.T, w *workers, n int) []*worker {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		idle := idleWorkers(w)
		if len(idle) == n {
			return idle
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle workers, want %d", len(idle), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A finished task's goroutine runs the next one; at most maxIdleWorkers
// wait; an idle one exits after workerIdle; stop ends the idle ones and a
// task given after it still runs.
func TestWorkers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var w workers
	done := make(chan int, 16)
	w.run(func() { done <- 1 })
	<-done
	first := waitIdle(t, &w, 1)[0]
	w.run(func() { done <- 2 })
	if got := <-done; got != 2 {
		t.Fatalf("task got %d", got)
	}
	if again := waitIdle(t, &w, 1)[0]; again != first {
		t.Fatal("the second task did not run on the idle worker")
	}

	// maxIdleWorkers+3 tasks at once: as many goroutines; when they end,
	// maxIdleWorkers of them wait and the others exit.
	release := make(chan struct{})
	var started sync.WaitGroup
	for i := 0; i < maxIdleWorkers+3; i++ {
		started.Add(1)
		w.run(func() { started.Done(); <-release; done <- 3 })
	}
	started.Wait()
	close(release)
	for i := 0; i < maxIdleWorkers+3; i++ {
		<-done
	}
	waitIdle(t, &w, maxIdleWorkers)

	time.Sleep(workerIdle + 200*time.Millisecond)
	waitIdle(t, &w, 0) // they expired

	w.run(func() { done <- 4 })
	<-done
	waitIdle(t, &w, 1)
	w.stop()
	waitIdle(t, &w, 0)
	w.run(func() { done <- 5 }) // after stop: its own goroutine, which exits
	if got := <-done; got != 5 {
		t.Fatalf("task after stop got %d", got)
	}
}
