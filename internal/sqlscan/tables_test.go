package sqlscan

import (
	"reflect"
	"strings"
	"testing"
)

// refs parses "a, s.b" into TableRefs.
func refs(s string) []TableRef {
	if s == "" {
		return nil
	}
	var out []TableRef
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if i := strings.LastIndex(p, "."); i >= 0 {
			out = append(out, TableRef{Schema: p[:i], Name: p[i+1:]})
		} else {
			out = append(out, TableRef{Name: p})
		}
	}
	sortRefs(out)
	return out
}

func TestTables(t *testing.T) {
	tests := []struct {
		name, sql     string
		reads, writes string
	}{
		// SELECT
		{"select one table", "SELECT * FROM raw_project", "raw_project", ""},
		{"select schema-qualified", "SELECT id FROM stage.project p WHERE p.id > 3", "stage.project", ""},
		{"select catalog-qualified drops catalog", "SELECT 1 FROM ofitec.public.t", "public.t", ""},
		{"select quoted names keep case", `SELECT * FROM "Raw"."Project Data"`, "Raw.Project Data", ""},
		{"select unquoted names are lowercased", "SELECT * FROM Stage.PROJECT", "stage.project", ""},
		{"select join", "SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN s.c USING (id)", "a, b, s.c", ""},
		{"select comma join and duplicates", "SELECT * FROM a, b, a AS a2", "a, b", ""},
		{"select subquery in FROM", "SELECT * FROM (SELECT * FROM inner_t) x", "inner_t", ""},
		{"select subquery in WHERE", "SELECT * FROM a WHERE id IN (SELECT a_id FROM b) AND EXISTS (SELECT 1 FROM c)", "a, b, c", ""},
		{"select scalar subquery in target", "SELECT (SELECT max(x) FROM m) AS mx", "m", ""},
		{"select lateral", "SELECT * FROM a, LATERAL (SELECT * FROM b WHERE b.a = a.id) l", "a, b", ""},
		{"select CTE name is not a dataset", "WITH x AS (SELECT * FROM src) SELECT * FROM x JOIN y ON true", "src, y", ""},
		{"select recursive CTE", "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM t WHERE n < 5) SELECT * FROM t", "", ""},
		{"select CTE name qualified is a table", "WITH x AS (SELECT 1) SELECT * FROM s.x", "s.x", ""},
		{"select union", "SELECT id FROM a UNION SELECT id FROM b EXCEPT SELECT id FROM c", "a, b, c", ""},
		{"select for update of alias", "SELECT * FROM a AS t FOR UPDATE OF t", "a", ""},
		{"TABLE shorthand", "TABLE mart_kpi_ceo", "mart_kpi_ceo", ""},
		{"select no table", "SELECT 1, now(), 'x'", "", ""},
		{"select function in FROM", "SELECT * FROM generate_series(1, 10) g", "", ""},
		// INSERT
		{"insert values", "INSERT INTO stage_project (id, name) VALUES (1, 'a')", "", "stage_project"},
		{"insert select", "INSERT INTO stage_project SELECT * FROM raw_project", "raw_project", "stage_project"},
		{"insert select qualified", "INSERT INTO vault.hub_project (bk) SELECT DISTINCT code FROM stage.project s JOIN raw.x r ON r.id = s.id", "stage.project, raw.x", "vault.hub_project"},
		{"insert on conflict", "INSERT INTO t (id) SELECT id FROM s ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v", "s", "t"},
		{"insert into itself", "INSERT INTO t SELECT * FROM t", "t", "t"},
		{"CTE that writes: WITH ... INSERT", "WITH x AS (SELECT * FROM raw_a) INSERT INTO stage_a SELECT * FROM x", "raw_a", "stage_a"},
		{"data-modifying CTE", "WITH moved AS (DELETE FROM queue WHERE done RETURNING *) INSERT INTO archive SELECT * FROM moved", "", "queue, archive"},
		{"CTE with update, select from CTE", "WITH u AS (UPDATE acc SET n = n + 1 FROM src WHERE acc.id = src.id RETURNING acc.id) SELECT * FROM u", "src", "acc"},
		{"insert returning subquery", "INSERT INTO t (a) VALUES ((SELECT max(a) FROM s)) RETURNING a", "s", "t"},
		// CREATE ... AS, SELECT INTO, views
		{"create table as", "CREATE TABLE mart.fact AS SELECT * FROM vault.sat_x JOIN vault.hub_x USING (hk)", "vault.sat_x, vault.hub_x", "mart.fact"},
		{"create temp table as with CTE", "CREATE TEMP TABLE tmp AS WITH c AS (SELECT * FROM a) SELECT * FROM c", "a", "tmp"},
		{"select into", "SELECT * INTO new_t FROM old_t WHERE x > 1", "old_t", "new_t"},
		{"create materialized view", "CREATE MATERIALIZED VIEW mart_ar_aging AS SELECT * FROM vault.invoices", "vault.invoices", "mart_ar_aging"},
		{"refresh materialized view", "REFRESH MATERIALIZED VIEW CONCURRENTLY mart.mart_ap_aging", "", "mart.mart_ap_aging"},
		{"create view", "CREATE OR REPLACE VIEW v_kpi AS SELECT * FROM mart_kpi_ceo", "mart_kpi_ceo", "v_kpi"},
		{"create table", "CREATE TABLE IF NOT EXISTS stage.t (id int primary key)", "", "stage.t"},
		// UPDATE, DELETE, MERGE
		{"update", "UPDATE t SET x = 1 WHERE id = 2", "", "t"},
		{"update from", "UPDATE stage.t AS t SET x = s.x FROM raw.s s WHERE s.id = t.id", "raw.s", "stage.t"},
		{"update with subquery in SET", "UPDATE t SET x = (SELECT avg(y) FROM u)", "u", "t"},
		{"delete", "DELETE FROM t WHERE id = 1", "", "t"},
		{"delete using", "DELETE FROM t USING s WHERE s.id = t.id AND t.id IN (SELECT id FROM blocked)", "s, blocked", "t"},
		{"merge", "MERGE INTO mart.t t USING stage.s s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)", "stage.s", "mart.t"},
		{"merge from subquery", "MERGE INTO t USING (SELECT * FROM a JOIN b USING (id)) s ON t.id = s.id WHEN MATCHED THEN DELETE", "a, b", "t"},
		// COPY
		{"copy from stdin", "COPY raw_project (id, name) FROM STDIN WITH (FORMAT csv)", "", "raw_project"},
		{"copy to stdout", "COPY stage.project TO STDOUT", "stage.project", ""},
		{"copy query to stdout", "COPY (SELECT * FROM a JOIN b USING (id)) TO STDOUT WITH CSV HEADER", "a, b", ""},
		{"copy from file", "COPY t FROM '/tmp/x.csv'", "", "t"},
		// TRUNCATE, DROP
		{"truncate", "TRUNCATE stage_a, stage.b RESTART IDENTITY", "", "stage_a, stage.b"},
		{"drop table", "DROP TABLE IF EXISTS a, s.b CASCADE", "", "a, s.b"},
		{"drop materialized view", "DROP MATERIALIZED VIEW mart_wip", "", "mart_wip"},
		{"drop view quoted", `DROP VIEW "My View"`, "", "My View"},
		{"drop index is not a dataset", "DROP INDEX idx_a", "", ""},
		// multi-statement
		{"multi statement union", "TRUNCATE stage_a; INSERT INTO stage_a SELECT * FROM raw_a; SELECT count(*) FROM stage_a", "raw_a, stage_a", "stage_a"},
		{"multi statement CTE names do not leak", "WITH raw_a AS (SELECT 1) SELECT * FROM raw_a; SELECT * FROM raw_a", "raw_a", ""},
		// comments
		{"sqlcommenter tag", "/*job='raw_to_stage'*/ INSERT INTO stage_project SELECT * FROM raw_project /* trailing */;", "raw_project", "stage_project"},
		{"line comments", "-- Metabase:: userID: 1\nSELECT * FROM mart_fact_cashflow", "mart_fact_cashflow", ""},
		// cursors
		{"declare cursor", "DECLARE c CURSOR FOR SELECT * FROM big", "big", ""},
		// no datasets
		{"set", "SET search_path = stage, public", "", ""},
		{"begin commit", "BEGIN; COMMIT", "", ""},
		{"show", "SHOW server_version", "", ""},
		{"create index", "CREATE INDEX ON t (a)", "", ""},
		{"vacuum analyze", "VACUUM ANALYZE t", "", ""},
		{"grant", "GRANT SELECT ON t TO bob", "", ""},
		{"explain does not run", "EXPLAIN SELECT * FROM t", "", ""},
		{"lock", "LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "", ""},
		{"empty", "", "", ""},
		{"only a comment", "/* nothing */", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reads, writes, err := Tables(tt.sql)
			if err != nil {
				t.Fatalf("Tables(%q): %v", tt.sql, err)
			}
			if want := refs(tt.reads); !reflect.DeepEqual(reads, want) {
				t.Errorf("reads = %v, want %v", reads, want)
			}
			if want := refs(tt.writes); !reflect.DeepEqual(writes, want) {
				t.Errorf("writes = %v, want %v", writes, want)
			}
		})
	}
	if len(tests) < 40 {
		t.Fatalf("only %d cases", len(tests))
	}
}

