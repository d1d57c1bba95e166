package sqlscan

import "testing"

func TestSessionSetting(t *testing.T) {
	type want struct {
		name, value string
		reset, ok   bool
	}
	for _, c := range []struct {
		sql  string
		want want
	}{
		{"SET extra_float_digits = 3", want{"extra_float_digits", "3", false, true}},
		{"set session statement_timeout to '5s'", want{"statement_timeout", "5s", false, true}},
		{"SET lock_timeout = 1.5", want{"lock_timeout", "1.5", false, true}},
		{"SET extra_float_digits = -1", want{"extra_float_digits", "-1", false, true}},
		{"SET enable_seqscan = off", want{"enable_seqscan", "off", false, true}},
		{"SET enable_seqscan = true", want{"enable_seqscan", "true", false, true}},
		{"SET myapp.tenant = 'a''b'", want{"myapp.tenant", "a'b", false, true}},
		{"/* c */ SET work_mem = '8MB';", want{"work_mem", "8MB", false, true}},
		{"RESET work_mem", want{"work_mem", "", true, true}},
		{"SET work_mem TO DEFAULT", want{"work_mem", "", true, true}},
		// Not moved: SessionState pins (or they are not session state).
		{"SET LOCAL work_mem = '8MB'", want{}},
		{"SET application_name = 'x'", want{}},
		{"SET search_path TO app", want{}},
		{"SET ROLE app", want{}},
		{"SET SESSION AUTHORIZATION app", want{}},
		{"SET work_mem FROM CURRENT", want{}},
		{"RESET ALL", want{}},
		// pgjdbc's setReadOnly / setTransactionIsolation (Metabase): moved.
		{"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", want{"default_transaction_read_only", "on", false, true}},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", want{"default_transaction_read_only", "off", false, true}},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ", want{"default_transaction_isolation", "repeatable read", false, true}},
		{"set session characteristics as transaction deferrable", want{"default_transaction_deferrable", "on", false, true}},
		{"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", want{}},
		{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", want{}},
		{"SET datestyle = iso, mdy", want{}},
		{"SET work_mem = '8MB'; SELECT 1", want{}},
		{"SELECT set_config('work_mem', '8MB', false)", want{}},
		{"SELECT 1", want{}},
		{"SET work_mem =", want{}},
	} {
		var got want
		got.name, got.value, got.reset, got.ok = SessionSetting(c.sql)
		if got != c.want {
			t.Errorf("SessionSetting(%q) = %+v, want %+v", c.sql, got, c.want)
		}
	}
}
