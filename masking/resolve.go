package masking

import (
	"context"
	"errors"
)

// Field is what RowDescription says of one result column.
type Field struct {
	TableOID uint32 // 0: not a plain column of a table or view
	Attnum   int16
	TypeOID  uint32
	Format   int16 // 0 text, 1 binary
}

// Resolve says how each result column is masked, from its table OID and
// attribute number: a column of a table (or of a table it inherits from)
// that a rule names, a view's plain output of one. A view's output computed
// from a masked column (which Check refuses to read) is NULL, as is every
// column of a view Check refuses whole: if such a row arrives anyway, no
// clear value leaves. It returns nil when nothing is masked.
func (s *Set) Resolve(ctx context.Context, cat Catalog, fields []Field) (*Columns, error) {
	var cols *Columns
	views := map[uint32]map[string]colClass{}
	refused := map[uint32]bool{}
	for i, f := range fields {
		if f.TableOID == 0 || f.Attnum <= 0 {
			continue
		}
		rel, err := cat.Relation(ctx, f.TableOID)
		if err != nil {
			return nil, err
		}
		if rel == nil || int(f.Attnum) > len(rel.Columns) {
			continue
		}
		col := rel.Columns[f.Attnum-1]
		name := rel.Schema + "." + rel.Name + "." + col
		m := s.Lookup(rel.Schema, rel.Name, col)
		for _, anc := range rel.Ancestors {
			if m == None {
				m = s.Lookup(anc[0], anc[1], col)
			}
		}
		if m == None && (rel.Kind == 'v' || rel.Kind == 'm') {
			vc, seen := views[rel.OID]
			if !seen && !refused[rel.OID] {
				a := &analyzer{ctx: ctx, set: s, cat: cat}
				vc, err = a.viewColumns(rel)
				var r *Refusal
				switch {
				case errors.As(err, &r):
					refused[rel.OID] = true
				case err != nil:
					return nil, err
				}
				views[rel.OID] = vc
			}
			if refused[rel.OID] {
				m = Null
			} else if c, ok := vc[col]; ok {
				m, name = c.method, c.name
				if c.tainted {
					m = Null
				}
			}
		}
		if m == None {
			continue
		}
		if cols == nil {
			cols = &Columns{set: s, cols: make([]ColumnMask, len(fields))}
		}
		cols.cols[i] = ColumnMask{Name: name, Method: m, Type: f.TypeOID, Binary: f.Format == 1}
	}
	return cols, nil
}
