package sqlscan

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// TrackedSettings are the settings a transaction-mode pool moves with its
// client: PostgreSQL reports each change (ParameterStatus), so the pool
// knows every client's value and sets it on whichever server runs the
// client's next transaction. A plain SET of any other setting pins, unless
// SessionSetting recognizes it as one the pool can replay itself.
var TrackedSettings = map[string]bool{
	"application_name":            true,
	"client_encoding":             true,
	"datestyle":                   true,
	"intervalstyle":               true,
	"timezone":                    true,
	"standard_conforming_strings": true,
}

// cursorOptHold is PostgreSQL's CURSOR_OPT_HOLD (parsenodes.h).
const cursorOptHold = 0x0020

// SessionState reports the session state that sql would leave on its server
// beyond the end of its transaction, which a transaction-mode pool cannot
// move to another server: "listen", "advisory_lock" (session-level
// pg_advisory_lock and friends), "temp_table", "cursor_with_hold",
// "prepare" (SQL PREPARE), "set" (SET or set_config of a setting outside
// TrackedSettings, RESET ALL, SET SESSION CHARACTERISTICS), "load",
// "discard" and "deallocate" (they drop what the pool prepared). "" means
// none. SET LOCAL, SET TRANSACTION and xact-level advisory locks end with
// the transaction and are not reported.
//
// It is called for every statement, so it first looks for the words that
// can start such state and parses (PostgreSQL's parser) only when one is
// there; unparsable SQL reports "" (the server rejects it).
func SessionState(sql string) string {
	if !mayHoldSessionState(sql) {
		return ""
	}
	tree, err := pg.Parse(sql)
	if err != nil {
		return ""
	}
	reason := ""
	walk(tree, func(m proto.Message) bool {
		if reason != "" {
			return false
		}
		reason = sessionStateOf(m)
		return reason == ""
	})
	return reason
}

// mayHoldSessionState is SessionState's cheap filter: false only when sql
// cannot contain any statement SessionState reports.
// Keywords are ASCII, and PostgreSQL folds only ASCII letters, so the
// filter folds ASCII case as it looks (no lower-cased copy: it runs for
// every simple Query of a pooled client).
func mayHoldSessionState(sql string) bool {
	l := sql
	if containsAnyFold(l) {
		return true
	}
	// SET and RESET only count at the start of a statement: "UPDATE t SET"
	// must not cost a parse.
	for i := 0; i < len(l); {
		j := i
		for j < len(l) {
			switch {
			case l[j] == ' ' || l[j] == '\t' || l[j] == '\n' || l[j] == '\r' || l[j] == '(':
				j++
				continue
			case strings.HasPrefix(l[j:], "--"):
				if k := strings.IndexByte(l[j:], '\n'); k >= 0 {
					j += k + 1
					continue
				}
				j = len(l)
				continue
			case strings.HasPrefix(l[j:], "/*"):
				if k := strings.Index(l[j:], "*/"); k >= 0 {
					j += k + 2
					continue
				}
				j = len(l)
				continue
			}
			break
		}
		if hasPrefixFold(l[j:], "set") || hasPrefixFold(l[j:], "reset") {
			return true
		}
		k := strings.IndexByte(l[j:], ';')
		if k < 0 {
			return false
		}
		i = j + k + 1
	}
	return false
}

// hasPrefixFold reports whether s starts with word (lower-case ASCII) in
// any ASCII case.
func hasPrefixFold(s, word string) bool {
	if len(s) < len(word) {
		return false
	}
	for i := 0; i < len(word); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != word[i] {
			return false
		}
	}
	return true
}

// stateWords are the words that can start session state, by their first
// letter: containsAnyFold looks for all of them in one pass.
var stateWords = func() (t [128][]string) {
	for _, w := range []string{"listen", "advisory_lock", "temp", "hold", "prepare", "set_config", "load", "discard", "deallocate"} {
		t[w[0]] = append(t[w[0]], w)
	}
	return t
}()

// containsAnyFold reports whether s contains one of stateWords in any ASCII
// case.
func containsAnyFold(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 128 {
			continue
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		for _, w := range stateWords[c] {
			if hasPrefixFold(s[i:], w) {
				return true
			}
		}
	}
	return false
}

var sessionAdvisoryLocks = map[string]bool{
	"pg_advisory_lock": true, "pg_advisory_lock_shared": true,
	"pg_try_advisory_lock": true, "pg_try_advisory_lock_shared": true,
}

func sessionStateOf(m proto.Message) string {
	switch n := m.(type) {
	case *pg.ListenStmt:
		return "listen"
	case *pg.VariableSetStmt:
		if n.GetIsLocal() {
			return ""
		}
		switch n.GetKind() {
		case pg.VariableSetKind_VAR_RESET_ALL:
			return "set"
		case pg.VariableSetKind_VAR_SET_MULTI:
			if strings.EqualFold(n.GetName(), "TRANSACTION") {
				return "" // SET TRANSACTION: this transaction only
			}
			return "set" // SET SESSION CHARACTERISTICS AS TRANSACTION
		}
		if TrackedSettings[strings.ToLower(n.GetName())] {
			return ""
		}
		return "set"
	case *pg.CreateStmt:
		if n.GetRelation().GetRelpersistence() == "t" {
			return "temp_table"
		}
	case *pg.CreateTableAsStmt:
		if n.GetInto().GetRel().GetRelpersistence() == "t" {
			return "temp_table"
		}
	case *pg.ViewStmt:
		if n.GetView().GetRelpersistence() == "t" {
			return "temp_table"
		}
	case *pg.CreateSeqStmt:
		if n.GetSequence().GetRelpersistence() == "t" {
			return "temp_table"
		}
	case *pg.SelectStmt:
		if into := n.GetIntoClause(); into != nil && into.GetRel().GetRelpersistence() == "t" {
			return "temp_table"
		}
	case *pg.DeclareCursorStmt:
		if n.GetOptions()&cursorOptHold != 0 {
			return "cursor_with_hold"
		}
	case *pg.PrepareStmt:
		return "prepare"
	case *pg.LoadStmt:
		return "load"
	case *pg.DiscardStmt:
		return "discard"
	case *pg.DeallocateStmt:
		return "deallocate"
	case *pg.FuncCall:
		names := n.GetFuncname()
		if len(names) == 0 {
			return ""
		}
		fn := strings.ToLower(names[len(names)-1].GetString_().GetSval())
		if sessionAdvisoryLocks[fn] {
			return "advisory_lock"
		}
		if fn == "set_config" {
			args := n.GetArgs()
			if len(args) == 3 && truthy(args[2]) {
				return "" // is_local
			}
			if len(args) > 0 {
				if name, ok := constString(args[0]); ok && TrackedSettings[strings.ToLower(strings.TrimSpace(name))] {
					return ""
				}
			}
			return "set"
		}
	}
	return ""
}
