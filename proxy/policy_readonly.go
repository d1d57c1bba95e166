package proxy

import (
	"encoding/binary"
	"strings"

	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
)

// readOnlyGuard is the policy of a read session that fell back to the
// primary (Target.ReadOnly): it started with default_transaction_read_only=on,
// and the guard refuses what would turn that off. Query and Parse are held
// whole and checked (Config.ReadOnlyCheck, PostgreSQL's parser); a refused
// one is replaced so the server answers with the refusal at the right place
// in the stream (refuse). FunctionCall is refused outright. A
// ParameterStatus default_transaction_read_only=off ends the session, as a
// last line of defence. Only its client→server methods touch poisoned.
type readOnlyGuard struct {
	s        *session
	poisoned map[string]bool // prepared statements replaced by a refusal
}

var _ policy = (*readOnlyGuard)(nil)

func (g *readOnlyGuard) mode(toServer bool, typ byte, _ int) msgMode {
	if !toServer {
		if typ == 'S' {
			return modeHold
		}
		return modePass
	}
	switch typ {
	case 'Q', 'P':
		if g.s.cfg.ReadOnlyCheck != nil {
			return modeHold
		}
	case 'F':
		return modeHold
	case 'B':
		if len(g.poisoned) > 0 {
			return modeHold
		}
	}
	return modePass
}

func (g *readOnlyGuard) inspect(bool, byte, []byte, bool) error { return nil }

func (g *readOnlyGuard) decide(toServer bool, typ byte, msg []byte, tooBig bool) ([]byte, error) {
	s := g.s
	if !toServer { // ParameterStatus (the tracker records its value)
		if k, v, ok := pgwire.ParseParameterStatus(msg[5:]); ok {
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
		return g.refuse(pgerr.ReadOnlySQLTransaction, "pgproxy: function calls are not allowed on a read-only session", false, ""), nil
	case 'B':
		_, rest := pgwire.CutCString(msg[5:]) // portal
		stmt, _ := pgwire.CutCString(rest)
		if g.poisoned[stmt] {
			return nullBindParams(msg), nil
		}
		return msg, nil
	}
	// Query or Parse
	if tooBig {
		name, _ := pgwire.CutCString(msg[5:]) // a Parse's statement name comes first
		return g.refuse(pgerr.ProgramLimitExceeded, "pgproxy: statement too large to check on a read-only session", typ == 'P', name), nil
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
		return g.refuse(pgerr.ProtocolViolation, "pgproxy: malformed message on a read-only session: unterminated string", typ == 'P', name), nil
	}
	reason, violated, err := s.cfg.ReadOnlyCheck(sql)
	if err != nil {
		return g.refuse(pgerr.SyntaxError, "pgproxy: could not parse the statement to check it is read-only: "+err.Error(), typ == 'P', name), nil
	}
	if violated {
		s.log.Warn("read-only session: statement refused", zap.String("reason", reason))
		return g.refuse(pgerr.ReadOnlySQLTransaction, "pgproxy: refused on a read-only session: "+reason, typ == 'P', name), nil
	}
	if typ == 'P' {
		delete(g.poisoned, name)
	}
	return msg, nil
}

// refuse builds a replacement that makes the server itself answer with the
// given SQLSTATE at the right place in the message stream: a DO block that
// raises. For a Parse, the statement name is kept and marked poisoned, so
// later Binds send NULLs for its parameters and the Execute raises.
func (g *readOnlyGuard) refuse(code, message string, parse bool, name string) []byte {
	message = strings.NewReplacer("'", "''", "$", "").Replace(message)
	sql := "DO $pgproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '" + code + "', MESSAGE = '" + message + "'; END$pgproxy$"
	if !parse {
		return pgwire.AppendMessage(nil, 'Q', append([]byte(sql), 0))
	}
	if g.poisoned == nil {
		g.poisoned = make(map[string]bool)
	}
	g.poisoned[name] = true
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
