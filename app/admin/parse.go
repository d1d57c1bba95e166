package admin

import (
	"strings"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

// split cuts query into statements at ';' outside quotes, drops comments
// (-- to end of line, /* ... */), trims each statement and leaves out the
// empty ones.
func split(query string) ([]string, error) {
	var (
		stmts []string
		cur   strings.Builder
	)
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			stmts = append(stmts, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(query); i++ {
		ch := query[i]
		switch {
		case ch == '\'' || ch == '"':
			end := closingQuote(query, i)
			if end < 0 {
				return nil, syntaxErr("unterminated quoted string in admin command", "")
			}
			cur.WriteString(query[i : end+1])
			i = end
		case ch == '-' && i+1 < len(query) && query[i+1] == '-':
			nl := strings.IndexByte(query[i:], '\n')
			if nl < 0 {
				i = len(query)
			} else {
				i += nl
			}
			cur.WriteByte(' ')
		case ch == '/' && i+1 < len(query) && query[i+1] == '*':
			end := strings.Index(query[i+2:], "*/")
			if end < 0 {
				return nil, syntaxErr("unterminated /* comment in admin command", "")
			}
			i += 2 + end + 1
			cur.WriteByte(' ')
		case ch == ';':
			flush()
		default:
			cur.WriteByte(ch)
		}
	}
	flush()
	return stmts, nil
}

// closingQuote returns the index of the quote that closes the one at
// query[start] (a doubled quote is an escaped one), or -1.
func closingQuote(query string, start int) int {
	q := query[start]
	for i := start + 1; i < len(query); i++ {
		if query[i] != q {
			continue
		}
		if i+1 < len(query) && query[i+1] == q {
			i++
			continue
		}
		return i
	}
	return -1
}

// fields splits one statement into words at white space; a quoted word
// ('...' or "...", doubled quotes inside) becomes its content. stmt is
// non-empty and has balanced quotes (split checked them).
func fields(stmt string) ([]string, error) {
	var words []string
	i := 0
	for i < len(stmt) {
		if isSpace(stmt[i]) {
			i++
			continue
		}
		if stmt[i] == '\'' || stmt[i] == '"' {
			q := stmt[i]
			end := closingQuote(stmt, i)
			if end < 0 {
				return nil, syntaxErr("unterminated quoted string in admin command", "")
			}
			words = append(words, strings.ReplaceAll(stmt[i+1:end], string([]byte{q, q}), string(q)))
			i = end + 1
			if i < len(stmt) && !isSpace(stmt[i]) {
				return nil, syntaxErr("a quoted word must be followed by white space", "")
			}
			continue
		}
		j := i
		for j < len(stmt) && !isSpace(stmt[j]) && stmt[j] != '\'' && stmt[j] != '"' {
			j++
		}
		words = append(words, stmt[i:j])
		i = j
	}
	if len(words) == 0 {
		return nil, &pgerr.Error{Code: pgerr.SyntaxError, Severity: "ERROR", Message: "empty admin command"}
	}
	return words, nil
}

func isSpace(b byte) bool {
	switch b {
	case ' ', '\t', '\n', '\r', '\f', '\v':
		return true
	}
	return false
}
