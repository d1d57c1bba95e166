package metabase_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ofitec/pgproxy/cmd/metabase-provision/internal/metabase"
	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgcluster.Main(m, pgcluster.Options{Replicas: 1}, &cluster))
}

// readAddr is where Metabase's queries go: the read listener of a pgproxy
// running in front of the cluster (stopped when the test ends).
func readAddr(t *testing.T) string {
	t.Helper()
	return proxytest.Start(t, cluster, nil).ReadAddr()
}

var (
	demoOnce sync.Once
	demoErr  error
)

// loadDemoSchema loads deploy/demo/marts.sql on the primary once for the
// package's tests and waits for the replica.
func loadDemoSchema(ctx context.Context, t *testing.T) {
	t.Helper()
	demoOnce.Do(func() {
		schema, err := os.ReadFile("../../../../deploy/demo/marts.sql")
		if err != nil {
			demoErr = err
			return
		}
		if err := cluster.Primary().Exec(ctx, string(schema)); err != nil {
			demoErr = fmt.Errorf("loading deploy/demo/marts.sql: %w", err)
			return
		}
		demoErr = cluster.WaitReplicasCaughtUp(ctx)
	})
	if demoErr != nil {
		t.Fatal(demoErr)
	}
}

// Every card of configs/metabase.yaml runs against deploy/demo/marts.sql
// through pgproxy's read listener (so on a replica, as Metabase's queries
// will) and returns rows with the columns its visualization_settings name.
func TestCardSQLOnDemoSchema(t *testing.T) {
	pgcluster.Require(t, cluster)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	loadDemoSchema(ctx, t)
	cfg, err := metabase.LoadConfig("../../../../configs/metabase.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Cards) < 6 {
		t.Fatalf("configs/metabase.yaml has %d cards, want at least 6", len(cfg.Cards))
	}

	conn, err := pgx.Connect(ctx, "postgres://postgres@"+readAddr(t)+"/postgres?sslmode=disable&application_name=Metabase")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var standby bool
	if err := conn.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&standby); err != nil {
		t.Fatal(err)
	}
	if !standby {
		t.Fatal("the read listener is served by the primary, want a replica")
	}

	for _, card := range cfg.Cards {
		t.Run(card.Name, func(t *testing.T) {
			rows, err := conn.Query(ctx, card.SQL)
			if err != nil {
				t.Fatalf("query: %v", err)
			}
			var cols []string
			for _, fd := range rows.FieldDescriptions() {
				cols = append(cols, fd.Name)
			}
			n := 0
			for rows.Next() {
				n++
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				t.Fatalf("rows: %v", err)
			}
			if n == 0 {
				t.Errorf("returned no rows")
			}
			named := card.Columns()
			if len(named) == 0 {
				t.Fatalf("visualization_settings names no column")
			}
			for _, c := range named {
				if !slices.Contains(cols, c) {
					t.Errorf("visualization_settings names column %q; the result has %v", c, cols)
				}
			}
			t.Logf("%d rows, columns %v", n, cols)
		})
	}
}
