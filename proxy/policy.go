package proxy

import (
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
)

// This file holds what the relay does with the few messages it looks at:
// ReadyForQuery status, the read-only guard of fallback sessions, and the
// lineage hooks. Everything else passes through as bytes.

// LineageSink receives tagged statement executions. Implementations must be
// safe for concurrent use and must never block.
type LineageSink interface {
	// Tagged reports cheaply whether sql may carry a lineage tag. It runs on
	// the relay path for every Query and Parse: no allocation, no parsing.
	Tagged(sql []byte) bool
	// Begin records that a statement execution was sent to the server and
	// returns its run, or nil when the statement turns out not to be tagged.
	// sessionJob is the session-wide tag (pgproxy.job), possibly empty.
	Begin(info LineageSession, sql string) LineageRun
}

// LineageRun is one execution of a tagged statement.
type LineageRun interface {
	Complete()
	Fail(sqlstate, message string)
}

// LineageSession is what lineage knows of a session.
type LineageSession struct {
	Database, User, ApplicationName, ServerVersion, Job string
}

// lineageState tracks tagged statements of one session. c2s fields are used
// by the client→server pump only; the batch queue is shared with the
// server→client pump under mu.
type lineageState struct {
	sink LineageSink
	info LineageSession

	// c2s only
	statements map[string]string // tagged prepared statement name → SQL
	portals    map[string]string // portal → tagged SQL

	zSent   uint64 // Query/Sync/FunctionCall messages sent (c2s only)
	pending atomic.Int32
	mu      sync.Mutex
	batches []*lineageBatch
	zRecv   uint64 // ReadyForQuery received (s2c only)
}

// lineageBatch is the runs that end with the ReadyForQuery number seq.
type lineageBatch struct {
	seq     uint64
	runs    []LineageRun
	failed  bool
	code    string
	message string
}

func (l *lineageState) attach(seq uint64, run LineageRun) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.batches); n > 0 && l.batches[n-1].seq == seq {
		l.batches[n-1].runs = append(l.batches[n-1].runs, run)
		return
	}
	l.batches = append(l.batches, &lineageBatch{seq: seq, runs: []LineageRun{run}})
	l.pending.Add(1)
}

// policy decides, from a message's header, how the relay treats it.
func (s *session) policy(toServer bool, typ byte, n int) msgMode {
	if toServer {
		if typ == 'X' {
			s.clientTerminated.Store(true)
		}
		switch typ {
		case 'Q', 'S', 'F':
			if s.lin != nil {
				s.lin.zSent++
			}
		}
		switch typ {
		case 'Q', 'P':
			if s.readOnly && s.cfg.ReadOnlyCheck != nil {
				return modeHold
			}
			if s.lin != nil {
				return modeInspect
			}
		case 'F':
			if s.readOnly {
				return modeHold
			}
		case 'B':
			if s.readOnly && len(s.poisoned) > 0 {
				return modeHold
			}
			if s.lin != nil && len(s.lin.statements) > 0 {
				return modeInspect
			}
		case 'E', 'C':
			if s.lin != nil && (len(s.lin.statements) > 0 || len(s.lin.portals) > 0) {
				return modeInspect
			}
		}
		return modePass
	}
	switch typ {
	case 'Z':
		return modeInspect
	case 'S':
		if s.readOnly {
			return modeHold
		}
		return modeInspect
	case 'E':
		if s.lin != nil && s.lin.pending.Load() > 0 {
			return modeInspect
		}
	}
	return modePass
}

