package proxy

import (
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
	"github.com/ofitec/pgproxy/internal/sqlscan"
)

// readOnlyGuard is the policy of a read session that fell back to the
// primary (Target.ReadOnly): it started with default_transaction_read_only=on,
// and the guard refuses what would turn that off. Query and Parse are held
// whole and checked (Config.ReadOnlyCheck, PostgreSQL's parser); FunctionCall
// is refused outright. A ParameterStatus default_transaction_read_only=off
// ends the session, as a last line of defence.
//
// # Refusals are answered by the proxy
//
// A refused message never reaches the server, and the client gets the answer
// PostgreSQL would give, at the place in the stream PostgreSQL would give it:
// after every response to what the client sent before, before any response
// to what it sends after. The client→server direction stops at the refused
// message and sends the server, instead, a message that costs it nothing and
// marks the place in the server's answers; the server→client direction puts
// the refusal there:
//
//   - a refused Query or FunctionCall becomes a Sync. Its ReadyForQuery, which
//     comes after the answers to everything before, is replaced by the
//     ErrorResponse and a ReadyForQuery. The client→server direction holds
//     its next message until that ReadyForQuery has been seen: the status it
//     carries ('I', 'T', 'E') decides what follows (below).
//   - a refused Parse (or Bind, Describe, Execute, below) is the first error
//     of an extended-protocol batch: PostgreSQL answers it with an
//     ErrorResponse and ignores everything up to the next Sync. The guard
//     drops those messages and forwards the client's Sync, whose
//     ReadyForQuery the client gets (merged with the failure, below). The
//     ErrorResponse itself goes where PostgreSQL would send it: at the start
//     of a batch, the guard sends a Sync of its own and replaces its
//     ReadyForQuery by the ErrorResponse alone (nothing was sent since the
//     last Query or Sync, so that Sync changes nothing on the server); inside
//     a batch (Parse/Bind/Execute already forwarded), it sends, in the
//     refused message's place, a Close of a portal that never exists
//     (markerPortal) and a Flush. The server answers that Close with a
//     CloseComplete where it would have answered the refused message, and
//     the guard puts the ErrorResponse in its stead; or, when a message
//     before it in the batch failed, the server skips the Close as
//     PostgreSQL would have skipped the refused message, the batch's
//     ReadyForQuery comes without it, and the refusal is dropped: the client
//     gets the server's error alone, as from PostgreSQL.
//
// The server→client direction pairs each ReadyForQuery with what was sent
// (entry): the Syncs, Queries and FunctionCalls forwarded, in order, and the
// refusals in between. Each extended message but Flush ends its answer with
// one of ParseComplete, BindComplete, CloseComplete, RowDescription, NoData,
// CommandComplete, EmptyQueryResponse, PortalSuspended, or an ErrorResponse
// after which the server skips to the Sync: counting them (since the last
// ReadyForQuery) places the entries no ReadyForQuery answers (a marker, the
// guard's own ParseComplete), and tells whether a Query forwarded in the
// middle of an extended batch was skipped after an error earlier in that
// batch (PostgreSQL answers it with nothing then). COPY FROM STDIN, whose
// copy mode ignores Syncs, cannot start on a read-only session (nor can the
// temporary table it could write to be created), so the guard does not
// follow it. The list is bounded (maxEntries, consecutive plain entries
// counted in one); a client that pipelines beyond it waits.
//
// # Ordering rule
//
// An entry is listed before the message it stands for is sent to the
// server, but after the messages before it were: the server's answers to
// those may arrive before the entry is listed (an ErrorResponse, which the
// server sends at once, or answers a client's earlier Flush asked for). So
// the server→client direction decides an entry only on an answer to its own
// message or to a later one (the marker's CloseComplete, the guard's
// ParseComplete, a ReadyForQuery), never on the list's head at the time an
// earlier answer passes; of those it notes what a decision needs (how many
// completed responses, where the first error came: serverMode), and the
// ReadyForQuery that ends the batch settles what the server skipped
// (readyForQuery).
//
// # Failed transactions
//
// A refusal inside a transaction block ('T') fails the client's block, as the
// error would in PostgreSQL, but not the server's. Until the client ends it
// the guard plays the failed block: every statement gets 25P02 "current
// transaction is aborted, commands ignored until end of transaction block"
// (from the proxy, as a refusal), every ReadyForQuery shows 'E'. What
// PostgreSQL still runs there goes to the server: ROLLBACK (and ABORT) as
// sent; COMMIT, END and PREPARE TRANSACTION as ROLLBACK (AND CHAIN kept), so
// the server's transaction is rolled back and the client sees the
// CommandComplete "ROLLBACK" PostgreSQL sends; ROLLBACK TO SAVEPOINT as
// sent, and the server decides: its savepoints are those made before the
// failure, so it returns to 'T' as PostgreSQL would, or fails for real
// (3B001) when there is no such savepoint. In the extended protocol, Parse,
// Bind, Describe and Execute of those statements pass (a Bind of a COMMIT
// statement is sent as a Parse of ROLLBACK into the unnamed statement and a
// Bind of it, whose ParseComplete the client does not see); anything else
// gets 25P02. A Describe of a statement without result columns gets 25P02
// too (PostgreSQL answers it); the unnamed statement a COMMIT was swapped
// for answers later Binds with 26000.
//
// Known differences: a statement refused in the middle of an unsynced
// extended batch leaves that batch's implicit transaction to the Sync that
// follows (the server commits it, PostgreSQL would roll it back: on a
// read-only session nothing was written, but a SET made earlier in that
// batch stays); a portal of the client's named like the marker's
// (markerPortal) would be closed by a refusal after it in its batch. While
// the client→server direction waits for a ReadyForQuery it reads nothing
// from the client: a client that goes away meanwhile is noticed once the
// server has answered what came before. The waits need the server→client
// direction on a goroutine of its own: enforced read-only sessions never
// run on an event loop (relay_goroutines.go).
//
// The client→server methods own the fields marked so; the shared ones are
// under mu; the server→client methods own theirs.
type readOnlyGuard struct {
	s *session

	// client→server only
	await        *refusal                  // the next client message waits until the server→client direction has placed it
	discard      bool                      // dropping client messages up to its next Sync, as PostgreSQL skips them after an error
	discardRef   *refusal                  // what the Sync that ends the discard carries (nil: nothing)
	failed       bool                      // the client's transaction block failed by a refusal (the server's did not)
	extSinceZ    int                       // extended-protocol messages forwarded since the last Query, FunctionCall or Sync
	extSinceSync int                       // ... since the last Sync
	exitStmts    map[string]sqlscan.TxExit // prepared statements that end a transaction
	exitPortals  map[string]bool           // portals bound from them while failed
	unnamedGone  bool                      // the client's unnamed statement does not exist for PostgreSQL (refused, or swapped)

	mu      sync.Mutex
	q       []entry // what the server will answer, oldest first
	waiting bool    // client→server waits for a change of q
	wake    chan struct{}
	gone    chan struct{} // closed when the session closes
	endOnce sync.Once

	// server→client only
	terms    int  // completed responses since the last ReadyForQuery
	errInSeg bool // an ErrorResponse since the last ReadyForQuery
	errAt    int  // if so, how many completed responses came before the first one
}

