package proxy

import (
	"encoding/binary"

	"github.com/ofitec/pgproxy/internal/pgwire"
)

// A policy is what the relay asks about the few messages it looks at;
// everything else passes through as bytes. The relay frames each direction's
// stream (relay.go) and, at each message header, asks mode:
//
//   - modePass: the message is forwarded as it arrives, unseen.
//   - modeInspect: forwarded as it arrives; once complete, inspect sees its
//     body (at most maxInspect bytes: truncated says more was forwarded).
//   - modeHold: kept whole; decide gets the whole message, header
//     included, and returns what to forward instead: the message itself, a
//     replacement (any number of whole messages, or none), or an error that
//     ends the session. A message larger than maxHeld is decided on its
//     first maxHeld bytes (tooBig): when the answer ends in a message start
//     that wants exactly the bytes still to come (the start itself, or a
//     rewritten one), they stream behind it; else they are dropped
//     (pump.overflow).
//   - modeDrop: nothing of the message is forwarded, and no policy sees it
//     (in a chain, none after the one that dropped it is asked).
//
// A direction's calls come from that direction's pump only, one message at
// a time; a policy that keeps state for both directions guards what they
// share. The policies of a session are the session tracker (always),
// lineage (policy_lineage.go) when it is on, the guard (policy_readonly.go)
// on a session that fell back to the primary or is masked, and the masking
// (policy_masking.go) on a masked one.
type policy interface {
	mode(toServer bool, typ byte, n int) msgMode
	inspect(toServer bool, typ byte, body []byte, truncated bool) error
	decide(toServer bool, typ byte, msg []byte, tooBig bool) ([]byte, error)
}

// pumpPolicy returns what one pump of s consults: the tracker alone (the
// usual case: one interface call per message) or a chain of its own over
// the session's policies, which are made once, when the first pump is
// (both pumps are made by the goroutine that starts the relay).
func (s *session) pumpPolicy() policy {
	if s.policies == nil {
		if s.mask != nil {
			// First: it must see the server's answers before any other
			// policy changes them (policy_masking.go).
			s.policies = append(s.policies, s.mask)
		}
		if s.guarded() {
			s.guard = newReadOnlyGuard(s)
			s.policies = append(s.policies, s.guard)
		}
		s.policies = append(s.policies, tracker{s})
		if s.lin != nil {
			s.policies = append(s.policies, s.lin)
		}
	}
	if len(s.policies) == 1 {
		return s.policies[0]
	}
	return &chain{ps: s.policies, modes: make([]msgMode, len(s.policies))}
}

// chain runs several policies over one direction. Each message gets the
// strongest mode any of them asks for; a held message goes through the
// holders' decide in order, and the policies that only wanted to inspect it
// see what is finally forwarded. A holder that gets a replacement from the
// holders before it decides on each of its messages, by their own type (the
// read-only guard's Close and Flush in place of a refused Parse are no
// Parse to the pooled relay after it). A chain belongs to one pump.
type chain struct {
	ps    []policy
	modes []msgMode // what each policy asked for the current message
}

func (c *chain) mode(toServer bool, typ byte, n int) msgMode {
	m := modePass
	for i, p := range c.ps {
		c.modes[i] = p.mode(toServer, typ, n)
		if c.modes[i] == modeDrop {
			// No policy after it sees the message (the pooled relay's
			// answers to its own messages are not the guard's to count).
			clear(c.modes[i+1:])
			return modeDrop
		}
		m = max(m, c.modes[i])
	}
	return m
}

