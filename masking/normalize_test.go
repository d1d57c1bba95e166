package masking

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// Statements that differ only in their constants share a key; statements
// that differ in structure never do, however their quotes, escapes,
// dollar quotes and comments are arranged.
func TestNormalizeKeys(t *testing.T) {
	same := [][2]string{
		{"SELECT id FROM t WHERE id BETWEEN 417 AND 417 + 99", "SELECT id FROM t WHERE id BETWEEN 1 AND 1 + 99"},
		{"SELECT 'a''b', E'x\\'y', $$z$$, $q$w$q$", "SELECT 'c', E'\\\\', $$x$q$y$$, $q$$$$q$"},
		{"SELECT B'0101', X'fF', 1.5, 2e10", "SELECT B'', X'0', 7.25, 3E-2"},
		{"SELECT 2147483647, 00000000001", "SELECT 1, 7"},
		{"SELECT 2147483648", "SELECT 99999999999"},
	}
	for _, p := range same {
		a, okA := normalize(p[0])
		b, okB := normalize(p[1])
		if !okA || !okB || a != b {
			t.Errorf("%q (%v) and %q (%v): keys %q, %q; want the same", p[0], okA, p[1], okB, a, b)
		}
	}
	differ := [][2]string{
		// A string holding what would be a predicate, and the predicate.
		{"SELECT id FROM t WHERE name = 'x'' AND email = ''y'", "SELECT id FROM t WHERE name = 'x' AND email = 'y'"},
		{"SELECT id FROM t WHERE name = E'x\\' AND email = \\'y'", "SELECT id FROM t WHERE name = E'x' AND email = 'y'"},
		{"SELECT id FROM t WHERE name = $q$x$ AND email = $q$", "SELECT id FROM t WHERE name = $q$x$q$ AND email = $q$y$q$"},
		{"SELECT id FROM t WHERE name = $a$ $b$ AND email = $b$ $a$", "SELECT id FROM t WHERE name = $a$ $a$ AND email = $b$ $b$"},
		{"SELECT id FROM t /* /* */ WHERE email = 'x' */", "SELECT id FROM t /* */ WHERE email = 'x' /* */"},
		{"SELECT id FROM t -- 'x\nWHERE email = 'y'", "SELECT id FROM t -- x\nWHERE email = 'y'"},
		{"SELECT \"a'\" FROM t WHERE email = 'x'", "SELECT \"a\" FROM t WHERE email = 'x'"},
		// Integer and other numbers are other tokens (ICONST, FCONST).
		{"SELECT 2147483647", "SELECT 2147483648"},
		{"SELECT 1", "SELECT 1.0"},
		// Parameters keep their numbers; names and casts are kept.
		{"SELECT $1", "SELECT $2"},
		{"SELECT 'customers'::regclass", "SELECT 'customers'::text"},
		{"SELECT E'x'", "SELECT 'x'"},
	}
	for _, p := range differ {
		a, okA := normalize(p[0])
		b, okB := normalize(p[1])
		if okA && okB && a == b {
			t.Errorf("%q and %q share the key %q", p[0], p[1], a)
		}
	}
	// What the scanner is unsure of is keyed by the exact text.
	for _, sql := range []string{
		"SELECT U&'d\\0061t\\+000061'", "SELECT U&\"d\\0061t\" FROM t", "SELECT 'a\\' OR email = 'x'",
		"SELECT E'\\u0041'", "SELECT E'\\101'", "SELECT E'\\x41'", "SELECT 1_000", "SELECT 0x1F", "SELECT 123abc",
		"SELECT .5", "SELECT 1.", "SELECT 1..2", "SELECT 'unterminated", "SELECT $q$unterminated", "SELECT /* unterminated",
		"SELECT \"unterminated", "SELECT B'01''01'", "SELECT B'01'\n'01'", "SELECT X'zz'", "SELECT $1abc", "SELECT 1e", "SELECT $ 1",
	} {
		if k, ok := normalize(sql); ok {
			t.Errorf("%q: normalized to %q, want it left to the parser", sql, k)
		}
	}
}

