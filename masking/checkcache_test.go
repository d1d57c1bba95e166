package masking

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// answer is what a Check error says: "" allowed, the refusal's reason, or
// "error: ...". (Which masked column a refusal names may differ from one
// Check to the next: the analysis ranges over maps.)
func answer(err error) string {
	var r *Refusal
	switch {
	case err == nil:
		return ""
	case errors.As(err, &r):
		return "refused: " + r.Reason
	}
	return "error: " + err.Error()
}

// Through one CheckCache, every statement of TestCheck and a variant of
// it with other constants gets what Check answers, first time and again.
func TestCheckCacheAgrees(t *testing.T) {
	s, cat := testSet(t)
	ctx := context.Background()
	var c CheckCache
	var all []string
	for _, tc := range checkCases {
		all = append(all, tc.sql)
		if lits, ok := literals(tc.sql); ok && len(lits) > 0 {
			all = append(all, variant(tc.sql, lits))
		}
	}
	all = append(all,
		"SELECT id, email FROM res_partner ORDER BY 1", "SELECT id, email FROM res_partner ORDER BY 2",
		"SELECT email, id FROM res_partner GROUP BY 2, 1", "SELECT id, email FROM res_partner GROUP BY 1, 2",
		"SELECT DISTINCT ON (1) id, email FROM res_partner", "SELECT DISTINCT ON (2) id, email FROM res_partner")
	for pass := 0; pass < 2; pass++ {
		for _, sql := range all {
			want := answer(s.Check(ctx, cat, sql))
			if got := answer(c.Check(ctx, s, cat, sql)); got != want {
				t.Errorf("pass %d: %s: cached %q, want %q", pass, sql, got, want)
			}
		}
	}
	if c.Len() == 0 {
		t.Fatal("nothing kept")
	}
}

// A statement run again with other constants is answered from the cache;
// one whose answer read a constant (ORDER BY position) is not shared.
func TestCheckCacheKeys(t *testing.T) {
	s, cat := testSet(t)
	ctx := context.Background()
	var c CheckCache
	if err := c.Check(ctx, s, cat, "SELECT id, email, vat FROM res_partner WHERE id BETWEEN 417 AND 417 + 99"); err != nil {
		t.Fatal(err)
	}
	if err, ok := c.Lookup(s, cat, "SELECT id, email, vat FROM res_partner WHERE id BETWEEN 3 AND 3 + 99"); !ok || err != nil {
		t.Errorf("the same statement with other constants: kept %v, %v", ok, err)
	}
	if err := c.Check(ctx, s, cat, "SELECT id, email FROM res_partner ORDER BY 1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Lookup(s, cat, "SELECT id, email FROM res_partner ORDER BY 2"); ok {
		t.Error("ORDER BY 2 answered by ORDER BY 1's answer")
	}
	var r *Refusal
	if err := c.Check(ctx, s, cat, "SELECT id, email FROM res_partner ORDER BY 2"); !errors.As(err, &r) || r.Reason != "order_by" {
		t.Errorf("ORDER BY 2 (email): %v", err)
	}
	// Another Set (a RELOAD, another session's user) starts over.
	s2, _ := testSet(t)
	if _, ok := c.Lookup(s2, cat, "SELECT id, email FROM res_partner ORDER BY 1"); ok {
		t.Error("another Set's lookup answered")
	}
}

// A relation the catalog did not find may be created: the answer is not
// kept. A catalog whose Generation changed may answer otherwise: nothing
// kept is used.
func TestCheckCacheCatalogChanges(t *testing.T) {
	s, cat := testSet(t)
	ctx := context.Background()
	var c CheckCache
	sql := "SELECT low FROM later_v"
	if err := c.Check(ctx, s, cat, sql); err != nil {
		t.Fatalf("an unknown view: %v", err)
	}
	cat.rels = append(cat.rels, &Relation{OID: 9, Schema: "public", Name: "later_v", Kind: 'v', Columns: []string{"low"},
		ViewDef: "SELECT lower(res_partner.email) AS low FROM res_partner;"})
	var r *Refusal
	if err := c.Check(ctx, s, cat, sql); !errors.As(err, &r) || r.Reason != "view" {
		t.Fatalf("the view, created since: %v, want a refusal", err)
	}
	// The view is redefined; the catalog forgets (RELOAD): the next check sees it.
	sql2 := "SELECT low FROM later2_v"
	cat.rels = append(cat.rels, &Relation{OID: 10, Schema: "public", Name: "later2_v", Kind: 'v', Columns: []string{"low"},
		ViewDef: "SELECT lower(res_partner.name) AS low FROM res_partner;"})
	if err := c.Check(ctx, s, cat, sql2); err != nil {
		t.Fatal(err)
	}
	cat.rels[len(cat.rels)-1].ViewDef = "SELECT lower(res_partner.email) AS low FROM res_partner;"
	cat.gen++
	if err := c.Check(ctx, s, cat, sql2); !errors.As(err, &r) {
		t.Fatalf("after the catalog's generation changed: %v, want a refusal", err)
	}
	// A SideCatalog's generation changes on Invalidate.
	sc := NewSideCatalog("127.0.0.1:1", "x", func() Login { return Login{} })
	g := sc.Generation()
	sc.Invalidate()
	if sc.Generation() == g {
		t.Error("Invalidate does not change the generation")
	}
}

func TestCheckCacheBounded(t *testing.T) {
	s, cat := testSet(t)
	ctx := context.Background()
	var c CheckCache
	for i := 0; i < 3*maxCheckEntries; i++ {
		if err := c.Check(ctx, s, cat, fmt.Sprintf("SELECT id AS a%d FROM res_partner", i)); err != nil {
			t.Fatal(err)
		}
		if c.Len() > maxCheckEntries || c.bytes > maxCheckBytes {
			t.Fatalf("%d answers, %d bytes kept", c.Len(), c.bytes)
		}
	}
}

// A description resolved before is answered from the cache; one whose
// table the catalog did not know is resolved again (the table may be
// created), and so is every one after the catalog's generation changed.
func TestResolveCache(t *testing.T) {
	s, cat := testSet(t)
	ctx := context.Background()
	var c ResolveCache
	fields := benchFields()
	desc := []byte("desc-1")
	cols, err := c.Resolve(ctx, s, cat, desc, fields)
	if err != nil || !cols.Any() {
		t.Fatal(cols, err)
	}
	if got, ok := c.Lookup(s, cat, desc); !ok || got != cols {
		t.Fatalf("not kept: %v %v", got, ok)
	}
	later := []Field{{TableOID: 77, Attnum: 1, TypeOID: oidText}}
	if cols, err := c.Resolve(ctx, s, cat, []byte("desc-77"), later); err != nil || cols.Any() {
		t.Fatal(cols, err)
	}
	if _, ok := c.Lookup(s, cat, []byte("desc-77")); ok {
		t.Fatal("a description of a relation not found is kept")
	}
	cat.rels = append(cat.rels, &Relation{OID: 77, Schema: "public", Name: "res_partner", Kind: 'r', Columns: []string{"email"}})
	cat.gen++
	if _, ok := c.Lookup(s, cat, desc); ok {
		t.Fatal("kept across a catalog generation")
	}
	if cols, err := c.Resolve(ctx, s, cat, []byte("desc-77"), later); err != nil || !cols.Any() {
		t.Fatalf("the relation created since: %v %v, want its column masked", cols, err)
	}
}
