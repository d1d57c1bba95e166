package sqlscan

import (
	"fmt"
	"slices"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
)

// TableRef names a table (or view) as written in the SQL: Schema is "" when
// the name was unqualified (the caller decides: "public", or search_path).
// A catalog (database) prefix, when written, is dropped.
type TableRef struct {
	Schema string
	Name   string
}

// String returns schema.name, or name when unqualified.
func (t TableRef) String() string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "." + t.Name
}

// Tables returns the tables sql reads and the tables it writes, each list
// sorted (by schema, then name) and without duplicates (a table both read and
// written appears in both). A multi-statement string gives the union over its
// statements. Names of common table expressions are not tables. Statements
// that touch no table data (SET, BEGIN, SHOW, CREATE INDEX, ...) contribute
// nothing.
//
// What counts (OPENLINEAGE.md):
//
//	SELECT (CTEs, subqueries, joins)           reads: tables read
//	INSERT ... SELECT / VALUES                  reads: source tables      writes: target
//	CREATE TABLE AS, SELECT INTO, CREATE VIEW,
//	CREATE MATERIALIZED VIEW                    reads: query tables       writes: new relation
//	REFRESH MATERIALIZED VIEW                   writes: the view (its query is not in the SQL)
//	UPDATE ... FROM, DELETE ... USING           reads: FROM/USING/subquery tables  writes: target
//	MERGE INTO t USING s                        reads: s and subqueries   writes: t
//	COPY t FROM / COPY t TO / COPY (q) TO       writes t / reads t / reads q's tables
//	TRUNCATE, DROP TABLE|VIEW|MATERIALIZED VIEW|FOREIGN TABLE, CREATE TABLE
//	                                            writes: targets
//
// Data-modifying CTEs (WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b
// SELECT * FROM d) write every table they modify.
//
// An unparsable string returns an error wrapping pg_query's.
func Tables(sql string) (reads, writes []TableRef, err error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return nil, nil, fmt.Errorf("sqlscan: parse: %w", err)
	}
	s := &tableScanner{}
	for _, raw := range tree.GetStmts() {
		s.statement(raw.GetStmt())
	}
	sortRefs(s.reads)
	sortRefs(s.writes)
	return s.reads, s.writes, nil
}

