package masking

import "strings"

// normalize returns the key of sql in a CheckCache: sql itself with the
// contents of its literal constants (numbers, standard and escape strings,
// dollar-quoted strings, bit and hex strings) replaced by a placeholder
// naming the literal's kind; everything else (keywords, names, operators,
// parameters, white space, comments) is kept byte for byte. ok is false
// when the scanner below is not sure it tokenizes sql the way PostgreSQL's
// does (scan.l, standard_conforming_strings on, as pg_query parses): then
// the caller keys by the exact text.
//
// Two statements with the same key are the same token stream but for the
// values of literals of the same kind, so PostgreSQL's grammar (which
// looks at tokens, not at the values of constants) gives both the same
// tree but for those values. The analysis reads a constant's value in one
// place (an integer in ORDER BY, GROUP BY or DISTINCT ON names an output
// column by position): it reports that, and such an answer is kept under
// the exact text only.
//
// A placeholder is a NUL byte (which no statement holds: a Query or Parse
// string ends at the first) and the kind, so a key decodes one way.
func normalize(sql string) (key string, ok bool) {
	lits, ok := literals(sql)
	if !ok {
		return "", false
	}
	var b strings.Builder
	b.Grow(len(sql))
	last := 0
	for _, l := range lits {
		b.WriteString(sql[last:l.start])
		b.WriteByte(0)
		b.WriteByte(l.kind)
		last = l.end
	}
	b.WriteString(sql[last:])
	return b.String(), true
}

// literal is a constant's bytes in a statement, quotes included (an E,
// B or X prefix is not): 'I' integer, 'F' other number, 'S' standard string, 'E'
// escape string, 'D' dollar-quoted, 'B' bit string, 'X' hex string.
type literal struct {
	start, end int
	kind       byte
}

// literals scans sql the way PostgreSQL's scanner does, as far as
// normalize needs, and returns its literals; ok is false at any doubt.
func literals(sql string) (lits []literal, ok bool) {
	if strings.IndexByte(sql, 0) >= 0 {
		return nil, false // PostgreSQL would read up to it
	}
	i := 0
	lit := func(start, end int, kind byte) {
		lits = append(lits, literal{start, end, kind})
	}
	for i < len(sql) {
		c := sql[i]
		switch {
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			// To the end of the line (PostgreSQL: \n or \r).
			i += 2
			for i < len(sql) && sql[i] != '\n' && sql[i] != '\r' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			end, good := blockComment(sql, i)
			if !good {
				return nil, false
			}
			i = end
		case c == '\'':
			end, good := quoted(sql, i+1, false)
			if !good {
				return nil, false
			}
			lit(i, end, 'S')
			i = end
		case c == '"':
			j := i + 1
			for {
				k := strings.IndexByte(sql[j:], '"')
				if k < 0 {
					return nil, false
				}
				j += k + 1
				if j < len(sql) && sql[j] == '"' { // "" inside
					j++
					continue
				}
				break
			}
			i = j
		case c == '$':
			end, good := dollar(sql, i)
			switch {
			case !good:
				return nil, false
			case end > 0:
				lit(i, end, 'D')
				i = end
			default: // a parameter $n, kept as it is
				i++
				for i < len(sql) && isDigit(sql[i]) {
					i++
				}
				if i < len(sql) && isIdentCont(sql[i]) {
					return nil, false // "trailing junk after parameter"
				}
			}
		case isDigit(c):
			if i > 0 && sql[i-1] == '.' {
				return nil, false // .5: not scanned here
			}
			end, kind, good := number(sql, i)
			if !good {
				return nil, false
			}
			lit(i, end, kind)
			i = end
		case isIdentStart(c):
			start := i
			for i < len(sql) && isIdentCont(sql[i]) {
				i++
			}
			if i < len(sql) && i-start == 1 && (sql[i] == '\'' || sql[i] == '&' || sql[i] == '"') {
				switch sql[start] | 0x20 {
				case 'e': // E'...': backslash escapes
					if sql[i] != '\'' {
						break
					}
					end, good := quoted(sql, i+1, true)
					if !good {
						return nil, false
					}
					lit(i, end, 'E')
					i = end
				case 'b', 'x': // bit and hex strings: no quotes inside
					if sql[i] != '\'' {
						break
					}
					j := i + 1
					for j < len(sql) && sql[j] != '\'' && (isDigit(sql[j]) || (sql[j]|0x20 >= 'a' && sql[j]|0x20 <= 'f')) {
						j++
					}
					if j >= len(sql) || sql[j] != '\'' || quoteFollows(sql, j+1) {
						return nil, false // a quote right after, or continuing it, is not scanned here
					}
					lit(i, j+1, sql[start]&^0x20)
					i = j + 1
				case 'u': // U&'...' and U&"...": Unicode escapes, UESCAPE
					if sql[i] == '&' {
						return nil, false
					}
				case 'n': // N'...' is NCHAR and a standard string: handled next turn
				}
			}
		default:
			i++ // an operator or punctuation character, or white space
		}
	}
	return lits, true
}

