package sqlscan

import "testing"

func TestFirstTxExit(t *testing.T) {
	tests := []struct {
		sql   string
		kind  TxExitKind
		chain bool
		stmt  string // the first statement's text (Start:End)
	}{
		{"COMMIT", TxCommit, false, "COMMIT"},
		{"commit work", TxCommit, false, "commit work"},
		{"END TRANSACTION", TxCommit, false, "END TRANSACTION"},
		{"COMMIT AND CHAIN", TxCommit, true, "COMMIT AND CHAIN"},
		{"commit and no chain", TxCommit, false, "commit and no chain"},
		{"  /* a /* nested */ comment */ -- line\n COMMIT; SELECT 1", TxCommit, false, "  /* a /* nested */ comment */ -- line\n COMMIT"},
		{"ROLLBACK", TxRollback, false, "ROLLBACK"},
		{"abort", TxRollback, false, "abort"},
		{"ROLLBACK AND CHAIN; SELECT 2", TxRollback, true, "ROLLBACK AND CHAIN"},
		{"ROLLBACK TO SAVEPOINT s1", TxRollbackTo, false, "ROLLBACK TO SAVEPOINT s1"},
		{"rollback to s1", TxRollbackTo, false, "rollback to s1"},
		{"PREPARE TRANSACTION 'x'", TxPrepare, false, "PREPARE TRANSACTION 'x'"},
		{"PREPARE p AS SELECT 1", NotTxExit, false, ""},
		{"COMMIT PREPARED 'x'", NotTxExit, false, ""},
		{"ROLLBACK PREPARED 'x'", NotTxExit, false, ""},
		{"SELECT 1; COMMIT", NotTxExit, false, ""},
		{"BEGIN", NotTxExit, false, ""},
		{"SAVEPOINT s", NotTxExit, false, ""},
		{"RELEASE SAVEPOINT s", NotTxExit, false, ""},
		{"", NotTxExit, false, ""},
		{"/* unterminated", NotTxExit, false, ""},
	}
	for _, tt := range tests {
		e, err := FirstTxExit(tt.sql)
		if err != nil {
			t.Errorf("%q: %v", tt.sql, err)
			continue
		}
		if e.Kind != tt.kind || e.Chain != tt.chain {
			t.Errorf("%q: kind %d chain %v, want %d %v", tt.sql, e.Kind, e.Chain, tt.kind, tt.chain)
			continue
		}
		if e.Kind != NotTxExit && tt.sql[e.Start:e.End] != tt.stmt {
			t.Errorf("%q: statement %q, want %q", tt.sql, tt.sql[e.Start:e.End], tt.stmt)
		}
	}
	if _, err := FirstTxExit("COMMIT garbage garbage"); err == nil {
		t.Error("unparsable COMMIT: no error")
	}
}
