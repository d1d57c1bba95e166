package router

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ofitec/pgproxy/internal/glob"
)

// Route is where a session goes: the primary or a replica.
type Route int

// Routes. The zero value is "unset": a Rule with it does not decide the route.
const (
	RouteWrite Route = iota + 1 // the primary
	RouteRead                   // a replica (or the primary, read-only, as fallback)
)

// String returns "write", "read" or "unset".
func (r Route) String() string {
	switch r {
	case RouteWrite:
		return "write"
	case RouteRead:
		return "read"
	}
	return "unset"
}

// MarshalText makes Route a JSON string.
func (r Route) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// ParseRoute parses "read" or "write"; "" is the zero Route.
func ParseRoute(s string) (Route, error) {
	switch s {
	case "read":
		return RouteRead, nil
	case "write":
		return RouteWrite, nil
	case "":
		return 0, nil
	}
	return 0, fmt.Errorf("router: unknown route %q (want read or write)", s)
}

// Rule sends matching sessions to Route. The match fields are globs ('*' any
// run of bytes, '?' one byte, '\' escapes the next byte); an empty field
// matches anything; every non-empty field must match.
type Rule struct {
	User, Database, ApplicationName string
	Route                           Route
	// StripSuffix is removed from the end of the database name before
	// connecting (e.g. "_ro": sales_ro → sales).
	StripSuffix string
}

// Reasons a session got its route (Session.Reason). A rule is "rule:N" with
// N its 0-based index in Config.Rules.
const (
	ReasonListener     = "listener"
	ReasonStartupParam = "startup_param"
	ReasonDefault      = "default"
	ReasonReplication  = "replication"
)

// Session is the routing-relevant view of one client session.
type Session struct {
	Route Route
	// Reason is "listener", "rule:N", "startup_param", "replication" or "default".
	Reason string
	// Params are the startup parameters to forward to the backend: pgproxy.*
	// settings removed (from options and as parameters), the database with
	// the matching rule's strip_suffix applied.
	Params map[string]string
	// MaxLag is the session's own pgproxy.max_lag (0 = the config's).
	MaxLag time.Duration
	// Job is pgproxy.job ("" = none).
	Job string
	// Consistency is pgproxy.consistency: eventual, session or global
	// ("" = routing.consistency).
	Consistency string
	// Paused are backends PAUSEd in the admin console: Pick skips them and
	// says so when nothing else fits.
	Paused []string
}

// SQLSTATEs of the errors this package returns.
const (
	SQLStateCannotConnectNow  = "57P03"
	SQLStateInvalidParameter  = "22023"
	SQLStateUndefinedObject   = "42704"
	SQLStateProtocolViolation = "08P01"
	maxJobLen                 = 256
	pgproxyPrefix             = "pgproxy."
	settingMaxLag             = "pgproxy.max_lag"
	settingJob                = "pgproxy.job"
	settingConsistency        = "pgproxy.consistency"
	settingDefaultTxnReadOnly = "default_transaction_read_only"
)

// ParamError is a startup parameter the proxy refuses. The proxy answers it
// with a FATAL ErrorResponse carrying Code.
type ParamError struct {
	Code    string // SQLSTATE
	Param   string // the startup parameter ("options" or the pgproxy.* name)
	Message string
}

func (e *ParamError) Error() string { return e.Message }

// SQLState returns the SQLSTATE for the ErrorResponse.
func (e *ParamError) SQLState() string { return e.Code }

// Classify decides the route of a session from the listener's route ("",
// "read" or "write"), the rules and the client's startup parameters, in that
// order; else default_transaction_read_only=on (a parameter, or -c inside
// options; the parameter wins like in PostgreSQL) → read; else write. It
// never looks at a statement. A session with a replication parameter goes to
// the primary with its parameters untouched. params is not modified.
//
// strip_suffix of the first matching rule applies even when the listener
// decided the route (a "*_ro" database on the read listener still needs its
// real name).
func Classify(cfg *Config, listenerRoute string, params map[string]string) (Session, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	lr, err := ParseRoute(listenerRoute)
	if err != nil {
		return Session{}, err
	}
	out := make(map[string]string, len(params))
	for k, v := range params {
		out[k] = v
	}
	if rep, ok := params["replication"]; ok && !isFalse(rep) {
		return Session{Route: RouteWrite, Reason: ReasonReplication, Params: out}, nil
	}
	s := Session{Params: out}

	// pgproxy.* settings: as startup parameters, then inside options.
	readOnly, readOnlySet := "", false
	for k, v := range params {
		lk := strings.ToLower(k)
		switch {
		case strings.HasPrefix(lk, pgproxyPrefix):
			delete(out, k)
			if err := s.applySetting(lk, v, k); err != nil {
				return Session{}, err
			}
		case lk == settingDefaultTxnReadOnly:
			readOnly, readOnlySet = v, true
		}
	}
	optRO, optROSet, err := s.consumeOptions(out)
	if err != nil {
		return Session{}, err
	}
	if !readOnlySet {
		readOnly, readOnlySet = optRO, optROSet
	}

	// The first matching rule.
	user := params["user"]
	db := params["database"]
	if db == "" {
		db = user // PostgreSQL's default
	}
	ruleIdx := -1
	for i := range cfg.Rules {
		r := &cfg.Rules[i]
		if (r.User == "" || glob.Match(r.User, user)) &&
			(r.Database == "" || glob.Match(r.Database, db)) &&
			(r.ApplicationName == "" || glob.Match(r.ApplicationName, params["application_name"])) {
			ruleIdx = i
			break
		}
	}
	if ruleIdx >= 0 {
		if suf := cfg.Rules[ruleIdx].StripSuffix; suf != "" && len(db) > len(suf) && strings.HasSuffix(db, suf) {
			out["database"] = strings.TrimSuffix(db, suf)
		}
	}

	switch {
	case lr != 0:
		s.Route, s.Reason = lr, ReasonListener
	case ruleIdx >= 0 && cfg.Rules[ruleIdx].Route != 0:
		s.Route, s.Reason = cfg.Rules[ruleIdx].Route, "rule:"+strconv.Itoa(ruleIdx)
	case readOnlySet && isTrue(readOnly):
		s.Route, s.Reason = RouteRead, ReasonStartupParam
	default:
		s.Route, s.Reason = RouteWrite, ReasonDefault
	}
	return s, nil
}

