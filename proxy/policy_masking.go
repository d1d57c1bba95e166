package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
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
// To tell its own Describe's answer from the client's, the client→server
// direction queues what the server will answer (link below), in the order
// the server receives it (what the guard forwards: the policy sees the
// messages the chain finally forwards), and the server→client direction
// pops the queue as the answers come, before any other policy changes
// them (the policy is the first of the chain).
//
// Masked sessions relay on a goroutine per direction (catalog lookups
// block).
type maskPolicy struct {
	s     *session
	set   *masking.Set
	cat   masking.Catalog
	stats *Metrics

	mu sync.Mutex
	q  []byte // what the server will answer, oldest first (see pending)

	// server→client only
	cur      *masking.Columns
	counters []prometheus.Counter
	desc     bool // a description holds for the DataRows that come
	buf      []byte
}

var _ policy = (*maskPolicy)(nil)

const (
	// maskLookupTimeout bounds one catalog lookup.
	maskLookupTimeout = 5 * time.Second
	// maxMaskQueue bounds the queue of answers the server owes.
	maxMaskQueue     = 1 << 16
	injectedDescribe = 'i' // in the queue: the policy's own Describe
)

func newMaskPolicy(s *session, set *masking.Set, cat masking.Catalog) *maskPolicy {
	return &maskPolicy{s: s, set: set, cat: cat, stats: s.srv.metrics}
}

func (m *maskPolicy) mode(toServer bool, typ byte, n int) msgMode {
	if toServer {
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
		if !m.desc || m.cur != nil {
			return modeHold
		}
	}
	return modePass
}

// inspect sees what is forwarded to the server: each message the server
// answers is queued.
func (m *maskPolicy) inspect(toServer bool, typ byte, body []byte, _ bool) error {
	if toServer {
		return m.push(typ)
	}
	return nil
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
		m.desc, m.cur = false, nil
	case 'E':
		m.desc, m.cur = false, nil
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
		m.desc, m.cur = false, nil
		m.mu.Lock()
		i := 0
		for i < len(m.q) && m.q[i] != 'S' && m.q[i] != 'Q' && m.q[i] != 'F' {
			i++
		}
		m.q = m.q[min(i+1, len(m.q)):]
		m.mu.Unlock()
	}
	return msg, nil
}

// execute sends a Describe of the portal before each Execute.
func (m *maskPolicy) execute(msg []byte) ([]byte, error) {
	if len(msg) < 6 || msg[0] != 'E' {
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
	m.desc, m.cur, m.counters = true, nil, nil
	if typ == 'T' {
		if tooBig {
			return nil, m.fail(pgerr.ProgramLimitExceeded, "pgproxy: row description too large to check on a masked session", nil)
		}
		fields, err := parseRowDescription(msg[5:])
		if err != nil {
			return nil, m.fail(pgerr.ProtocolViolation, "pgproxy: malformed RowDescription", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), maskLookupTimeout)
		cols, err := m.set.Resolve(ctx, m.cat, fields)
		cancel()
		if err != nil {
			return nil, m.fail(pgerr.InsufficientPrivilege, "pgproxy: masking: could not resolve the result's columns", err)
		}
		if cols.Any() {
			m.cur = cols
			if m.stats != nil {
				m.counters = make([]prometheus.Counter, len(cols.Masks()))
				for i, c := range cols.Masks() {
					if c.Method != masking.None {
						m.counters[i] = m.stats.maskedValues.WithLabelValues(c.Name)
					}
				}
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
	if m.cur == nil {
		return msg, nil
	}
	if tooBig {
		return nil, m.fail(pgerr.ProgramLimitExceeded, fmt.Sprintf("pgproxy: masking: a row larger than %d bytes cannot be masked", maxHeld), nil)
	}
	out, err := m.cur.RewriteRow(m.buf[:0], msg, m.count)
	if err != nil {
		return nil, m.fail(pgerr.ProtocolViolation, "pgproxy: masking: malformed DataRow", err)
	}
	if cap(out) <= maxInspect {
		m.buf = out // reused for the next row: the pump copies what decide returns
	} else {
		m.buf = nil
	}
	return out, nil
}

func (m *maskPolicy) count(col int) {
	if m.counters != nil && m.counters[col] != nil {
		m.counters[col].Inc()
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), maskLookupTimeout)
	defer cancel()
	cerr := m.set.Check(ctx, m.cat, sql)
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
	m.s.logger().Warn("masking: statement refused", zap.String("user", m.set.User), zap.Int("rule", m.set.Rule),
		zap.String("reason", r.Reason), zap.String("column", r.Column), zap.String("function", r.Function))
	if m.stats != nil {
		m.stats.maskingRefusals.WithLabelValues(r.Reason).Inc()
	}
	return pgerr.InsufficientPrivilege, r.Message, true, nil
}
