package masking

import (
	"context"
	"errors"
	"fmt"

	"github.com/ofitec/pgproxy/internal/glob"
	"github.com/ofitec/pgproxy/internal/sqlscan"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// Refusal is a statement a masked session may not run (42501). Reason is
// the label of pgproxy_masking_refusals_total: expression, where, join,
// group_by, having, order_by, distinct, window, limit, subquery, cte,
// set_operation, whole_row, returning, view, function, copy, statement.
type Refusal struct {
	Column   string // the masked column (schema.table.column); "" for a function or statement
	Function string // the function refused, if that is the reason
	Reason   string
	Message  string
}

func (r *Refusal) Error() string { return r.Message }

// ErrParse wraps the parser's error for a statement PostgreSQL rejects too.
var ErrParse = errors.New("syntax error")

// maxViewDepth bounds views over views.
const maxViewDepth = 8

var reasonText = map[string]string{
	"expression": "used in an expression", "where": "used in WHERE", "join": "used in a join condition",
	"group_by": "used in GROUP BY", "having": "used in HAVING", "order_by": "used in ORDER BY",
	"distinct": "used in DISTINCT", "window": "used in a window", "limit": "used in LIMIT/OFFSET",
	"subquery": "in a subquery's result", "cte": "in a WITH query", "set_operation": "in a UNION/INTERSECT/EXCEPT",
	"whole_row": "inside a whole-row value", "returning": "used in RETURNING", "view": "computed by a view",
	"values": "used in VALUES", "into": "copied by SELECT INTO", "statement": "read by a statement that stores or sends it",
}

// Check parses sql (one or more statements) with PostgreSQL's parser and
// returns a *Refusal if any statement would let a masked column leave the
// server other than as a plain output column of a top-level SELECT (which
// the proxy masks in the result). Views are read through cat; so are
// functions, which are refused unless PostgreSQL's own (and not one that
// runs SQL or reads files) or allow-listed. A statement the parser rejects
// returns the parser's error: PostgreSQL would reject it too.
func (s *Set) Check(ctx context.Context, cat Catalog, sql string) error {
	err, _ := s.check(ctx, cat, sql)
	return err
}

// check is Check; literal says the answer depends on the value of a
// constant (see normalize).
func (s *Set) check(ctx context.Context, cat Catalog, sql string) (err error, literal bool) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrParse, err), false
	}
	a := &analyzer{ctx: ctx, set: s, cat: cat}
	for _, raw := range tree.Stmts {
		if raw.Stmt == nil {
			continue
		}
		if err := a.statement(nodeMsg(raw.Stmt), nil, true); err != nil {
			return err, a.literal
		}
	}
	return nil, a.literal
}

type analyzer struct {
	ctx   context.Context
	set   *Set
	cat   Catalog
	depth int // views being expanded
	// view: analysing a view's definition: its top-level targets are
	// classified (outputs) instead of refused.
	view    bool
	outputs []colClass
	// literal: a decision read the value of a constant (CheckCache keys
	// such a statement by its exact text).
	literal bool
}

// colClass is what a column of a relation in scope is to the masking.
type colClass struct {
	name    string // schema.table.column of the masked column it is or comes from
	method  Method // plain masked column (a view's plain output of one, too)
	tainted bool   // computed from a masked column (a view's output): may not be read at all
}

type entry struct {
	name, schema string
	cols         map[string]colClass
	children     []*entry
}

type scope struct {
	parent  *scope
	entries []*entry
	ctes    map[string]bool
}

func (sc *scope) isCTE(name string) bool {
	for ; sc != nil; sc = sc.parent {
		if sc.ctes[name] {
			return true
		}
	}
	return false
}

func flat(es []*entry, out []*entry) []*entry {
	for _, e := range es {
		out = append(out, e)
		out = flat(e.children, out)
	}
	return out
}

