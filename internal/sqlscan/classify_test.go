package sqlscan

import "testing"

func TestClassify(t *testing.T) {
	c := NewClassifier([]string{"report_total", "billing.safe_sum"})
	tests := []struct {
		sql  string
		want Class
	}{
		{"SELECT 1", ClassRead},
		{"select * from t where id = 5", ClassRead},
		{"VALUES (1), (2)", ClassRead},
		{"TABLE pgbench_accounts", ClassRead},
		{"SHOW search_path", ClassRead},
		{"SELECT now(), lower('A'), count(*) FROM t", ClassRead},
		{"SELECT pg_catalog.now()", ClassRead},
		{"EXPLAIN SELECT 1", ClassRead},
		{"EXPLAIN ANALYZE DELETE FROM t", ClassWrite},
		{"SELECT report_total(3)", ClassRead},
		{"SELECT billing.safe_sum(3)", ClassRead},
		{"SELECT other.safe_sum(3)", ClassWrite},
		{"SELECT public.report_total(3)", ClassRead},
		{"SELECT my_func(1)", ClassWrite},
		{"SELECT nextval('s')", ClassWrite},
		{"SELECT currval('s')", ClassWrite},
		{"SELECT setval('s', 1)", ClassWrite},
		{"SELECT random()", ClassWrite},
		{"SELECT txid_current()", ClassWrite},
		{"SELECT pg_advisory_xact_lock(1)", ClassWrite},
		{"SELECT * FROM t FOR UPDATE", ClassWrite},
		{"SELECT * FROM t FOR SHARE", ClassWrite},
		{"SELECT * FROM (SELECT * FROM t FOR UPDATE) s", ClassWrite},
		{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", ClassWrite},
		{"WITH r AS (SELECT 1) SELECT * FROM r", ClassRead},
		{"SELECT * INTO t2 FROM t", ClassWrite},
		{"SELECT * FROM generate_series(1, 3)", ClassRead},
		{"LOCK TABLE t", ClassWrite},
		{"INSERT INTO t VALUES (1)", ClassWrite},
		{"UPDATE t SET a = 1", ClassWrite},
		{"LISTEN ch", ClassWrite},
		{"SET work_mem = '64MB'", ClassWrite},
		{"BEGIN", ClassBegin},
		{"START TRANSACTION ISOLATION LEVEL REPEATABLE READ", ClassBegin},
		{"BEGIN READ ONLY", ClassBeginReadOnly},
		{"START TRANSACTION READ ONLY", ClassBeginReadOnly},
		{"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", ClassBeginReadOnly},
		{"BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE", ClassWrite},
		{"BEGIN READ ONLY, READ WRITE", ClassBegin},
		{"SET TRANSACTION READ ONLY", ClassSetReadOnly},
		{"COMMIT", ClassEnd},
		{"COMMIT AND CHAIN", ClassWrite},
		{"SAVEPOINT a", ClassNeutral},
		{"DECLARE c CURSOR FOR SELECT 1", ClassRead},
		{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", ClassWrite},
		{"SHOW pgproxy.last_lsn", ClassProxy},
		{"SET pgproxy.min_lsn = '0/16B3748'", ClassProxy},
		{"SET pgproxy.min_lsn = '0/1'; SELECT 1", ClassProxyMixed},
		// Several statements: one batch.
		{"SELECT 1; SELECT 2", ClassRead},
		{"SELECT 1; INSERT INTO t VALUES (1)", ClassWrite},
		{"BEGIN; SELECT 1", ClassWrite},
		{"BEGIN; SELECT 1; COMMIT", ClassRead},
		{"BEGIN; SET TRANSACTION READ ONLY; SELECT 1", ClassBeginReadOnly},
		{"BEGIN; SELECT 1; SET TRANSACTION READ ONLY", ClassWrite},
		{"BEGIN READ ONLY; SELECT 1; COMMIT", ClassRead},
		{"BEGIN READ ONLY; SELECT nextval('s')", ClassWrite},
		{"SELEC 1", ClassWrite},
		{"", ClassWrite},
	}
	for _, tt := range tests {
		for range 2 { // the second answer comes from the cache
			if got := c.Classify(tt.sql); got != tt.want {
				t.Errorf("Classify(%q) = %v, want %v", tt.sql, got, tt.want)
			}
		}
	}
}

func TestClassifyCacheKeyFoldsOnlyLiterals(t *testing.T) {
	tests := []struct {
		sql, key string
		ok       bool
	}{
		{"SELECT a FROM t WHERE id = 12345", "SELECT a FROM t WHERE id = ?", true},
		{"SELECT 'x''y', $1, t1.c2 FROM t1", "SELECT ?, $1, t1.c2 FROM t1", true},
		{`SELECT "a'b" FROM t -- c` + "\n", `SELECT "a'b" FROM t  `, true},
		{"SELECT E'a'", "", false},
		{"SELECT 'a\\'", "", false},
		{"SELECT $$x$$", "", false},
		{"SELECT 1e5", "", false},
		{"SELECT 'unterminated", "", false},
		{"SELECT /* a /* b */ */ 1", "", false},
	}
	for _, tt := range tests {
		key, ok := cacheKey(tt.sql)
		if ok != tt.ok || (ok && key != tt.key) {
			t.Errorf("cacheKey(%q) = %q, %v; want %q, %v", tt.sql, key, ok, tt.key, tt.ok)
		}
	}
	// Statements that differ beyond literals keep their own class.
	c := NewClassifier(nil)
	if c.Classify("SELECT 1 FROM t") != ClassRead || c.Classify("SELECT 1 FROM t FOR UPDATE") != ClassWrite {
		t.Fatal("cache mixed two statements")
	}
}

func TestParseProxyStatement(t *testing.T) {
	tests := []struct {
		sql  string
		want ProxyStatement
		ok   bool
	}{
		{"SHOW pgproxy.last_lsn", ProxyStatement{Show: true, Name: "pgproxy.last_lsn"}, true},
		{"set PGPROXY.MIN_LSN = '0/16B3748'", ProxyStatement{Name: "pgproxy.min_lsn", Value: "0/16B3748"}, true},
		{"SET pgproxy.consistency TO global", ProxyStatement{Name: "pgproxy.consistency", Value: "global"}, true},
		{"RESET pgproxy.min_lsn", ProxyStatement{Name: "pgproxy.min_lsn", Reset: true}, true},
		{"SHOW search_path", ProxyStatement{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseProxyStatement(tt.sql)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseProxyStatement(%q) = %+v, %v; want %+v, %v", tt.sql, got, ok, tt.want, tt.ok)
		}
	}
}