// tree is sql's parse tree without locations and with each constant
// reduced to its kind: what the grammar made of the statement's structure.
func tree(t testing.TB, sql string) (any, error) {
	js, err := pg.ParseToJSON(sql)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatal(err)
	}
	var strip func(any) any
	strip = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			if c, ok := x["A_Const"].(map[string]any); ok {
				var kinds []string
				for k := range c {
					if k != "location" {
						kinds = append(kinds, k)
					}
				}
				sort.Strings(kinds)
				return map[string]any{"A_Const": strings.Join(kinds, ",")}
			}
			out := map[string]any{}
			for k, e := range x {
				if k == "location" || k == "stmt_location" || k == "stmt_len" {
					continue
				}
				out[k] = strip(e)
			}
			return out
		case []any:
			for i := range x {
				x[i] = strip(x[i])
			}
		}
		return v
	}
	return strip(v), nil
}

// variant replaces every literal of sql by another of its kind.
func variant(sql string, lits []literal) string {
	other := map[byte]string{'I': "7", 'F': "7.5", 'S': "'v''w'", 'E': "'v\\'w'", 'B': "'1'", 'X': "'f'"}
	var b strings.Builder
	last := 0
	for _, l := range lits {
		b.WriteString(sql[last:l.start])
		if l.kind == 'D' {
			delim := sql[l.start : strings.IndexByte(sql[l.start+1:], '$')+l.start+2]
			b.WriteString(delim + "v" + delim)
		} else {
			b.WriteString(other[l.kind])
		}
		last = l.end
	}
	b.WriteString(sql[last:])
	return b.String()
}

// checkVariant is the oracle: sql and its variant have the same key, and
// PostgreSQL's parser makes the same tree of both (or rejects both).
func checkVariant(t *testing.T, sql string) {
	lits, ok := literals(sql)
	if !ok {
		return
	}
	v := variant(sql, lits)
	k1, _ := normalize(sql)
	k2, ok2 := normalize(v)
	if !ok2 || k1 != k2 {
		t.Fatalf("%q and its variant %q: keys %q, %q (%v)", sql, v, k1, k2, ok2)
	}
	t1, err1 := tree(t, sql)
	t2, err2 := tree(t, v)
	if (err1 == nil) != (err2 == nil) || !reflect.DeepEqual(t1, t2) {
		t.Fatalf("%q and %q share the key %q but parse differently:\n%v (%v)\n%v (%v)", sql, v, k1, t1, err1, t2, err2)
	}
}

var normalizeSeeds = []string{
	"SELECT id, email, vat, city FROM bench_mask WHERE id BETWEEN 417 AND 417 + 99;",
	"SELECT id FROM t WHERE name = 'x'' AND email = ''y' ORDER BY 1",
	"SELECT id FROM t WHERE name = E'x\\' AND email = \\'y'",
	"SELECT $q$x$ AND email = $q$, $a$ $b$ $a$, $$$$",
	"SELECT 1 /* /* 'x' */ 'y' */, 2 -- 'z\n, 'w'\n'continued'",
	"SELECT 'a'\n'b', E'c'\n'd', B'01'",
	"SELECT \"a'\"\"b\", date'2020-01-01', interval '1' day, N'x', -2147483648, 2147483648, 1.5e-3",
	"SELECT * FROM t WHERE x IN (1, 2, 3) LIMIT 10 OFFSET 5",
	"SELECT 'customers'::regclass, query_to_xml('select email from res_partner', true, false, '')",
	"SELECT a.b, t.*, x[1], x[1:2], 1::int, $1, -1, +1, 1-1, 1--1\n",
}

func TestNormalizeParsesAlike(t *testing.T) {
	for _, sql := range normalizeSeeds {
		checkVariant(t, sql)
	}
}

// FuzzNormalize: whatever the scanner keys, PostgreSQL's parser agrees
// that only constants changed.
func FuzzNormalize(f *testing.F) {
	for _, s := range normalizeSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if len(sql) > 4096 {
			return
		}
		checkVariant(t, sql)
	})
}
