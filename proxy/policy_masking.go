package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
	"github.com/ofitec/pgproxy/masking"
)

// maskPolicy is the policy of a masked session (masking.rules): its
// statements are checked by the session's guard (policy_readonly.go, which
// asks check and places the 42501 where PostgreSQL would), and its results
// are rewritten here: each RowDescription's columns are resolved to
// schema.table.column through the backend's catalog, and the masked
// columns of every DataRow that follows are rewritten in place (a new
// message length; at most maxHeld bytes per row).
//
// Every DataRow must follow a description the policy has seen. A simple
// Query's results start with their RowDescription; an extended-protocol
// Execute's rows need not (pgx describes a statement once and executes it
// many times, binding result formats each time), so before every Execute
// the policy sends a Describe of the portal, whose RowDescription (or
// NoData) it reads and swallows. A DataRow that arrives anyway with no
// description known ends the session: nothing unresolved reaches the
// client.
//
// One Execute gets no Describe of the policy's own: one of the unnamed
// portal that comes right after the client's own Describe of the unnamed
// portal (libpq's PQexecPrepared, PQexecParams: Bind, Describe, Execute,
// Sync), with nothing between them. The server then receives that
// Describe and the Execute back to back, as it would the policy's (a
// Describe of a portal changes nothing), so the description the policy
// reads from the answer to the client's is the one it would have read
// from its own. "Nothing between" is strict: the Describe must be the last
// message the policy saw forwarded (inspect, including what other
// policies forward in its stead), and mode, which sees every message the
// client sends first, forgets it at any other message (a Flush too); a
// RELOAD put in force at the Execute (refresh) forgets it too, so the
// rows are resolved under the new rules. The Execute's length (9: an
// empty portal name and the row limit) tells it is of the unnamed portal
// when mode must decide (the read-only guard counts the answers the
// server owes from there: forwardedExecute).
//
// To tell its own Describe's answer from the client's, the client→server
// direction queues what the server will answer (link below), in the order
// the server receives it (what the guard forwards: the policy sees the
// messages the chain finally forwards), and the server→client direction
// pops the queue as the answers come, before any other policy changes
// them (the policy is the first of the chain).
//
// Masked sessions relay on a goroutine per direction (catalog lookups
// block). What repeats is not redone: check's answers are kept per
// session by statement shape (masking.CheckCache), each RowDescription's
// resolution by its bytes (masking.ResolveCache), the hash method's state
// per session and its MACs per configuration (masking.Hasher); masked
// values are counted per result set.
//
// # RELOAD
//
// The rules in force (cur) are those of the server's configuration the
// session last matched against (seen). When a RELOAD installs another, the
// client→server direction matches the session again at its next
// transaction boundary: the first message of a statement the client sends
// while the server's last ReadyForQuery said idle and nothing the server
// owes is outstanding (so no result set, portal or transaction is under
// way; every result set is rewritten under one set of rules, and a
// transaction sees one set). The new rules (none: the session is no longer
// masked, but keeps its policy and goroutines) apply from that message on:
// its check, and every RowDescription after it. The statements the session
// prepared before are checked again under them (their SQL is kept, at most
// maxTrackedStmts statements of maxTrackedBytes in all); a Bind of one the
// new rules refuse gets the refusal (42501), a new Parse of the name
// replaces it. When more were prepared than could be kept, a Bind of any
// statement not prepared since the change is refused too (the client
// closes and prepares it again).
// A session that was not masked and that a RELOAD's rules match is ended
// by the reload itself (Server.SetConfig).
type maskPolicy struct {
	s     *session
	stats *Metrics
	cur   atomic.Pointer[maskRules] // the rules in force: read by both directions

	mu   sync.Mutex
	q    []byte // what the server will answer, oldest first (see pending)
	idle bool   // the server's last ReadyForQuery said idle ('I')

	// client→server only
	seen      *Config               // the configuration cur was matched from
	stmts     map[string]trackedSQL // the client's prepared statements, as forwarded
	stmtBytes int
	overflow  bool                   // a statement was not kept (too many, too large in all)
	stale     bool                   // rules changed after an overflow: a statement not kept is refused
	refused   map[string]stmtRefusal // statements the rules in force refuse
	checks    masking.CheckCache     // check's answers (statements run again)
	// described: the last message forwarded was a Describe of the unnamed
	// portal (set by inspect, forgotten by mode at the next message);
	// ownDescribe: the Execute under way gets the policy's own Describe.
	described   bool
	ownDescribe bool

	// server→client only
	cols     *masking.Columns
	counters []prometheus.Counter
	counts   []float64 // masked values per column not yet added to counters
	rows     int       // DataRows since counts were added
	desc     bool      // a description holds for the DataRows that come
	buf      []byte
	hasher   masking.Hasher // the hash method's state, for every result set
	resolved masking.ResolveCache
	// counterOf: pgproxy_masked_values_total by column; countsBuf and
	// countersBuf: the storage counts and counters reuse.
	counterOf   map[string]prometheus.Counter
	countsBuf   []float64
	countersBuf []prometheus.Counter
}

