package app

import (
	"os"
	"runtime"
	"testing"
)

// TestApplyGOMAXPROCS: a value sets GOMAXPROCS, another replaces it, and 0
// is half of Go's default (at least one), or the GOMAXPROCS environment
// variable when it is set.
func TestApplyGOMAXPROCS(t *testing.T) {
	start := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(start)
	other := start + 1
	if got := applyGOMAXPROCS(other); got != other || runtime.GOMAXPROCS(0) != other {
		t.Fatalf("apply(%d) = %d, GOMAXPROCS %d", other, got, runtime.GOMAXPROCS(0))
	}
	if got := applyGOMAXPROCS(1); got != 1 {
		t.Fatalf("apply(1) = %d", got)
	}
	if os.Getenv("GOMAXPROCS") != "" {
		if got := applyGOMAXPROCS(0); got != start {
			t.Fatalf("apply(0) with GOMAXPROCS=%s = %d, want %d", os.Getenv("GOMAXPROCS"), got, start)
		}
		return
	}
	runtime.SetDefaultGOMAXPROCS()
	want := max(1, runtime.GOMAXPROCS(0)/2)
	runtime.GOMAXPROCS(7)
	if got := applyGOMAXPROCS(0); got != want {
		t.Fatalf("apply(0) = %d, want half of Go's default: %d", got, want)
	}
}
