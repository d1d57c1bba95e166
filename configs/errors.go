package configs

import (
	"errors"
	"fmt"
)

// FieldError is one problem of a configuration. Load returns all of them
// joined with errors.Join; use errors.As or Problems to inspect them.
type FieldError struct {
	// Key is the full key path ("routing.fallback", "listen[1].addr") or,
	// for a seed variable, its name ("REPLICA_MAX_LAG_S").
	Key string
	// Source says where the bad value came from: "pgproxy.yaml:12",
	// "env PGPROXY_ROUTING_MAX_LAG", "flag --routing.max_lag"; empty for
	// problems of the merged result.
	Source string
	// Msg is the problem. It never contains a secret.
	Msg string
	// unknown marks an unknown key.
	unknown bool
}

func (e *FieldError) Error() string {
	var s string
	if e.unknown {
		s = fmt.Sprintf("config: unknown key %q", e.Key)
	} else {
		s = "config: " + e.Key + ": " + e.Msg
	}
	if e.Source != "" {
		s += " (" + e.Source + ")"
	}
	return s
}

// Problems returns every FieldError inside err (as Load returns it).
func Problems(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch x := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, x)
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				walk(e)
			}
		default:
			walk(errors.Unwrap(err))
		}
	}
	walk(err)
	return out
}

// maxProblems caps how many problems one Load collects, so that a hostile
// file cannot make the error list (and the work) grow without bound.
const maxProblems = 100

// problems collects FieldErrors.
type problems struct {
	list []error
}

func (p *problems) full() bool { return len(p.list) >= maxProblems }

func (p *problems) add(key, source, format string, args ...any) {
	if p.full() {
		return
	}
	p.list = append(p.list, &FieldError{Key: key, Source: source, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) unknown(key, source string) {
	if p.full() {
		return
	}
	p.list = append(p.list, &FieldError{Key: key, Source: source, unknown: true})
}

func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	if p.full() {
		p.list = append(p.list, errors.New("config: too many problems, stopped"))
	}
	return errors.Join(p.list...)
}
