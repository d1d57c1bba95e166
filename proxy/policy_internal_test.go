package proxy

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/ofitec/pgproxy/internal/pgwire"
)

// holder holds every message; it replaces those of type from by with, and
// records what it decides on.
type holder struct {
	from byte
	with []byte
	seen []string
}

func (h *holder) mode(bool, byte, int) msgMode           { return modeHold }
func (h *holder) inspect(bool, byte, []byte, bool) error { return nil }
func (h *holder) decide(_ bool, typ byte, msg []byte, tooBig bool) ([]byte, error) {
	h.seen = append(h.seen, fmt.Sprintf("%c:%q:%v", typ, msg, tooBig))
	if typ == h.from {
		return h.with, nil
	}
	return msg, nil
}

// TestChainReplacementByType: a holder after one that replaced a message
// decides on each message of the replacement by its own type (the pooled
// relay after the read-only guard must not take the guard's Close and
// Flush for the Parse they stand for); the message itself, or nothing,
// goes on as before.
func TestChainReplacementByType(t *testing.T) {
	parse := pgwire.AppendMessage(nil, 'P', []byte("s1\x00SELECT 1\x00\x00\x00"))
	marker := append(closeMsg('P', "m"), 'H', 0, 0, 0, 4)
	for _, tc := range []struct {
		name   string
		with   []byte
		tooBig bool
		want   []string
		out    []byte
	}{
		{"replaced", marker, false, []string{
			fmt.Sprintf("C:%q:false", closeMsg('P', "m")),
			fmt.Sprintf("H:%q:false", []byte{'H', 0, 0, 0, 4}),
		}, marker},
		{"dropped", []byte{}, false, []string{`P:"":false`}, nil},
		{"as it is, too big", nil, true, []string{fmt.Sprintf("P:%q:true", parse)}, parse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := &holder{from: 'P', with: tc.with}
			if tc.with == nil {
				first.from = 0 // passes the message itself
			}
			second := &holder{}
			c := &chain{ps: []policy{first, second}, modes: make([]msgMode, 2)}
			c.mode(true, 'P', len(parse)-1)
			out, err := c.decide(true, 'P', parse, tc.tooBig)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(second.seen) != fmt.Sprint(tc.want) {
				t.Errorf("the second holder decided on %v, want %v", second.seen, tc.want)
			}
			if !bytes.Equal(out, tc.out) {
				t.Errorf("forwarded %q, want %q", out, tc.out)
			}
		})
	}
}
