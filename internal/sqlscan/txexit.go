package sqlscan

import (
	"fmt"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// TxExitKind says how a statement ends a transaction block: the statements
// PostgreSQL still runs in a failed (aborted) transaction, its
// IsTransactionExitStmt.
type TxExitKind uint8

const (
	NotTxExit    TxExitKind = iota
	TxCommit                // COMMIT, END (in a failed transaction: rolls back)
	TxPrepare               // PREPARE TRANSACTION (in a failed transaction: rolls back)
	TxRollback              // ROLLBACK, ABORT
	TxRollbackTo            // ROLLBACK TO [SAVEPOINT]
)

// TxExit is the first statement of a SQL string when it ends a transaction.
type TxExit struct {
	Kind  TxExitKind
	Chain bool // ... AND CHAIN
	// Start and End are the first statement's byte range in the string
	// (without its semicolon), to replace it.
	Start, End int
}

// FirstTxExit reports whether the first statement of sql is one that
// PostgreSQL runs in a failed transaction (COMMIT, END, ROLLBACK, ABORT,
// ROLLBACK TO SAVEPOINT, PREPARE TRANSACTION). A cheap look at the first
// word comes first: only strings that start with one of those words are
// parsed. Unparsable SQL returns an error.
func FirstTxExit(sql string) (TxExit, error) {
	switch strings.ToLower(firstWord(sql)) {
	case "commit", "end", "rollback", "abort", "prepare":
	default:
		return TxExit{}, nil
	}
	tree, err := pg.Parse(sql)
	if err != nil {
		return TxExit{}, fmt.Errorf("sqlscan: parse: %w", err)
	}
	stmts := tree.GetStmts()
	if len(stmts) == 0 {
		return TxExit{}, nil
	}
	ts := stmts[0].GetStmt().GetTransactionStmt()
	if ts == nil {
		return TxExit{}, nil
	}
	e := TxExit{Chain: ts.GetChain()}
	switch ts.GetKind() {
	case pg.TransactionStmtKind_TRANS_STMT_COMMIT:
		e.Kind = TxCommit
	case pg.TransactionStmtKind_TRANS_STMT_PREPARE:
		e.Kind = TxPrepare
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		e.Kind = TxRollback
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		e.Kind = TxRollbackTo
	default:
		return TxExit{}, nil
	}
	e.Start = int(stmts[0].GetStmtLocation())
	e.End = len(sql)
	if l := int(stmts[0].GetStmtLen()); l > 0 {
		e.End = e.Start + l
	}
	if e.Start < 0 || e.Start > e.End || e.End > len(sql) {
		return TxExit{}, fmt.Errorf("sqlscan: statement location %d+%d outside the string", e.Start, e.End-e.Start)
	}
	return e, nil
}

// firstWord returns the first word of sql after white space and comments
// (-- to the end of the line, nested /* */), or "" when the first token is
// not a word.
func firstWord(sql string) string {
	i := 0
	for i < len(sql) {
		switch c := sql[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case strings.HasPrefix(sql[i:], "--"):
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				return ""
			}
			i += j + 1
		case strings.HasPrefix(sql[i:], "/*"):
			depth := 0
			for i < len(sql) {
				if strings.HasPrefix(sql[i:], "/*") {
					depth++
					i += 2
				} else if strings.HasPrefix(sql[i:], "*/") {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
			if depth != 0 {
				return ""
			}
		default:
			j := i
			for j < len(sql) && (sql[j] >= 'a' && sql[j] <= 'z' || sql[j] >= 'A' && sql[j] <= 'Z') {
				j++
			}
			return sql[i:j]
		}
	}
	return ""
}
