package pgwire

import (
	"bytes"
	"encoding/binary"
	"io"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

// ReadMessage reads one typed message whose body is at most max bytes; a
// longer or malformed length is a protocol violation (08P01), found before
// anything is allocated.
func ReadMessage(r io.Reader, max int) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 || n-4 > max {
		return 0, nil, pgerr.New(pgerr.ProtocolViolation, "invalid message length %d for message type %q", n, hdr[0])
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[0], body, nil
}

// AppendMessage appends a typed message with body to dst.
func AppendMessage(dst []byte, typ byte, body []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)+4))
	return append(dst, body...)
}

// ParseParameterStatus splits a ParameterStatus body into name and value.
func ParseParameterStatus(body []byte) (string, string, bool) {
	k, rest, ok := bytes.Cut(body, []byte{0})
	if !ok {
		return "", "", false
	}
	v, _, ok := bytes.Cut(rest, []byte{0})
	return string(k), string(v), ok
}

// CString returns b up to its first NUL (all of b without one).
func CString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// CutCString returns the NUL-terminated string at the start of b and what
// follows it (nil when b has no NUL).
func CutCString(b []byte) (string, []byte) {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return string(b[:i]), b[i+1:]
	}
	return string(b), nil
}

// Terminated reports whether a Query body has its query string's NUL, or a
// Parse body those of its statement name and query string.
func Terminated(body []byte, typ byte) bool {
	n := 1
	if typ == 'P' {
		n = 2
	}
	for ; n > 0; n-- {
		i := bytes.IndexByte(body, 0)
		if i < 0 {
			return false
		}
		body = body[i+1:]
	}
	return true
}

// ErrorFields extracts SQLSTATE and message from an ErrorResponse body.
func ErrorFields(body []byte) (code, msg string) {
	for len(body) > 1 {
		f := body[0]
		v, rest := CutCString(body[1:])
		switch f {
		case 'C':
			code = v
		case 'M':
			msg = v
		}
		body = rest
	}
	return code, msg
}