var _ policy = (*readOnlyGuard)(nil)

const (
	// maxEntries bounds the guard's list of outstanding answers.
	maxEntries = 1024
	// maxExitStmts bounds the prepared transaction-end statements remembered
	// (a Bind of one not remembered gets 25P02 while failed).
	maxExitStmts   = 64
	abortedMessage = "current transaction is aborted, commands ignored until end of transaction block"
)

// A refusal is one refused message, and how its answer is placed.
type refusal struct {
	how           byte // refQuery, refBatch, refMarker, refSync
	code, message string

	// set by the server→client direction under mu
	done    bool
	skipped bool // the server failed before: PostgreSQL would have skipped the refused Query
	status  byte // the server's ReadyForQuery status where the refusal was placed
}

const (
	refQuery  = 'Q' // the guard's Sync stands for a refused Query or FunctionCall: ErrorResponse + ReadyForQuery
	refBatch  = 'P' // the guard's Sync before a refused extended message at a batch's start: ErrorResponse alone
	refMarker = 'H' // the guard's marker (Close, Flush) for a refused message inside a batch: ErrorResponse in place of its CloseComplete
	refSync   = 'S' // the client's Sync after a discarded batch: its ReadyForQuery says whether the block failed
)

// An entry is what the server will answer. Kinds 'S' (a Sync) and 'Q' (a
// Query or FunctionCall) are answered by a ReadyForQuery; 'H' (a refusal
// inside a batch) and 'W' (the guard's own ParseComplete, swallowed) by the
// ext-th completed response after the last ReadyForQuery.
type entry struct {
	kind   byte
	n      int  // how many consecutive equal plain entries this is
	ext    int  // extended messages forwarded before it since the previous Sync, Query or FunctionCall
	maybe  bool // a Query after unsynced extended messages: skipped if one of them failed
	forceE bool // sent in a failed block: 'T' is reported as 'E'
	ref    *refusal
}