func (a *analyzer) refuseCol(c colClass, reason string) error {
	if c.tainted && reason != "view" {
		reason = "view"
	}
	return &Refusal{Column: c.name, Reason: reason, Message: fmt.Sprintf(
		"column %s is masked for user %s: it may appear only as a plain output column (masking.rules[%d]: %s)",
		c.name, a.set.User, a.set.Rule, reasonText[reason])}
}

func (a *analyzer) refuseStmt(what string) error {
	return &Refusal{Reason: "statement", Message: fmt.Sprintf(
		"%s is not allowed for user %s: the proxy cannot see which masked columns it reads (masking.rules[%d])",
		what, a.set.User, a.set.Rule)}
}

// statement checks one statement; top says its SELECT output reaches the
// client as rows the proxy masks.
func (a *analyzer) statement(m proto.Message, sc *scope, top bool) error {
	switch n := m.(type) {
	case *pg.SelectStmt:
		return a.selectStmt(n, sc, top, "subquery")
	case *pg.DeclareCursorStmt:
		return a.statement(nodeMsg(n.Query), sc, top)
	case *pg.PrepareStmt:
		return a.statement(nodeMsg(n.Query), sc, top)
	case *pg.ExplainStmt:
		return a.statement(nodeMsg(n.Query), sc, top)
	case *pg.CopyStmt:
		return a.copyStmt(n)
	case *pg.InsertStmt:
		inner, err := a.with(n.WithClause, sc)
		if err != nil {
			return err
		}
		if n.SelectStmt != nil {
			if sel := n.SelectStmt.GetSelectStmt(); sel != nil {
				if err := a.selectStmt(sel, inner, false, "statement"); err != nil {
					return err
				}
			} else if err := a.walk(nodeMsg(n.SelectStmt), inner, "statement"); err != nil {
				return err
			}
		}
		tsc, err := a.relScope(n.Relation, inner)
		if err != nil {
			return err
		}
		if n.OnConflictClause != nil {
			if err := a.walk(n.OnConflictClause, tsc, "where"); err != nil {
				return err
			}
		}
		return a.walkList(n.ReturningList, tsc, "returning")
	case *pg.UpdateStmt:
		inner, err := a.with(n.WithClause, sc)
		if err != nil {
			return err
		}
		tsc, err := a.relScope(n.Relation, inner)
		if err != nil {
			return err
		}
		if err := a.from(n.FromClause, tsc); err != nil {
			return err
		}
		for _, t := range n.TargetList {
			if rt := t.GetResTarget(); rt != nil {
				if err := a.walk(nodeMsg(rt.Val), tsc, "statement"); err != nil {
					return err
				}
			}
		}
		if err := a.walk(nodeMsg(n.WhereClause), tsc, "where"); err != nil {
			return err
		}
		return a.walkList(n.ReturningList, tsc, "returning")
	case *pg.DeleteStmt:
		inner, err := a.with(n.WithClause, sc)
		if err != nil {
			return err
		}
		tsc, err := a.relScope(n.Relation, inner)
		if err != nil {
			return err
		}
		if err := a.from(n.UsingClause, tsc); err != nil {
			return err
		}
		if err := a.walk(nodeMsg(n.WhereClause), tsc, "where"); err != nil {
			return err
		}
		return a.walkList(n.ReturningList, tsc, "returning")
	case *pg.MergeStmt:
		inner, err := a.with(n.WithClause, sc)
		if err != nil {
			return err
		}
		tsc, err := a.relScope(n.Relation, inner)
		if err != nil {
			return err
		}
		if err := a.from([]*pg.Node{n.SourceRelation}, tsc); err != nil {
			return err
		}
		if err := a.walk(nodeMsg(n.JoinCondition), tsc, "join"); err != nil {
			return err
		}
		if err := a.walkList(n.MergeWhenClauses, tsc, "statement"); err != nil {
			return err
		}
		return a.walkList(n.ReturningList, tsc, "returning")
	case *pg.CreateTableAsStmt:
		if sel := n.Query.GetSelectStmt(); sel != nil {
			return a.selectStmt(sel, sc, false, "into")
		}
		return a.statement(nodeMsg(n.Query), sc, false)
	case *pg.ViewStmt:
		if sel := n.Query.GetSelectStmt(); sel != nil {
			return a.selectStmt(sel, sc, false, "statement")
		}
		return a.statement(nodeMsg(n.Query), sc, false)
	case *pg.DoStmt:
		return a.refuseStmt("DO")
	case *pg.CreateFunctionStmt:
		if n.IsProcedure {
			return a.refuseStmt("CREATE PROCEDURE")
		}
		return a.refuseStmt("CREATE FUNCTION")
	case nil:
		return nil
	}
	return a.walk(m, sc, "statement")
}