func sortRefs(l []TableRef) {
	slices.SortFunc(l, func(a, b TableRef) int {
		if c := strings.Compare(a.Schema, b.Schema); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
}

type tableScanner struct {
	reads, writes []TableRef
	ctes          map[string]bool // CTE names of the current statement
}

func (s *tableScanner) statement(n *pg.Node) {
	switch n.GetNode().(type) {
	case *pg.Node_SelectStmt, *pg.Node_InsertStmt, *pg.Node_UpdateStmt,
		*pg.Node_DeleteStmt, *pg.Node_MergeStmt, *pg.Node_CreateTableAsStmt,
		*pg.Node_RefreshMatViewStmt, *pg.Node_CopyStmt, *pg.Node_TruncateStmt,
		*pg.Node_DropStmt, *pg.Node_ViewStmt, *pg.Node_CreateStmt,
		*pg.Node_DeclareCursorStmt:
	default:
		// Utility statements (SET, BEGIN, CREATE INDEX, GRANT, VACUUM, ...)
		// name relations without reading or writing their data.
		return
	}
	// CTE names are collected for the whole statement: a CTE shadows a table
	// of the same unqualified name in its scope; outside that scope the
	// shadowing would be wrong, but a statement that names both a CTE x and a
	// table x is rare enough to accept the miss.
	s.ctes = map[string]bool{}
	walk(n, func(m proto.Message) bool {
		if cte, ok := m.(*pg.CommonTableExpr); ok {
			s.ctes[cte.GetCtename()] = true
		}
		return true
	})
	walk(n, s.visit)
}

func (s *tableScanner) visit(m proto.Message) bool {
	switch n := m.(type) {
	case *pg.RangeVar:
		if n.GetSchemaname() == "" && s.ctes[n.GetRelname()] {
			return false
		}
		s.reads = addRef(s.reads, ref(n))
		return false
	case *pg.IntoClause: // SELECT INTO, CREATE TABLE AS, CREATE MATERIALIZED VIEW
		s.write(n.GetRel())
		return false
	case *pg.InsertStmt:
		s.write(n.GetRelation())
		s.walkAll(n.GetWithClause(), n.GetSelectStmt(), n.GetOnConflictClause())
		s.walkNodes(n.GetReturningList())
		return false
	case *pg.UpdateStmt:
		s.write(n.GetRelation())
		s.walkAll(n.GetWithClause(), n.GetWhereClause())
		s.walkNodes(n.GetTargetList())
		s.walkNodes(n.GetFromClause())
		s.walkNodes(n.GetReturningList())
		return false
	case *pg.DeleteStmt:
		s.write(n.GetRelation())
		s.walkAll(n.GetWithClause(), n.GetWhereClause())
		s.walkNodes(n.GetUsingClause())
		s.walkNodes(n.GetReturningList())
		return false
	case *pg.MergeStmt:
		s.write(n.GetRelation())
		s.walkAll(n.GetWithClause(), n.GetSourceRelation(), n.GetJoinCondition())
		s.walkNodes(n.GetMergeWhenClauses())
		s.walkNodes(n.GetReturningList())
		return false
	case *pg.CopyStmt:
		if rel := n.GetRelation(); rel != nil {
			if n.GetIsFrom() {
				s.write(rel)
			} else {
				s.reads = addRef(s.reads, ref(rel))
			}
		}
		s.walkAll(n.GetQuery(), n.GetWhereClause())
		return false
	case *pg.RefreshMatViewStmt:
		s.write(n.GetRelation())
		return false
	case *pg.ViewStmt:
		s.write(n.GetView())
		s.walkAll(n.GetQuery())
		return false
	case *pg.CreateStmt:
		s.write(n.GetRelation())
		return false
	case *pg.TruncateStmt:
		for _, r := range n.GetRelations() {
			s.write(r.GetRangeVar())
		}
		return false
	case *pg.DropStmt:
		switch n.GetRemoveType() {
		case pg.ObjectType_OBJECT_TABLE, pg.ObjectType_OBJECT_VIEW,
			pg.ObjectType_OBJECT_MATVIEW, pg.ObjectType_OBJECT_FOREIGN_TABLE:
			for _, o := range n.GetObjects() {
				if t, ok := dropName(o); ok {
					s.writes = addRef(s.writes, t)
				}
			}
		}
		return false
	case *pg.LockingClause:
		// FOR UPDATE OF a: a is an alias or a table already in FROM.
		return false
	}
	return true
}

func (s *tableScanner) write(rv *pg.RangeVar) {
	if rv == nil || rv.GetRelname() == "" {
		return
	}
	s.writes = addRef(s.writes, ref(rv))
}

func (s *tableScanner) walkAll(ms ...proto.Message) {
	for _, m := range ms {
		if m == nil {
			continue
		}
		walk(m, s.visit)
	}
}

func (s *tableScanner) walkNodes(ns []*pg.Node) {
	for _, n := range ns {
		walk(n, s.visit)
	}
}

func ref(rv *pg.RangeVar) TableRef {
	return TableRef{Schema: rv.GetSchemaname(), Name: rv.GetRelname()}
}

// dropName turns DROP's object name (a list of String nodes:
// [catalog.][schema.]name) into a TableRef.
func dropName(o *pg.Node) (TableRef, bool) {
	items := o.GetList().GetItems()
	if len(items) == 0 {
		return TableRef{}, false
	}
	parts := make([]string, 0, len(items))
	for _, it := range items {
		parts = append(parts, it.GetString_().GetSval())
	}
	t := TableRef{Name: parts[len(parts)-1]}
	if len(parts) >= 2 {
		t.Schema = parts[len(parts)-2]
	}
	return t, t.Name != ""
}

func addRef(list []TableRef, t TableRef) []TableRef {
	for _, x := range list {
		if x == t {
			return list
		}
	}
	return append(list, t)
}

// Normalize returns sql with its literals replaced by placeholders ($1, $2,
// ...), as pg_stat_statements shows queries: the shape of the query without
// the values it carried (no PII in lineage catalogs). Comments are kept.
func Normalize(sql string) (string, error) {
	out, err := pg.Normalize(sql)
	if err != nil {
		return "", fmt.Errorf("sqlscan: normalize: %w", err)
	}
	return out, nil
}

// Split returns the statements of a multi-statement string, each without its
// trailing ';' and with the comments that precede it (a sqlcommenter tag
// written before a statement stays with it; one written after a ';' goes
// with the next statement). Empty statements are dropped.
func Split(sql string) ([]string, error) {
	stmts, err := pg.SplitWithParser(sql, true)
	if err != nil {
		return nil, fmt.Errorf("sqlscan: split: %w", err)
	}
	out := stmts[:0]
	for _, s := range stmts {
		if strings.TrimSpace(s) != "" {
			out = append(out, s)
		}
	}
	return out, nil
}
