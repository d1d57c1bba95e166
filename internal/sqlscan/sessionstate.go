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
	if ContainsFold(sql, "pg_temp") {
		// Naming the session's temporary schema (SET LOCAL search_path =
		// pg_temp, then CREATE TABLE t: a temporary table) is taken as
		// leaving temporary objects.
		return "temp_table"
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
// cannot contain any statement SessionState reports. A false answer skips
// the parse, so it must never be wrong: a missed SET would leave its
// setting on a pooled server for the next client.
//
// Keywords are ASCII, and PostgreSQL folds only ASCII letters, so the
// filter folds ASCII case as it looks (no lower-cased copy: it runs for
// every simple Query of a pooled client). Unicode escapes (U&"…") can
// spell any name, so they always cost a parse.
func mayHoldSessionState(sql string) bool {
	if containsAnyFold(sql) || ContainsFold(sql, "u&") {
		return true
	}
	return setAtStatementStart(sql)
}

// setAtStatementStart reports whether a statement of sql starts with SET or
// RESET ("UPDATE t SET" must not cost a parse), lexing what can hide a
// statement boundary as PostgreSQL's scanner does: string literals (” and
// "" doubled quotes), -- comments (to a newline or carriage return),
// nested /* */ comments, and the whitespace PostgreSQL skips (space, tab,
// newline, carriage return, form feed, vertical tab). Whatever it cannot
// lex exactly without the session's settings answers true (the caller
// parses): a backslash in a string (standard_conforming_strings may be
// off), an E” string, a dollar quote, an unterminated quote or comment.
func setAtStatementStart(sql string) bool {
	start := true // at the start of a statement: whitespace, comments and ( skipped
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
			continue
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			k := strings.IndexAny(sql[i:], "\n\r")
			if k < 0 {
				return false // a comment to the end
			}
			i += k + 1
			continue
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			n, ok := skipBlockComment(sql[i:])
			if !ok {
				return true
			}
			i += n
			continue
		case c == ';':
			start = true
			i++
			continue
		case c == '(' && start:
			i++
			continue
		}
		if start {
			if hasPrefixFold(sql[i:], "set") || hasPrefixFold(sql[i:], "reset") ||
				hasPrefixFold(sql[i:], "do") && (i+2 == len(sql) || !identChar(sql[i+2])) {
				return true
			}
			start = false
		}
		switch {
		case c == '\'':
			if i > 0 && (sql[i-1] == 'e' || sql[i-1] == 'E') && (i < 2 || !identChar(sql[i-2])) {
				return true // E'…': backslash escapes
			}
			n, ok := skipQuoted(sql[i:], '\'')
			if !ok || strings.IndexByte(sql[i:i+n], '\\') >= 0 {
				return true
			}
			i += n
		case c == '"':
			n, ok := skipQuoted(sql[i:], '"')
			if !ok {
				return true
			}
			i += n
		case c == '$':
			if i+1 < len(sql) && sql[i+1] >= '0' && sql[i+1] <= '9' {
				i += 2 // a parameter: $1
				continue
			}
			if i > 0 && identChar(sql[i-1]) {
				i++ // inside an identifier (a$b)
				continue
			}
			return true // a dollar quote
		default:
			i++
		}
	}
	return false
}

// skipQuoted returns the length of the quoted text that s starts with (q
// doubled inside is the quote itself); false when it does not end.
func skipQuoted(s string, q byte) (int, bool) {
	for i := 1; i < len(s); i++ {
		if s[i] == q {
			if i+1 < len(s) && s[i+1] == q {
				i++
				continue
			}
			return i + 1, true
		}
	}
	return 0, false
}

// skipBlockComment returns the length of the /* */ comment s starts with,
// nested ones included; false when it does not end.
func skipBlockComment(s string) (int, bool) {
	depth := 0
	for i := 0; i+1 < len(s); i++ {
		switch {
		case s[i] == '/' && s[i+1] == '*':
			depth++
			i++
		case s[i] == '*' && s[i+1] == '/':
			depth--
			i++
			if depth == 0 {
				return i + 1, true
			}
		}
	}
	return 0, false
}

// identChar: a byte that continues an identifier (non-ASCII bytes are
// identifier characters to PostgreSQL's scanner).
func identChar(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// ContainsFold reports whether s contains word (lower-case ASCII, starting
// with a letter) in any ASCII case, without a lower-cased copy.
func ContainsFold(s, word string) bool {
	for i := 0; i+len(word) <= len(s); i++ {
		if s[i]|0x20 == word[0] && hasPrefixFold(s[i:], word) {
			return true
		}
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

// tempRel: the relation is temporary (TEMP, or named in pg_temp).
func tempRel(r *pg.RangeVar) bool {
	return r != nil && (r.GetRelpersistence() == "t" || tempSchema(r.GetSchemaname()))
}

// tempName: a qualified name (schema.name, db.schema.name) in pg_temp.
func tempName(list []*pg.Node) bool {
	return len(list) >= 2 && tempSchema(list[len(list)-2].GetString_().GetSval())
}

// tempSchema: pg_temp, the session's temporary schema, or one of its
// pg_temp_N names.
func tempSchema(s string) bool {
	return s == "pg_temp" || strings.HasPrefix(s, "pg_temp_")
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
	// Temporary objects: TEMP relations, and anything created in the
	// session's own schema by name (pg_temp.t, a function or type in
	// pg_temp), all reported as "temp_table".
	case *pg.CreateStmt:
		if tempRel(n.GetRelation()) {
			return "temp_table"
		}
	case *pg.CreateTableAsStmt:
		if tempRel(n.GetInto().GetRel()) {
			return "temp_table"
		}
	case *pg.ViewStmt:
		if tempRel(n.GetView()) {
			return "temp_table"
		}
	case *pg.CreateSeqStmt:
		if tempRel(n.GetSequence()) {
			return "temp_table"
		}
	case *pg.CompositeTypeStmt:
		if tempRel(n.GetTypevar()) {
			return "temp_table"
		}
	case *pg.CreateFunctionStmt:
		if tempName(n.GetFuncname()) {
			return "temp_table"
		}
	case *pg.DefineStmt:
		if tempName(n.GetDefnames()) {
			return "temp_table"
		}
	case *pg.CreateDomainStmt:
		if tempName(n.GetDomainname()) {
			return "temp_table"
		}
	case *pg.CreateEnumStmt:
		if tempName(n.GetTypeName()) {
			return "temp_table"
		}
	case *pg.CreateRangeStmt:
		if tempName(n.GetTypeName()) {
			return "temp_table"
		}
	case *pg.SelectStmt:
		if into := n.GetIntoClause(); into != nil && tempRel(into.GetRel()) {
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
	case *pg.DoStmt:
		return "do_block" // its code may do anything: SET, LISTEN, set_config, advisory locks
	case *pg.DiscardStmt:
		return "discard"
	case *pg.DeallocateStmt:
		return "deallocate"
	case *pg.FuncCall:
		names := n.GetFuncname()
		if len(names) == 0 {
			return ""
		}
		// The parser has folded an unquoted name to lower case; a quoted
		// "PG_ADVISORY_LOCK" is another function, so the name is compared
		// as it is (folding it with Unicode rules would also match names
		// the ASCII filter above lets through).
		fn := names[len(names)-1].GetString_().GetSval()
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
