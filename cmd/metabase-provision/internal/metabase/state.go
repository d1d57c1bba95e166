package metabase

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
)

// Shapes of Metabase's answers, only the fields the job reads.

type remoteDatabase struct {
	ID       int            `json:"id"`
	Name     string         `json:"name"`
	Engine   string         `json:"engine"`
	IsSample bool           `json:"is_sample"`
	Details  map[string]any `json:"details"`
}

type remoteCollection struct {
	ID              json.RawMessage `json:"id"` // a number, or "root"
	Name            string          `json:"name"`
	Description     *string         `json:"description"`
	Location        string          `json:"location"`
	Archived        bool            `json:"archived"`
	PersonalOwnerID *int            `json:"personal_owner_id"`
	Type            *string         `json:"type"`
}

// numericID returns the collection's id, or false for the virtual root.
func (c remoteCollection) numericID() (int, bool) {
	n, err := strconv.Atoi(string(c.ID))
	return n, err == nil
}

type remoteItem struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Model string `json:"model"`
}

type remoteCard struct {
	ID                    int            `json:"id"`
	Name                  string         `json:"name"`
	Description           *string        `json:"description"`
	Display               string         `json:"display"`
	CollectionID          *int           `json:"collection_id"`
	Archived              bool           `json:"archived"`
	VisualizationSettings map[string]any `json:"visualization_settings"`
	DatasetQuery          map[string]any `json:"dataset_query"`
}

type remoteDashboard struct {
	ID           int              `json:"id"`
	Name         string           `json:"name"`
	Description  *string          `json:"description"`
	CollectionID *int             `json:"collection_id"`
	Archived     bool             `json:"archived"`
	Dashcards    []remoteDashcard `json:"dashcards"`
}

type remoteDashcard struct {
	ID     int  `json:"id"`
	CardID *int `json:"card_id"`
	Row    int  `json:"row"`
	Col    int  `json:"col"`
	SizeX  int  `json:"size_x"`
	SizeY  int  `json:"size_y"`
}

// state is what the job owns in Metabase now.
type state struct {
	version  Version
	database *remoteDatabase
	// collections by key: "" is the job's top collection, else a
	// sub-collection name. Missing keys do not exist yet.
	collections map[string]ownedCollection
	cards       map[string]*remoteCard      // by name; the lowest id wins
	dashboards  map[string]*remoteDashboard // by name; the lowest id wins
	// extra objects in the owned tree that the desired state does not name,
	// or that repeat a name: they get archived.
	extraCards      []*remoteCard
	extraDashboards []*remoteDashboard
}

type ownedCollection struct {
	ID          int
	Description string
}

func emptyState(v Version) *state {
	return &state{version: v, collections: map[string]ownedCollection{},
		cards: map[string]*remoteCard{}, dashboards: map[string]*remoteDashboard{}}
}

// readState reads the database, the owned collection tree and everything in
// it. The client must be authenticated.
func readState(ctx context.Context, c *Client, cfg *Config, v Version) (*state, error) {
	st := emptyState(v)

	db, err := findDatabase(ctx, c, cfg.Database)
	if err != nil {
		return nil, fmt.Errorf("reading databases: %w", err)
	}
	st.database = db

	var colls []remoteCollection
	if err := c.do(ctx, http.MethodGet, "/api/collection", url.Values{"archived": {"false"}}, nil, &colls); err != nil {
		return nil, fmt.Errorf("reading collections: %w", err)
	}
	rootID, ok := pickCollection(colls, cfg.Collection.Name, "/")
	if !ok {
		return st, nil // nothing owned yet
	}
	st.collections[""] = ownedCollection{ID: rootID, Description: descOf(colls, rootID)}
	owned := []int{rootID}
	childLoc := fmt.Sprintf("/%d/", rootID)
	for _, col := range colls {
		id, ok := col.numericID()
		if !ok || !usable(col) || col.Location != childLoc {
			continue
		}
		owned = append(owned, id)
		if prev, seen := st.collections[col.Name]; !seen || id < prev.ID {
			st.collections[col.Name] = ownedCollection{ID: id, Description: deref(col.Description)}
		}
	}

	var cards []*remoteCard
	var dashboards []*remoteDashboard
	for _, cid := range owned {
		items, err := collectionItems(ctx, c, cid)
		if err != nil {
			return nil, fmt.Errorf("reading collection %d: %w", cid, err)
		}
		for _, it := range items {
			switch it.Model {
			case "card":
				card, err := getCard(ctx, c, v, it.ID)
				if err != nil {
					return nil, fmt.Errorf("reading card %q: %w", it.Name, err)
				}
				cards = append(cards, card)
			case "dashboard":
				var d remoteDashboard
				if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/dashboard/%d", it.ID), nil, nil, &d); err != nil {
					return nil, fmt.Errorf("reading dashboard %q: %w", it.Name, err)
				}
				dashboards = append(dashboards, &d)
			}
		}
	}
	sort.Slice(cards, func(i, j int) bool { return cards[i].ID < cards[j].ID })
	sort.Slice(dashboards, func(i, j int) bool { return dashboards[i].ID < dashboards[j].ID })

	wantCard := map[string]bool{}
	for _, cd := range cfg.Cards {
		wantCard[cd.Name] = true
	}
	for _, card := range cards {
		if card.Archived {
			continue
		}
		if _, dup := st.cards[card.Name]; dup || !wantCard[card.Name] {
			st.extraCards = append(st.extraCards, card)
			continue
		}
		st.cards[card.Name] = card
	}
	wantDash := map[string]bool{}
	for _, d := range cfg.Dashboards {
		wantDash[d.Name] = true
	}
	for _, d := range dashboards {
		if d.Archived {
			continue
		}
		if _, dup := st.dashboards[d.Name]; dup || !wantDash[d.Name] {
			st.extraDashboards = append(st.extraDashboards, d)
			continue
		}
		st.dashboards[d.Name] = d
	}
	return st, nil
}