func newReadOnlyGuard(s *session) *readOnlyGuard {
	return &readOnlyGuard{s: s, wake: make(chan struct{}, 1), gone: make(chan struct{})}
}

// end stops every wait of the client→server direction (the session is
// closing).
func (g *readOnlyGuard) end() { g.endOnce.Do(func() { close(g.gone) }) }

// markerPortal is the portal the guard's marker closes: a name no client
// portal has (it would be closed), for a Close that changes nothing on the
// server (closing a portal that does not exist is not an error).
const markerPortal = "pgproxy_no_such_portal"

var (
	syncMsg = []byte{'S', 0, 0, 0, 4}
	// markerMsg stands in for a refused message inside a batch: its
	// CloseComplete marks the refused message's place in the server's
	// answers, and the Flush has the server send them (the client may wait
	// for the error before its Sync).
	markerMsg = append(closeMsg('P', markerPortal), 'H', 0, 0, 0, 4)
	// errGuardEnded ends client→server when a wait is cut by the session's close.
	errGuardEnded = &relayEnd{reason: "server_closed"}
)

// ---- client → server ----

func (g *readOnlyGuard) mode(toServer bool, typ byte, _ int) msgMode {
	if !toServer {
		return g.serverMode(typ)
	}
	if g.await != nil && !g.settle() {
		return modeDrop // the session is closing
	}
	if g.discard {
		switch typ {
		case 'S', 'Q', 'F':
			// The Sync ends the discard. Query and FunctionCall are held,
			// then dropped: the relay must not take them for requests
			// forwarded (relay_goroutines.go, parkEarly).
			return modeHold
		case 'X':
			return modePass
		}
		return modeDrop
	}
	switch typ {
	case 'Q', 'F', 'P', 'S':
		return modeHold
	case 'B', 'D':
		if g.failed || g.unnamedGone || typ == 'B' && g.s.mask != nil && g.s.mask.anyRefused() {
			return modeHold
		}
		g.forwardedExt()
	case 'E':
		if g.failed {
			return modeHold
		}
		g.forwardedExecute()
	case 'C':
		g.forwardedExt()
		return modeInspect
	}
	return modePass
}

// mayWait says whether mode may wait for the server's answers to what the
// client sent before (so that must be on its way first): while a refusal's
// answer is awaited (settle), or when the list of expected answers is
// nearly full (push waits for room). Half full is the mark: the pump asks
// before each message, so everything before the first message past it is
// flushed long before push can wait.
func (g *readOnlyGuard) mayWait() bool {
	if g.await != nil {
		return true
	}
	g.mu.Lock()
	n := len(g.q)
	g.mu.Unlock()
	return n >= maxEntries/2
}

func (g *readOnlyGuard) forwardedExt() { g.extSinceZ++; g.extSinceSync++ }