func (a *analyzer) copyStmt(n *pg.CopyStmt) error {
	if n.IsFrom {
		return nil // writes; reads nothing out
	}
	if n.Query != nil {
		// COPY's rows are not rows the proxy masks: nothing masked may be in them.
		return a.statement(nodeMsg(n.Query), nil, false)
	}
	if n.Relation == nil {
		return nil
	}
	cols, err := a.relation(n.Relation.Schemaname, n.Relation.Relname)
	if err != nil {
		return err
	}
	listed := map[string]bool{}
	for _, c := range n.Attlist {
		listed[c.GetString_().GetSval()] = true
	}
	for col, c := range cols {
		if len(listed) == 0 || listed[col] {
			return &Refusal{Column: c.name, Reason: "copy", Message: fmt.Sprintf(
				"COPY TO of %s is not allowed for user %s: column %s is masked (masking.rules[%d])",
				relName(n.Relation), a.set.User, c.name, a.set.Rule)}
		}
	}
	return nil
}

func relName(rv *pg.RangeVar) string {
	if rv.Schemaname != "" {
		return rv.Schemaname + "." + rv.Relname
	}
	return rv.Relname
}

// relScope is a scope holding the target relation of INSERT/UPDATE/DELETE/MERGE.
func (a *analyzer) relScope(rv *pg.RangeVar, parent *scope) (*scope, error) {
	sc := &scope{parent: parent}
	if rv == nil {
		return sc, nil
	}
	e, err := a.rangeVar(rv, sc)
	if err != nil {
		return nil, err
	}
	sc.entries = append(sc.entries, e)
	return sc, nil
}

// with checks a WITH clause's queries (none may carry a masked column out:
// PostgreSQL would, but the proxy would not know which output it became)
// and returns the scope its names are visible in.
func (a *analyzer) with(w *pg.WithClause, parent *scope) (*scope, error) {
	if w == nil {
		return parent, nil
	}
	sc := &scope{parent: parent, ctes: map[string]bool{}}
	for _, c := range w.Ctes {
		cte := c.GetCommonTableExpr()
		if cte == nil {
			continue
		}
		if w.Recursive {
			sc.ctes[cte.Ctename] = true
		}
		q := nodeMsg(cte.Ctequery)
		var err error
		if sel, ok := q.(*pg.SelectStmt); ok {
			err = a.selectStmt(sel, sc, false, "cte")
		} else {
			err = a.statement(q, sc, false)
		}
		if err != nil {
			return nil, err
		}
		sc.ctes[cte.Ctename] = true
	}
	return sc, nil
}

type target struct {
	alias  string
	masked *colClass // a plain masked column
	star   bool      // a star over something masked
}

