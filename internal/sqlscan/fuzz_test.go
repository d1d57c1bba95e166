package sqlscan

import "testing"

var fuzzSeeds = []string{
	"SELECT 1",
	"SET default_transaction_read_only = off",
	"SELECT set_config($1, $2, false)",
	"WITH x AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM x",
	"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
	"COPY (SELECT * FROM a) TO STDOUT",
	"DROP TABLE a.b.c.d",
	"BEGIN READ WRITE; DO $$ $$",
	`SELECT * FROM "weird""name"`,
	"/*job='j'*/ SELECT 1;",
	"",
	"\x00",
}

// FuzzReadOnlyViolation: never panics, and an error comes with no verdict.
func FuzzReadOnlyViolation(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		reason, violated, err := ReadOnlyViolation(sql)
		if err != nil && (violated || reason != "") {
			t.Fatalf("error %v with verdict %v %q", err, violated, reason)
		}
		if violated != (reason != "") {
			t.Fatalf("violated=%v reason=%q", violated, reason)
		}
	})
}

// FuzzTables: never panics, and every table has a name.
func FuzzTables(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		reads, writes, err := Tables(sql)
		if err != nil {
			return
		}
		for _, r := range append(reads, writes...) {
			if r.Name == "" {
				t.Fatalf("empty table name in %+v from %q", r, sql)
			}
		}
	})
}