var _ policy = (*maskPolicy)(nil)

// maskRules are the masking rules a session is under: nil set, not masked.
type maskRules struct {
	set *masking.Set
	cat masking.Catalog
}

// stmtRefusal is what a Bind of a refused statement gets.
type stmtRefusal struct{ message, reason string }

// trackedSQL is a prepared statement's text (tooBig: it was not kept whole).
type trackedSQL struct {
	sql    string
	tooBig bool
}

const (
	// maxTrackedStmts and maxTrackedBytes bound the prepared statements a
	// masked session keeps to check again after a RELOAD.
	maxTrackedStmts = 4096
	maxTrackedBytes = 4 << 20
	// maskLookupTimeout bounds one catalog lookup.
	maskLookupTimeout = 5 * time.Second
	// maxMaskCounters bounds a session's map of masked-values counters.
	maxMaskCounters = 256
	// maxMaskQueue bounds the queue of answers the server owes.
	maxMaskQueue     = 1 << 16
	injectedDescribe = 'i' // in the queue: the policy's own Describe
	// executeUnnamedLen is the length (header's) of an Execute of the
	// unnamed portal: 4, the name's terminator, the row limit.
	executeUnnamedLen = 4 + 1 + 4
)

func newMaskPolicy(s *session, set *masking.Set, cat masking.Catalog, seen *Config) *maskPolicy {
	m := &maskPolicy{s: s, stats: s.srv.metrics, idle: true, seen: seen, ownDescribe: true}
	m.cur.Store(&maskRules{set: set, cat: cat})
	return m
}

// rules are the rules in force (set nil: none).
func (m *maskPolicy) rules() *maskRules { return m.cur.Load() }

// user is the session's user, for messages.
func (m *maskPolicy) user() string {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	return m.s.user
}

func (m *maskPolicy) mode(toServer bool, typ byte, n int) msgMode {
	if toServer {
		switch typ {
		case 'Q', 'P', 'B', 'D', 'E', 'F':
			m.refresh()
		}
		// An Execute of the unnamed portal (length 9) right after the
		// client's Describe of it needs no Describe of the policy's own;
		// any other message forgets the Describe (see maskPolicy).
		m.ownDescribe = !(typ == 'E' && m.described && n == executeUnnamedLen)
		m.described = false
		switch typ {
		case 'E':
			return modeHold
		case 'P', 'B', 'C', 'D', 'S', 'Q', 'F':
			return modeInspect
		}
		return modePass
	}
	switch typ {
	case 'T', 'n', 'Z', 'E', '1', '2', '3', 'C', 's', 'I':
		return modeHold
	case 'D':
		if !m.desc || m.cols != nil {
			return modeHold
		}
	}
	return modePass
}

// inspect sees what is forwarded to the server: each message the server
// answers is queued.
func (m *maskPolicy) inspect(toServer bool, typ byte, body []byte, truncated bool) error {
	if toServer {
		// The last message forwarded: a whole Describe of the unnamed portal?
		m.described = typ == 'D' && !truncated && len(body) == 2 && body[0] == 'P' && body[1] == 0
		switch typ {
		case 'P':
			m.track(body, truncated)
		case 'C':
			if len(body) >= 2 && body[0] == 'S' {
				m.untrack(pgwire.CString(body[1:]))
			}
		}
		return m.push(typ)
	}
	return nil
}

