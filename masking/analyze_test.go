package masking

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// fakeCatalog serves relations and functions from maps.
type fakeCatalog struct {
	rels  []*Relation
	funcs map[string][]string
	gen   uint64
}

func (f *fakeCatalog) Generation() uint64 { return f.gen }

func (f *fakeCatalog) RelationsNamed(_ context.Context, schema, name string) ([]*Relation, error) {
	var out []*Relation
	for _, r := range f.rels {
		if r.Name == name && (schema == "" || r.Schema == schema) {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeCatalog) Relation(_ context.Context, oid uint32) (*Relation, error) {
	for _, r := range f.rels {
		if r.OID == oid {
			return r, nil
		}
	}
	return nil, nil
}

func (f *fakeCatalog) FunctionSchemas(_ context.Context, name string) ([]string, error) {
	if s, ok := f.funcs[name]; ok {
		return s, nil
	}
	return []string{"pg_catalog"}, nil
}

func testSet(t testing.TB) (*Set, *fakeCatalog) {
	t.Helper()
	p, err := New(Config{
		Rules: []Rule{{User: "bi_*", Columns: map[string]Method{
			"public.res_partner.email": Hash, "public.res_partner.vat": Partial,
		}}},
		AllowFunctions: []string{"public.safe_*"},
		Key:            []byte("k"),
	})
	if err != nil {
		t.Fatal(err)
	}
	s := p.Match("bi_ext", "odoo", "Metabase")
	if s == nil {
		t.Fatal("bi_ext is not masked")
	}
	cat := &fakeCatalog{
		rels: []*Relation{
			{OID: 1, Schema: "public", Name: "res_partner", Kind: 'r', Columns: []string{"id", "name", "email", "vat"}},
			{OID: 2, Schema: "public", Name: "sale_order", Kind: 'r', Columns: []string{"id", "partner_id", "amount"}},
			{OID: 3, Schema: "public", Name: "partner_v", Kind: 'v', Columns: []string{"id", "email", "low"},
				ViewDef: "SELECT res_partner.id, res_partner.email, lower(res_partner.email) AS low FROM res_partner;"},
			{OID: 4, Schema: "public", Name: "filtered_v", Kind: 'v', Columns: []string{"id"},
				ViewDef: "SELECT res_partner.id FROM res_partner WHERE res_partner.email LIKE 'a%';"},
			{OID: 5, Schema: "public", Name: "res_partner_child", Kind: 'r', Columns: []string{"id", "name", "email", "vat"},
				Ancestors: [][2]string{{"public", "res_partner"}}},
		},
		funcs: map[string][]string{"leak": {"public"}, "safe_fn": {"public"}, "lower": {"pg_catalog"}},
	}
	return s, cat
}

// checkCases are statements and what Check answers (TestCheck), with a
// CheckCache too (TestCheckCacheAgrees).
var checkCases = []struct {
	sql    string
	reason string // "" = allowed
}{
	{"SELECT id, name, email, vat FROM res_partner", ""},
	{"SELECT email AS e FROM public.res_partner p WHERE p.id = 1", ""},
	{"SELECT * FROM res_partner", ""},
	{"SELECT p.email, o.amount FROM res_partner p JOIN sale_order o ON o.partner_id = p.id", ""},
	{"SELECT j.email FROM (res_partner p JOIN sale_order o ON o.partner_id = p.id) AS j", ""},
	{"SELECT count(*) FROM res_partner", ""},
	{"SELECT id, email FROM partner_v", ""},
	{"DECLARE c CURSOR FOR SELECT email FROM res_partner", ""},
	{"PREPARE s AS SELECT email FROM res_partner WHERE id = $1", ""},
	{"SELECT safe_fn(id) FROM res_partner", ""},
	{"SELECT email FROM res_partner ORDER BY id", ""},
	{"COPY res_partner (id, name) TO STDOUT", ""},
	{"COPY sale_order TO STDOUT", ""},
	{"INSERT INTO sale_order (partner_id, amount) VALUES (1, 2)", ""},
	{"SELECT lower(name) FROM res_partner", ""},

	{"SELECT lower(email) FROM res_partner", "expression"},
	{"SELECT email::text FROM res_partner", "expression"},
	{"SELECT email || '' FROM res_partner", "expression"},
	{"SELECT id FROM res_partner WHERE email LIKE 'a%'", "where"},
	{"SELECT p.id FROM res_partner p JOIN sale_order o ON o.id::text = p.vat", "join"},
	{"SELECT email, count(*) FROM res_partner GROUP BY email", "group_by"},
	{"SELECT email FROM res_partner GROUP BY 1", "group_by"},
	{"SELECT id FROM res_partner GROUP BY id HAVING max(email) > 'm'", "having"},
	{"SELECT email FROM res_partner ORDER BY email", "order_by"},
	{"SELECT email AS e FROM res_partner ORDER BY e", "order_by"},
	{"SELECT * FROM res_partner ORDER BY 3", "order_by"},
	{"SELECT DISTINCT email FROM res_partner", "distinct"},
	{"SELECT DISTINCT ON (email) id FROM res_partner", "distinct"},
	{"SELECT (SELECT email FROM res_partner LIMIT 1)", "subquery"},
	{"SELECT e FROM (SELECT email AS e FROM res_partner) s", "subquery"},
	{"SELECT * FROM (SELECT * FROM res_partner) s", "subquery"},
	{"WITH x(e) AS (SELECT email FROM res_partner) SELECT e FROM x", "cte"},
	{"WITH x AS (SELECT email FROM res_partner) SELECT email FROM x", "cte"},
	{"SELECT email FROM res_partner UNION SELECT 'x'", "set_operation"},
	{"SELECT p FROM res_partner p", "whole_row"},
	{"SELECT to_json(p) FROM res_partner p", "whole_row"},
	{"SELECT row(p.*) FROM res_partner p", "whole_row"},
	{"SELECT (p).email FROM res_partner p", "whole_row"},
	{"SELECT row_to_json(res_partner) FROM res_partner", "whole_row"},
	{"UPDATE res_partner SET name = 'x' WHERE id = 1 RETURNING email", "returning"},
	{"DELETE FROM res_partner WHERE vat = '1'", "where"},
	{"INSERT INTO sale_order (amount) SELECT length(email) FROM res_partner", "expression"},
	{"INSERT INTO sale_order (amount) SELECT email FROM res_partner", "statement"},
	{"CREATE TABLE t AS SELECT email FROM res_partner", "into"},
	{"SELECT email INTO t FROM res_partner", "into"},
	{"SELECT low FROM partner_v", "view"},
	{"SELECT * FROM partner_v", "view"},
	{"SELECT id FROM filtered_v", "view"},
	{"SELECT id FROM res_partner_child WHERE email = 'x'", "where"},
	{"SELECT leak(id) FROM res_partner", "function"},
	{"SELECT public.leak(1)", "function"},
	{"SELECT query_to_xml('select email from res_partner', true, true, '')", "function"},
	{"SELECT pg_read_file('/etc/passwd')", "function"},
	{"COPY res_partner TO STDOUT", "copy"},
	{"COPY res_partner (email) TO STDOUT", "copy"},
	{"COPY (SELECT email FROM res_partner) TO STDOUT", "subquery"},
	{"DO $$BEGIN RAISE NOTICE '%', (SELECT email FROM res_partner LIMIT 1); END$$", "statement"},
	{"CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'SELECT email FROM res_partner'", "statement"},
	{"EXPLAIN ANALYZE SELECT id FROM res_partner WHERE email = 'a'", "where"},
	{"SELECT id FROM res_partner p, LATERAL (SELECT p.email) s", "subquery"},
	{"SELECT id FROM res_partner WHERE EXISTS (SELECT 1 FROM sale_order o WHERE o.id::text = res_partner.email)", "where"},
	{"SELECT id FROM res_partner JOIN sale_order USING (email)", "join"},
	{"SELECT 1; SELECT email FROM res_partner WHERE email = 'x'", "where"},
	{"SELECT x FROM res_partner AS r(a, b, x)", "expression"},
	{"SELECT count(email) OVER () FROM res_partner", "expression"},
}

func TestCheck(t *testing.T) {
	s, cat := testSet(t)
	for _, tc := range checkCases {
		err := s.Check(context.Background(), cat, tc.sql)
		var r *Refusal
		switch {
		case tc.reason == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.sql, err)
		case tc.reason != "" && !errors.As(err, &r):
			t.Errorf("%s: got %v, want a refusal (%s)", tc.sql, err, tc.reason)
		case tc.reason != "" && r.Reason != tc.reason:
			t.Errorf("%s: reason %q, want %q (%s)", tc.sql, r.Reason, tc.reason, r.Message)
		}
	}
}

func TestRefusalMessage(t *testing.T) {
	s, cat := testSet(t)
	err := s.Check(context.Background(), cat, "SELECT id FROM res_partner WHERE email = 'a@b.c'")
	want := "column public.res_partner.email is masked for user bi_ext: it may appear only as a plain output column"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %v, want %q...", err, want)
	}
	if strings.Contains(err.Error(), "a@b.c") {
		t.Fatalf("the message carries the statement's literal: %v", err)
	}
}

