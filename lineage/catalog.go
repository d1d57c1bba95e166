package lineage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// CatalogEntry describes one dataset in the catalog file
// (configs/catalog.yaml):
//
//   - name: mart_fact_cashflow          # table, schema.table or database.schema.table
//     description: "Flujo de caja (planned/actual) por fecha y proyecto"
//     owner: finanzas@ofitec.cl         # an e-mail becomes "email:...", "team:x" is kept
//     pii: false                        # true: BI publication must mask it
//     columns:                          # optional: a schema facet
//   - {name: fecha, type: date, description: "día del movimiento"}
//   - {name: rut, type: text, pii: true} # masked by masking.rules' pii_from_catalog
type CatalogEntry struct {
	Name        string          `yaml:"name"`
	Description string          `yaml:"description"`
	Owner       string          `yaml:"owner"`
	PII         bool            `yaml:"pii"`
	Columns     []CatalogColumn `yaml:"columns"`
}

// CatalogColumn is one column of a catalog entry.
type CatalogColumn struct {
	Name        string `yaml:"name"`
	Type        string `yaml:"type"`
	Description string `yaml:"description"`
	// PII flags a column holding personal data: masking.rules with
	// pii_from_catalog mask it without naming it again.
	PII bool `yaml:"pii"`
}

// Catalog looks datasets up by name; it is immutable once loaded and safe for
// concurrent use. The zero Catalog is empty.
type Catalog struct {
	byName map[string]*CatalogEntry // lowercased name as written in the file
}

// LoadCatalog reads a catalog file. An empty path gives an empty catalog.
func LoadCatalog(path string) (*Catalog, error) {
	if path == "" {
		return &Catalog{}, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("lineage: catalog: %w", err)
	}
	c, err := ParseCatalog(b)
	if err != nil {
		return nil, fmt.Errorf("lineage: catalog %s: %w", path, err)
	}
	return c, nil
}

// ParseCatalog parses catalog YAML (a list of entries). Unknown keys are
// errors, so a typo does not silently drop metadata.
func ParseCatalog(b []byte) (*Catalog, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var entries []CatalogEntry
	if err := dec.Decode(&entries); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse: %w", err)
	}
	c := &Catalog{byName: make(map[string]*CatalogEntry, len(entries))}
	for i := range entries {
		e := &entries[i]
		key := strings.ToLower(strings.TrimSpace(e.Name))
		if key == "" {
			return nil, fmt.Errorf("entry %d: empty name", i+1)
		}
		if _, dup := c.byName[key]; dup {
			return nil, fmt.Errorf("entry %d: duplicate name %q", i+1, e.Name)
		}
		c.byName[key] = e
	}
	return c, nil
}

// Len returns the number of entries.
func (c *Catalog) Len() int {
	if c == nil {
		return 0
	}
	return len(c.byName)
}

// Lookup finds the entry of database.schema.table: first by the full name,
// then schema.table, then table alone. Names compare case-insensitively.
func (c *Catalog) Lookup(database, schema, table string) (*CatalogEntry, bool) {
	if c == nil || len(c.byName) == 0 {
		return nil, false
	}
	for _, k := range []string{database + "." + schema + "." + table, schema + "." + table, table} {
		if e, ok := c.byName[strings.ToLower(k)]; ok {
			return e, true
		}
	}
	return nil, false
}

// PIIColumns returns the columns flagged pii: true, as the entry's name
// (table, schema.table or database.schema.table) + "." + the column, sorted.
func (c *Catalog) PIIColumns() []string {
	if c == nil {
		return nil
	}
	var out []string
	for _, e := range c.byName {
		for _, col := range e.Columns {
			if col.PII {
				out = append(out, strings.TrimSpace(e.Name)+"."+col.Name)
			}
		}
	}
	sort.Strings(out)
	return out
}

// ownerURN turns a catalog owner into an OpenLineage owner name:
// "a@b" → "email:a@b"; a value that already has a "kind:" prefix is kept;
// anything else → "team:<value>".
func ownerURN(o string) string {
	o = strings.TrimSpace(o)
	switch {
	case o == "":
		return ""
	case strings.Contains(o, "@") && !strings.HasPrefix(o, "email:"):
		return "email:" + o
	case strings.Contains(o, ":"):
		return o
	default:
		return "team:" + o
	}
}