// selectStmt checks a SELECT. At top level its plain column targets may be
// masked columns; anywhere else (a subquery, a CTE, an INSERT's source) a
// masked column is refused with reason inner.
func (a *analyzer) selectStmt(n *pg.SelectStmt, parent *scope, top bool, inner string) error {
	if n == nil {
		return nil
	}
	if n.IntoClause != nil {
		top, inner = false, "into"
	}
	sc, err := a.with(n.WithClause, parent)
	if err != nil {
		return err
	}
	if n.Op != pg.SetOperation_SETOP_NONE {
		if err := a.selectStmt(n.Larg, sc, false, "set_operation"); err != nil {
			return err
		}
		if err := a.selectStmt(n.Rarg, sc, false, "set_operation"); err != nil {
			return err
		}
		if err := a.sortItems(n.SortClause, sc, nil, "order_by"); err != nil {
			return err
		}
		return a.limits(n, sc)
	}
	if len(n.ValuesLists) > 0 {
		return a.walkList(n.ValuesLists, sc, "values")
	}
	fsc := &scope{parent: sc}
	if err := a.from(n.FromClause, fsc); err != nil {
		return err
	}
	var targets []target
	for _, t := range n.TargetList {
		rt := t.GetResTarget()
		if rt == nil {
			continue
		}
		tg, err := a.target(rt, fsc, top, inner)
		if err != nil {
			return err
		}
		targets = append(targets, tg)
	}
	if err := a.walk(nodeMsg(n.WhereClause), fsc, "where"); err != nil {
		return err
	}
	if len(n.DistinctClause) > 0 {
		plain := len(n.DistinctClause) == 1 && nodeMsg(n.DistinctClause[0]) == nil
		if plain {
			for _, t := range targets {
				if t.masked != nil {
					return a.refuseCol(*t.masked, "distinct")
				}
				if t.star {
					return a.refuseCol(a.anyMasked(fsc), "distinct")
				}
			}
		} else if err := a.sortItems(n.DistinctClause, fsc, targets, "distinct"); err != nil {
			return err
		}
	}
	if err := a.sortItems(n.GroupClause, fsc, targets, "group_by"); err != nil {
		return err
	}
	if err := a.walk(nodeMsg(n.HavingClause), fsc, "having"); err != nil {
		return err
	}
	if err := a.walkList(n.WindowClause, fsc, "window"); err != nil {
		return err
	}
	if err := a.sortItems(n.SortClause, fsc, targets, "order_by"); err != nil {
		return err
	}
	return a.limits(n, fsc)
}

func (a *analyzer) limits(n *pg.SelectStmt, sc *scope) error {
	if err := a.walk(nodeMsg(n.LimitCount), sc, "limit"); err != nil {
		return err
	}
	return a.walk(nodeMsg(n.LimitOffset), sc, "limit")
}

// anyMasked is some masked column in sc's innermost entries (for messages).
func (a *analyzer) anyMasked(sc *scope) colClass {
	for _, e := range flat(sc.entries, nil) {
		for _, c := range e.cols {
			return c
		}
	}
	return colClass{name: "?"}
}

// sortItems checks ORDER BY, GROUP BY and DISTINCT ON items, including
// those naming a target by position or output name.
func (a *analyzer) sortItems(items []*pg.Node, sc *scope, targets []target, reason string) error {
	for _, it := range items {
		m := nodeMsg(it)
		if sb, ok := m.(*pg.SortBy); ok {
			m = nodeMsg(sb.Node)
		}
		switch x := m.(type) {
		case *pg.A_Const:
			a.literal = true // ORDER BY 2 is the second output column
			if iv, ok := x.Val.(*pg.A_Const_Ival); ok && iv.Ival != nil {
				k := int(iv.Ival.Ival)
				for i, t := range targets {
					if t.star {
						return a.refuseCol(a.anyMasked(sc), reason) // positions past a star are not known
					}
					if i == k-1 && t.masked != nil {
						return a.refuseCol(*t.masked, reason)
					}
				}
			}
		case *pg.ColumnRef:
			if len(x.Fields) == 1 {
				name := x.Fields[0].GetString_().GetSval()
				for _, t := range targets {
					if t.masked != nil && t.alias == name {
						return a.refuseCol(*t.masked, reason)
					}
				}
			}
		}
		if err := a.walk(m, sc, reason); err != nil {
			return err
		}
	}
	return nil
}

