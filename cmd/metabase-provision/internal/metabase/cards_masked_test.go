package metabase_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ofitec/pgproxy/cmd/metabase-provision/internal/metabase"
	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

// The provisioned cards run unchanged as a masked third-party role (bi_ext)
// through the read listener with masking.rules on, and show masked values
// where a rule names the column: a hash for mart_fact_wip.proyecto, the
// last 4 characters for mart_ar_aging.tramo, NULL for
// of_ceo_kpi_daily.ar_vencido_clp.
func TestCardSQLMasked(t *testing.T) {
	pgcluster.Require(t, cluster)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	loadDemoSchema(ctx, t)
	if err := cluster.Primary().Exec(ctx, `DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bi_ext') THEN CREATE ROLE bi_ext LOGIN PASSWORD 'bi_ext_pass'; END IF;
END$$; GRANT SELECT ON ALL TABLES IN SCHEMA public TO bi_ext`); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReplicasCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	yaml := `masking:
  rules:
    - match: { user: bi_ext }
      columns:
        public.mart_fact_wip.proyecto: hash
        public.mart_ar_aging.tramo: partial
        public.of_ceo_kpi_daily.ar_vencido_clp: "null"
`
	if mode := proxytest.PoolMode(); mode != "" {
		yaml += fmt.Sprintf("auth:\n  mode: proxy\n  file: %s\npool:\n  mode: %s\n", proxytest.Userlist(t, cluster, "bi_ext"), mode)
	}
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: yaml, Env: []string{"PGPROXY_MASKING_KEY=cards-key"}})

	direct, err := cluster.Primary().Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(context.Background())
	var clear []string
	rows, err := direct.Query(ctx, "SELECT DISTINCT proyecto FROM mart_fact_wip")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		clear = append(clear, s)
	}
	rows.Close()
	if len(clear) == 0 {
		t.Fatal("no projects in mart_fact_wip")
	}

	cfg, err := metabase.LoadConfig("../../../../configs/metabase.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://bi_ext:bi_ext_pass@%s/postgres?sslmode=disable&application_name=Metabase", p.ReadAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	hash := regexp.MustCompile(`^[0-9a-f]{16}$`)
	checked := map[string]int{}
	for _, card := range cfg.Cards {
		t.Run(card.Name, func(t *testing.T) {
			rows, err := conn.Query(ctx, card.SQL)
			if err != nil {
				t.Fatalf("query as bi_ext: %v", err)
			}
			defer rows.Close()
			n := 0
			for rows.Next() {
				n++
				vals, err := rows.Values()
				if err != nil {
					t.Fatal(err)
				}
				for i, fd := range rows.FieldDescriptions() {
					v := vals[i]
					switch fd.Name {
					case "proyecto":
						s, _ := v.(string)
						for _, c := range clear {
							if s == c {
								t.Errorf("proyecto %q in clear", s)
							}
						}
						if !hash.MatchString(s) {
							t.Errorf("proyecto %q: want a hash", s)
						}
						checked["proyecto"]++
					case "tramo":
						if !strings.Contains(card.SQL, "mart_ar_aging") {
							continue // mart_ap_aging's is not masked
						}
						if s, _ := v.(string); !strings.HasPrefix(s, "***") {
							t.Errorf("tramo %q: want ***+last 4", s)
						}
						checked["tramo"]++
					case "ar_vencido_clp":
						if v != nil {
							t.Errorf("ar_vencido_clp %v: want NULL", v)
						}
						checked["ar_vencido_clp"]++
					}
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatalf("rows: %v", err)
			}
			if n == 0 {
				t.Errorf("returned no rows")
			}
		})
	}
	for _, c := range []string{"proyecto", "tramo", "ar_vencido_clp"} {
		if checked[c] == 0 {
			t.Errorf("no card showed %s: the test checks nothing there", c)
		}
	}
}