func TestMatchFirstRuleWins(t *testing.T) {
	p, err := New(Config{Rules: []Rule{
		{User: "bi_admin", Columns: map[string]Method{"public.t.a": Null}},
		{User: "bi_*", Database: "odoo", Columns: map[string]Method{"public.t.b": Redact}},
		{User: "bi_*", PIIFromCatalog: Redact},
	}, CatalogPII: []string{"of_facturas.contraparte", "sales.public.x.y"}})
	if err != nil {
		t.Fatal(err)
	}
	if s := p.Match("bi_admin", "odoo", ""); s == nil || s.Lookup("public", "t", "a") != Null || s.Lookup("public", "t", "b") != None {
		t.Errorf("bi_admin: want rule 0 only")
	}
	if s := p.Match("bi_ext", "odoo", ""); s == nil || s.Rule != 1 || s.Lookup("public", "t", "b") != Redact {
		t.Errorf("bi_ext on odoo: want rule 1")
	}
	s := p.Match("bi_ext", "dw", "")
	if s == nil || s.Rule != 2 || s.Lookup("finance", "of_facturas", "contraparte") != Redact || s.Lookup("public", "x", "y") != None {
		t.Errorf("bi_ext on dw: want rule 2 with the catalog's columns of any schema, not another database's")
	}
	if p.Match("odoo", "odoo", "") != nil {
		t.Errorf("odoo is masked")
	}
	if _, err := New(Config{Rules: []Rule{{User: "x", Columns: map[string]Method{"public.t.a": Hash}}}}); !errors.Is(err, ErrNoKey) {
		t.Errorf("hash without a key: %v", err)
	}
	if _, err := New(Config{Rules: []Rule{{User: "x", Columns: map[string]Method{"t.a": Null}}}}); err == nil {
		t.Errorf("a column without schema is accepted")
	}
}
