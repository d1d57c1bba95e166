package lineage

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestParseTags(t *testing.T) {
	tests := []struct {
		name string
		sql  string
		want Tags
		ok   bool
	}{
		{"leading", "/*job='raw_to_stage'*/ INSERT INTO stage_project SELECT * FROM raw_project", Tags{Job: "raw_to_stage"}, true},
		{"trailing", "INSERT INTO t SELECT 1 /*job='j1'*/", Tags{Job: "j1"}, true},
		{"trailing before semicolon", "SELECT 1 /*job='j1'*/;", Tags{Job: "j1"}, true},
		{"trailing after semicolon", "SELECT 1; /*job='j1'*/  \n", Tags{Job: "j1"}, true},
		{"all keys", "/*job='a',job_namespace='etl',parent_job='nightly',parent_run_id='0194695c-6f38-7a5e-9d3b-3f1c2a9b8e01'*/ SELECT 1",
			Tags{Job: "a", JobNamespace: "etl", ParentJob: "nightly", ParentRunID: "0194695c-6f38-7a5e-9d3b-3f1c2a9b8e01"}, true},
		{"url-encoded", "SELECT 1 /*job='raw%20to%2Cstage',job_namespace='a%2Fb'*/", Tags{Job: "raw to,stage", JobNamespace: "a/b"}, true},
		{"plus stays plus", "SELECT 1 /*job='a+b'*/", Tags{Job: "a+b"}, true},
		{"escaped quote", `SELECT 1 /*job='it\'s'*/`, Tags{Job: "it's"}, true},
		{"spaces inside comment", "/* job = 'x' , parent_job = 'p' */ SELECT 1", Tags{Job: "x", ParentJob: "p"}, true},
		{"unknown keys ignored", "SELECT 1 /*controller='index',action='show',job='x',framework='django'*/", Tags{Job: "x"}, true},
		{"metabase line comment first", "-- Metabase:: userID: 1 queryType: native\n/*job='mb'*/ SELECT 1", Tags{Job: "mb"}, true},
		{"two leading comments", "/* hello */ /*job='x'*/ SELECT 1", Tags{Job: "x"}, true},
		{"leading wins over trailing", "/*job='first'*/ SELECT 1 /*job='second'*/", Tags{Job: "first"}, true},
		{"keys split over both ends", "/*job='x'*/ SELECT 1 /*parent_job='p'*/", Tags{Job: "x", ParentJob: "p"}, true},
		{"bad percent escape kept", "SELECT 1 /*job='100%'*/", Tags{Job: "100%"}, true},
		{"untagged", "SELECT 1", Tags{}, false},
		{"comment in the middle is not a tag", "SELECT /*job='x'*/ 1", Tags{}, false},
		{"string literal is not a tag", "SELECT '/*job=''x''*/' FROM t", Tags{}, false},
		{"parent only", "/*parent_job='p'*/ SELECT 1", Tags{ParentJob: "p"}, false},
		{"empty job", "/*job=''*/ SELECT 1", Tags{}, false},
		{"unquoted value stops parsing", "/*job=x*/ SELECT 1", Tags{}, false},
		{"unterminated value", "/*job='x*/ SELECT 1", Tags{}, false},
		{"unterminated comment", "/*job='x' SELECT 1", Tags{}, false},
		{"only a comment", "/*job='x'*/", Tags{Job: "x"}, true},
		{"empty", "", Tags{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseTags(tt.sql)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseTags(%q) = %+v, %v; want %+v, %v", tt.sql, got, ok, tt.want, tt.ok)
			}
			if ok && !HasTag([]byte(tt.sql)) {
				t.Errorf("HasTag(%q) = false for a tagged query", tt.sql)
			}
		})
	}
}

