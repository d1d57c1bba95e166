package lineage

import (
	"bytes"
	"net/url"
	"strings"
)

// Tags are the sqlcommenter keys pgproxy reads from a query comment.
type Tags struct {
	Job          string // job: its presence makes a query "tagged"
	JobNamespace string // job_namespace: default Config.JobNamespace
	ParentJob    string // parent_job: with ParentRunID, a ParentRunFacet
	ParentRunID  string // parent_run_id: must be a UUID
}

// HasTag is the relay's cheap pre-check: it reports whether sql may carry a
// job tag, i.e. whether a block comment at the start or at the end of sql
// (either side of a trailing ';', after leading "--" line comments) contains
// "job" followed by "=". It never misses a query ParseTags accepts; false
// positives (a "parent_job=" alone, "job=" in a Django comment) are fine, the
// worker decides. The terminating NUL of a Query message body may be
// included. It does not allocate and looks only at the comments at
// either end, so its cost does not grow with the length of the statement body.
func HasTag(sql []byte) bool {
	found := false
	eachEdgeComment(sql, func(body []byte) bool {
		if hasJobKey(body) {
			found = true
			return false
		}
		return true
	})
	return found
}

// ParseTags reads the sqlcommenter comment(s) at the start or end of sql:
// /*key='value',key2='value2'*/, values URL-encoded, ' escaped as \'. Unknown
// keys are ignored; when several edge comments carry the same key the first
// (leading comments first) wins. ok reports whether a non-empty job was found.
func ParseTags(sql string) (tags Tags, ok bool) {
	eachEdgeComment([]byte(sql), func(body []byte) bool {
		parseComment(string(body), func(k, v string) {
			switch k {
			case "job":
				if tags.Job == "" {
					tags.Job = v
				}
			case "job_namespace":
				if tags.JobNamespace == "" {
					tags.JobNamespace = v
				}
			case "parent_job":
				if tags.ParentJob == "" {
					tags.ParentJob = v
				}
			case "parent_run_id":
				if tags.ParentRunID == "" {
					tags.ParentRunID = v
				}
			}
		})
		return true
	})
	return tags, tags.Job != ""
}

// eachEdgeComment calls fn with the body of every block comment before the
// first token of sql (skipping whitespace and -- line comments) and after its
// last token (skipping whitespace and ';'), leading ones first, until fn
// returns false. It does not allocate.
func eachEdgeComment(sql []byte, fn func(body []byte) bool) {
	// Leading comments.
	i := 0
	for i < len(sql) {
		switch {
		case isSpace(sql[i]):
			i++
		case bytes.HasPrefix(sql[i:], []byte("--")):
			nl := bytes.IndexByte(sql[i:], '\n')
			if nl < 0 {
				return // the whole string is a line comment
			}
			i += nl + 1
		case bytes.HasPrefix(sql[i:], []byte("/*")):
			end := bytes.Index(sql[i+2:], []byte("*/"))
			if end < 0 {
				return // unterminated: not a comment we read
			}
			if !fn(sql[i+2 : i+2+end]) {
				return
			}
			i += 2 + end + 2
		default:
			goto trailing
		}
	}
	return // nothing but comments: already seen
trailing:
	start := i // first byte of the first token; trailing comments end after it
	j := len(sql)
	for j > start {
		c := sql[j-1]
		switch {
		case isSpace(c) || c == ';' || c == 0: // 0: a Query message's terminator
			j--
		case c == '/' && j-2 >= start && sql[j-2] == '*':
			open := bytes.LastIndex(sql[start:j-2], []byte("/*"))
			if open < 0 {
				return
			}
			open += start
			if !fn(sql[open+2 : j-2]) {
				return
			}
			j = open
		default:
			return
		}
	}
}

func isSpaceRune(r rune) bool { return r < 0x80 && isSpace(byte(r)) }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// hasJobKey reports whether body contains "job" followed by optional spaces
// and '='.
func hasJobKey(body []byte) bool {
	for {
		k := bytes.Index(body, []byte("job"))
		if k < 0 {
			return false
		}
		rest := body[k+3:]
		for len(rest) > 0 && isSpace(rest[0]) {
			rest = rest[1:]
		}
		if len(rest) > 0 && rest[0] == '=' {
			return true
		}
		body = body[k+3:]
	}
}

// parseComment parses key='value' pairs separated by commas and calls fn with
// each key and URL-decoded value. It stops at the first malformed pair.
func parseComment(s string, fn func(k, v string)) {
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		if s == "" {
			return
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return
		}
		// Keys are not URL-decoded: the keys pgproxy reads need no encoding,
		// and HasTag must see "job=" as written.
		key := strings.TrimFunc(s[:eq], isSpaceRune)
		s = strings.TrimLeft(s[eq+1:], " \t\r\n")
		if s == "" || s[0] != '\'' {
			return
		}
		var val strings.Builder
		i := 1
		closed := false
		for i < len(s) {
			c := s[i]
			if c == '\\' && i+1 < len(s) && (s[i+1] == '\'' || s[i+1] == '\\') {
				val.WriteByte(s[i+1])
				i += 2
				continue
			}
			if c == '\'' {
				closed = true
				i++
				break
			}
			val.WriteByte(c)
			i++
		}
		if !closed {
			return
		}
		fn(key, unescape(val.String()))
		s = strings.TrimLeft(s[i:], " \t\r\n")
		if s == "" {
			return
		}
		if s[0] != ',' {
			return
		}
		s = s[1:]
	}
}

// unescape URL-decodes s ('+' stays '+', as sqlcommenter encodes spaces as
// %20); a malformed escape leaves s as written.
func unescape(s string) string {
	if !strings.ContainsRune(s, '%') {
		return s
	}
	u, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return u
}
