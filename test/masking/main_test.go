// Package masking_test runs pgproxy with masking.rules in front of a real
// primary and replica and tries to get masked values out (bypass_test.go).
package masking_test

import (
	"os"
	"testing"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgcluster.MainNoLeaks(m, pgcluster.Options{Replicas: 1}, &cluster))
}