// track keeps the SQL of a Parse forwarded (the statement a RELOAD's
// rules check again).
func (m *maskPolicy) track(body []byte, truncated bool) {
	name, rest := pgwire.CutCString(body)
	sql, _ := pgwire.CutCString(rest)
	m.untrack(name)
	if m.overflow {
		return
	}
	t := trackedSQL{sql: sql, tooBig: truncated}
	if truncated {
		t.sql = ""
	}
	if len(m.stmts) >= maxTrackedStmts || m.stmtBytes+len(name)+len(t.sql) > maxTrackedBytes {
		m.overflow = true
		return
	}
	if m.stmts == nil {
		m.stmts = make(map[string]trackedSQL)
	}
	m.stmts[name] = t
	m.stmtBytes += len(name) + len(t.sql)
}

func (m *maskPolicy) untrack(name string) {
	if t, ok := m.stmts[name]; ok {
		m.stmtBytes -= len(name) + len(t.sql)
		delete(m.stmts, name)
	}
	delete(m.refused, name)
}

// refusedStmt returns the refusal of a Bind of statement name under the
// rules in force, if they refuse it.
func (m *maskPolicy) refusedStmt(name string) (stmtRefusal, bool) {
	if r, ok := m.refused[name]; ok {
		return r, true
	}
	if _, kept := m.stmts[name]; m.stale && !kept {
		return stmtRefusal{"pgproxy: masking.rules changed: prepared statement \"" + name + "\" was prepared before and cannot be checked again; close it and prepare it again", "reload"}, true
	}
	return stmtRefusal{}, false
}

// anyRefused says whether a Bind may be refused (the guard holds Binds then).
func (m *maskPolicy) anyRefused() bool { return m.stale || len(m.refused) > 0 }

// refresh puts a RELOAD's masking rules in force at a transaction
// boundary (see maskPolicy): the session is matched again, and its
// prepared statements checked again.
func (m *maskPolicy) refresh() {
	cfg := m.s.srv.cfg.Load()
	if cfg == m.seen {
		return
	}
	m.mu.Lock()
	boundary := m.idle && len(m.q) == 0
	m.mu.Unlock()
	if !boundary {
		return
	}
	m.seen = cfg
	m.described, m.ownDescribe = false, true // the next Execute's rows are resolved under the new rules
	var next maskRules
	if cfg.Masking != nil {
		m.s.mu.Lock()
		user, database, app, backend := m.s.user, m.s.database, m.s.applicationName, m.s.backend
		m.s.mu.Unlock()
		next.set, next.cat = cfg.Masking(user, database, app, backend)
	}
	if next.set == nil {
		next.cat = nil
	}
	m.cur.Store(&next)
	rule := -1
	if next.set != nil {
		rule = next.set.Rule
	}
	m.s.logger().Info("session masking changed by reload", zap.String("user", m.s.user), zap.Int("rule", rule))
	m.refused = nil
	if next.set == nil {
		m.stale = false
		return
	}
	if m.overflow {
		// Not every statement was kept: those kept are checked, any other
		// is refused until prepared again, and keeping starts over.
		m.stale, m.overflow = true, false
	}
	for name, t := range m.stmts {
		msg, reason := "", "reload"
		if t.tooBig {
			msg = "pgproxy: masking.rules changed: prepared statement \"" + name + "\" is too large to check again; close it and prepare it again"
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), maskLookupTimeout)
			err := next.set.Check(ctx, next.cat, t.sql)
			cancel()
			var r *masking.Refusal
			switch {
			case err == nil, errors.Is(err, masking.ErrParse):
				continue
			case errors.As(err, &r):
				msg, reason = r.Message, r.Reason
			default:
				msg = "pgproxy: masking: could not check the statement: " + err.Error()
			}
		}
		if m.refused == nil {
			m.refused = make(map[string]stmtRefusal)
		}
		m.refused[name] = stmtRefusal{msg, reason}
	}
}

func (m *maskPolicy) push(kinds ...byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.q)+len(kinds) > maxMaskQueue {
		err := pgerr.New(pgerr.ProgramLimitExceeded, "pgproxy: too many messages unanswered on a masked session")
		m.s.sendError(err)
		return &relayEnd{reason: "masking_error", err: err}
	}
	m.q = append(m.q, kinds...)
	return nil
}