// forwardedExecute counts an Execute forwarded, and on a masked session
// the Describe the masking sends before it (policy_masking.go: not after
// the client's own Describe of the portal), whose answer the server sends
// too. The masking is first in the chain: its mode for this Execute has
// run.
func (g *readOnlyGuard) forwardedExecute() {
	g.forwardedExt()
	if g.s.mask != nil && g.s.mask.ownDescribe {
		g.forwardedExt()
	}
}

// inspect sees Close messages: the statement or portal is gone.
func (g *readOnlyGuard) inspect(toServer bool, typ byte, body []byte, _ bool) error {
	if !toServer || typ != 'C' || len(body) < 2 {
		return nil
	}
	name, _ := pgwire.CutCString(body[1:])
	if body[0] == 'S' {
		delete(g.exitStmts, name)
		if name == "" {
			g.unnamedGone = false // the server has none now either
		}
	} else {
		delete(g.exitPortals, name)
	}
	return nil
}

func (g *readOnlyGuard) decide(toServer bool, typ byte, msg []byte, tooBig bool) ([]byte, error) {
	if !toServer {
		return g.decideServer(typ, msg)
	}
	if g.discard {
		if typ != 'S' {
			return nil, nil
		}
		g.discard = false
		r := g.discardRef
		g.discardRef = nil
		return g.sync(msg, r)
	}
	switch typ {
	case 'S':
		return g.sync(msg, nil)
	case 'F':
		if g.failed {
			return g.refuseQuery(pgerr.InFailedSQLTransaction, abortedMessage)
		}
		if !g.s.readOnly { // a masked session: the function could read anything
			return g.refuseQuery(pgerr.InsufficientPrivilege, "pgproxy: function calls (FunctionCall messages) are not allowed for masked user "+g.s.mask.user())
		}
		return g.refuseQuery(pgerr.ReadOnlySQLTransaction, "pgproxy: function calls are not allowed on a read-only session")
	case 'Q':
		return g.query(msg, tooBig)
	case 'P':
		return g.parse(msg, tooBig)
	case 'B':
		return g.bind(msg, tooBig)
	case 'D':
		return g.describe(msg)
	case 'E':
		return g.execute(msg)
	}
	return msg, nil
}

// settle waits until the server→client direction has placed the refusal
// awaited, and takes over what it found.
func (g *readOnlyGuard) settle() bool {
	r := g.await
	g.mu.Lock()
	ok := g.waitLocked(func() bool { return r.done })
	g.mu.Unlock()
	if !ok {
		return false
	}
	g.await = nil
	switch r.status {
	case 'T':
		if !g.failed {
			g.failed, g.exitPortals = true, nil
		}
	case 'I':
		g.failed, g.exitPortals = false, nil
	}
	if r.skipped { // PostgreSQL skips on to the client's Sync
		g.discard, g.discardRef = true, nil
	}
	return true
}

// check runs the session's checks: the read-only check (Config.ReadOnlyCheck)
// on an enforced read-only session, the masking check (policy_masking.go)
// on a masked one. It returns the refusal's SQLSTATE and message; err is a
// statement the parser rejects.
func (g *readOnlyGuard) check(sql string) (code, message string, refused bool, err error) {
	if g.s.readOnly && g.s.cfg.ReadOnlyCheck != nil {
		reason, violated, err := g.s.cfg.ReadOnlyCheck(sql)
		if err != nil {
			return "", "", false, err
		}
		if violated {
			g.s.logger().Warn("read-only session: statement refused", zap.String("reason", reason))
			return pgerr.ReadOnlySQLTransaction, "pgproxy: refused on a read-only session: " + reason, true, nil
		}
	}
	if g.s.mask != nil {
		return g.s.mask.check(sql)
	}
	return "", "", false, nil
}

// unparsable is the refusal of a statement the parser rejects.
func (g *readOnlyGuard) unparsable(err error) string {
	if g.s.readOnly {
		return "pgproxy: could not parse the statement to check it is read-only: " + err.Error()
	}
	return "pgproxy: could not parse the statement to check it against masking.rules: " + err.Error()
}