// target checks one target of a SELECT.
func (a *analyzer) target(rt *pg.ResTarget, sc *scope, top bool, inner string) (target, error) {
	tg := target{alias: rt.Name}
	cr := rt.Val.GetColumnRef()
	if cr == nil {
		if a.view && top {
			// A view's computed output: tainted if it reads a masked column.
			err := a.walk(nodeMsg(rt.Val), sc, "expression")
			var r *Refusal
			if errors.As(err, &r) && r.Column != "" {
				a.outputs = append(a.outputs, colClass{name: r.Column, tainted: true})
				return tg, nil
			}
			a.outputs = append(a.outputs, colClass{})
			return tg, err
		}
		return tg, a.walk(nodeMsg(rt.Val), sc, "expression")
	}
	fields := cr.Fields
	if len(fields) > 0 && fields[len(fields)-1].GetAStar() != nil {
		es := a.starEntries(fields[:len(fields)-1], sc)
		for _, e := range es {
			for _, c := range e.cols {
				if !top || c.tainted {
					return tg, a.refuseCol(c, pick(top, "view", inner))
				}
				tg.star = true
			}
		}
		if a.view && top {
			a.outputs = append(a.outputs, colClass{}) // pg_get_viewdef expands stars; not expected
		}
		return tg, nil
	}
	c, whole, err := a.resolve(fields, sc)
	if err != nil {
		return tg, err
	}
	switch {
	case whole != nil:
		return tg, a.refuseCol(*whole, "whole_row")
	case c == nil:
		if a.view && top {
			a.outputs = append(a.outputs, colClass{})
		}
		return tg, nil
	case c.tainted:
		if a.view && top {
			a.outputs = append(a.outputs, *c)
			return tg, nil
		}
		return tg, a.refuseCol(*c, "view")
	case !top:
		return tg, a.refuseCol(*c, inner)
	}
	if a.view {
		a.outputs = append(a.outputs, *c)
	}
	tg.masked = c
	return tg, nil
}

func pick(cond bool, a, b string) string {
	if cond {
		return a
	}
	return b
}

// starEntries are the entries a star (qualified by qual, or not) covers.
func (a *analyzer) starEntries(qual []*pg.Node, sc *scope) []*entry {
	if len(qual) == 0 {
		return flat(sc.entries, nil)
	}
	names := strs(qual)
	for s := sc; s != nil; s = s.parent {
		for _, e := range flat(s.entries, nil) {
			if matchEntry(e, names) {
				return []*entry{e}
			}
		}
	}
	return nil
}

func matchEntry(e *entry, qual []string) bool {
	name := qual[len(qual)-1]
	if e.name != name {
		return false
	}
	if len(qual) >= 2 && e.schema != "" && e.schema != qual[len(qual)-2] {
		return false
	}
	return true
}

func strs(ns []*pg.Node) []string {
	out := make([]string, 0, len(ns))
	for _, n := range ns {
		out = append(out, n.GetString_().GetSval())
	}
	return out
}