// consumeOptions removes pgproxy.* settings from out["options"], applies
// them, and reports the last default_transaction_read_only found there.
func (s *Session) consumeOptions(out map[string]string) (readOnly string, readOnlySet bool, err error) {
	raw, ok := out["options"]
	if !ok {
		return "", false, nil
	}
	words := splitOptions(raw)
	var drop map[int]bool
	for _, set := range parseOptionSettings(words) {
		switch {
		case strings.HasPrefix(set.name, pgproxyPrefix):
			if !set.alone {
				return "", false, optionsError(set, "a pgproxy setting must be its own -c or -- switch")
			}
			if !set.hasValue {
				return "", false, optionsError(set, "requires a value")
			}
			if err := s.applySetting(set.name, set.value, set.name); err != nil {
				return "", false, err
			}
			if drop == nil {
				drop = map[int]bool{}
			}
			drop[set.words[0]] = true
			if set.words[1] >= 0 {
				drop[set.words[1]] = true
			}
		case set.name == settingDefaultTxnReadOnly && set.hasValue:
			readOnly, readOnlySet = set.value, true
		}
	}
	if drop != nil {
		if rest := removeWords(raw, words, drop); strings.TrimLeft(rest, " \t\n\v\f\r") == "" {
			delete(out, "options")
		} else {
			out["options"] = rest
		}
	}
	return readOnly, readOnlySet, nil
}

// applySetting applies one pgproxy.* setting (name lower-cased).
func (s *Session) applySetting(name, value, param string) error {
	switch name {
	case settingMaxLag:
		d, err := parseLag(value)
		if err != nil {
			return &ParamError{Code: SQLStateInvalidParameter, Param: param,
				Message: fmt.Sprintf("invalid value for parameter %q: %q: %v", settingMaxLag, value, err)}
		}
		s.MaxLag = d
	case settingJob:
		if value == "" || len(value) > maxJobLen {
			return &ParamError{Code: SQLStateInvalidParameter, Param: param,
				Message: fmt.Sprintf("invalid value for parameter %q: must be 1 to %d bytes", settingJob, maxJobLen)}
		}
		s.Job = value
	case settingConsistency:
		switch v := strings.ToLower(strings.TrimSpace(value)); v {
		case "eventual", "session", "global":
			s.Consistency = v
		default:
			return &ParamError{Code: SQLStateInvalidParameter, Param: param,
				Message: fmt.Sprintf("invalid value for parameter %q: %q (want eventual, session or global)", settingConsistency, value)}
		}
	default:
		return &ParamError{Code: SQLStateUndefinedObject, Param: param,
			Message: fmt.Sprintf("unrecognized configuration parameter %q (pgproxy knows %s, %s and %s)", name, settingMaxLag, settingJob, settingConsistency)}
	}
	return nil
}

// parseLag parses a positive duration: Go syntax ("1.5s", "500ms", "1m"),
// PostgreSQL units ("2 s", "1min", "100 ms") or a bare number of seconds.
func parseLag(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	num, mult := v, time.Second
	if _, err := strconv.ParseFloat(v, 64); err != nil {
		if gd, err := time.ParseDuration(v); err == nil {
			if gd <= 0 {
				return 0, fmt.Errorf("must be positive")
			}
			return gd, nil
		}
		num = strings.TrimRight(v, "abcdefghijklmnopqrstuvwxyz")
		var ok bool
		mult, ok = map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second,
			"min": time.Minute, "h": time.Hour}[v[len(num):]]
		if !ok {
			return 0, fmt.Errorf("want a duration such as 2s or 500ms")
		}
		num = strings.TrimSpace(num)
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as 2s or 500ms")
	}
	d := n * float64(mult)
	if !(d >= 1 && d <= float64(24*time.Hour)) { // also refuses NaN
		return 0, fmt.Errorf("must be positive and at most 24h")
	}
	return time.Duration(d), nil
}

// isTrue is PostgreSQL's parse_bool for true: a prefix of "true" or "yes",
// "on", "1" (case-insensitive). isFalse is the same for false.
func isTrue(v string) bool {
	b, ok := parseBool(v)
	return ok && b
}

func isFalse(v string) bool {
	b, ok := parseBool(v)
	return ok && !b
}

// parseBool is parse_bool_with_len of PostgreSQL's src/backend/utils/adt/bool.c.
func parseBool(v string) (value, ok bool) {
	l := strings.ToLower(v)
	if l == "" {
		return false, false
	}
	switch l[0] {
	case 't':
		return true, strings.HasPrefix("true", l)
	case 'f':
		return false, strings.HasPrefix("false", l)
	case 'y':
		return true, strings.HasPrefix("yes", l)
	case 'n':
		return false, strings.HasPrefix("no", l)
	case 'o':
		// "o" alone is ambiguous; "on", "of", "off".
		if len(l) >= 2 && strings.HasPrefix("on", l) {
			return true, true
		}
		if len(l) >= 2 && strings.HasPrefix("off", l) {
			return false, true
		}
		return false, false
	case '1':
		return true, l == "1"
	case '0':
		return false, l == "0"
	}
	return false, false
}
