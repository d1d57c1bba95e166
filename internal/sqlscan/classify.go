package sqlscan

import (
	_ "embed"
	"strings"
	"sync"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// Class is what one statement means for per-transaction routing: whether
// it may run on a replica, and what it does to the transaction it is in.
type Class uint8

// Classes. A batch's classes combine with ReadOnlyBatch.
const (
	// ClassWrite: anything that may write, lock, assign a transaction id,
	// call a function outside the allow-list, or that the parser refuses.
	ClassWrite Class = iota
	// ClassRead: SELECT, VALUES, TABLE, SHOW, EXPLAIN of one of those,
	// DECLARE (without HOLD), FETCH, CLOSE, MOVE: reads only.
	ClassRead
	// ClassBeginReadOnly: BEGIN / START TRANSACTION ... READ ONLY, not
	// SERIALIZABLE (a standby refuses serializable transactions).
	ClassBeginReadOnly
	// ClassBegin: BEGIN / START TRANSACTION not declared read-only.
	ClassBegin
	// ClassSetReadOnly: SET TRANSACTION READ ONLY (not SERIALIZABLE).
	ClassSetReadOnly
	// ClassEnd: COMMIT, END, ROLLBACK, ABORT (without AND CHAIN).
	ClassEnd
	// ClassNeutral: SAVEPOINT, RELEASE, ROLLBACK TO SAVEPOINT.
	ClassNeutral
	// ClassProxy: SHOW, SET or RESET of a pgproxy.* setting (answered by
	// the proxy, see ParseProxyStatement), alone in its string.
	ClassProxy
	// ClassProxyMixed: a pgproxy.* setting among other statements.
	ClassProxyMixed
)

var classNames = [...]string{"write", "read", "begin_read_only", "begin", "set_read_only", "end", "neutral", "proxy", "proxy_mixed"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "class(?)"
}

//go:embed readfuncs.txt
var readFuncsText string

// builtinReadFuncs are the pg_catalog functions with no volatile overload
// (PostgreSQL 15's pg_proc), less the stable ones that assign a
// transaction id (txid_current, pg_current_xact_id).
var builtinReadFuncs = func() map[string]bool {
	m := make(map[string]bool, 2500)
	for _, l := range strings.Split(readFuncsText, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			m[l] = true
		}
	}
	return m
}()

// Classifier classifies statements for per-transaction routing, with a
// cache keyed by the statement text (literals folded, see cacheKey) so the
// relay parses each distinct statement once. Safe for concurrent use.
type Classifier struct {
	user map[string]bool // routing.read_functions, lower-cased

	mu    sync.Mutex
	cache map[string]Class
}

// maxClassCache bounds the cache; when full it is emptied (one parse per
// distinct statement again: a statement mix wider than this parses anyway).
const maxClassCache = 8192

// NewClassifier returns a Classifier that also allows the user's
// functions readFunctions: "name" allows a call of name with or without a
// schema, "schema.name" a call written schema.name.
func NewClassifier(readFunctions []string) *Classifier {
	c := &Classifier{user: make(map[string]bool, len(readFunctions)), cache: make(map[string]Class)}
	for _, f := range readFunctions {
		c.user[strings.ToLower(strings.TrimSpace(f))] = true
	}
	return c
}

// Classify returns the class of the statements in sql: the class of its
// only statement, or for several the class ReadOnlyBatch gives them as one
// batch (ClassRead when they may run on a replica together, else
// ClassWrite; ClassBeginReadOnly when they open a read-only transaction
// they do not end).
func (c *Classifier) Classify(sql string) Class {
	key, ok := cacheKey(sql)
	if ok {
		c.mu.Lock()
		cl, hit := c.cache[key]
		c.mu.Unlock()
		if hit {
			return cl
		}
	}
	cl := c.classify(sql)
	if ok {
		c.mu.Lock()
		if len(c.cache) >= maxClassCache {
			clear(c.cache)
		}
		c.cache[key] = cl
		c.mu.Unlock()
	}
	return cl
}