func (m *maskPolicy) decide(toServer bool, typ byte, msg []byte, tooBig bool) ([]byte, error) {
	if toServer {
		return m.execute(msg)
	}
	if len(msg) == 0 { // swallowed by a policy before this one (pooled: the proxy's own ParseComplete)
		return msg, nil
	}
	switch typ {
	case 'T', 'n':
		return m.describe(typ, msg, tooBig)
	case 'D':
		return m.row(msg, tooBig)
	case '1':
		m.popIf('P')
	case '2':
		m.popIf('B')
	case '3':
		m.popIf('C')
	case 'C', 's', 'I':
		m.popIf('E')
		m.endResult()
	case 'E':
		m.endResult()
		m.mu.Lock()
		if len(m.q) > 0 && m.q[0] != 'Q' && m.q[0] != 'F' {
			// An extended-protocol message failed: the server skips to the Sync.
			i := 0
			for i < len(m.q) && m.q[i] != 'S' {
				i++
			}
			m.q = m.q[i:]
		}
		m.mu.Unlock()
	case 'Z':
		m.endResult()
		m.mu.Lock()
		m.idle = len(msg) >= 6 && msg[5] == 'I'
		i := 0
		for i < len(m.q) && m.q[i] != 'S' && m.q[i] != 'Q' && m.q[i] != 'F' {
			i++
		}
		m.q = m.q[min(i+1, len(m.q)):]
		m.mu.Unlock()
	}
	return msg, nil
}

// execute sends a Describe of the portal before each Execute, but one
// right after the client's own Describe of the unnamed portal (mode).
func (m *maskPolicy) execute(msg []byte) ([]byte, error) {
	if len(msg) < 6 || msg[0] != 'E' {
		return msg, nil
	}
	if !m.ownDescribe {
		if len(msg) != 1+executeUnnamedLen || msg[5] != 0 {
			// mode took its length for an Execute of the unnamed portal.
			return nil, m.fail(pgerr.ProtocolViolation, "pgproxy: masking: malformed Execute", nil)
		}
		if err := m.push('E'); err != nil {
			return nil, err
		}
		return msg, nil
	}
	portal, _ := pgwire.CutCString(msg[5:])
	out := pgwire.AppendMessage(nil, 'D', append(append([]byte{'P'}, portal...), 0))
	if err := m.push(injectedDescribe, 'E'); err != nil {
		return nil, err
	}
	return append(out, msg...), nil
}

func (m *maskPolicy) popIf(kind byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.q) > 0 && m.q[0] == kind {
		m.q = m.q[1:]
		return true
	}
	return false
}

// describe resolves a RowDescription (NoData: no rows) and swallows the
// answer to the policy's own Describe.
func (m *maskPolicy) describe(typ byte, msg []byte, tooBig bool) ([]byte, error) {
	m.mu.Lock()
	own := false
	if len(m.q) > 0 {
		switch m.q[0] {
		case injectedDescribe:
			own = true
			m.q = m.q[1:]
		case 'D':
			m.q = m.q[1:]
		}
	}
	m.mu.Unlock()
	m.endResult()
	m.desc = true
	if typ == 'T' {
		if tooBig {
			return nil, m.fail(pgerr.ProgramLimitExceeded, "pgproxy: row description too large to check on a masked session", nil)
		}
		var cols *masking.Columns
		if r := m.rules(); r.set != nil {
			var kept bool
			if cols, kept = m.resolved.Lookup(r.set, r.cat, msg[5:]); !kept {
				fields, err := parseRowDescription(msg[5:])
				if err != nil {
					return nil, m.fail(pgerr.ProtocolViolation, "pgproxy: malformed RowDescription", err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), maskLookupTimeout)
				cols, err = m.resolved.Resolve(ctx, r.set, r.cat, msg[5:], fields)
				cancel()
				if err != nil {
					return nil, m.fail(pgerr.InsufficientPrivilege, "pgproxy: masking: could not resolve the result's columns", err)
				}
			}
		}
		if cols.Any() {
			m.cols = cols
			cols.UseHasher(&m.hasher)
			if m.stats != nil {
				masks := cols.Masks()
				m.counts = m.countsBuf[:0]
				m.counters = m.countersBuf[:0]
				for _, c := range masks {
					var ctr prometheus.Counter
					if c.Method != masking.None {
						if ctr = m.counterOf[c.Name]; ctr == nil {
							ctr = m.stats.maskedValues.WithLabelValues(c.Name)
							if m.counterOf == nil || len(m.counterOf) >= maxMaskCounters {
								m.counterOf = make(map[string]prometheus.Counter)
							}
							m.counterOf[c.Name] = ctr
						}
					}
					m.counts = append(m.counts, 0)
					m.counters = append(m.counters, ctr)
				}
				m.countsBuf, m.countersBuf = m.counts, m.counters
			}
		}
	}
	if own {
		return nil, nil
	}
	return msg, nil
}