func (g *readOnlyGuard) sync(msg []byte, r *refusal) ([]byte, error) {
	if !g.push(entry{kind: 'S', forceE: g.failed && r == nil, ref: r}) {
		return nil, errGuardEnded
	}
	if r != nil {
		g.await = r
	}
	g.extSinceZ, g.extSinceSync = 0, 0
	return msg, nil
}

func (g *readOnlyGuard) query(msg []byte, tooBig bool) ([]byte, error) {
	if tooBig {
		return g.refuseQuery(pgerr.ProgramLimitExceeded, "pgproxy: statement too large to check on a read-only session")
	}
	if !pgwire.Terminated(msg[5:], 'Q') {
		// PostgreSQL would reject it too ("invalid string in message"); what
		// it would have run is not known, so it is not forwarded.
		return g.refuseQuery(pgerr.ProtocolViolation, "pgproxy: malformed message on a read-only session: unterminated string")
	}
	sql := pgwire.CString(msg[5:])
	code, message, violated, err := g.check(sql)
	if err != nil {
		return g.refuseQuery(pgerr.SyntaxError, g.unparsable(err))
	}
	if g.failed {
		exit, err := sqlscan.FirstTxExit(sql)
		switch {
		case err != nil:
			return g.refuseQuery(pgerr.SyntaxError, g.unparsable(err))
		case exit.Kind == sqlscan.NotTxExit:
			return g.refuseQuery(pgerr.InFailedSQLTransaction, abortedMessage)
		case violated:
			return g.refuseQuery(code, message)
		}
		if exit.Kind == sqlscan.TxCommit || exit.Kind == sqlscan.TxPrepare {
			body := append([]byte(sql[:exit.Start]), rollbackSQL(exit.Chain)...)
			body = append(append(body, sql[exit.End:]...), 0)
			msg = pgwire.AppendMessage(nil, 'Q', body)
		}
		g.failed, g.exitPortals = false, nil
	} else if violated {
		return g.refuseQuery(code, message)
	}
	if len(g.exitStmts) > 0 {
		if l := strings.ToLower(sql); strings.Contains(l, "deallocate") || strings.Contains(l, "discard") {
			g.exitStmts = nil // may have dropped them: forget them all
		}
	}
	if !g.push(entry{kind: 'Q', maybe: g.extSinceSync > 0, ext: g.extSinceZ}) {
		return nil, errGuardEnded
	}
	g.extSinceZ = 0
	return msg, nil
}

func rollbackSQL(chain bool) string {
	if chain {
		return "ROLLBACK AND CHAIN"
	}
	return "ROLLBACK"
}

func (g *readOnlyGuard) parse(msg []byte, tooBig bool) ([]byte, error) {
	name, rest := pgwire.CutCString(msg[5:])
	refuse := func(code, message string) ([]byte, error) {
		if name == "" { // PostgreSQL drops the unnamed statement before it parses
			g.unnamedGone = true
			delete(g.exitStmts, "")
		}
		return g.refuseExt(code, message)
	}
	if tooBig {
		return refuse(pgerr.ProgramLimitExceeded, "pgproxy: statement too large to check on a read-only session")
	}
	if !pgwire.Terminated(msg[5:], 'P') {
		return refuse(pgerr.ProtocolViolation, "pgproxy: malformed message on a read-only session: unterminated string")
	}
	sql, _ := pgwire.CutCString(rest)
	code, message, violated, err := g.check(sql)
	if err != nil {
		return refuse(pgerr.SyntaxError, g.unparsable(err))
	}
	exit, err := sqlscan.FirstTxExit(sql)
	switch {
	case err != nil:
		return refuse(pgerr.SyntaxError, g.unparsable(err))
	case g.failed && exit.Kind == sqlscan.NotTxExit:
		return refuse(pgerr.InFailedSQLTransaction, abortedMessage)
	case violated:
		return refuse(code, message)
	}
	if exit.Kind == sqlscan.NotTxExit {
		delete(g.exitStmts, name)
	} else if _, ok := g.exitStmts[name]; ok || len(g.exitStmts) < maxExitStmts {
		if g.exitStmts == nil {
			g.exitStmts = make(map[string]sqlscan.TxExit)
		}
		g.exitStmts[name] = exit
	}
	if name == "" {
		g.unnamedGone = false
	}
	g.forwardedExt()
	return msg, nil
}

