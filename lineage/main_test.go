package lineage

import (
	"os"
	"testing"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// cluster is a real primary (no replicas) for the tests that run the demo
// ETL; nil under -short.
var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgcluster.Main(m, pgcluster.Options{Replicas: -1}, &cluster))
}