func (m *maskPolicy) row(msg []byte, tooBig bool) ([]byte, error) {
	if !m.desc {
		return nil, m.fail(pgerr.ProtocolViolation, "pgproxy: masking: a DataRow came with no RowDescription", nil)
	}
	if m.cols == nil {
		return msg, nil
	}
	if tooBig {
		return nil, m.fail(pgerr.ProgramLimitExceeded, fmt.Sprintf("pgproxy: masking: a row larger than %d bytes cannot be masked", maxHeld), nil)
	}
	out, err := m.cols.RewriteRow(m.buf[:0], msg, m.counts)
	if err != nil {
		return nil, m.fail(pgerr.ProtocolViolation, "pgproxy: masking: malformed DataRow", err)
	}
	if m.rows++; m.rows >= 1024 { // a long result is counted as it goes
		m.flushCounts()
	}
	if cap(out) <= maxInspect {
		m.buf = out // reused for the next row: the pump copies what decide returns
	} else {
		m.buf = nil
	}
	return out, nil
}

// endResult ends the result set under way: its masked values are counted
// (once per result set, not per value) and its description forgotten.
func (m *maskPolicy) endResult() {
	m.flushCounts()
	m.desc, m.cols, m.counters, m.counts = false, nil, nil, nil
}

func (m *maskPolicy) flushCounts() {
	for i, n := range m.counts {
		if n > 0 && m.counters[i] != nil {
			m.counters[i].Add(n)
			m.counts[i] = 0
		}
	}
	m.rows = 0
}

// fail ends the session: the client gets a FATAL rather than a result the
// proxy could not mask.
func (m *maskPolicy) fail(code, message string, cause error) error {
	m.s.logger().Warn("masked session ended", zap.String("reason", message), zap.Error(cause))
	e := &pgerr.Error{Code: code, Severity: "FATAL", Message: message}
	m.s.sendError(e)
	return &relayEnd{reason: "masking_error", err: errors.Join(errors.New(message), cause)}
}

func parseRowDescription(b []byte) ([]masking.Field, error) {
	if len(b) < 2 {
		return nil, errors.New("short")
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	fields := make([]masking.Field, 0, n)
	for i := 0; i < n; i++ {
		_, rest := pgwire.CutCString(b)
		if len(rest) < 18 || len(rest) == len(b) {
			return nil, errors.New("short field")
		}
		fields = append(fields, masking.Field{
			TableOID: binary.BigEndian.Uint32(rest[0:]),
			Attnum:   int16(binary.BigEndian.Uint16(rest[4:])),
			TypeOID:  binary.BigEndian.Uint32(rest[6:]),
			Format:   int16(binary.BigEndian.Uint16(rest[16:])),
		})
		b = rest[18:]
	}
	return fields, nil
}

// check is the guard's question for a masked session: may sql run?
// A refusal is logged (user, rule, reason, column: never the statement)
// and counted.
func (m *maskPolicy) check(sql string) (code, message string, refused bool, err error) {
	rules := m.rules()
	if rules.set == nil {
		return "", "", false, nil // no longer masked (RELOAD)
	}
	cerr, kept := m.checks.Lookup(rules.set, rules.cat, sql)
	if !kept {
		ctx, cancel := context.WithTimeout(context.Background(), maskLookupTimeout)
		cerr = m.checks.Check(ctx, rules.set, rules.cat, sql)
		cancel()
	}
	if cerr == nil {
		return "", "", false, nil
	}
	var r *masking.Refusal
	if !errors.As(cerr, &r) {
		if errors.Is(cerr, masking.ErrParse) {
			return "", "", false, cerr // PostgreSQL rejects it too
		}
		r = &masking.Refusal{Reason: "catalog", Message: "pgproxy: masking: could not check the statement: " + cerr.Error()}
	}
	m.refusal(rules.set.Rule, r.Reason, r.Column, r.Function)
	return pgerr.InsufficientPrivilege, r.Message, true, nil
}

// refusal logs (user, rule, reason, column, function: never the
// statement) and counts one refusal.
func (m *maskPolicy) refusal(rule int, reason, column, function string) {
	m.s.logger().Warn("masking: statement refused", zap.String("user", m.user()), zap.Int("rule", rule),
		zap.String("reason", reason), zap.String("column", column), zap.String("function", function))
	if m.stats != nil {
		m.stats.maskingRefusals.WithLabelValues(reason).Inc()
	}
}
