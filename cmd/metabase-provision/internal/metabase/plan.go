package metabase

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
)

// Action is what the plan does to one object.
type Action string

// Actions of a plan step.
const (
	Create    Action = "create"
	Update    Action = "update"
	Unchanged Action = "unchanged"
	Archive   Action = "archive"
)

// Kinds of objects.
const (
	KindDatabase   = "database"
	KindCollection = "collection"
	KindCard       = "card"
	KindDashboard  = "dashboard"
)

// Step is one object of the plan.
type Step struct {
	Action Action
	Kind   string
	Name   string
	// ID is the object's id in Metabase: the current one, or the new one
	// once a create has been applied.
	ID int
	// Changes names the fields that differ (updates only).
	Changes []string

	db       *Database
	collKey  string // "" = top collection, else the sub-collection name
	coll     *SubCollection
	card     *Card
	dash     *Dashboard
	dashcard []remoteDashcard // the dashboard's current dashcards
}

// Plan is the list of steps, in the order they are applied: database,
// collections, cards, dashboards, then archives.
type Plan struct {
	// Setup is true when the instance needs its first-run setup (a dry run
	// against a fresh instance: everything else is then a create).
	Setup bool
	Steps []*Step
}

// Summary counts steps by action.
type Summary struct {
	Created, Updated, Archived, Unchanged int
}

func (s Summary) String() string {
	return fmt.Sprintf("%d created, %d updated, %d archived, %d unchanged", s.Created, s.Updated, s.Archived, s.Unchanged)
}

// Summary counts the plan's steps by action.
func (p *Plan) Summary() Summary {
	var s Summary
	for _, st := range p.Steps {
		switch st.Action {
		case Create:
			s.Created++
		case Update:
			s.Updated++
		case Archive:
			s.Archived++
		case Unchanged:
			s.Unchanged++
		}
	}
	return s
}

// Print writes the plan, one line per step.
func (p *Plan) Print(w io.Writer) {
	if p.Setup {
		fmt.Fprintln(w, "  setup      instance   (first-run setup: admin user)")
	}
	for _, st := range p.Steps {
		line := fmt.Sprintf("  %-10s %-10s %q", st.Action, st.Kind, st.Name)
		if st.ID != 0 {
			line += fmt.Sprintf(" (id %d)", st.ID)
		}
		if len(st.Changes) > 0 {
			line += ": " + strings.Join(st.Changes, ", ")
		}
		fmt.Fprintln(w, line)
	}
}

// ids resolves names to Metabase ids while planning and applying; 0 means
// "does not exist yet".
type ids struct {
	database    int
	collections map[string]int
	cards       map[string]int
}

// buildPlan compares the desired state with st.
func buildPlan(cfg *Config, st *state) *Plan {
	p := &Plan{}
	ref := ids{collections: map[string]int{}, cards: map[string]int{}}

	// Database.
	dbStep := &Step{Kind: KindDatabase, Name: cfg.Database.Name, db: &cfg.Database, Action: Create}
	if st.database != nil {
		dbStep.ID = st.database.ID
		ref.database = st.database.ID
		dbStep.Changes = databaseChanges(cfg.Database, st.database)
		dbStep.Action = actionFor(dbStep.Changes)
	}
	p.Steps = append(p.Steps, dbStep)

	// Collections.
	top := SubCollection{Name: cfg.Collection.Name, Description: cfg.Collection.Description}
	colls := []*Step{{Kind: KindCollection, Name: top.Name, collKey: "", coll: &top}}
	for i := range cfg.Collection.Children {
		ch := &cfg.Collection.Children[i]
		colls = append(colls, &Step{Kind: KindCollection, Name: cfg.Collection.Name + "/" + ch.Name, collKey: ch.Name, coll: ch})
	}
	for _, s := range colls {
		cur, ok := st.collections[s.collKey]
		if !ok {
			s.Action = Create
		} else {
			s.ID = cur.ID
			ref.collections[s.collKey] = cur.ID
			if cur.Description != strings.TrimSpace(s.coll.Description) {
				s.Changes = []string{"description"}
			}
			s.Action = actionFor(s.Changes)
		}
		p.Steps = append(p.Steps, s)
	}

	// Cards.
	for i := range cfg.Cards {
		cd := &cfg.Cards[i]
		s := &Step{Kind: KindCard, Name: cd.Name, card: cd, Action: Create}
		if cur, ok := st.cards[cd.Name]; ok {
			s.ID = cur.ID
			ref.cards[cd.Name] = cur.ID
			s.Changes = cardChanges(cd, cur, ref.database, ref.collections[cd.Collection])
			s.Action = actionFor(s.Changes)
		}
		p.Steps = append(p.Steps, s)
	}

	// Dashboards.
	for i := range cfg.Dashboards {
		d := &cfg.Dashboards[i]
		s := &Step{Kind: KindDashboard, Name: d.Name, dash: d, Action: Create}
		if cur, ok := st.dashboards[d.Name]; ok {
			s.ID = cur.ID
			s.dashcard = cur.Dashcards
			s.Changes = dashboardChanges(d, cur, ref)
			s.Action = actionFor(s.Changes)
		}
		p.Steps = append(p.Steps, s)
	}

	// Archives: dashboards first, so no kept dashboard loses a card it shows.
	for _, d := range st.extraDashboards {
		p.Steps = append(p.Steps, &Step{Action: Archive, Kind: KindDashboard, Name: d.Name, ID: d.ID})
	}
	for _, c := range st.extraCards {
		p.Steps = append(p.Steps, &Step{Action: Archive, Kind: KindCard, Name: c.Name, ID: c.ID})
	}
	return p
}

