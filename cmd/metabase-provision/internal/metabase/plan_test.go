package metabase

import (
	"slices"
	"testing"
)

func TestNativeQuery(t *testing.T) {
	cases := []struct {
		name  string
		dq    map[string]any
		db    int
		typ   string
		query string
	}{
		{"legacy", map[string]any{"database": 3.0, "type": "native", "native": map[string]any{"query": "select 1"}}, 3, "native", "select 1"},
		{"mbql 5", map[string]any{"lib/type": "mbql/query", "database": 4.0, "stages": []any{
			map[string]any{"lib/type": "mbql.stage/native", "native": "select 2"}}}, 4, "native", "select 2"},
		{"mbql 5 structured", map[string]any{"database": 4.0, "stages": []any{map[string]any{"lib/type": "mbql.stage/mbql"}}}, 4, "", ""},
		{"structured", map[string]any{"database": 1.0, "type": "query", "query": map[string]any{}}, 1, "query", ""},
		{"empty", nil, 0, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, typ, q := nativeQuery(tc.dq)
			if db != tc.db || typ != tc.typ || q != tc.query {
				t.Errorf("got %d %q %q", db, typ, q)
			}
		})
	}
}

func TestCardChanges(t *testing.T) {
	want := &Card{Name: "C", Display: "line", SQL: "select 1 as x", Description: " d ",
		VisualizationSettings: map[string]any{"graph.dimensions": []any{"x"}, "graph.metrics": []any{"x"}}}
	coll := 12
	same := func() *remoteCard {
		d := "d"
		return &remoteCard{ID: 1, Name: "C", Display: "line", Description: &d, CollectionID: &coll,
			VisualizationSettings: map[string]any{"graph.metrics": []any{"x"}, "graph.dimensions": []any{"x"}},
			DatasetQuery:          map[string]any{"database": 3.0, "type": "native", "native": map[string]any{"query": "select 1 as x", "template-tags": map[string]any{}}}}
	}
	cases := []struct {
		name   string
		edit   func(*remoteCard)
		dbID   int
		want   []string
		noDesc bool
	}{
		{"unchanged", func(*remoteCard) {}, 3, nil, false},
		{"display", func(c *remoteCard) { c.Display = "bar" }, 3, []string{"display"}, false},
		{"sql", func(c *remoteCard) { c.DatasetQuery["native"] = map[string]any{"query": "select 2"} }, 3, []string{"sql"}, false},
		{"database to be created", func(*remoteCard) {}, 0, []string{"database"}, false},
		{"moved collection", func(c *remoteCard) { other := 13; c.CollectionID = &other }, 3, []string{"collection"}, false},
		{"settings", func(c *remoteCard) { c.VisualizationSettings["graph.metrics"] = []any{"y"} }, 3, []string{"visualization_settings"}, false},
		{"description", func(c *remoteCard) { c.Description = nil }, 3, []string{"description"}, false},
		{"blank description equals null", func(c *remoteCard) { c.Description = nil }, 3, nil, true},
		{"mbql 5 answer", func(c *remoteCard) {
			c.DatasetQuery = map[string]any{"database": 3.0, "stages": []any{map[string]any{"lib/type": "mbql.stage/native", "native": "select 1 as x"}}}
		}, 3, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := *want
			if tc.noDesc {
				w.Description = "  "
			}
			cur := same()
			tc.edit(cur)
			if got := cardChanges(&w, cur, tc.dbID, coll); !slices.Equal(got, tc.want) {
				t.Errorf("changes %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDatabaseChangesIgnoreTheRedactedPassword(t *testing.T) {
	want := Database{Name: "DB", Engine: "postgres", Host: "pgproxy", Port: 6433, DBName: "ofitec", User: "ro", Password: "new"}
	cur := &remoteDatabase{ID: 2, Name: "DB", Engine: "postgres", Details: map[string]any{
		"host": "pgproxy", "port": 6433.0, "dbname": "ofitec", "user": "ro", "password": redactedPassword, "ssl": false}}
	if ch := databaseChanges(want, cur); len(ch) != 0 {
		t.Errorf("changes %v, want none", ch)
	}
	delete(cur.Details, "ssl") // absent means off
	if ch := databaseChanges(want, cur); len(ch) != 0 {
		t.Errorf("changes %v, want none", ch)
	}
	cur.Details["port"] = "6432" // some versions answer strings
	cur.Details["user"] = "metabase"
	if ch := databaseChanges(want, cur); !slices.Equal(ch, []string{"details.port", "details.user"}) {
		t.Errorf("changes %v", ch)
	}
}

func TestSameCellsIgnoresOrder(t *testing.T) {
	ref := ids{cards: map[string]int{"a": 1, "b": 2}}
	d := &Dashboard{Cards: []DashCard{{Card: "a", Row: 0, Col: 0, SizeX: 12, SizeY: 6}, {Card: "b", Row: 0, Col: 12, SizeX: 12, SizeY: 6}}}
	one, two := 1, 2
	cur := []remoteDashcard{{ID: 9, CardID: &two, Row: 0, Col: 12, SizeX: 12, SizeY: 6}, {ID: 8, CardID: &one, Row: 0, Col: 0, SizeX: 12, SizeY: 6}}
	if !sameCells(d, cur, ref) {
		t.Error("same cells in another order differ")
	}
	cur[0].SizeY = 7
	if sameCells(d, cur, ref) {
		t.Error("a resized dashcard is not a change")
	}
	cur[0].SizeY = 6
	cur = append(cur, remoteDashcard{ID: 10, Row: 6, Col: 0, SizeX: 4, SizeY: 2}) // a text card added by hand
	if sameCells(d, cur, ref) {
		t.Error("an extra dashcard is not a change")
	}
	if sameCells(d, cur[:2], ids{cards: map[string]int{"a": 1}}) {
		t.Error("a card still to be created is not a change")
	}
}