func (g *readOnlyGuard) bind(msg []byte, tooBig bool) ([]byte, error) {
	portal, rest := pgwire.CutCString(msg[5:])
	stmt, after := pgwire.CutCString(rest)
	if stmt == "" && g.unnamedGone {
		return g.refuseExt(pgerr.InvalidSQLStatementName, "unnamed prepared statement does not exist")
	}
	if g.s.mask != nil {
		if r, refused := g.s.mask.refusedStmt(stmt); refused {
			// Prepared before a RELOAD whose masking.rules refuse it.
			rule := -1
			if rs := g.s.mask.rules(); rs.set != nil {
				rule = rs.set.Rule
			}
			g.s.mask.refusal(rule, r.reason, "", "")
			return g.refuseExt(pgerr.InsufficientPrivilege, r.message)
		}
	}
	if !g.failed {
		g.forwardedExt()
		return msg, nil
	}
	exit, ok := g.exitStmts[stmt]
	if !ok {
		return g.refuseExt(pgerr.InFailedSQLTransaction, abortedMessage)
	}
	if tooBig {
		return g.refuseExt(pgerr.ProgramLimitExceeded, "pgproxy: message too large on a read-only session")
	}
	if g.exitPortals == nil {
		g.exitPortals = make(map[string]bool)
	}
	g.exitPortals[portal] = true
	if exit.Kind != sqlscan.TxCommit && exit.Kind != sqlscan.TxPrepare {
		g.forwardedExt()
		return msg, nil
	}
	// A COMMIT in a failed block rolls back: bind a ROLLBACK instead, parsed
	// into the unnamed statement (its ParseComplete is swallowed).
	if !g.push(entry{kind: 'W', ext: g.extSinceZ + 1}) {
		return nil, errGuardEnded
	}
	out := pgwire.AppendMessage(nil, 'P', append(append([]byte{0}, rollbackSQL(exit.Chain)...), 0, 0, 0))
	nb := append(append([]byte(portal), 0, 0), after...)
	out = pgwire.AppendMessage(out, 'B', nb)
	g.unnamedGone = true
	delete(g.exitStmts, "")
	g.forwardedExt()
	g.forwardedExt()
	return out, nil
}

func (g *readOnlyGuard) describe(msg []byte) ([]byte, error) {
	if len(msg) < 6 {
		g.forwardedExt()
		return msg, nil // the server rejects it
	}
	kind, name := msg[5], pgwire.CString(msg[6:])
	if kind == 'S' && name == "" && g.unnamedGone {
		return g.refuseExt(pgerr.InvalidSQLStatementName, "unnamed prepared statement does not exist")
	}
	if g.failed {
		_, isExit := g.exitStmts[name]
		if !(kind == 'S' && isExit || kind == 'P' && g.exitPortals[name]) {
			return g.refuseExt(pgerr.InFailedSQLTransaction, abortedMessage)
		}
	}
	g.forwardedExt()
	return msg, nil
}

// execute sees Execute messages in a failed block.
func (g *readOnlyGuard) execute(msg []byte) ([]byte, error) {
	if !g.exitPortals[pgwire.CString(msg[5:])] {
		return g.refuseExt(pgerr.InFailedSQLTransaction, abortedMessage)
	}
	g.failed, g.exitPortals = false, nil // the block ends here
	g.forwardedExecute()
	return msg, nil
}

