package app

import (
	"os"
	"runtime"
	"sync"
)

// runtime.gomaxprocs is process-wide; the App that owns the process's
// configuration applies it at start and on every reload.
var procs struct {
	sync.Mutex
	changed bool // pgproxy has set GOMAXPROCS itself
	start   int  // GOMAXPROCS before that: the env variable or Go's default
}

// applyGOMAXPROCS sets GOMAXPROCS to n, or back to what the process started
// with when n is 0, and returns the value in force.
func applyGOMAXPROCS(n int) int {
	procs.Lock()
	defer procs.Unlock()
	switch {
	case n > 0:
		if !procs.changed {
			procs.start, procs.changed = runtime.GOMAXPROCS(0), true
		}
		if runtime.GOMAXPROCS(0) != n {
			runtime.GOMAXPROCS(n)
		}
	case procs.changed:
		procs.changed = false
		if os.Getenv("GOMAXPROCS") == "" {
			runtime.SetDefaultGOMAXPROCS() // Go's default, which follows the container's CPU limit again
		} else {
			runtime.GOMAXPROCS(procs.start)
		}
	}
	return runtime.GOMAXPROCS(0)
}