// blockComment returns the end of the (nested) comment that starts at i.
func blockComment(sql string, i int) (int, bool) {
	depth := 0
	for i+1 < len(sql) {
		switch {
		case sql[i] == '/' && sql[i+1] == '*':
			depth++
			i += 2
		case sql[i] == '*' && sql[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i, true
			}
		default:
			i++
		}
	}
	return 0, false
}

// quoted returns the end of a quoted string whose content starts at i:
// two quotes are a quote inside; with escapes (an E string), a backslash
// escapes the next byte. A standard string holding a backslash, and an escape string with
// an escape whose value depends on its digits (octal, hex, Unicode: an
// invalid one is an error), are left to the parser.
func quoted(sql string, i int, escapes bool) (int, bool) {
	for i < len(sql) {
		switch sql[i] {
		case '\'':
			if i+1 < len(sql) && sql[i+1] == '\'' {
				i += 2
				continue
			}
			return i + 1, true
		case '\\':
			if !escapes || i+1 >= len(sql) {
				return 0, false
			}
			switch n := sql[i+1]; {
			case n == 'x', n == 'u', n == 'U', n >= '0' && n <= '7', n >= 0x80:
				return 0, false
			}
			i += 2
			continue
		}
		i++
	}
	return 0, false
}

// dollar returns the end of the dollar-quoted string that starts at i
// ($tag$...$tag$), 0 when '$' starts a parameter ($1).
func dollar(sql string, i int) (int, bool) {
	j := i + 1
	if j < len(sql) && isDigit(sql[j]) {
		return 0, true
	}
	for j < len(sql) && sql[j] != '$' {
		if !isDolqCont(sql[j]) || (j == i+1 && isDigit(sql[j])) {
			return 0, false
		}
		j++
	}
	if j >= len(sql) {
		return 0, false
	}
	delim := sql[i : j+1]
	end := strings.Index(sql[j+1:], delim)
	if end < 0 {
		return 0, false
	}
	return j + 1 + end + len(delim), true
}

// number returns the end of the numeric literal at i and its kind: 'I' an
// integer that fits in int32 (the grammar's ICONST), 'F' any other (FCONST:
// a larger integer, a decimal, an exponent). Underscores, 0x/0o/0b, a
// trailing "." and anything glued to the number are left to the parser.
func number(sql string, i int) (int, byte, bool) {
	start := i
	for i < len(sql) && isDigit(sql[i]) {
		i++
	}
	kind := byte('I')
	digits := strings.TrimLeft(sql[start:i], "0")
	if len(digits) > 10 || (len(digits) == 10 && digits > "2147483647") {
		kind = 'F'
	}
	if i < len(sql) && sql[i] == '.' {
		if i+1 >= len(sql) || !isDigit(sql[i+1]) {
			return 0, 0, false // "1." and "1..2"
		}
		kind = 'F'
		i++
		for i < len(sql) && isDigit(sql[i]) {
			i++
		}
	}
	if i < len(sql) && (sql[i] == 'e' || sql[i] == 'E') {
		j := i + 1
		if j < len(sql) && (sql[j] == '+' || sql[j] == '-') {
			j++
		}
		if j >= len(sql) || !isDigit(sql[j]) {
			return 0, 0, false
		}
		kind = 'F'
		i = j
		for i < len(sql) && isDigit(sql[i]) {
			i++
		}
	}
	if i < len(sql) && (isIdentCont(sql[i]) || sql[i] == '.') {
		return 0, 0, false
	}
	return i, kind, true
}

// quoteFollows reports whether a quote follows i after white space and
// -- comments (a string continued on the next line, or glued to it).
func quoteFollows(sql string, i int) bool {
	for i < len(sql) {
		switch c := sql[i]; {
		case c == ' ', c == '\t', c == '\n', c == '\r', c == '\f', c == '\v':
			i++
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' && sql[i] != '\r' {
				i++
			}
		default:
			return c == '\''
		}
	}
	return false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isIdentStart and isIdentCont are scan.l's ident_start and ident_cont.
func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentCont(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// isDolqCont is scan.l's dolq_cont.
func isDolqCont(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80 || isDigit(c)
}