// inspect sees a complete message that was (or is being) forwarded.
func (s *session) inspect(toServer bool, typ byte, body []byte, truncated bool) error {
	if !toServer {
		switch typ {
		case 'Z':
			if len(body) == 1 {
				s.txStatus.Store(uint32(body[0]))
			}
			if s.lin != nil {
				s.lin.zRecv++
				if s.lin.pending.Load() > 0 {
					s.finishBatches()
				}
			}
		case 'S':
			if k, v, ok := pgwire.ParseParameterStatus(body); ok {
				s.mu.Lock()
				if s.params != nil {
					s.params[k] = v
				}
				s.mu.Unlock()
			}
		case 'E':
			s.failBatch(body)
		}
		return nil
	}
	if s.lin == nil {
		return nil
	}
	switch typ {
	case 'Q':
		if truncated || !s.lin.sink.Tagged(body) && s.lin.info.Job == "" {
			return nil
		}
		if run := s.lin.sink.Begin(s.lin.info, pgwire.CString(body)); run != nil {
			s.lin.attach(s.lin.zSent, run)
		}
	case 'P':
		name, rest := pgwire.CutCString(body)
		if s.lin.statements == nil {
			s.lin.statements = make(map[string]string)
		}
		delete(s.lin.statements, name)
		sql, _ := pgwire.CutCString(rest)
		if !truncated && (s.lin.sink.Tagged(rest) || s.lin.info.Job != "") {
			s.lin.statements[name] = sql
		}
	case 'B':
		portal, rest := pgwire.CutCString(body)
		stmt, _ := pgwire.CutCString(rest)
		if s.lin.portals == nil {
			s.lin.portals = make(map[string]string)
		}
		if sql, ok := s.lin.statements[stmt]; ok {
			s.lin.portals[portal] = sql
		} else {
			delete(s.lin.portals, portal)
		}
	case 'E':
		portal, _ := pgwire.CutCString(body)
		if sql, ok := s.lin.portals[portal]; ok {
			if run := s.lin.sink.Begin(s.lin.info, sql); run != nil {
				s.lin.attach(s.lin.zSent+1, run) // ends with the next Sync's ReadyForQuery
			}
		}
	case 'C':
		if len(body) > 1 {
			name, _ := pgwire.CutCString(body[1:])
			if body[0] == 'S' {
				delete(s.lin.statements, name)
			} else {
				delete(s.lin.portals, name)
			}
		}
	}
	return nil
}

func (s *session) failBatch(body []byte) {
	if s.lin == nil || s.lin.pending.Load() == 0 {
		return
	}
	code, msg := pgwire.ErrorFields(body)
	l := s.lin
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.batches {
		if b.seq == l.zRecv+1 && !b.failed {
			b.failed, b.code, b.message = true, code, msg
		}
	}
}

func (s *session) finishBatches() {
	l := s.lin
	l.mu.Lock()
	var done []*lineageBatch
	for len(l.batches) > 0 && l.batches[0].seq <= l.zRecv {
		done = append(done, l.batches[0])
		l.batches = l.batches[1:]
		l.pending.Add(-1)
	}
	l.mu.Unlock()
	for _, b := range done {
		for _, r := range b.runs {
			if b.failed {
				r.Fail(b.code, b.message)
			} else {
				r.Complete()
			}
		}
	}
}

// failPending fails every run still waiting when the session ends.
func (s *session) failPending(reason string) {
	if s.lin == nil {
		return
	}
	s.lin.mu.Lock()
	batches := s.lin.batches
	s.lin.batches = nil
	s.lin.mu.Unlock()
	for _, b := range batches {
		for _, r := range b.runs {
			r.Fail(pgerr.ConnectionFailure, "session ended before the statement completed: "+reason)
		}
	}
}