func TestTablesSyntaxError(t *testing.T) {
	for _, sql := range []string{"SELEC * FROM t", "INSERT INTO", "SELECT 'unterminated"} {
		if _, _, err := Tables(sql); err == nil {
			t.Errorf("Tables(%q): want error", sql)
		}
	}
}

func TestTableRefString(t *testing.T) {
	if got := (TableRef{Name: "t"}).String(); got != "t" {
		t.Errorf("got %q", got)
	}
	if got := (TableRef{Schema: "s", Name: "t"}).String(); got != "s.t" {
		t.Errorf("got %q", got)
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"SELECT * FROM t WHERE email = 'ana@example.cl' AND id = 42", "SELECT * FROM t WHERE email = $1 AND id = $2"},
		{"INSERT INTO t (a, b) VALUES ('x', 1.5)", "INSERT INTO t (a, b) VALUES ($1, $2)"},
		{"/*job='j'*/ SELECT 1", "/*job='j'*/ SELECT $1"},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in)
		if err != nil {
			t.Fatalf("Normalize(%q): %v", tt.in, err)
		}
		if got != tt.want {
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if _, err := Normalize("SELECT 'x"); err == nil {
		t.Error("Normalize of an unterminated literal: want error")
	}
}

func TestSplit(t *testing.T) {
	got, err := Split("-- header\n/*job='a'*/ INSERT INTO t SELECT 1;\n\n/*job='b'*/ SELECT 2 /*x*/;;\nSELECT 3")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"-- header\n/*job='a'*/ INSERT INTO t SELECT 1", "/*job='b'*/ SELECT 2 /*x*/", "SELECT 3"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Split = %q, want %q", got, want)
	}
	if _, err := Split("SELECT 'x"); err == nil {
		t.Error("want error")
	}
}
