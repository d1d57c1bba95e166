package app

import (
	"runtime"
	"testing"
)

// TestApplyGOMAXPROCS: a value sets GOMAXPROCS, another replaces it, and 0
// gives back what the process started with (not left at the last value).
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
	if got := applyGOMAXPROCS(0); got != start {
		t.Fatalf("apply(0) = %d, want the starting %d back", got, start)
	}
	if got := applyGOMAXPROCS(0); got != start {
		t.Fatalf("apply(0) twice = %d, want %d", got, start)
	}
}
