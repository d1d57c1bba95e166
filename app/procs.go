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
	start int // GOMAXPROCS when pgproxy first set it: the env variable or Go's default
}

// autoGOMAXPROCS is runtime.gomaxprocs 0 without a GOMAXPROCS environment
// variable: half the CPUs Go would use (at least one), as Odyssey's
// workers "auto". Each thread runs one event loop; on cores shared with
// PostgreSQL and its clients a spare thread is woken and put back to sleep
// for nothing (docs/benchmarks.md).
func autoGOMAXPROCS() int {
	runtime.SetDefaultGOMAXPROCS() // the CPUs, or the container's CPU limit
	return max(1, runtime.GOMAXPROCS(0)/2)
}

// applyGOMAXPROCS sets GOMAXPROCS to n, or, for 0, to the GOMAXPROCS
// environment variable if set and autoGOMAXPROCS otherwise; it returns the
// value in force.
func applyGOMAXPROCS(n int) int {
	procs.Lock()
	defer procs.Unlock()
	if procs.start == 0 {
		procs.start = runtime.GOMAXPROCS(0)
	}
	if n == 0 {
		if os.Getenv("GOMAXPROCS") != "" {
			n = procs.start
		} else {
			n = autoGOMAXPROCS()
		}
	}
	if runtime.GOMAXPROCS(0) != n {
		runtime.GOMAXPROCS(n)
	}
	return runtime.GOMAXPROCS(0)
}
