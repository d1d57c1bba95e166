package pgauth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Userlist maps user names to their secrets. It is read-only once parsed and
// may be shared between goroutines.
type Userlist map[string]Secret

// maxUserlistLine caps one line of an auth file (a SCRAM verifier is ~130
// bytes; PgBouncer's MAX_PASSWORD is 2048).
const maxUserlistLine = 64 << 10

// ParseUserlist reads PgBouncer's auth_file format: one user per line,
//
//	"user" "secret"
//
// each field in double quotes, "" standing for a quote inside one;
// whitespace around the fields; anything after the secret ignored (as
// PgBouncer does). Blank lines and lines starting with ';' or '#' are
// skipped. A secret is what ParseSecret reads (SCRAM-SHA-256 verifier, md5
// hash, else a plaintext). A user listed twice: the later line wins, with a
// warning.
//
// The first malformed line is an error naming filename:line and the
// problem, and never the secret (nor the user name when the line could not
// be split into its two fields, since a stray quote can put part of the
// secret there). Warnings (plaintext passwords, duplicates) come back
// separately for the caller to log.
func ParseUserlist(r io.Reader, filename string) (Userlist, []string, error) {
	ul := Userlist{}
	var warnings []string
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxUserlistLine)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if n == 1 {
			line = strings.TrimPrefix(line, "\uFEFF") // a UTF-8 byte order mark
		}
		user, secret, ok, err := splitUserlistLine(line)
		if err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %w", filename, n, err)
		}
		if !ok {
			continue
		}
		sec, err := ParseSecret(secret)
		if err != nil {
			return nil, nil, fmt.Errorf("%s:%d: user %q: %w", filename, n, user, err)
		}
		if sec.Kind == KindPlain {
			sec = sec.withDerivedSCRAM(user)
			warnings = append(warnings, fmt.Sprintf("%s:%d: user %q has a plaintext password: store its SCRAM-SHA-256 verifier instead (pg_authid.rolpassword)", filename, n, user))
		}
		if prev, dup := seen[user]; dup {
			warnings = append(warnings, fmt.Sprintf("%s:%d: user %q is also on line %d: line %d wins", filename, n, user, prev, n))
		}
		seen[user] = n
		ul[user] = sec
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, nil, fmt.Errorf("%s:%d: line longer than %d bytes", filename, n+1, maxUserlistLine)
		}
		return nil, nil, fmt.Errorf("%s: %w", filename, err)
	}
	return ul, warnings, nil
}

// splitUserlistLine returns the two quoted fields of a line; ok is false for
// a blank or comment line.
func splitUserlistLine(line string) (user, secret string, ok bool, err error) {
	line = strings.TrimRight(line, "\r")
	rest := strings.TrimLeft(line, " \t")
	if rest == "" || rest[0] == ';' || rest[0] == '#' {
		return "", "", false, nil
	}
	if rest[0] != '"' {
		return "", "", false, errors.New(`expected a quoted user name: "user" "secret"`)
	}
	user, rest, err = unquote(rest)
	if err != nil {
		return "", "", false, fmt.Errorf("user name: %w", err)
	}
	if user == "" {
		return "", "", false, errors.New("empty user name")
	}
	after := strings.TrimLeft(rest, " \t")
	if after == "" {
		return "", "", false, errors.New(`missing secret: "user" "secret"`)
	}
	if after[0] != '"' || len(after) == len(rest) {
		return "", "", false, errors.New(`expected whitespace and a quoted secret after the user name: "user" "secret"`)
	}
	secret, _, err = unquote(after) // anything after the secret is ignored
	if err != nil {
		return "", "", false, fmt.Errorf("secret: %w", err)
	}
	return user, secret, true, nil
}

// unquote reads a "..." field at the start of s ("" is a quote) and returns
// its value and what follows the closing quote.
func unquote(s string) (string, string, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '"' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' {
			b.WriteByte('"')
			i++
			continue
		}
		return b.String(), s[i+1:], nil
	}
	return "", "", errors.New("unterminated quote")
}

// LoadUserlist reads the auth file at path (see ParseUserlist). A file that
// others can read adds a warning.
func LoadUserlist(path string) (Userlist, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("auth file: %w", err)
	}
	defer f.Close()
	ul, warnings, err := ParseUserlist(f, path)
	if err != nil {
		return nil, nil, err
	}
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o004 != 0 {
		warnings = append(warnings, fmt.Sprintf("%s: readable by every user of the machine (mode %04o): chmod o-r", path, fi.Mode().Perm()))
	}
	return ul, warnings, nil
}
