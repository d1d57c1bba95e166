package sqlscan

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// notMovable are settings whose plain SET SessionSetting leaves to
// SessionState (a pin): not configuration a pool may replay (role,
// session_authorization, the transaction_* of the current transaction),
// or lists of identifiers whose value set_config would read differently
// from the SET (GUC_LIST_QUOTE).
var notMovable = map[string]bool{
	"role": true, "session_authorization": true,
	"transaction_isolation": true, "transaction_read_only": true, "transaction_deferrable": true,
	"search_path": true, "temp_tablespaces": true,
	"session_preload_libraries": true, "local_preload_libraries": true, "shared_preload_libraries": true,
}

// SessionSetting recognizes sql as exactly one plain SET of one setting
// outside TrackedSettings to one constant (SET [SESSION] name {=|TO}
// value), or its RESET (RESET name, SET name TO DEFAULT): session state a
// transaction-mode pool can move with its client, by set_config(name,
// value) or RESET on its next server, instead of pinning it. value is the
// constant as set_config takes it (reset: ""). ok is false for anything
// else: SET LOCAL, lists, FROM CURRENT, RESET ALL, several statements,
// TrackedSettings (PostgreSQL reports those), notMovable settings, SQL
// that does not parse.
func SessionSetting(sql string) (name, value string, reset, ok bool) {
	if !mayHoldSessionState(sql) {
		return "", "", false, false
	}
	tree, err := pg.Parse(sql)
	if err != nil || len(tree.GetStmts()) != 1 {
		return "", "", false, false
	}
	n := tree.GetStmts()[0].GetStmt().GetVariableSetStmt()
	if n == nil || n.GetIsLocal() {
		return "", "", false, false
	}
	if n.GetKind() == pg.VariableSetKind_VAR_SET_MULTI {
		return sessionCharacteristics(n)
	}
	name = n.GetName()
	if l := strings.ToLower(name); TrackedSettings[l] || notMovable[l] {
		return "", "", false, false
	}
	switch n.GetKind() {
	case pg.VariableSetKind_VAR_RESET, pg.VariableSetKind_VAR_SET_DEFAULT:
		return name, "", true, true
	case pg.VariableSetKind_VAR_SET_VALUE:
	default:
		return "", "", false, false
	}
	args := n.GetArgs()
	if len(args) != 1 {
		return "", "", false, false
	}
	c := args[0].GetAConst()
	if c == nil || c.GetIsnull() {
		return "", "", false, false
	}
	switch v := c.GetVal().(type) {
	case *pg.A_Const_Sval:
		return name, v.Sval.GetSval(), false, true
	case *pg.A_Const_Ival:
		return name, strconv.Itoa(int(v.Ival.GetIval())), false, true
	case *pg.A_Const_Fval:
		return name, v.Fval.GetFval(), false, true
	}
	return "", "", false, false
}

// sessionCharacteristics is SET SESSION CHARACTERISTICS AS TRANSACTION
// with one option, the setting it sets: what pgjdbc sends for
// Connection.setReadOnly and setTransactionIsolation (Metabase sets read
// only on every connection). Several options at once are not moved.
func sessionCharacteristics(n *pg.VariableSetStmt) (name, value string, reset, ok bool) {
	if !strings.EqualFold(n.GetName(), "SESSION CHARACTERISTICS") || len(n.GetArgs()) != 1 {
		return "", "", false, false
	}
	d := n.GetArgs()[0].GetDefElem()
	c := d.GetArg().GetAConst()
	if d == nil || c == nil {
		return "", "", false, false
	}
	onOff := func() string {
		if c.GetIval().GetIval() != 0 {
			return "on"
		}
		return "off"
	}
	switch d.GetDefname() {
	case "transaction_isolation":
		if v := c.GetSval().GetSval(); v != "" {
			return "default_transaction_isolation", v, false, true
		}
	case "transaction_read_only":
		return "default_transaction_read_only", onOff(), false, true
	case "transaction_deferrable":
		return "default_transaction_deferrable", onOff(), false, true
	}
	return "", "", false, false
}
