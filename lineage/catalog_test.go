package lineage

import (
	"strings"
	"testing"
)

func TestParseCatalog(t *testing.T) {
	c, err := ParseCatalog([]byte(testCatalog))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		db, schema, table string
		want              string // description, "" = not found
	}{
		{"ofitec", "public", "raw_project", "Proyectos crudos"},
		{"other", "x", "RAW_PROJECT", "Proyectos crudos"}, // bare name matches any database/schema
		{"ofitec", "stage", "project", "Proyectos normalizados"},
		{"other", "stage", "project", ""}, // database.schema.table is specific
		{"ofitec", "public", "nope", ""},
	}
	for _, tt := range tests {
		e, ok := c.Lookup(tt.db, tt.schema, tt.table)
		got := ""
		if ok {
			got = e.Description
		}
		if got != tt.want {
			t.Errorf("Lookup(%s.%s.%s) = %q, want %q", tt.db, tt.schema, tt.table, got, tt.want)
		}
	}
	if e, _ := c.Lookup("ofitec", "stage", "project"); !e.PII || len(e.Columns) != 2 {
		t.Errorf("entry %+v", e)
	}
	var nilC *Catalog
	if _, ok := nilC.Lookup("a", "b", "c"); ok || nilC.Len() != 0 {
		t.Error("nil catalog")
	}
}

func TestParseCatalogErrors(t *testing.T) {
	for name, y := range map[string]string{
		"unknown key": "- name: a\n  descripton: typo\n",
		"empty name":  "- description: x\n",
		"duplicate":   "- name: a\n- name: A\n",
		"not a list":  "name: a\n",
	} {
		if _, err := ParseCatalog([]byte(y)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if c, err := ParseCatalog(nil); err != nil || c.Len() != 0 {
		t.Errorf("empty file: %v", err)
	}
}

func TestOwnerURN(t *testing.T) {
	for in, want := range map[string]string{
		"finanzas@ofitec.cl":       "email:finanzas@ofitec.cl",
		"email:finanzas@ofitec.cl": "email:finanzas@ofitec.cl",
		"team:data":                "team:data",
		"data":                     "team:data",
		"  ":                       "",
	} {
		if got := ownerURN(in); got != want {
			t.Errorf("ownerURN(%q) = %q, want %q", in, got, want)
		}
	}
}

// The shipped catalog parses and describes the seed's marts.
func TestShippedCatalog(t *testing.T) {
	c, err := LoadCatalog("../configs/catalog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"mart_fact_cashflow", "mart_fact_wip", "mart_ar_aging", "mart_ap_aging", "mart_kpi_ceo"} {
		e, ok := c.Lookup("ofitec", "public", m)
		if !ok || e.Description == "" || !strings.Contains(ownerURN(e.Owner), ":") {
			t.Errorf("%s: %+v, %v", m, e, ok)
		}
	}
}

func TestCatalogPIIColumns(t *testing.T) {
	c, err := ParseCatalog([]byte(`
- name: of_facturas
  pii: true
  columns:
    - {name: numero, type: text}
    - {name: contraparte, type: text, pii: true}
- name: sales.public.res_partner
  columns:
    - {name: email, pii: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := c.PIIColumns()
	want := []string{"of_facturas.contraparte", "sales.public.res_partner.email"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("PIIColumns() = %v, want %v", got, want)
	}
}