// resolve finds what a column reference is: a masked (or tainted) column,
// or a whole-row reference to a relation with masked columns (whole), or
// nothing the masking knows. Unqualified names are resolved
// conservatively: a masked column of that name anywhere in scope.
func (a *analyzer) resolve(fields []*pg.Node, sc *scope) (c *colClass, whole *colClass, err error) {
	names := strs(fields)
	col := names[len(names)-1]
	qual := names[:len(names)-1]
	if len(qual) == 0 {
		for s := sc; s != nil; s = s.parent {
			for _, e := range flat(s.entries, nil) {
				if cc, ok := e.cols[col]; ok {
					return &cc, nil, nil
				}
			}
		}
		// Not a masked column: perhaps a whole-row reference (p, to_json(p)).
		for s := sc; s != nil; s = s.parent {
			for _, e := range flat(s.entries, nil) {
				if e.name == col {
					for _, cc := range e.cols {
						return nil, &cc, nil
					}
				}
			}
		}
		return nil, nil, nil
	}
	for s := sc; s != nil; s = s.parent {
		for _, e := range flat(s.entries, nil) {
			if matchEntry(e, qual) {
				if cc, ok := e.cols[col]; ok {
					return &cc, nil, nil
				}
				return nil, nil, nil
			}
		}
	}
	// a.b where a is no relation in scope: a composite column's field, or
	// schema.table.column of a relation in scope by its full name.
	for s := sc; s != nil; s = s.parent {
		for _, e := range flat(s.entries, nil) {
			if e.name == qual[0] {
				for _, cc := range e.cols {
					return nil, &cc, nil
				}
			}
		}
	}
	return nil, nil, nil
}

// from adds a FROM list's items to sc, checking what they compute.
func (a *analyzer) from(items []*pg.Node, sc *scope) error {
	for _, it := range items {
		e, err := a.fromItem(nodeMsg(it), sc)
		if err != nil {
			return err
		}
		if e != nil {
			sc.entries = append(sc.entries, e)
		}
	}
	return nil
}

func (a *analyzer) fromItem(m proto.Message, sc *scope) (*entry, error) {
	switch n := m.(type) {
	case *pg.RangeVar:
		return a.rangeVar(n, sc)
	case *pg.RangeSubselect:
		sel := n.Subquery.GetSelectStmt()
		if sel != nil {
			if err := a.selectStmt(sel, sc, false, "subquery"); err != nil {
				return nil, err
			}
		}
		return &entry{name: n.Alias.GetAliasname()}, nil
	case *pg.JoinExpr:
		l, err := a.fromItem(nodeMsg(n.Larg), sc)
		if err != nil {
			return nil, err
		}
		r, err := a.fromItem(nodeMsg(n.Rarg), sc)
		if err != nil {
			return nil, err
		}
		j := &entry{name: n.Alias.GetAliasname()}
		for _, side := range []*entry{l, r} {
			if side != nil {
				j.children = append(j.children, side)
			}
		}
		j.cols = map[string]colClass{}
		for _, e := range flat(j.children, nil) {
			for k, v := range e.cols {
				j.cols[k] = v
			}
		}
		if n.IsNatural && len(j.cols) > 0 {
			return nil, a.refuseCol(a.anyMasked(&scope{entries: j.children}), "join")
		}
		for _, u := range n.UsingClause {
			if c, ok := j.cols[u.GetString_().GetSval()]; ok {
				return nil, a.refuseCol(c, "join")
			}
		}
		jsc := &scope{parent: sc, entries: append(append([]*entry(nil), sc.entries...), j.children...)}
		if err := a.walk(nodeMsg(n.Quals), jsc, "join"); err != nil {
			return nil, err
		}
		if j.name == "" {
			j.cols = nil // reachable through its children
		}
		return j, nil
	case *pg.RangeFunction:
		if err := a.walkList(n.Functions, sc, "expression"); err != nil {
			return nil, err
		}
		return &entry{name: n.Alias.GetAliasname()}, nil
	case nil:
		return nil, nil
	}
	if err := a.walk(m, sc, "expression"); err != nil {
		return nil, err
	}
	return nil, nil
}

func (a *analyzer) rangeVar(n *pg.RangeVar, sc *scope) (*entry, error) {
	e := &entry{name: n.Relname, schema: n.Schemaname}
	if n.Alias != nil && n.Alias.Aliasname != "" {
		e.name, e.schema = n.Alias.Aliasname, ""
	}
	if n.Schemaname == "" && sc.isCTE(n.Relname) {
		return e, nil
	}
	cols, err := a.relation(n.Schemaname, n.Relname)
	if err != nil {
		return nil, err
	}
	e.cols = cols
	if n.Alias != nil && len(n.Alias.Colnames) > 0 && len(cols) > 0 {
		// FROM t AS x(a, b): renamed columns; which is which needs the
		// column order: refuse rather than guess.
		for _, c := range cols {
			return nil, a.refuseCol(c, "expression")
		}
	}
	return e, nil
}

