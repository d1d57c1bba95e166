// Package e2e runs the whole pgproxy (app) in front of a real
// primary with two streaming replicas and checks routing end to end.
package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/pgtest"
)

var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgcluster.MainNoLeaks(m, pgcluster.Options{Replicas: 2}, &cluster))
}

func ctxT(t *testing.T, d time.Duration) context.Context { return pgtest.Ctx(t, d) }

func connect(t *testing.T, dsn string) *pgx.Conn { t.Helper(); return pgtest.Connect(t, dsn) }

func sqlState(err error) string { return pgtest.SQLState(err) }

// servedBy returns the port and recovery state of the backend behind conn.
func servedBy(t *testing.T, conn *pgx.Conn) (int, bool) {
	t.Helper()
	var port int
	var rec bool
	if err := conn.QueryRow(ctxT(t, 10*time.Second), "SELECT inet_server_port(), pg_is_in_recovery()").Scan(&port, &rec); err != nil {
		t.Fatal(err)
	}
	return port, rec
}

func reset(t *testing.T) {
	t.Helper()
	pgcluster.Require(t, cluster)
	if err := cluster.Reset(ctxT(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
}
