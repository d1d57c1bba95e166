package e2e

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestTransactionReadNoReplica: a read routed per transaction that finds
// no fit replica (both PAUSEd) follows routing.fallback as a read session
// does at startup. fallback: primary → it runs on the primary. fallback:
// reject → it gets an ERROR 57P03 naming each replica and why (the session
// goes on: its writes and, once a replica is back, its reads run), in the
// simple protocol and at the Sync of an extended batch, and a BEGIN READ
// ONLY is refused the same way; a read session on the same proxy gets the
// FATAL 57P03 of session routing.
func TestTransactionReadNoReplica(t *testing.T) {
	for _, fallback := range []string{"primary", "reject"} {
		t.Run(fallback, func(t *testing.T) {
			p := txProxy(t, "session", fmt.Sprintf("  fallback: %s\nadmin:\n  users: [%s]\n", fallback, pgcluster.ScramUser))
			ctx := ctxT(t, time.Minute)
			admin := dialAdminDSN(t, fmt.Sprintf("postgres://%s:%s@%s/pgproxy?sslmode=disable",
				pgcluster.ScramUser, url.QueryEscape(pgcluster.ScramPassword), p.WriteAddr()))
			for _, r := range cluster.Replicas() {
				if err := admin.exec("PAUSE " + r.Addr()); err != nil {
					t.Fatal(err)
				}
			}
			simple := simpleConn(t, ctx, txDSN(p, ""))
			ext := connect(t, txDSN(p, ""))
			read := func(c *pgx.Conn) (bool, error) {
				var rec bool
				err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec)
				return rec, err
			}
			before := routed(t, p)
			for name, c := range map[string]*pgx.Conn{"simple": simple, "extended": ext} {
				// pgx prepares (Parse/Describe/Sync, a read batch of its own),
				// then Binds by name; refused, it prepares again next time.
				for i := 0; i < 2; i++ {
					rec, err := read(c)
					switch fallback {
					case "primary":
						if err != nil || rec {
							t.Errorf("%s: read with every replica paused: in recovery %v, %v; want it on the primary", name, rec, err)
						}
					case "reject":
						var pe *pgconn.PgError
						if !errors.As(err, &pe) || pe.Code != "57P03" || pe.Severity != "ERROR" ||
							!strings.Contains(pe.Message, "paused by PAUSE") || !strings.Contains(pe.Message, cluster.Replicas()[0].Addr()) {
							t.Errorf("%s: read with every replica paused: %v (in recovery %v), want ERROR 57P03 naming the paused replicas", name, err, rec)
						}
					}
					// The session goes on; writes run on the primary.
					if _, err := c.Exec(ctx, "UPDATE rt SET v = v + 1 WHERE id = 4"); err != nil {
						t.Fatalf("%s: write after the read: %v", name, err)
					}
				}
			}
			if _, err := simple.Exec(ctx, "BEGIN READ ONLY"); fallback == "reject" && sqlState(err) != "57P03" {
				t.Errorf("BEGIN READ ONLY with every replica paused: %v, want 57P03", err)
			} else if fallback == "primary" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := simple.Exec(ctx, "COMMIT"); err != nil {
					t.Fatal(err)
				}
			}
			after := routed(t, p)
			// Reads: simple 2, extended 3 (prepare + 2 executions) or 2
			// (2 refused prepares), BEGIN READ ONLY 1.
			want := map[string]float64{"primary": 4, "primary_no_replica": 6}
			if fallback == "reject" {
				want = map[string]float64{"primary": 4, "rejected": 5}
			}
			for k, v := range want {
				if after[k]-before[k] != v {
					t.Errorf("pgproxy_transactions_routed_total: %v before, %v after; want %v more", before, after, want)
					break
				}
			}
			// A read session (session routing) on the same proxy.
			_, err := pgx.Connect(ctx, txDSN(p, "&options=-c%20default_transaction_read_only%3Don"))
			if fallback == "reject" && sqlState(err) != "57P03" {
				t.Errorf("read session with every replica paused: %v, want FATAL 57P03", err)
			}
			if fallback == "primary" && err != nil {
				t.Errorf("read session with every replica paused: %v, want the primary read-only", err)
			}
			// A replica back: reads run there again.
			if err := admin.exec("RESUME " + cluster.Replicas()[1].Addr()); err != nil {
				t.Fatal(err)
			}
			for name, c := range map[string]*pgx.Conn{"simple": simple, "extended": ext} {
				if rec, err := read(c); err != nil || !rec {
					t.Errorf("%s: read after RESUME: in recovery %v, %v", name, rec, err)
				}
			}
		})
	}
}
