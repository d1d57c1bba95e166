package sqlscan

import "testing"

func TestReadOnlyViolation(t *testing.T) {
	tests := []struct {
		sql      string
		violated bool
	}{
		// SET of the two settings
		{"SET default_transaction_read_only = off", true},
		{"SELECT lo_create(0)", true},
		{"SELECT pg_catalog.LO_CREAT(-1)", true},
		{"SELECT lowrite(lo_open(16384, 131072), 'x')", true},
		{"SELECT lo_unlink(16384)", true},
		{"SELECT lo_from_bytea(0, 'x')", true},
		{"SELECT loread(lo_open(16384, 262144), 10)", false},
		{"SET default_transaction_read_only TO false", true},
		{"SET default_transaction_read_only = 0", true},
		{"SET default_transaction_read_only = 'no'", true},
		{"set Default_Transaction_Read_Only = OFF", true},
		{`SET "default_transaction_read_only" = off`, true},
		{"SET SESSION default_transaction_read_only = off", true},
		{"SET LOCAL transaction_read_only = off", true},
		{"SET transaction_read_only TO DEFAULT", true},
		{"SET default_transaction_read_only = on", false},
		{"SET default_transaction_read_only = true", false},
		{"SET default_transaction_read_only = 1", false},
		{"SET default_transaction_read_only = 'yes'", false},
		{"SET default_transaction_read_only = 'TRU'", false},
		{"SET transaction_read_only = on", false},
		{"SET default_transaction_read_only = 'garbage'", true},
		// RESET
		{"RESET default_transaction_read_only", true},
		{"RESET transaction_read_only", true},
		{"RESET ALL", true},
		{"RESET search_path", false},
		// transaction characteristics
		{"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", true},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE", true},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", false},
		{"SET TRANSACTION READ WRITE", true},
		{"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", false},
		{"BEGIN READ WRITE", true},
		{"begin isolation level serializable, read write", true},
		{"START TRANSACTION READ WRITE", true},
		{"START TRANSACTION READ ONLY", false},
		{"BEGIN", false},
		{"COMMIT AND CHAIN", false},
		{"ROLLBACK AND CHAIN", false},
		// set_config
		{"SELECT set_config('default_transaction_read_only', 'off', false)", true},
		{"SELECT set_config('TRANSACTION_READ_ONLY', 'off', true)", true},
		{"SELECT pg_catalog.set_config('default_transaction_read_only', 'on', false)", true},
		{"SELECT set_config($1, $2, false)", true},
		{"SELECT set_config(name, 'off', false) FROM pg_settings", true},
		{"SELECT set_config('application_name', 'x', false)", false},
		{"SELECT set_config('search_path'::text, 'x', false)", false},
		{"SELECT * FROM t WHERE x = (SELECT set_config('default_transaction_read_only', 'off', false))", true},
		{"WITH c AS (SELECT set_config(lower('X'), 'y', false)) SELECT * FROM c", true},
		{"PREPARE p AS SELECT set_config($1, 'off', false)", true},
		// DO, ALTER ... SET
		{"DO $$ BEGIN EXECUTE 'SET default_transaction_read_only = off'; END $$", true},
		{"do 'begin null; end'", true},
		{"ALTER ROLE odoo SET default_transaction_read_only = off", true},
		{"ALTER DATABASE odoo RESET default_transaction_read_only", true},
		{"ALTER ROLE odoo SET search_path = public", false},
		{"ALTER DATABASE odoo SET default_transaction_read_only = on", false},
		// DISCARD: not a violation, the proxy re-applies (see ReadOnlyViolation's doc)
		{"DISCARD ALL", false},
		// ordinary traffic, comments, multi-statement
		{"SELECT 1", false},
		{"/*job='x'*/ SELECT * FROM t -- SET default_transaction_read_only = off", false},
		{"SELECT 'SET default_transaction_read_only = off'", false},
		{"SET search_path = public; SELECT 1; SET default_transaction_read_only = off", true},
		{"SELECT 1; select 2", false},
		{"SELECT * FROM t WHERE id = $1", false},
		{"", false},
	}
	for _, tt := range tests {
		reason, violated, err := ReadOnlyViolation(tt.sql)
		if err != nil {
			t.Errorf("ReadOnlyViolation(%q): %v", tt.sql, err)
			continue
		}
		if violated != tt.violated {
			t.Errorf("ReadOnlyViolation(%q) = %v (%q), want %v", tt.sql, violated, reason, tt.violated)
		}
		if violated && reason == "" {
			t.Errorf("ReadOnlyViolation(%q): violated without a reason", tt.sql)
		}
		if !violated && reason != "" {
			t.Errorf("ReadOnlyViolation(%q): reason %q without a violation", tt.sql, reason)
		}
	}
}

func TestReadOnlyViolationSyntaxError(t *testing.T) {
	if _, _, err := ReadOnlyViolation("SET default_transaction_read_only ="); err == nil {
		t.Error("want a parse error")
	}
}