func actionFor(changes []string) Action {
	if len(changes) > 0 {
		return Update
	}
	return Unchanged
}

// redactedPassword is what Metabase answers instead of a stored password;
// sending it back keeps the stored one.
const redactedPassword = "**MetabasePass**"

func databaseDetails(d Database, password string) map[string]any {
	return map[string]any{
		"host": d.Host, "port": d.Port, "dbname": d.DBName, "user": d.User,
		"password": password, "ssl": d.SSL,
		"schema-filters-type": "all", "tunnel-enabled": false, "advanced-options": false,
	}
}

// databaseChanges compares what the job manages. The password cannot be
// compared (Metabase never returns it).
func databaseChanges(want Database, cur *remoteDatabase) []string {
	var ch []string
	if detailString(cur.Details, "port") != fmt.Sprint(want.Port) {
		ch = append(ch, "details.port")
	}
	if detailString(cur.Details, "user") != want.User {
		ch = append(ch, "details.user")
	}
	if ssl := detailString(cur.Details, "ssl"); ssl != fmt.Sprint(want.SSL) && !(ssl == "" && !want.SSL) {
		ch = append(ch, "details.ssl")
	}
	return ch
}

// cardBody is the JSON of a card for POST/PUT.
func cardBody(c *Card, dbID, collID int) map[string]any {
	return map[string]any{
		"name":                   c.Name,
		"type":                   "question",
		"display":                c.Display,
		"description":            nilIfBlank(c.Description),
		"collection_id":          collID,
		"visualization_settings": c.VisualizationSettings,
		"dataset_query": map[string]any{
			"database": dbID,
			"type":     "native",
			"native":   map[string]any{"query": c.SQL, "template-tags": map[string]any{}},
		},
	}
}

// nilIfBlank: Metabase refuses "" descriptions (null or non-blank only).
func nilIfBlank(s string) any {
	if s = strings.TrimSpace(s); s == "" {
		return nil
	}
	return s
}

func cardChanges(want *Card, cur *remoteCard, dbID, collID int) []string {
	var ch []string
	if deref(cur.Description) != strings.TrimSpace(want.Description) {
		ch = append(ch, "description")
	}
	if cur.Display != want.Display {
		ch = append(ch, "display")
	}
	if cur.CollectionID == nil || *cur.CollectionID != collID {
		ch = append(ch, "collection")
	}
	if !jsonEqual(cur.VisualizationSettings, want.VisualizationSettings) {
		ch = append(ch, "visualization_settings")
	}
	db, typ, query := nativeQuery(cur.DatasetQuery)
	if db != dbID {
		ch = append(ch, "database")
	}
	if typ != "native" || query != want.SQL {
		ch = append(ch, "sql")
	}
	return ch
}

// nativeQuery reads database, type and SQL from a dataset_query in the
// legacy shape ({"type":"native","native":{"query":...}}) or the MBQL 5 one
// ({"stages":[{"lib/type":"mbql.stage/native","native":"..."}]}).
func nativeQuery(dq map[string]any) (db int, typ, query string) {
	if f, ok := dq["database"].(float64); ok {
		db = int(f)
	}
	if t, ok := dq["type"].(string); ok {
		typ = t
		if n, ok := dq["native"].(map[string]any); ok {
			query, _ = n["query"].(string)
		}
		return db, typ, query
	}
	if stages, ok := dq["stages"].([]any); ok && len(stages) > 0 {
		if st, ok := stages[0].(map[string]any); ok && st["lib/type"] == "mbql.stage/native" {
			query, _ = st["native"].(string)
			return db, "native", query
		}
	}
	return db, "", ""
}

// jsonEqual compares two values as JSON documents.
func jsonEqual(a, b any) bool {
	na, ea := normalize(a)
	nb, eb := normalize(b)
	return ea == nil && eb == nil && reflect.DeepEqual(na, nb)
}

func normalize(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	if m, ok := out.(map[string]any); ok && len(m) == 0 {
		return nil, err // {} and null are the same settings
	}
	return out, err
}

type cell struct{ card, row, col, sx, sy int }

func dashboardChanges(want *Dashboard, cur *remoteDashboard, ref ids) []string {
	var ch []string
	if deref(cur.Description) != strings.TrimSpace(want.Description) {
		ch = append(ch, "description")
	}
	if cur.CollectionID == nil || *cur.CollectionID != ref.collections[want.Collection] {
		ch = append(ch, "collection")
	}
	if !sameCells(want, cur.Dashcards, ref) {
		ch = append(ch, "dashcards")
	}
	return ch
}

func sameCells(want *Dashboard, cur []remoteDashcard, ref ids) bool {
	if len(want.Cards) != len(cur) {
		return false
	}
	a := make([]cell, 0, len(want.Cards))
	for _, dc := range want.Cards {
		id := ref.cards[dc.Card]
		if id == 0 {
			return false
		}
		a = append(a, cell{id, dc.Row, dc.Col, dc.SizeX, dc.SizeY})
	}
	b := make([]cell, 0, len(cur))
	for _, dc := range cur {
		if dc.CardID == nil {
			return false // a text or heading card the config does not name
		}
		b = append(b, cell{*dc.CardID, dc.Row, dc.Col, dc.SizeX, dc.SizeY})
	}
	less := func(s []cell) func(i, j int) bool {
		return func(i, j int) bool {
			x, y := s[i], s[j]
			if x.row != y.row {
				return x.row < y.row
			}
			if x.col != y.col {
				return x.col < y.col
			}
			return x.card < y.card
		}
	}
	sort.Slice(a, less(a))
	sort.Slice(b, less(b))
	return reflect.DeepEqual(a, b)
}