func TestHasTag(t *testing.T) {
	for _, tt := range []struct {
		sql  string
		want bool
	}{
		{"SELECT 1", false},
		{"SELECT * FROM job WHERE job = 1", false},
		{"/* a comment */ SELECT 1", false},
		{"SELECT 1 /* controller='x' */;", false},
		{"/*job='x'*/SELECT 1", true},
		{"SELECT 1 /*job ='x'*/", true},
		{"/*parent_job='x'*/ SELECT 1", true}, // false positive, allowed
		{"", false},
		{";;", false},
		{"*/", false},
		{"SELECT 1 /*job='x'*/;\x00", true}, // Query message body with its terminator
	} {
		if got := HasTag([]byte(tt.sql)); got != tt.want {
			t.Errorf("HasTag(%q) = %v, want %v", tt.sql, got, tt.want)
		}
	}
}

func TestHasTagDoesNotAllocate(t *testing.T) {
	q := []byte(untagged1K())
	tagged := []byte("/*job='x'*/ " + untagged1K())
	if n := testing.AllocsPerRun(100, func() { HasTag(q); HasTag(tagged) }); n != 0 {
		t.Fatalf("HasTag allocates %v times per call", n)
	}
}

// untagged1K is a realistic 1 KB untagged query (an Odoo-style SELECT).
func untagged1K() string {
	var b strings.Builder
	b.WriteString(`SELECT "account_move_line"."id", "account_move_line"."move_id", "account_move_line"."account_id"`)
	for b.Len() < 1000 {
		b.WriteString(`, "account_move_line"."balance" + "account_move_line"."amount_residual" AS x`)
	}
	b.WriteString(` FROM "account_move_line" WHERE ("account_move_line"."company_id" IN (1)) ORDER BY "account_move_line"."date" DESC LIMIT 80`)
	return b.String()
}

func BenchmarkHasTagUntagged1K(b *testing.B) {
	q := []byte(untagged1K())
	b.SetBytes(int64(len(q)))
	b.ReportAllocs()
	for b.Loop() {
		if HasTag(q) {
			b.Fatal("tagged?")
		}
	}
}

func BenchmarkHasTagTagged1K(b *testing.B) {
	q := []byte("/*job='raw_to_stage',job_namespace='ofitec'*/ " + untagged1K())
	b.ReportAllocs()
	for b.Loop() {
		if !HasTag(q) {
			b.Fatal("untagged?")
		}
	}
}

func FuzzParseTags(f *testing.F) {
	for _, s := range []string{
		"/*job='raw_to_stage'*/ SELECT 1",
		"SELECT 1 /*job='a%20b',parent_run_id='0194695c-6f38-7a5e-9d3b-3f1c2a9b8e01'*/;",
		`SELECT 1 /*job='it\'s'*/`,
		"-- Metabase::\n/*job='x'*/ SELECT 1",
		"/*/",
		"/**/",
		"*/ /*",
		"SELECT 1 */",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		tags, ok := ParseTags(sql)
		if ok != (tags.Job != "") {
			t.Fatalf("ok=%v with job %q", ok, tags.Job)
		}
		if ok && !HasTag([]byte(sql)) {
			t.Fatalf("ParseTags found job %q but HasTag is false: %q", tags.Job, sql)
		}
	})
}

// BenchmarkStartComplete is the relay's cost for one tagged statement
// execution: Start (UUIDv7, timestamp, enqueue) and Complete (enqueue).
// No worker drains the queue, so most sends hit the full-queue drop path,
// which is the non-blocking worst case.
func BenchmarkStartComplete(b *testing.B) {
	e, err := NewEmitter(Config{
		Enabled: true, DatasetNamespace: "postgres://db:5432",
		Transport: TransportConfig{Type: "file", Path: os.DevNull, Queue: 1024},
	}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close(context.Background())
	sql := "/*job='raw_to_stage'*/ " + untagged1K()
	tags := Tags{Job: "raw_to_stage"}
	b.ReportAllocs()
	for b.Loop() {
		e.Start(session, sql, tags).Complete()
	}
}