// findDatabase returns the database with the desired name, host and dbname
// (the lowest id if several), or nil.
func findDatabase(ctx context.Context, c *Client, want Database) (*remoteDatabase, error) {
	var raw json.RawMessage
	if err := c.do(ctx, http.MethodGet, "/api/database", nil, nil, &raw); err != nil {
		return nil, err
	}
	var list []remoteDatabase
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '[' { // before 0.40
		if err := json.Unmarshal(t, &list); err != nil {
			return nil, fmt.Errorf("GET /api/database: decoding answer: %w", err)
		}
	} else {
		var page struct {
			Data []remoteDatabase `json:"data"`
		}
		if err := json.Unmarshal(t, &page); err != nil {
			return nil, fmt.Errorf("GET /api/database: decoding answer: %w", err)
		}
		list = page.Data
	}
	var found *remoteDatabase
	for i := range list {
		d := &list[i]
		if !d.IsSample && d.Name == want.Name && d.Details == nil {
			// Metabase hides details from non-admins: matching by host and
			// dbname is impossible, and creating would duplicate.
			return nil, fmt.Errorf("database %q (id %d) is listed without its connection details: the job needs an admin user or an admin API key", d.Name, d.ID)
		}
		if d.IsSample || d.Name != want.Name || d.Engine != want.Engine ||
			detailString(d.Details, "host") != want.Host || detailString(d.Details, "dbname") != want.DBName {
			continue
		}
		if found == nil || d.ID < found.ID {
			found = d
		}
	}
	return found, nil
}

// pickCollection finds a usable collection by name and location (lowest id).
func pickCollection(colls []remoteCollection, name, location string) (int, bool) {
	best, ok := 0, false
	for _, col := range colls {
		id, numeric := col.numericID()
		if !numeric || !usable(col) || col.Name != name || col.Location != location {
			continue
		}
		if !ok || id < best {
			best, ok = id, true
		}
	}
	return best, ok
}

// usable: not archived, not a personal collection, not the Trash.
func usable(c remoteCollection) bool {
	return !c.Archived && c.PersonalOwnerID == nil && (c.Type == nil || *c.Type == "")
}

func descOf(colls []remoteCollection, id int) string {
	for _, c := range colls {
		if n, ok := c.numericID(); ok && n == id {
			return deref(c.Description)
		}
	}
	return ""
}

func collectionItems(ctx context.Context, c *Client, id int) ([]remoteItem, error) {
	var page struct {
		Data []remoteItem `json:"data"`
	}
	q := url.Values{"models": {"card", "dashboard"}}
	if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/collection/%d/items", id), q, nil, &page); err != nil {
		return nil, err
	}
	return page.Data, nil
}

func getCard(ctx context.Context, c *Client, v Version, id int) (*remoteCard, error) {
	var q url.Values
	if v.AtLeast(mbql5Since) {
		q = url.Values{"legacy-mbql": {"true"}}
	}
	var card remoteCard
	if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/card/%d", id), q, nil, &card); err != nil {
		return nil, err
	}
	return &card, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// detailString renders a details value for comparison (numbers without a
// fractional part print as integers).
func detailString(details map[string]any, key string) string {
	v, ok := details[key]
	if !ok || v == nil {
		return ""
	}
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return fmt.Sprint(x)
	}
}