// relation returns the masked (and tainted) columns of the relation(s)
// schema.name: by the rules' own names, the tables they inherit from, and
// what their views compute.
func (a *analyzer) relation(schema, name string) (map[string]colClass, error) {
	cols := map[string]colClass{}
	add := func(relSchema, table string) {
		for col, m := range a.set.tableColumns(relSchema, table) {
			if _, ok := cols[col]; !ok {
				s := relSchema
				if s == "" {
					s = a.set.schemaOf(table, col)
				}
				cols[col] = colClass{name: s + "." + table + "." + col, method: m}
			}
		}
	}
	add(schema, name)
	if a.cat == nil {
		return cols, nil
	}
	rels, err := a.cat.RelationsNamed(a.ctx, schema, name)
	if err != nil {
		return nil, err
	}
	for _, r := range rels {
		for _, anc := range r.Ancestors {
			add(anc[0], anc[1])
		}
		if r.Kind == 'v' || r.Kind == 'm' {
			vcols, err := a.viewColumns(r)
			if err != nil {
				return nil, err
			}
			for k, v := range vcols {
				if _, ok := cols[k]; !ok {
					cols[k] = v
				}
			}
		}
	}
	if len(cols) == 0 {
		return nil, nil
	}
	return cols, nil
}

// viewColumns analyses a view's definition: its plain outputs of masked
// columns are masked like them, its outputs computed from masked columns
// are tainted; a view that uses a masked column anywhere else (filters,
// sorts, groups by it) is refused whole.
func (a *analyzer) viewColumns(r *Relation) (map[string]colClass, error) {
	if a.depth >= maxViewDepth {
		return nil, &Refusal{Reason: "view", Message: fmt.Sprintf("view %s.%s nests views too deep to check for user %s (masking.rules[%d])", r.Schema, r.Name, a.set.User, a.set.Rule)}
	}
	tree, err := pg.Parse(r.ViewDef)
	if err != nil || len(tree.Stmts) != 1 {
		return nil, &Refusal{Reason: "view", Message: fmt.Sprintf("view %s.%s cannot be checked for user %s (masking.rules[%d])", r.Schema, r.Name, a.set.User, a.set.Rule)}
	}
	sel := tree.Stmts[0].Stmt.GetSelectStmt()
	if sel == nil {
		return nil, nil
	}
	va := &analyzer{ctx: a.ctx, set: a.set, cat: a.cat, depth: a.depth + 1, view: true}
	if err := va.selectStmt(sel, nil, true, "view"); err != nil {
		var ref *Refusal
		if errors.As(err, &ref) && ref.Column != "" {
			return nil, a.refuseCol(colClass{name: ref.Column}, "view")
		}
		return nil, err
	}
	var cols map[string]colClass
	for i, c := range va.outputs {
		if c.name == "" || i >= len(r.Columns) {
			continue
		}
		if cols == nil {
			cols = map[string]colClass{}
		}
		cols[r.Columns[i]] = c
	}
	return cols, nil
}

// schemaOf names the schema of a masked column matched without one.
func (s *Set) schemaOf(table, column string) string {
	for _, c := range s.cols {
		if c.table == table && c.column == column && c.schema != "" {
			return c.schema
		}
	}
	return "*"
}

func (a *analyzer) walkList(ns []*pg.Node, sc *scope, reason string) error {
	for _, n := range ns {
		if err := a.walk(nodeMsg(n), sc, reason); err != nil {
			return err
		}
	}
	return nil
}