// refuseQuery answers a refused Query or FunctionCall: a Sync stands in for
// it (refQuery), and the next message waits for its ReadyForQuery.
func (g *readOnlyGuard) refuseQuery(code, message string) ([]byte, error) {
	r := &refusal{how: refQuery, code: code, message: message}
	if !g.push(entry{kind: 'S', ref: r}) {
		return nil, errGuardEnded
	}
	g.await = r
	g.extSinceZ, g.extSinceSync = 0, 0
	return syncMsg, nil
}

// refuseExt answers a refused extended-protocol message: the error is placed
// by a Sync at the start of a batch (refBatch) or by the marker inside one
// (refMarker, answered as the next extended message would be), and the rest
// of the batch is dropped up to the client's Sync.
func (g *readOnlyGuard) refuseExt(code, message string) ([]byte, error) {
	g.discard, g.discardRef = true, &refusal{how: refSync}
	if g.extSinceZ == 0 {
		r := &refusal{how: refBatch, code: code, message: message}
		if !g.push(entry{kind: 'S', ref: r}) {
			return nil, errGuardEnded
		}
		g.extSinceSync = 0
		return syncMsg, nil
	}
	r := &refusal{how: refMarker, code: code, message: message}
	if !g.push(entry{kind: 'H', ext: g.extSinceZ + 1, ref: r}) {
		return nil, errGuardEnded
	}
	return markerMsg, nil
}

// push appends e to the list (merged into the last entry when both are
// plain), waiting while the list is full. It returns false if the session
// closed meanwhile.
func (g *readOnlyGuard) push(e entry) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	e.n = 1
	if n := len(g.q); n > 0 && mergeable(&g.q[n-1], &e) {
		g.q[n-1].n++
		return true
	}
	if !g.waitLocked(func() bool { return len(g.q) < maxEntries }) {
		return false
	}
	g.q = append(g.q, e)
	return true
}

func mergeable(a, b *entry) bool {
	return a.ref == nil && b.ref == nil && !a.maybe && !b.maybe && a.kind == b.kind &&
		(a.kind == 'S' || a.kind == 'Q') && a.forceE == b.forceE
}

// waitLocked waits, with mu held around each test of cond, until cond holds
// or the session closes (false).
func (g *readOnlyGuard) waitLocked(cond func() bool) bool {
	for !cond() {
		g.waiting = true
		g.mu.Unlock()
		select {
		case <-g.wake:
		case <-g.gone:
			g.mu.Lock()
			return false
		}
		g.mu.Lock()
	}
	return true
}

// ---- server → client ----

func (g *readOnlyGuard) serverMode(typ byte) msgMode {
	switch typ {
	case 'S', 'Z': // ParameterStatus, ReadyForQuery
		return modeHold
	case 'E':
		// Only noted (the ordering rule): what the error means for the
		// entries (a Query, a marker, the guard's Parse the server skipped)
		// is decided at the ReadyForQuery, when the list surely holds them.
		if !g.errInSeg {
			g.errInSeg, g.errAt = true, g.terms
		}
	case '1', '2', '3', 'n', 'T', 'C', 'I', 's': // what completes an extended message's answer
		g.terms++
		g.mu.Lock()
		h := g.headLocked()
		hold := h != nil && (h.kind == 'H' || h.kind == 'W') && h.ext == g.terms
		g.mu.Unlock()
		if hold {
			return modeHold
		}
	}
	return modePass
}

func (g *readOnlyGuard) decideServer(typ byte, msg []byte) ([]byte, error) {
	switch typ {
	case 'S':
		if k, v, ok := pgwire.ParseParameterStatus(msg[5:]); ok {
			if g.s.readOnly && k == "default_transaction_read_only" && v != "on" {
				err := pgerr.New(pgerr.ReadOnlySQLTransaction, "pgproxy: terminating read-only session: default_transaction_read_only was turned off")
				g.s.sendError(err)
				return nil, &relayEnd{reason: "read_only_violation", err: err}
			}
		}
		return msg, nil
	case 'Z':
		return g.readyForQuery(msg), nil
	}
	// the marker's CloseComplete, or the guard's ParseComplete (swallowed)
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.headLocked()
	if h == nil || h.kind != 'H' && h.kind != 'W' || h.ext != g.terms {
		return msg, nil
	}
	out := msg
	switch h.kind {
	case 'H': // the marker's CloseComplete: the refused message's place
		out = errorResponse(h.ref.code, h.ref.message)
		h.ref.done = true
	case 'W':
		out = nil
	}
	g.popLocked()
	g.signalLocked()
	return out, nil
}

