package proxy

import "go.uber.org/zap"

// Plain SETs in transaction mode. A client's SET of a setting that
// PostgreSQL does not report (extra_float_digits, statement_timeout, ...)
// would pin it to its server for the rest of its session: pgjdbc sends
// "SET extra_float_digits = 3" on every connection it opens, so every
// pgjdbc client would hold a server for its whole life. Instead, when an
// exchange (the messages up to a Query or Sync) holds only such SETs (as
// Config.SessionSetting recognizes them) and it ends with ReadyForQuery 'I'
// and no ErrorResponse, the setting becomes one of the client's own
// (pooledState.extra, as if it had come in the startup packet): syncParams
// sets it with set_config on whichever server runs the client's next
// transaction, and RESETs it on a server the client did not set it on
// (pool.Conn.Applied). A Bind of such a SET prepared before (pgx's and
// pgjdbc's named statements) counts as that SET again, so running it
// after a RESET makes it the client's once more. Anything else in the same
// exchange (another statement, a Bind of another statement prepared
// before, a FunctionCall), or an exchange that ends inside a transaction
// block (the SET may still be rolled back), pins as before. (A prepared
// SET that is only parsed, never run, is recorded all the same: the client
// then gets it on its next servers without having run it.)

// Setting is a plain SET (Reset: RESET) of one setting.
type Setting struct {
	Name, Value string
	Reset       bool
}

// exchange is what the client→server side has seen of the current
// exchange.
type exchange struct {
	sets  []Setting
	other bool // a statement that is not one of sets
}

// movable notes sql, a statement of the current exchange whose session
// state is reason, and reports whether it is a SET to move with the client
// (the caller then does not pin for it).
func (p *clientPolicy) movable(sql, reason string) bool {
	if reason == "set" && p.s.cfg.SessionSetting != nil {
		if st, ok := p.s.cfg.SessionSetting(sql); ok {
			p.exch.sets = append(p.exch.sets, st)
			return true
		}
	}
	p.exch.other = true
	return false
}

// endExchange runs at the Query or Sync that ends an exchange (before it is
// sent): its SETs go with its ReadyForQuery marker, or pin when the
// exchange held anything else.
func (p *clientPolicy) endExchange() {
	e := p.exch
	p.exch = exchange{}
	if len(e.sets) == 0 {
		return
	}
	if e.other {
		p.pinFor("set")
		return
	}
	l := &p.ps.link
	l.mu.Lock()
	if n := len(l.fifo); n > 0 && l.fifo[n-1].kind == 'Z' {
		l.fifo[n-1].sets = e.sets
	}
	l.mu.Unlock()
}

// settled runs (link.mu held) at the ReadyForQuery of an exchange that
// made only the plain SETs sets, without an error: outside a transaction
// block they are now the client's own settings, and this server has them;
// inside one the client is pinned.
func (p *serverPolicy) settled(sets []Setting) {
	l := &p.ps.link
	if l.status != 'I' {
		if l.pinned == "" {
			l.pinned = "set"
			p.s.logger().Debug("client pinned to its server", zap.String("reason", "set"))
			if m := p.s.srv.metrics; m != nil {
				m.poolPins.WithLabelValues("set").Inc()
			}
		}
		return
	}
	// extra is read by the client→server side only when it attaches a
	// server, after this relay has ended (link.s2cIdle).
	for _, st := range sets {
		if st.Reset {
			delete(p.ps.extra, st.Name)
			delete(p.c.Applied, st.Name)
		} else {
			p.ps.extra[st.Name] = st.Value
			p.c.Applied[st.Name] = st.Value
		}
	}
}