// decide returns what to forward for a held message (the whole message,
// header included, in msg).
func (s *session) decide(toServer bool, typ byte, msg []byte, tooBig bool) ([]byte, error) {
	if !toServer { // ParameterStatus on an enforced read-only session
		if k, v, ok := pgwire.ParseParameterStatus(msg[5:]); ok {
			s.mu.Lock()
			if s.params != nil {
				s.params[k] = v
			}
			s.mu.Unlock()
			if k == "default_transaction_read_only" && v != "on" {
				err := pgerr.New(pgerr.ReadOnlySQLTransaction, "pgproxy: terminating read-only session: default_transaction_read_only was turned off")
				s.sendError(err)
				return nil, &relayEnd{reason: "read_only_violation", err: err}
			}
		}
		return msg, nil
	}
	switch typ {
	case 'F':
		return s.refuse(pgerr.ReadOnlySQLTransaction, "pgproxy: function calls are not allowed on a read-only session", false, ""), nil
	case 'B':
		portal, rest := pgwire.CutCString(msg[5:])
		stmt, _ := pgwire.CutCString(rest)
		_ = portal
		if s.poisoned[stmt] {
			return nullBindParams(msg), nil
		}
		return msg, nil
	}
	// Query or Parse
	if tooBig {
		name, _ := pgwire.CutCString(msg[5:]) // a Parse's statement name comes first
		return s.refuse(pgerr.ProgramLimitExceeded, "pgproxy: statement too large to check on a read-only session", typ == 'P', name), nil
	}
	var name, sql string
	if typ == 'P' {
		var rest []byte
		name, rest = pgwire.CutCString(msg[5:])
		sql, _ = pgwire.CutCString(rest)
	} else {
		sql = pgwire.CString(msg[5:])
	}
	if !pgwire.Terminated(msg[5:], typ) {
		// PostgreSQL would reject it too ("invalid string in message"); what
		// it would have run is not known, so it is not forwarded.
		return s.refuse(pgerr.ProtocolViolation, "pgproxy: malformed message on a read-only session: unterminated string", typ == 'P', name), nil
	}
	reason, violated, err := s.cfg.ReadOnlyCheck(sql)
	if err != nil {
		return s.refuse(pgerr.SyntaxError, "pgproxy: could not parse the statement to check it is read-only: "+err.Error(), typ == 'P', name), nil
	}
	if violated {
		s.log.Warn("read-only session: statement refused", zap.String("reason", reason))
		return s.refuse(pgerr.ReadOnlySQLTransaction, "pgproxy: refused on a read-only session: "+reason, typ == 'P', name), nil
	}
	if typ == 'P' {
		delete(s.poisoned, name)
	}
	if typ == 'Q' && s.lin != nil {
		_ = s.inspect(true, typ, msg[5:], false)
	}
	if typ == 'P' && s.lin != nil {
		_ = s.inspect(true, typ, msg[5:], false)
	}
	return msg, nil
}

// refuse builds a replacement that makes the server itself answer with the
// given SQLSTATE at the right place in the message stream: a DO block that
// raises. For a Parse, the statement name is kept and marked poisoned, so
// later Binds send NULLs for its parameters and the Execute raises.
func (s *session) refuse(code, message string, parse bool, name string) []byte {
	message = strings.NewReplacer("'", "''", "$", "").Replace(message)
	sql := "DO $pgproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '" + code + "', MESSAGE = '" + message + "'; END$pgproxy$"
	if !parse {
		return pgwire.AppendMessage(nil, 'Q', append([]byte(sql), 0))
	}
	if s.poisoned == nil {
		s.poisoned = make(map[string]bool)
	}
	s.poisoned[name] = true
	body := append([]byte(name), 0)
	body = append(body, sql...)
	body = append(body, 0, 0, 0) // no parameter types
	return pgwire.AppendMessage(nil, 'P', body)
}

// nullBindParams rewrites a Bind to send no parameter values for a poisoned
// statement (which has none), keeping portal, statement and result formats.
func nullBindParams(msg []byte) []byte {
	body := msg[5:]
	portal, rest := pgwire.CutCString(body)
	stmt, rest := pgwire.CutCString(rest)
	if len(rest) < 2 {
		return msg
	}
	nfmt := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) < 2*nfmt+2 {
		return msg
	}
	rest = rest[2*nfmt:]
	nparams := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	for i := 0; i < nparams; i++ {
		if len(rest) < 4 {
			return msg
		}
		l := int32(binary.BigEndian.Uint32(rest))
		rest = rest[4:]
		if l > 0 {
			if int(l) > len(rest) {
				return msg
			}
			rest = rest[l:]
		}
	}
	nb := append([]byte(portal), 0)
	nb = append(nb, stmt...)
	nb = append(nb, 0, 0, 0, 0, 0) // no param formats, no params
	nb = append(nb, rest...)       // result format codes
	return pgwire.AppendMessage(nil, 'B', nb)
}
