package router

import (
	"fmt"
	"strings"
)

// This file reads the `options` startup parameter the way the PostgreSQL
// backend does (pg_split_opts + process_postgres_switches, PostgreSQL 15):
//
//   - the string is split at unescaped whitespace (C isspace: space, \t, \n,
//     \v, \f, \r); a backslash makes the next byte literal and is dropped;
//   - the words are command-line switches parsed with getopt and the option
//     string "B:bc:C:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:v:W:-:": `-c name=value`,
//     `-cname=value` and `--name=value` set a setting; in the name '-' becomes
//     '_'; names are case-insensitive; a word "--" ends the switches.

// optWord is one whitespace-separated word of options: its raw bytes are
// raw[start:end], its value has the escapes removed.
type optWord struct {
	start, end int
	val        string
}

func isCSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// splitOptions is pg_split_opts with byte positions.
func splitOptions(s string) []optWord {
	var words []optWord
	var b strings.Builder
	i := 0
	for i < len(s) {
		for i < len(s) && isCSpace(s[i]) {
			i++
		}
		if i == len(s) {
			break
		}
		start := i
		b.Reset()
		escaped := false
		for i < len(s) {
			c := s[i]
			if isCSpace(c) && !escaped {
				break
			}
			if !escaped && c == '\\' {
				escaped = true
			} else {
				escaped = false
				b.WriteByte(c)
			}
			i++
		}
		words = append(words, optWord{start: start, end: i, val: b.String()})
	}
	return words
}

// switchTakesArg reports whether the backend switch c takes an argument, and
// whether c is a known switch at all.
func switchTakesArg(c byte) (arg, known bool) {
	const opts = "B:bc:C:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:v:W:-:"
	i := strings.IndexByte(opts, c)
	if i < 0 || c == ':' {
		return false, false
	}
	return i+1 < len(opts) && opts[i+1] == ':', true
}

// optSetting is one `-c name=value` / `--name=value` found in options.
type optSetting struct {
	name      string // normalised: lower case, '-' → '_'
	value     string
	hasValue  bool
	words     [2]int // indexes of the words it occupies (words[1] = -1 when one word)
	alone     bool   // the switch starts its word (no flags grouped before it)
	switchStr string // "-c" or "--" for messages
}

// parseOptionSettings returns the settings of an options string, in order.
func parseOptionSettings(words []optWord) []optSetting {
	var out []optSetting
	for i := 0; i < len(words); i++ {
		w := words[i].val
		if w == "--" {
			break // end of switches
		}
		if len(w) < 2 || w[0] != '-' {
			continue // not a switch (getopt permutes: later switches still count)
		}
		for j := 1; j < len(w); j++ {
			arg, known := switchTakesArg(w[j])
			if !known || !arg {
				continue // flag (or an error the server will report)
			}
			set := optSetting{words: [2]int{i, -1}, alone: j == 1}
			var optarg string
			if j+1 < len(w) {
				optarg = w[j+1:]
			} else if i+1 < len(words) {
				optarg = words[i+1].val
				set.words[1] = i + 1
				i++
			} else {
				break // missing argument: the server reports it
			}
			if c := w[j]; c == 'c' || c == '-' {
				set.switchStr = "-" + string(c)
				name, value, hasValue := strings.Cut(optarg, "=")
				set.name = strings.ToLower(strings.ReplaceAll(name, "-", "_"))
				set.value, set.hasValue = value, hasValue
				out = append(out, set)
			}
			break // the argument took the rest of the word
		}
	}
	return out
}

// removeWords returns raw without the words whose index is in drop, keeping
// every other byte as it was: each kept word keeps the whitespace that
// preceded it, except the first kept word, which keeps the original leading
// whitespace only if it was the first word.
func removeWords(raw string, words []optWord, drop map[int]bool) string {
	if len(drop) == 0 {
		return raw
	}
	var b strings.Builder
	first := true
	for i, w := range words {
		if drop[i] {
			continue
		}
		switch {
		case first && i == 0:
			b.WriteString(raw[:w.start])
		case !first:
			prevEnd := 0
			if i > 0 {
				prevEnd = words[i-1].end
			}
			b.WriteString(raw[prevEnd:w.start])
		}
		b.WriteString(raw[w.start:w.end])
		first = false
	}
	if n := len(words); n > 0 && !drop[n-1] && !first {
		b.WriteString(raw[words[n-1].end:])
	}
	return b.String()
}

// optionsError is a problem with a pgproxy.* setting inside options.
func optionsError(set optSetting, msg string) error {
	return &ParamError{Code: SQLStateProtocolViolation, Param: "options",
		Message: fmt.Sprintf("%s %s: %s", set.switchStr, set.name, msg)}
}