func (c *Classifier) classify(sql string) Class {
	tree, err := pg.Parse(sql)
	if err != nil || len(tree.GetStmts()) == 0 {
		return ClassWrite
	}
	stmts := tree.GetStmts()
	classes := make([]Class, 0, len(stmts))
	proxy := false
	for _, s := range stmts {
		cl := c.statement(s.GetStmt())
		if cl == ClassProxy {
			proxy = true
		}
		classes = append(classes, cl)
	}
	switch {
	case proxy && len(classes) == 1:
		return ClassProxy
	case proxy:
		return ClassProxyMixed
	case len(classes) == 1:
		return classes[0]
	}
	var b Batch
	for _, cl := range classes {
		b.Add(cl)
	}
	switch {
	case !b.ReadOnly():
		return ClassWrite
	case b.inReadOnly:
		return ClassBeginReadOnly
	}
	return ClassRead
}

// Batch combines, in order, the classes of what one exchange with a server
// runs (a simple Query's statements, an extended-protocol batch's Parse and
// Bind messages). The zero Batch is empty and read-only.
type Batch struct {
	write      bool // a statement that must run on the primary
	inWritable bool // a transaction not declared read-only is open
	justBegan  bool // ... and nothing ran in it yet (SET TRANSACTION READ ONLY may still make it read-only)
	inReadOnly bool // a read-only transaction is open
	n          int
}

// Add adds one statement's class.
func (b *Batch) Add(cl Class) {
	b.n++
	began := false
	switch cl {
	case ClassRead, ClassNeutral:
	case ClassBeginReadOnly:
		if !b.inWritable {
			b.inReadOnly = true
		}
	case ClassBegin:
		if !b.inWritable && !b.inReadOnly {
			b.inWritable, began = true, true
		}
	case ClassSetReadOnly:
		if b.inWritable && b.justBegan {
			b.inWritable, b.inReadOnly = false, true
		}
	case ClassEnd:
		b.inWritable, b.inReadOnly = false, false
	default:
		b.write = true
	}
	b.justBegan = began || (b.justBegan && cl == ClassBegin)
}

// ReadOnly reports whether the batch may run on a replica: nothing in it
// writes, and it does not leave a transaction open that was not declared
// read-only (what comes next in it could write).
func (b *Batch) ReadOnly() bool { return !b.write && !b.inWritable }

// Len is the number of classes added.
func (b *Batch) Len() int { return b.n }

func (c *Classifier) statement(n *pg.Node) Class {
	switch s := n.GetNode().(type) {
	case *pg.Node_TransactionStmt:
		return transactionClass(s.TransactionStmt)
	case *pg.Node_VariableShowStmt:
		if isProxySetting(s.VariableShowStmt.GetName()) {
			return ClassProxy
		}
		return ClassRead
	case *pg.Node_VariableSetStmt:
		v := s.VariableSetStmt
		if isProxySetting(v.GetName()) {
			return ClassProxy
		}
		if v.GetKind() == pg.VariableSetKind_VAR_SET_MULTI && strings.EqualFold(v.GetName(), "TRANSACTION") {
			ro, serializable := txOptions(v.GetArgs())
			if ro && !serializable {
				return ClassSetReadOnly
			}
		}
		return ClassWrite
	case *pg.Node_SelectStmt:
		return c.readQuery(n)
	case *pg.Node_ExplainStmt:
		return c.readQuery(s.ExplainStmt.GetQuery())
	case *pg.Node_DeclareCursorStmt:
		if s.DeclareCursorStmt.GetOptions()&cursorOptHold != 0 {
			return ClassWrite // WITH HOLD outlives the transaction: it pins, on the primary
		}
		return c.readQuery(s.DeclareCursorStmt.GetQuery())
	case *pg.Node_FetchStmt, *pg.Node_ClosePortalStmt:
		return ClassRead
	}
	return ClassWrite
}