func (c *chain) inspect(toServer bool, typ byte, body []byte, truncated bool) error {
	for i, p := range c.ps {
		if c.modes[i] == modeInspect {
			if err := p.inspect(toServer, typ, body, truncated); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *chain) decide(toServer bool, typ byte, msg []byte, tooBig bool) ([]byte, error) {
	out := msg
	for i, p := range c.ps {
		if c.modes[i] != modeHold {
			continue
		}
		var err error
		if len(out) == 0 || len(out) == len(msg) && &out[0] == &msg[0] {
			out, err = p.decide(toServer, typ, out, tooBig) // the message itself (or nothing)
		} else {
			out, err = decideEach(p, toServer, out)
		}
		if err != nil {
			return nil, err
		}
	}
	if tooBig && len(out) == len(msg) && len(out) >= 5 && &out[0] == &msg[0] {
		// Forwarded as held, truncated: one message, whose framing is past its end.
		return out, c.inspectHeld(toServer, out[0], out[5:], true)
	}
	for b := out; len(b) >= 5; { // a replacement may be several messages: each is seen
		n := 1 + int(binary.BigEndian.Uint32(b[1:5]))
		if n < 5 || n > len(b) {
			break
		}
		if err := c.inspectReplacement(toServer, typ, b[0], b[5:n]); err != nil {
			return out, err
		}
		b = b[n:]
	}
	return out, nil
}

// wanter is a policy that tells, without side effects (mode may count what
// it is asked about), whether it inspects a message of type typ. The chain
// asks it about each message of a holder's replacement that is not of the
// type of the message decided: a batch held for routing (pooled_route.go)
// comes out whole at its Sync, and an inspector that wants its Parse and
// Bind must see them then (it was asked, and counted them, as each
// arrived, when nothing was forwarded).
type wanter interface {
	wants(toServer bool, typ byte) bool
}

func (c *chain) wants(toServer bool, typ byte) bool {
	for _, p := range c.ps {
		if w, ok := p.(wanter); ok && w.wants(toServer, typ) {
			return true
		}
	}
	return false
}

// inspectAs has the policies that want a message of type typ inspect it
// (a replacement's message, in a nested chain: see inspectReplacement).
func (c *chain) inspectAs(toServer bool, typ byte, body []byte) error {
	for _, p := range c.ps {
		if w, ok := p.(wanter); ok && w.wants(toServer, typ) {
			if err := inspectWanted(p, toServer, typ, body); err != nil {
				return err
			}
		}
	}
	return nil
}

func inspectWanted(p policy, toServer bool, typ byte, body []byte) error {
	if c, ok := p.(*chain); ok {
		return c.inspectAs(toServer, typ, body)
	}
	return p.inspect(toServer, typ, body, false)
}

// inspectReplacement shows one message (of type typ) of what the holders
// forward for a message of type cur to the policies that only inspect:
// those that asked to inspect cur see every message of it (as they always
// have); of the others that are not holders, those that want typ see the
// messages of another type (wanter).
func (c *chain) inspectReplacement(toServer bool, cur, typ byte, body []byte) error {
	for i, p := range c.ps {
		switch {
		case c.modes[i] == modeInspect:
			if err := p.inspect(toServer, typ, body, false); err != nil {
				return err
			}
		case c.modes[i] == modeHold || typ == cur:
		default:
			if w, ok := p.(wanter); ok && w.wants(toServer, typ) {
				if err := inspectWanted(p, toServer, typ, body); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// decideEach has p decide on each whole message of a replacement in turn.
func decideEach(p policy, toServer bool, repl []byte) ([]byte, error) {
	var out []byte
	for b := repl; len(b) > 0; {
		n := 0
		if len(b) >= 5 {
			n = 1 + int(binary.BigEndian.Uint32(b[1:5]))
		}
		if n < 5 || n > len(b) {
			return append(out, b...), nil // not whole messages (not expected): as it is
		}
		o, err := p.decide(toServer, b[0], b[:n], false)
		if err != nil {
			return nil, err
		}
		out = append(out, o...)
		b = b[n:]
	}
	return out, nil
}

func (c *chain) inspectHeld(toServer bool, typ byte, body []byte, truncated bool) error {
	for i, p := range c.ps {
		if c.modes[i] == modeInspect {
			if err := p.inspect(toServer, typ, body, truncated); err != nil {
				return err
			}
		}
	}
	return nil
}

// tracker keeps what the session itself must know of the stream: whether
// the client sent Terminate (so a server close that follows is expected),
// the transaction status of each ReadyForQuery, and the server's
// ParameterStatus values.
type tracker struct{ s *session }

func (t tracker) mode(toServer bool, typ byte, _ int) msgMode {
	if toServer {
		if typ == 'X' {
			t.s.clientTerminated.Store(true)
		}
		return modePass
	}
	switch typ {
	case 'Z', 'S':
		return modeInspect
	}
	return modePass
}

func (t tracker) inspect(toServer bool, typ byte, body []byte, _ bool) error {
	if toServer {
		return nil
	}
	switch typ {
	case 'Z':
		if len(body) == 1 {
			t.s.txStatus.Store(uint32(body[0]))
		}
	case 'S':
		if k, v, ok := pgwire.ParseParameterStatus(body); ok {
			t.s.mu.Lock()
			if t.s.params != nil {
				t.s.params[k] = v
			}
			t.s.mu.Unlock()
		}
	}
	return nil
}

func (t tracker) decide(_ bool, _ byte, msg []byte, _ bool) ([]byte, error) { return msg, nil }