// readyForQuery pairs a ReadyForQuery with the entry it answers and returns
// what the client gets instead.
//
// What the server skipped after an error in a batch is settled here, never
// when its ErrorResponse arrives (the ordering rule, readOnlyGuard): the
// batch's messages before a refusal or a Query reach the server before the
// client→server direction has decided that one and listed its entry, so
// their error may come while the list does not hold it yet. This
// ReadyForQuery answers a message sent after every entry it settles was
// listed. An entry placed by a completed response ('H', 'W') and still
// listed was skipped: its answer would have come first. Of the responses
// since the last ReadyForQuery, the first `ext` of a 'Q' entry (maybe)
// answer the batch before the Query: an error among them (errAt < ext) made
// the server skip the Query, and every later one up to the Sync.
func (g *readOnlyGuard) readyForQuery(msg []byte) []byte {
	if len(msg) != 6 {
		return msg
	}
	st := msg[5]
	errInSeg, errAt := g.errInSeg, g.errAt
	g.terms, g.errInSeg = 0, false
	g.mu.Lock()
	defer g.mu.Unlock()
	defer g.signalLocked()
	// Drop what the server skipped after an error in the batch, so that no
	// ReadyForQuery answers it: the guard's Parse ('W') and marker ('H')
	// not answered by now (a marker skipped is a refusal PostgreSQL would
	// have skipped: the client gets the server's error alone), and the
	// batch's Queries from the first one its error came before.
	paired, skipping := false, false
	for len(g.q) > 0 && !paired {
		h := &g.q[0]
		switch {
		case h.kind == 'W':
		case h.kind == 'H':
			h.ref.done = true
		case h.kind == 'Q' && h.maybe && (skipping || errInSeg && errAt < h.ext):
			skipping = true // the server skips on to the Sync
		default:
			paired = true
			continue
		}
		g.popLocked()
	}
	if !paired {
		return msg // not one the guard counted: forwarded as it is
	}
	e := g.q[0]
	g.popLocked()
	if e.ref == nil {
		if e.forceE && st == 'T' {
			return readyForQueryMsg('E')
		}
		return msg
	}
	r := e.ref
	r.status, r.done = st, true
	code, message := r.code, r.message
	if st == 'E' { // the server's own block failed: PostgreSQL says that first
		code, message = pgerr.InFailedSQLTransaction, abortedMessage
	}
	merged := st
	if st == 'T' {
		merged = 'E'
	}
	switch r.how {
	case refQuery:
		if errInSeg {
			r.skipped = true
			return nil
		}
		return append(errorResponse(code, message), readyForQueryMsg(merged)...)
	case refBatch:
		if errInSeg {
			return nil
		}
		return errorResponse(code, message)
	}
	return readyForQueryMsg(merged) // refSync
}

// headLocked is the first entry the server has yet to answer.
func (g *readOnlyGuard) headLocked() *entry {
	if len(g.q) == 0 {
		return nil
	}
	return &g.q[0]
}

// popLocked removes one of what the first entry stands for.
func (g *readOnlyGuard) popLocked() {
	if g.q[0].n > 1 {
		g.q[0].n--
		return
	}
	g.q = append(g.q[:0], g.q[1:]...)
}

func (g *readOnlyGuard) signalLocked() {
	if g.waiting {
		g.waiting = false
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
}

func errorResponse(code, message string) []byte {
	return pgerr.Encode(nil, "ERROR", code, message)
}

func readyForQueryMsg(status byte) []byte { return []byte{'Z', 0, 0, 0, 5, status} }
