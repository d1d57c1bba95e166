package proxy

import (
	"sync"
	"sync/atomic"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
)

// The lineage policy: tagged statements (Query, or Parse/Bind/Execute of a
// tagged prepared statement) begin a run when they are sent, and the run
// completes or fails with the ReadyForQuery that ends its batch (an
// ErrorResponse before it fails the batch). Both directions use it: the
// client→server pump counts what the server must answer (zSent), the
// server→client pump counts the answers (zRecv).

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

	zSent    uint64 // Query/Sync/FunctionCall messages sent (c2s only)
	lastSent byte   // the type of the last client message mode was asked about (c2s only)
	pending  atomic.Int32
	mu       sync.Mutex
	batches  []*lineageBatch
	zRecv    uint64 // ReadyForQuery received (s2c only)
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

var _ policy = (*lineageState)(nil)

func (l *lineageState) mode(toServer bool, typ byte, _ int) msgMode {
	if !toServer {
		switch typ {
		case 'Z':
			return modeInspect
		case 'E':
			if l.pending.Load() > 0 {
				return modeInspect
			}
		}
		return modePass
	}
	switch typ {
	case 'Q', 'S', 'F':
		l.zSent++
	}
	l.lastSent = typ
	switch typ {
	case 'Q', 'P':
		return modeInspect
	case 'B':
		if len(l.statements) > 0 {
			return modeInspect
		}
	case 'E', 'C':
		if len(l.statements) > 0 || len(l.portals) > 0 {
			return modeInspect
		}
	}
	return modePass
}

// wants is mode's answer for a client message without counting it (the
// chain asks it about the messages of a held batch, counted when each
// arrived: wanter).
func (l *lineageState) wants(toServer bool, typ byte) bool {
	if !toServer {
		return false
	}
	switch typ {
	case 'Q', 'P':
		return true
	case 'B':
		return len(l.statements) > 0
	case 'E', 'C':
		return len(l.statements) > 0 || len(l.portals) > 0
	}
	return false
}

func (l *lineageState) inspect(toServer bool, typ byte, body []byte, truncated bool) error {
	if !toServer {
		switch typ {
		case 'Z':
			l.zRecv++
			if l.pending.Load() > 0 {
				l.finishBatches()
			}
		case 'E':
			l.failBatch(body)
		}
		return nil
	}
	switch typ {
	case 'Q':
		if truncated || !l.sink.Tagged(body) && l.info.Job == "" {
			return nil
		}
		if run := l.sink.Begin(l.info, pgwire.CString(body)); run != nil {
			l.attach(l.zSent, run)
		}
	case 'P':
		name, rest := pgwire.CutCString(body)
		if l.statements == nil {
			l.statements = make(map[string]string)
		}
		delete(l.statements, name)
		sql, _ := pgwire.CutCString(rest)
		if !truncated && (l.sink.Tagged(rest) || l.info.Job != "") {
			l.statements[name] = sql
		}
	case 'B':
		portal, rest := pgwire.CutCString(body)
		stmt, _ := pgwire.CutCString(rest)
		if l.portals == nil {
			l.portals = make(map[string]string)
		}
		if sql, ok := l.statements[stmt]; ok {
			l.portals[portal] = sql
		} else {
			delete(l.portals, portal)
		}
	case 'E':
		portal, _ := pgwire.CutCString(body)
		if sql, ok := l.portals[portal]; ok {
			if run := l.sink.Begin(l.info, sql); run != nil {
				// It ends with the ReadyForQuery of the next Sync (or
				// Query, FunctionCall), counted already when this
				// Execute is seen only after it (a batch held for
				// routing, inspected at its Sync: wanter).
				seq := l.zSent + 1
				switch l.lastSent {
				case 'Q', 'S', 'F':
					seq = l.zSent
				}
				l.attach(seq, run)
			}
		}
	case 'C':
		if len(body) > 1 {
			name, _ := pgwire.CutCString(body[1:])
			if body[0] == 'S' {
				delete(l.statements, name)
			} else {
				delete(l.portals, name)
			}
		}
	}
	return nil
}

func (l *lineageState) decide(_ bool, _ byte, msg []byte, _ bool) ([]byte, error) { return msg, nil }

func (l *lineageState) failBatch(body []byte) {
	if l.pending.Load() == 0 {
		return
	}
	code, msg := pgwire.ErrorFields(body)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.batches {
		if b.seq == l.zRecv+1 && !b.failed {
			b.failed, b.code, b.message = true, code, msg
		}
	}
}

func (l *lineageState) finishBatches() {
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
func (l *lineageState) failPending(reason string) {
	l.mu.Lock()
	batches := l.batches
	l.batches = nil
	l.mu.Unlock()
	for _, b := range batches {
		for _, r := range b.runs {
			r.Fail(pgerr.ConnectionFailure, "session ended before the statement completed: "+reason)
		}
	}
}
