package admin

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

// FuzzExec feeds arbitrary query text (what an admin client sends) to the
// console: it must never panic, every error must be an ERROR-severity
// *pgerr.Error with a SQLSTATE, and every result set must be rectangular.
func FuzzExec(f *testing.F) {
	for _, s := range []string{
		"SHOW BACKENDS", "show sessions;", "SHOW ROUTES; SHOW CONFIG", "RELOAD", "PAUSE 127.0.0.1:5432",
		"RESUME '127.0.0.1:5434'", `PAUSE "db-b.example:5433"`, "SET x = 'a''b'", "SELECT 1", "", ";;",
		"-- c\nSHOW HELP", "/* x */ SHOW VERSION", "PAUSE 'unterminated", "SHOW /* unterminated", "'\"''\"",
		"PAUSE 'a'b", "SHOW\x00BACKENDS", "SHOW BACKENDS\u00a0", "\u00a0", "PAUSE", "SHOW",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		fk := newFake()
		res, err := New(fk.deps()).Exec(context.Background(), q)
		if err != nil {
			var pe *pgerr.Error
			if !errors.As(err, &pe) || pe.Code == "" || pe.Severity != "ERROR" {
				t.Fatalf("Exec(%q) error %v (%T) is not an ERROR *pgerr.Error", q, err, err)
			}
		}
		for _, r := range res {
			if r.Tag == "" {
				t.Fatalf("Exec(%q): result without a tag", q)
			}
			for _, row := range r.Rows {
				if len(row) != len(r.Columns) {
					t.Fatalf("Exec(%q): row of %d values for %d columns", q, len(row), len(r.Columns))
				}
				for _, v := range row {
					if v != nil && strings.Contains(*v, secretPassword) {
						t.Fatalf("Exec(%q) shows a secret", q)
					}
				}
			}
		}
	})
}
