package pgauth

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

// Shared by both sides of SCRAM-SHA-256: the attribute grammar of RFC 5802
// (attr "=" value, separated by commas) and the errors, worded as
// PostgreSQL's auth-scram.c words them.

const (
	// SCRAMSHA256 is the SASL mechanism this package speaks.
	SCRAMSHA256 = "SCRAM-SHA-256"
	// MaxAuthMessage is PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH: the longest
	// SASL or password message body it accepts; callers reading
	// SASLInitialResponse, SASLResponse or PasswordMessage bodies should
	// read with this cap (longer bodies are refused here anyway).
	MaxAuthMessage = 65535
	rawNonceLen    = 18 // PostgreSQL's SCRAM_RAW_NONCE_LEN
)

// Authentication request codes (the int32 after 'R').
const (
	authOK                = 0
	authKerberosV5        = 2
	authCleartextPassword = 3
	authMD5Password       = 5
	authSCMCredential     = 6
	authGSS               = 7
	authGSSContinue       = 8
	authSSPI              = 9
	authSASL              = 10
	authSASLContinue      = 11
	authSASLFinal         = 12
)

// ErrPasswordMismatch is the cause of every failed password check, wrapped
// in a *pgerr.Error 28P01 `password authentication failed for user "…"`
// (PostgreSQL's message): a wrong password, an unknown user (FakeSecret)
// and a user whose secret cannot verify the method look the same to the
// client. Test with errors.Is.
var ErrPasswordMismatch = errors.New("password does not match")

func passwordFailed(user string, cause error) *pgerr.Error {
	e := pgerr.New(pgerr.InvalidPassword, "password authentication failed for user %q", user)
	e.Err = cause
	return e
}

// malformed is PostgreSQL's "malformed SCRAM message" (08P01) with its
// detail; the detail is also the wrapped cause, so logs show it.
func malformed(format string, args ...any) *pgerr.Error {
	d := fmt.Sprintf(format, args...)
	e := pgerr.New(pgerr.ProtocolViolation, "malformed SCRAM message")
	e.Detail = d
	e.Err = errors.New(d)
	return e
}

// sanitizeChar shows one byte of a message in an error: the character if
// printable ASCII, else its hex code.
func sanitizeChar(s string) string {
	if s == "" {
		return "end of string"
	}
	c := s[0]
	if c >= 0x21 && c <= 0x7e {
		return fmt.Sprintf("%q", string(c))
	}
	return fmt.Sprintf("0x%02x", c)
}

// sanitizeStr shows a string of a message in an error as PostgreSQL does:
// at most 30 bytes, each one that is not printable ASCII as '?'.
func sanitizeStr(s string) string {
	b := []byte(s[:min(len(s), 30)])
	for i, c := range b {
		if c < 0x21 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}

// readAttr reads `attr=value` at the start of s, up to the next comma, and
// returns the value and what follows the comma.
func readAttr(s string, attr byte) (value, rest string, err error) {
	if s == "" || s[0] != attr {
		return "", "", malformed("Attribute %q expected, but found %s.", string(attr), sanitizeChar(s))
	}
	if len(s) < 2 || s[1] != '=' {
		return "", "", malformed("Expected character \"=\" for attribute %q.", string(attr))
	}
	value, rest, _ = strings.Cut(s[2:], ",")
	return value, rest, nil
}

// readAnyAttr reads the next `ALPHA=value` of s.
func readAnyAttr(s string) (attr byte, value, rest string, err error) {
	if s == "" || !('a' <= s[0] && s[0] <= 'z' || 'A' <= s[0] && s[0] <= 'Z') {
		return 0, "", "", malformed("Attribute expected, but found invalid character %s.", sanitizeChar(s))
	}
	attr = s[0]
	if len(s) < 2 || s[1] != '=' {
		return 0, "", "", malformed("Expected character \"=\" for attribute %q.", string(attr))
	}
	value, rest, _ = strings.Cut(s[2:], ",")
	return attr, value, rest, nil
}

// printable is RFC 5802's printable: %x21-2B / %x2D-7E (ASCII but ",").
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

// checkMessage applies PostgreSQL's checks of a SASL message's data.
func checkMessage(data []byte) error {
	switch {
	case len(data) == 0:
		return malformed("The message is empty.")
	case len(data) > MaxAuthMessage:
		return malformed("The message is %d bytes, more than %d.", len(data), MaxAuthMessage)
	case bytes.IndexByte(data, 0) >= 0:
		return malformed("Message length does not match input length.")
	}
	return nil
}

func xorBytes(a, b []byte) []byte {
	out := make([]byte, len(a))
	for i := range a {
		out[i] = a[i] ^ b[i]
	}
	return out
}
