package sqlscan

import (
	"fmt"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// readOnlySettings are the settings that make a session or transaction
// read-only (GUC names are case-insensitive; the parser lowercases unquoted
// ones, quoted ones are compared lowercased here).
var readOnlySettings = map[string]bool{
	"default_transaction_read_only": true,
	"transaction_read_only":         true,
}

// ReadOnlyViolation reports whether any statement in sql would turn a
// read-only session (default_transaction_read_only=on) writable, and why.
// Every statement of a multi-statement string is examined, and so is every
// nested statement or expression (PREPARE, EXPLAIN, CTEs, subqueries).
//
// Violations:
//   - SET [SESSION|LOCAL] default_transaction_read_only|transaction_read_only
//     to anything but a true value (on, true, yes, 1 and their prefixes
//     PostgreSQL accepts), SET ... TO DEFAULT, RESET of either, RESET ALL;
//     the same inside ALTER ROLE/DATABASE/SYSTEM ... SET and CREATE FUNCTION
//     ... SET;
//   - SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE,
//     SET TRANSACTION READ WRITE, BEGIN/START TRANSACTION ... READ WRITE;
//   - a call of set_config (any schema) whose first argument is one of those
//     names or is not a constant ($1, an expression, a column);
//   - DO blocks, always: their body can EXECUTE anything;
//   - calls of functions that write although the transaction is read-only:
//     PostgreSQL 15 lets the large-object functions (lo_create, lowrite,
//     lo_unlink, ...) run in a read-only transaction.
//
// Not violations: COMMIT/ROLLBACK AND CHAIN (the chained transaction keeps
// the characteristics), SET ... FROM CURRENT, and DISCARD ALL. DISCARD ALL
// does reset session defaults (it runs RESET ALL), which would clear a
// default_transaction_read_only=on the proxy applied with SET; but pools
// such as Odoo's send it on every connection reuse, so it is reported as not
// violated and the proxy must re-apply its read-only setting after a DISCARD
// ALL (or apply it through startup parameters, which RESET ALL restores).
//
// Unparsable SQL returns an error; the caller may let the server report the
// syntax error (the session is read-only anyway).
func ReadOnlyViolation(sql string) (reason string, violated bool, err error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return "", false, fmt.Errorf("sqlscan: parse: %w", err)
	}
	walk(tree, func(m proto.Message) bool {
		if violated {
			return false
		}
		if r, ok := readOnlyCheck(m); ok {
			reason, violated = r, true
			return false
		}
		return true
	})
	return reason, violated, nil
}

// readOnlyCheck examines one node of the tree (its children are walked by the
// caller).
// writesDespiteReadOnly are functions PostgreSQL 15 runs in a read-only
// transaction although they write (large objects, server files).
var writesDespiteReadOnly = map[string]bool{
	"lo_creat": true, "lo_create": true, "lo_import": true, "lo_export": true,
	"lo_unlink": true, "lo_put": true, "lo_from_bytea": true, "lowrite": true,
	"lo_truncate": true, "lo_truncate64": true,
}

func readOnlyCheck(m proto.Message) (string, bool) {
	switch n := m.(type) {
	case *pg.VariableSetStmt:
		return variableSet(n)
	case *pg.TransactionStmt:
		switch n.GetKind() {
		case pg.TransactionStmtKind_TRANS_STMT_BEGIN, pg.TransactionStmtKind_TRANS_STMT_START:
			if readWriteOption(n.GetOptions()) {
				return "BEGIN ... READ WRITE", true
			}
		}
	case *pg.FuncCall:
		names := n.GetFuncname()
		if len(names) == 0 {
			return "", false
		}
		fn := strings.ToLower(names[len(names)-1].GetString_().GetSval())
		if writesDespiteReadOnly[fn] {
			return fn + "() writes even in a read-only transaction", true
		}
		if fn != "set_config" {
			return "", false
		}
		args := n.GetArgs()
		if len(args) == 0 {
			return "", false // the server rejects set_config()
		}
		name, ok := constString(args[0])
		if !ok {
			return "set_config with a non-constant setting name", true
		}
		if readOnlySettings[strings.ToLower(strings.TrimSpace(name))] {
			return "set_config(" + strings.ToLower(name) + ", ...)", true
		}
	case *pg.DoStmt:
		return "DO block", true
	}
	return "", false
}

func variableSet(n *pg.VariableSetStmt) (string, bool) {
	name := strings.ToLower(n.GetName())
	switch n.GetKind() {
	case pg.VariableSetKind_VAR_RESET_ALL:
		return "RESET ALL", true
	case pg.VariableSetKind_VAR_SET_MULTI:
		// SET TRANSACTION ..., SET SESSION CHARACTERISTICS AS TRANSACTION ...
		if readWriteOption(n.GetArgs()) {
			return "SET " + n.GetName() + " READ WRITE", true
		}
		return "", false
	}
	if !readOnlySettings[name] {
		return "", false
	}
	switch n.GetKind() {
	case pg.VariableSetKind_VAR_SET_VALUE:
		args := n.GetArgs()
		if len(args) == 1 && truthy(args[0]) {
			return "", false
		}
		return "SET " + name + " to a false value", true
	case pg.VariableSetKind_VAR_SET_DEFAULT:
		return "SET " + name + " TO DEFAULT", true
	case pg.VariableSetKind_VAR_RESET:
		return "RESET " + name, true
	case pg.VariableSetKind_VAR_SET_CURRENT:
		return "", false // keeps the current (read-only) value
	}
	return "SET " + name, true // unknown kind: be safe
}

// readWriteOption reports whether a transaction mode list (DefElems) holds
// READ WRITE (transaction_read_only = 0).
func readWriteOption(opts []*pg.Node) bool {
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil || !readOnlySettings[strings.ToLower(d.GetDefname())] {
			continue
		}
		if !truthy(d.GetArg()) {
			return true
		}
	}
	return false
}

// truthy reports whether a constant is a true boolean as PostgreSQL's
// parse_bool reads it; anything else (false values, non-constants,
// garbage the server would reject) is not.
func truthy(n *pg.Node) bool {
	c := n.GetAConst()
	if c == nil {
		if tc := n.GetTypeCast(); tc != nil {
			return truthy(tc.GetArg())
		}
		return false
	}
	switch v := c.GetVal().(type) {
	case *pg.A_Const_Ival:
		return v.Ival.GetIval() == 1
	case *pg.A_Const_Boolval:
		return v.Boolval.GetBoolval()
	case *pg.A_Const_Sval:
		s := strings.ToLower(strings.TrimSpace(v.Sval.GetSval()))
		switch s {
		case "1", "on":
			return true
		}
		// parse_bool accepts any unique prefix of "true" and "yes".
		return s != "" && (strings.HasPrefix("true", s) || strings.HasPrefix("yes", s))
	}
	return false
}

// constString returns the value of a string constant (possibly cast).
func constString(n *pg.Node) (string, bool) {
	if tc := n.GetTypeCast(); tc != nil {
		return constString(tc.GetArg())
	}
	c := n.GetAConst()
	if c == nil || c.GetIsnull() {
		return "", false
	}
	if s, ok := c.GetVal().(*pg.A_Const_Sval); ok {
		return s.Sval.GetSval(), true
	}
	return "", false
}