// walk checks an expression (or any other part of a statement): every
// masked column in it is refused with reason; subqueries, functions and
// nested statements are checked on their own terms.
func (a *analyzer) walk(m proto.Message, sc *scope, reason string) error {
	if m == nil {
		return nil
	}
	var err error
	visit := func(x proto.Message) bool {
		if err != nil {
			return false
		}
		switch n := x.(type) {
		case *pg.ColumnRef:
			err = a.colRef(n, sc, reason)
			return false
		case *pg.SelectStmt:
			err = a.selectStmt(n, sc, false, pick(reason == "statement", "statement", "subquery"))
			return false
		case *pg.InsertStmt, *pg.UpdateStmt, *pg.DeleteStmt, *pg.MergeStmt, *pg.CopyStmt:
			err = a.statement(x, sc, false)
			return false
		case *pg.FuncCall:
			err = a.function(n)
			return err == nil
		case *pg.DoStmt, *pg.CreateFunctionStmt:
			err = a.statement(x, sc, false)
			return false
		}
		return true
	}
	sqlscan.Walk(m, visit)
	return err
}

func (a *analyzer) colRef(n *pg.ColumnRef, sc *scope, reason string) error {
	fields := n.Fields
	if len(fields) == 0 {
		return nil
	}
	if fields[len(fields)-1].GetAStar() != nil {
		for _, e := range a.starEntries(fields[:len(fields)-1], sc) {
			for _, c := range e.cols {
				return a.refuseCol(c, "whole_row")
			}
		}
		return nil
	}
	c, whole, err := a.resolve(fields, sc)
	switch {
	case err != nil:
		return err
	case whole != nil:
		return a.refuseCol(*whole, "whole_row")
	case c != nil:
		return a.refuseCol(*c, reason)
	}
	return nil
}

// deniedFunctions are PostgreSQL's own functions that run a query given as
// text or read files or other databases: refused unless allow-listed.
var deniedFunctions = []string{
	"query_to_xml*", "cursor_to_xml*", "table_to_xml*", "schema_to_xml*", "database_to_xml*",
	"query_to_xmlschema", "cursor_to_xmlschema", "table_to_xmlschema", "schema_to_xmlschema", "database_to_xmlschema",
	"ts_stat", "pg_read_file", "pg_read_binary_file", "pg_ls_*", "pg_stat_file", "lo_*", "loread",
	"pg_logical_slot_*", "dblink*", "xpath_table",
}

func (a *analyzer) function(fc *pg.FuncCall) error {
	names := strs(fc.Funcname)
	name := names[len(names)-1]
	schema := ""
	if len(names) >= 2 {
		schema = names[len(names)-2]
	}
	if a.set.allowed(schema, name) {
		return nil
	}
	refuse := func() error {
		full := name
		if schema != "" {
			full = schema + "." + name
		}
		return &Refusal{Function: full, Reason: "function", Message: fmt.Sprintf(
			"function %s is not allowed for user %s: it may read masked columns (masking.rules[%d]; allow it in masking.allow_functions)",
			full, a.set.User, a.set.Rule)}
	}
	for _, d := range deniedFunctions {
		if glob.Match(d, name) {
			return refuse()
		}
	}
	if schema != "" {
		if schema != "pg_catalog" {
			return refuse()
		}
		return nil
	}
	if a.cat == nil {
		return nil
	}
	schemas, err := a.cat.FunctionSchemas(a.ctx, name)
	if err != nil {
		return err
	}
	for _, s := range schemas {
		if s != "pg_catalog" && !a.set.allowed(s, name) {
			return refuse()
		}
	}
	return nil
}

// nodeMsg unwraps a pg.Node to the statement or expression it holds.
func nodeMsg(n *pg.Node) proto.Message {
	if n == nil || n.Node == nil {
		return nil
	}
	m := n.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("node")
	fd := m.WhichOneof(od)
	if fd == nil {
		return nil
	}
	return m.Get(fd).Message().Interface()
}
