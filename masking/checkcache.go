package masking

import (
	"context"
	"errors"
)

// Generational is a Catalog whose answers can be kept: Generation changes
// whenever an answer it gave may change (its cache was emptied). A
// CheckCache keeps nothing for a catalog that is not one.
type Generational interface {
	Generation() uint64
}

// CheckCache remembers Check's answers for one session, so a statement
// run again (with other constants, as simple-protocol clients send them)
// is not parsed and analysed again. Statements are keyed by normalize (the
// text with the contents of its literals replaced), or by their exact text
// when normalize is unsure or when the answer read a constant's value.
//
// An answer is kept only when it is exactly what Check would answer again:
// an allow or a *Refusal (not a parse or catalog error), under the same
// Set and catalog, while the catalog's Generation has not changed, and
// only if every catalog lookup the analysis made found something (the
// catalog asks again about a relation it did not find: it may have been
// created since).
//
// Memory is bounded (maxCheckEntries answers, maxCheckBytes of keys; then
// it starts over). Not safe for concurrent use.
type CheckCache struct {
	set     *Set
	cat     Catalog
	gen     uint64
	answers map[string]error // nil: allowed
	bytes   int
}

const (
	maxCheckEntries = 256
	maxCheckBytes   = 256 << 10
	maxCheckSQL     = 16 << 10 // longer statements are not kept
)

// Lookup returns the kept answer for sql under s and cat, if there is one.
func (c *CheckCache) Lookup(s *Set, cat Catalog, sql string) (err error, ok bool) {
	g, kept := cat.(Generational)
	if !kept || c.answers == nil || c.set != s || c.cat != cat || c.gen != g.Generation() {
		return nil, false
	}
	if key, norm := normalize(sql); norm {
		if err, ok := c.answers["n"+key]; ok {
			return err, true
		}
	}
	err, ok = c.answers["x"+sql]
	return err, ok
}

// Check is Set.Check with the answers kept: Lookup, or else s.Check (ctx
// bounds its catalog lookups) and the answer kept when it may be.
func (c *CheckCache) Check(ctx context.Context, s *Set, cat Catalog, sql string) error {
	if err, ok := c.Lookup(s, cat, sql); ok {
		return err
	}
	g, keep := cat.(Generational)
	if !keep || len(sql) > maxCheckSQL {
		return s.Check(ctx, cat, sql)
	}
	gen := g.Generation() // before the lookups: a change during them is a change
	rec := &recordingCatalog{Catalog: cat}
	err, literal := s.check(ctx, rec, sql)
	var r *Refusal
	if rec.missed || (err != nil && !errors.As(err, &r)) {
		return err
	}
	key := "x" + sql
	if n, norm := normalize(sql); norm && !literal {
		key = "n" + n
	}
	if c.answers == nil || c.set != s || c.cat != cat || c.gen != gen ||
		len(c.answers) >= maxCheckEntries || c.bytes+len(key) > maxCheckBytes {
		c.set, c.cat, c.gen, c.answers, c.bytes = s, cat, gen, make(map[string]error), 0
	}
	c.answers[key] = err
	c.bytes += len(key)
	return err
}

// Len returns how many answers are kept.
func (c *CheckCache) Len() int { return len(c.answers) }

// recordingCatalog notes whether a lookup found nothing.
type recordingCatalog struct {
	Catalog
	missed bool
}

func (r *recordingCatalog) RelationsNamed(ctx context.Context, schema, name string) ([]*Relation, error) {
	rs, err := r.Catalog.RelationsNamed(ctx, schema, name)
	if err == nil && len(rs) == 0 {
		r.missed = true
	}
	return rs, err
}

func (r *recordingCatalog) Relation(ctx context.Context, oid uint32) (*Relation, error) {
	rel, err := r.Catalog.Relation(ctx, oid)
	if err == nil && rel == nil {
		r.missed = true
	}
	return rel, err
}

// ResolveCache remembers Resolve's answers for one session's results, by
// the RowDescription they were resolved from (its exact bytes), on the
// same terms as CheckCache: under the same Set and catalog, while the
// catalog's Generation has not changed, and only when every relation the
// resolution looked up was found. At most maxResolveEntries answers (then
// it starts over). Not safe for concurrent use; a Columns it returns is
// shared by every result set with that description.
type ResolveCache struct {
	set     *Set
	cat     Catalog
	gen     uint64
	answers map[string]*Columns // nil: nothing masked
}

const maxResolveEntries = 64

// Lookup returns the kept answer for the description desc.
func (c *ResolveCache) Lookup(s *Set, cat Catalog, desc []byte) (*Columns, bool) {
	g, kept := cat.(Generational)
	if !kept || c.answers == nil || c.set != s || c.cat != cat || c.gen != g.Generation() {
		return nil, false
	}
	cols, ok := c.answers[string(desc)]
	return cols, ok
}

// Resolve is s.Resolve, its answer kept for desc when it may be.
func (c *ResolveCache) Resolve(ctx context.Context, s *Set, cat Catalog, desc []byte, fields []Field) (*Columns, error) {
	g, keep := cat.(Generational)
	if !keep || len(desc) > maxCheckSQL {
		return s.Resolve(ctx, cat, fields)
	}
	gen := g.Generation()
	rec := &recordingCatalog{Catalog: cat}
	cols, err := s.Resolve(ctx, rec, fields)
	if err != nil || rec.missed {
		return cols, err
	}
	if c.answers == nil || c.set != s || c.cat != cat || c.gen != gen || len(c.answers) >= maxResolveEntries {
		c.set, c.cat, c.gen, c.answers = s, cat, gen, make(map[string]*Columns)
	}
	c.answers[string(desc)] = cols
	return cols, nil
}