// readQuery is ClassRead when q only reads: a SELECT with no INTO, no
// locking clause, no data-modifying statement anywhere (CTEs) and only
// allowed functions.
func (c *Classifier) readQuery(q *pg.Node) Class {
	if _, ok := q.GetNode().(*pg.Node_SelectStmt); !ok {
		return ClassWrite
	}
	ok := true
	walk(q, func(m proto.Message) bool {
		if !ok {
			return false
		}
		switch n := m.(type) {
		case *pg.InsertStmt, *pg.UpdateStmt, *pg.DeleteStmt, *pg.MergeStmt, *pg.LockingClause, *pg.IntoClause:
			ok = false
		case *pg.SelectStmt:
			if n.GetIntoClause() != nil || len(n.GetLockingClause()) > 0 {
				ok = false
			}
		case *pg.FuncCall:
			ok = c.allowed(n.GetFuncname())
		}
		return ok
	})
	if ok {
		return ClassRead
	}
	return ClassWrite
}

func (c *Classifier) allowed(names []*pg.Node) bool {
	parts := make([]string, 0, 2)
	for _, p := range names {
		parts = append(parts, strings.ToLower(p.GetString_().GetSval()))
	}
	switch len(parts) {
	case 1:
		return builtinReadFuncs[parts[0]] || c.user[parts[0]]
	case 2:
		if parts[0] == "pg_catalog" && builtinReadFuncs[parts[1]] {
			return true
		}
		return c.user[parts[0]+"."+parts[1]] || c.user[parts[1]]
	}
	return false // database.schema.name
}

func transactionClass(t *pg.TransactionStmt) Class {
	switch t.GetKind() {
	case pg.TransactionStmtKind_TRANS_STMT_BEGIN, pg.TransactionStmtKind_TRANS_STMT_START:
		ro, serializable := txOptions(t.GetOptions())
		switch {
		case ro && !serializable:
			return ClassBeginReadOnly
		case ro:
			return ClassWrite // a standby refuses serializable
		}
		return ClassBegin
	case pg.TransactionStmtKind_TRANS_STMT_COMMIT, pg.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		if t.GetChain() {
			return ClassWrite // the chained transaction's class is that of the one it ends
		}
		return ClassEnd
	case pg.TransactionStmtKind_TRANS_STMT_SAVEPOINT, pg.TransactionStmtKind_TRANS_STMT_RELEASE,
		pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		return ClassNeutral
	}
	return ClassWrite // PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED
}

// txOptions reads BEGIN's or SET TRANSACTION's options: READ ONLY (the
// last of READ ONLY / READ WRITE wins, as in PostgreSQL) and SERIALIZABLE.
func txOptions(opts []*pg.Node) (readOnly, serializable bool) {
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		switch d.GetDefname() {
		case "transaction_read_only":
			readOnly = d.GetArg().GetAConst().GetIval().GetIval() == 1
		case "transaction_isolation":
			serializable = strings.EqualFold(d.GetArg().GetAConst().GetSval().GetSval(), "serializable")
		}
	}
	return readOnly, serializable
}

func isProxySetting(name string) bool {
	return len(name) > len("pgproxy.") && strings.EqualFold(name[:len("pgproxy.")], "pgproxy.")
}

