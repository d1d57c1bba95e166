package pgcluster

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Main is a TestMain body: it starts one cluster for the package, runs the
// tests, and stops the cluster whatever happens. With -short no cluster is
// started and *c stays nil; tests that need one call Require.
//
//	var cluster *pgcluster.Cluster
//	func TestMain(m *testing.M) { os.Exit(pgcluster.Main(m, pgcluster.Options{}, &cluster)) }
func Main(m *testing.M, opts Options, c **Cluster) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	cl, err := Start(ctx, opts)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgcluster:", err)
		return 1
	}
	*c = cl
	defer cl.Close()
	return m.Run()
}

// Require skips the test when no cluster was started (go test -short).
func Require(t testing.TB, c *Cluster) {
	t.Helper()
	if c == nil {
		t.Skip("needs a PostgreSQL cluster (not started with -short)")
	}
}

// MainNoLeaks is Main for integration packages whose tests stop everything
// they start (proxies, monitors, clients): once every test has passed it
// also fails the package when a goroutine is left (goleak), so a session or
// monitor that outlives its owner is caught where it was made.
func MainNoLeaks(m *testing.M, opts Options, c **Cluster) int {
	code := Main(m, opts, c)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left after the tests:", err)
			code = 1
		}
	}
	return code
}
