package sqlscan

import "testing"

func TestSessionState(t *testing.T) {
	for _, c := range []struct{ sql, want string }{
		{"SELECT 1", ""},
		{"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 3", ""},
		{"SET application_name = 'x'", ""},
		{"set TimeZone to 'UTC'", ""},
		{"SET LOCAL statement_timeout = '1s'", ""},
		{"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", ""},
		{"BEGIN ISOLATION LEVEL REPEATABLE READ", ""},
		{"SET statement_timeout = '1s'", "set"},
		{"/* job='x' */ SET search_path TO app", "set"},
		{"BEGIN; SET search_path TO app; COMMIT", "set"},
		{"RESET ALL", "set"},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "set"},
		{"SELECT set_config('search_path', 'app', false)", "set"},
		{"SELECT set_config('search_path', 'app', true)", ""},
		{"SELECT set_config('application_name', 'a', false)", ""},
		{"LISTEN bus", "listen"},
		{"SELECT pg_advisory_lock(1)", "advisory_lock"},
		{"SELECT pg_try_advisory_lock_shared(1, 2)", "advisory_lock"},
		{"SELECT pg_advisory_xact_lock(1)", ""},
		{"CREATE TEMP TABLE t (a int)", "temp_table"},
		{"CREATE TEMPORARY TABLE t AS SELECT 1", "temp_table"},
		{"SELECT 1 INTO TEMP t", "temp_table"},
		{"CREATE TABLE temp_stats (a int)", ""},
		{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", "cursor_with_hold"},
		{"DECLARE c CURSOR FOR SELECT 1", ""},
		{"PREPARE p AS SELECT 1", "prepare"},
		{"DISCARD ALL", "discard"},
		{"DEALLOCATE ALL", "deallocate"},
		{"LOAD 'auto_explain'", "load"},
		{"SELECT 'listen'", ""},
		{"not sql at all; SET", ""},
		// The filter folds ASCII case as the parser does.
		{"LiStEn bus", "listen"},
		{"sElEcT PG_ADVISORY_LOCK(1)", "advisory_lock"},
		{"create Temp table t (a int)", "temp_table"},
		{"  -- c\n  ReSeT ALL", "set"},
		{"/* x */ sEt search_path TO app", "set"},
		{"Discard All", "discard"},
		{"declare c cursor WITH HOLD for select 1", "cursor_with_hold"},
		// Statement boundaries the filter must lex as PostgreSQL does. The
		// first seven and U& were missed before (no parse, so the SET or
		// the lock stayed on the pooled server for its next client).
		{"SELECT ';--'; SET search_path = evil", "set"},
		{"SELECT '; /*'; SET role x; -- */", "set"},
		{"SELECT 'it''s;--'; SET search_path = x", "set"},
		{`SELECT "a;--"; SET search_path = x`, "set"},
		{"-- c\rSET search_path = x", "set"},
		{"/* a /* b */ */ SET search_path = x", "set"},
		{"\fSET search_path = x", "set"},
		{"\vSET search_path = x", "set"},
		{"SELECT $$;$$; SET search_path = x", "set"},
		{"SELECT E'\\';'; SET search_path = x", "set"},
		{`SELECT U&"pg_advisory_\006Cock"(1)`, "advisory_lock"},
		{`SELECT "pg_advisory_lock"(1)`, "advisory_lock"},
		{`SELECT "PG_ADVISORY_LOCK"(1)`, ""}, // another (quoted, upper-case) function
		{"SELECT 1 -- SET search_path = x", ""},
		// Objects created in the session's temporary schema by name.
		{"CREATE TABLE pg_temp.t (a int)", "temp_table"},
		{"CREATE VIEW pg_temp.v AS SELECT 1", "temp_table"},
		{"CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "temp_table"},
		{"CREATE TYPE pg_temp.ty AS (a int)", "temp_table"},
		{"CREATE TYPE pg_temp.en AS ENUM ('a')", "temp_table"},
		{"CREATE DOMAIN pg_temp.d AS int", "temp_table"},
		{"CREATE SEQUENCE pg_temp.s", "temp_table"},
		{"SELECT 1 INTO pg_temp.t2", "temp_table"},
		{"CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", ""},
		{"SELECT pg_temp.f()", "temp_table"}, // naming pg_temp is enough (a client that made f is pinned already)
		{"BEGIN; SET LOCAL search_path = pg_temp; CREATE TABLE t AS SELECT 42; COMMIT", "temp_table"},
		{"DO $$BEGIN PERFORM set_config('statement_timeout', '1s', false); END$$", "do_block"},
		{"do 'BEGIN NULL; END'", "do_block"},
		{"DO LANGUAGE plpgsql 'BEGIN NULL; END'", "do_block"},
		{"SELECT 'SET x'; SELECT 2", ""},
	} {
		if got := SessionState(c.sql); got != c.want {
			t.Errorf("SessionState(%q) = %q, want %q", c.sql, got, c.want)
		}
	}
}

func TestSessionStateFilterSkipsPlainStatements(t *testing.T) {
	for _, sql := range []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1",
		"UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
		"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
		"BEGIN", "END", "COMMIT",
		"SELECT name FROM res_partner WHERE name = 'O''Higgins; SET' AND id = $1 OFFSET 10",
		`SELECT "x"."offset" FROM "x" /* c */ WHERE a = 'b'`,
	} {
		if mayHoldSessionState(sql) {
			t.Errorf("mayHoldSessionState(%q) = true: every such statement would be parsed", sql)
		}
		// It runs for every simple Query of a pooled client: no copy.
		if n := testing.AllocsPerRun(50, func() { mayHoldSessionState(sql) }); n != 0 {
			t.Errorf("mayHoldSessionState(%q) allocates %v times", sql, n)
		}
	}
}