// cacheKey is sql with its numeric constants and simple string literals
// ('...' without backslashes) folded to '?': statements that differ only
// in such literals have the same class (a literal never names a function or
// a table). ok is false for SQL whose lexing here could be ambiguous
// (backslashes in a string, E-prefixed strings, dollar quoting, unterminated quotes or
// comments): it is then not cached.
func cacheKey(sql string) (string, bool) {
	if len(sql) > 64<<10 {
		return "", false
	}
	var b strings.Builder
	b.Grow(len(sql))
	prevIdent := false // the previous byte continues an identifier or a number
	for i := 0; i < len(sql); {
		ch := sql[i]
		switch {
		case ch == '\'':
			j := i + 1
			for {
				k := strings.IndexAny(sql[j:], `'\`)
				if k < 0 || sql[j+k] == '\\' {
					return "", false
				}
				j += k + 1
				if j < len(sql) && sql[j] == '\'' {
					j++ // '' inside the literal
					continue
				}
				break
			}
			if prevIdent { // E'...', B'...', U&'...': prefixes change the meaning
				return "", false
			}
			b.WriteByte('?')
			i, prevIdent = j, false
		case ch == '"':
			k := strings.IndexByte(sql[i+1:], '"')
			if k < 0 {
				return "", false
			}
			b.WriteString(sql[i : i+k+2])
			i, prevIdent = i+k+2, true
		case ch == '$':
			if prevIdent { // part of an identifier (a$b) or $1 after a name
				b.WriteByte(ch)
				i++
				continue
			}
			j := i + 1
			for j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
				j++
			}
			if j == i+1 { // $tag$ or $$: dollar quoting
				return "", false
			}
			b.WriteString(sql[i:j]) // a parameter
			i, prevIdent = j, true
		case ch == '-' && i+1 < len(sql) && sql[i+1] == '-':
			k := strings.IndexByte(sql[i:], '\n')
			if k < 0 {
				return b.String(), true
			}
			b.WriteByte(' ')
			i, prevIdent = i+k+1, false
		case ch == '/' && i+1 < len(sql) && sql[i+1] == '*':
			k := strings.Index(sql[i+2:], "*/")
			if k < 0 || strings.Contains(sql[i+2:i+2+k], "/*") { // nested comments
				return "", false
			}
			b.WriteByte(' ')
			i, prevIdent = i+2+k+2, false
		case ch >= '0' && ch <= '9' && !prevIdent:
			j := i
			for j < len(sql) && (sql[j] >= '0' && sql[j] <= '9' || sql[j] == '.' || sql[j] == '_') {
				j++
			}
			if j < len(sql) && (sql[j] >= 'a' && sql[j] <= 'z' || sql[j] >= 'A' && sql[j] <= 'Z' || sql[j] == '$' || sql[j] >= 0x80) {
				return "", false // 1e5, 0x1F, 1abc: not folded
			}
			b.WriteByte('?')
			i, prevIdent = j, false
		default:
			b.WriteByte(ch)
			prevIdent = ch == '_' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch >= 0x80
			i++
		}
	}
	return b.String(), true
}

// ProxyStatement is a SHOW, SET or RESET of a pgproxy.* setting.
type ProxyStatement struct {
	Show  bool   // SHOW name
	Reset bool   // RESET name (or SET name TO DEFAULT)
	Name  string // lower-cased, "pgproxy.min_lsn"
	Value string // SET's value
}

// ParseProxyStatement parses sql when it is one pgproxy.* SHOW, SET or
// RESET statement (ClassProxy).
func ParseProxyStatement(sql string) (ProxyStatement, bool) {
	tree, err := pg.Parse(sql)
	if err != nil || len(tree.GetStmts()) != 1 {
		return ProxyStatement{}, false
	}
	switch s := tree.GetStmts()[0].GetStmt().GetNode().(type) {
	case *pg.Node_VariableShowStmt:
		if isProxySetting(s.VariableShowStmt.GetName()) {
			return ProxyStatement{Show: true, Name: strings.ToLower(s.VariableShowStmt.GetName())}, true
		}
	case *pg.Node_VariableSetStmt:
		v := s.VariableSetStmt
		if !isProxySetting(v.GetName()) {
			return ProxyStatement{}, false
		}
		ps := ProxyStatement{Name: strings.ToLower(v.GetName())}
		switch v.GetKind() {
		case pg.VariableSetKind_VAR_RESET, pg.VariableSetKind_VAR_SET_DEFAULT:
			ps.Reset = true
			return ps, true
		case pg.VariableSetKind_VAR_SET_VALUE:
			if args := v.GetArgs(); len(args) == 1 {
				if val, ok := constString(args[0]); ok {
					ps.Value = val
					return ps, true
				}
				if c := args[0].GetAConst(); c != nil && c.GetIval() != nil {
					return ProxyStatement{}, false
				}
			}
		}
	}
	return ProxyStatement{}, false
}
