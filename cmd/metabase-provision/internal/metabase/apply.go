package metabase

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// ErrNoDatabasePassword: the plan creates the database but MB_DB_PASS is not set.
var ErrNoDatabasePassword = errors.New("the database password (env MB_DB_PASS) is required to create the database")

// check refuses a plan that cannot be applied, before anything is written.
func (p *Plan) check(cfg *Config) error {
	for _, s := range p.Steps {
		if s.Kind == KindDatabase && s.Action == Create && cfg.Database.Password == "" {
			return ErrNoDatabasePassword
		}
	}
	return nil
}

// apply carries out the plan's steps in order; progress receives a line per
// change. It stops at the first failure, naming what it was doing.
func apply(ctx context.Context, c *Client, cfg *Config, p *Plan, progress func(string)) error {
	ref := ids{collections: map[string]int{}, cards: map[string]int{}}
	for _, s := range p.Steps {
		if s.ID == 0 || s.Action == Archive {
			continue
		}
		switch s.Kind {
		case KindDatabase:
			ref.database = s.ID
		case KindCollection:
			ref.collections[s.collKey] = s.ID
		case KindCard:
			ref.cards[s.Name] = s.ID
		}
	}
	for _, s := range p.Steps {
		if s.Action == Unchanged {
			continue
		}
		if err := applyStep(ctx, c, cfg, s, &ref); err != nil {
			return fmt.Errorf("%s %s %q: %w", doing(s.Action), s.Kind, s.Name, err)
		}
		line := fmt.Sprintf("%s %s %q (id %d)", done(s.Action), s.Kind, s.Name, s.ID)
		if len(s.Changes) > 0 {
			line += ": " + strings.Join(s.Changes, ", ")
		}
		progress(line)
	}
	return nil
}

func doing(a Action) string {
	switch a {
	case Create:
		return "creating"
	case Update:
		return "updating"
	default:
		return "archiving"
	}
}

func done(a Action) string {
	switch a {
	case Create:
		return "created"
	case Update:
		return "updated"
	default:
		return "archived"
	}
}

type created struct {
	ID int `json:"id"`
}

func applyStep(ctx context.Context, c *Client, cfg *Config, s *Step, ref *ids) error {
	switch {
	case s.Action == Archive && s.Kind == KindCard:
		return c.do(ctx, http.MethodPut, fmt.Sprintf("/api/card/%d", s.ID), nil, map[string]any{"archived": true}, nil)
	case s.Action == Archive && s.Kind == KindDashboard:
		return c.do(ctx, http.MethodPut, fmt.Sprintf("/api/dashboard/%d", s.ID), nil, map[string]any{"archived": true}, nil)
	case s.Kind == KindDatabase:
		return applyDatabase(ctx, c, s, ref)
	case s.Kind == KindCollection:
		return applyCollection(ctx, c, cfg, s, ref)
	case s.Kind == KindCard:
		body := cardBody(s.card, ref.database, ref.collections[s.card.Collection])
		if s.Action == Create {
			var out created
			if err := c.do(ctx, http.MethodPost, "/api/card", nil, body, &out); err != nil {
				return err
			}
			s.ID = out.ID
			ref.cards[s.Name] = out.ID
			return nil
		}
		return c.do(ctx, http.MethodPut, fmt.Sprintf("/api/card/%d", s.ID), nil, body, nil)
	case s.Kind == KindDashboard:
		return applyDashboard(ctx, c, s, ref)
	}
	return fmt.Errorf("no way to %s a %s", s.Action, s.Kind)
}

func applyDatabase(ctx context.Context, c *Client, s *Step, ref *ids) error {
	d := *s.db
	if s.Action == Create {
		body := map[string]any{
			"engine": d.Engine, "name": d.Name, "details": databaseDetails(d, d.Password),
			"is_full_sync": true, "is_on_demand": false, "auto_run_queries": true,
		}
		var out created
		if err := c.do(ctx, http.MethodPost, "/api/database", nil, body, &out); err != nil {
			return err
		}
		s.ID = out.ID
	} else {
		pass := d.Password
		if pass == "" {
			pass = redactedPassword // keeps the stored password
		}
		body := map[string]any{"details": databaseDetails(d, pass)}
		if err := c.do(ctx, http.MethodPut, fmt.Sprintf("/api/database/%d", s.ID), nil, body, nil); err != nil {
			return err
		}
	}
	ref.database = s.ID
	if err := c.do(ctx, http.MethodPost, fmt.Sprintf("/api/database/%d/sync_schema", s.ID), nil, map[string]any{}, nil); err != nil {
		return fmt.Errorf("starting the schema sync: %w", err)
	}
	return nil
}

func applyCollection(ctx context.Context, c *Client, cfg *Config, s *Step, ref *ids) error {
	if s.Action == Update {
		body := map[string]any{"description": nilIfBlank(s.coll.Description)}
		return c.do(ctx, http.MethodPut, fmt.Sprintf("/api/collection/%d", s.ID), nil, body, nil)
	}
	var parent any // null: the root
	if s.collKey != "" {
		parent = ref.collections[""]
	}
	body := map[string]any{
		"name": s.coll.Name, "description": nilIfBlank(s.coll.Description),
		"parent_id": parent, "color": cfg.Collection.Color,
	}
	var out created
	if err := c.do(ctx, http.MethodPost, "/api/collection", nil, body, &out); err != nil {
		return err
	}
	s.ID = out.ID
	ref.collections[s.collKey] = out.ID
	return nil
}

func applyDashboard(ctx context.Context, c *Client, s *Step, ref *ids) error {
	d := s.dash
	collID := ref.collections[d.Collection]
	if s.Action == Create {
		body := map[string]any{"name": d.Name, "description": nilIfBlank(d.Description), "collection_id": collID}
		var out created
		if err := c.do(ctx, http.MethodPost, "/api/dashboard", nil, body, &out); err != nil {
			return err
		}
		s.ID = out.ID
		if len(d.Cards) == 0 {
			return nil
		}
	}
	body := map[string]any{"description": nilIfBlank(d.Description), "collection_id": collID}
	if s.Action == Create || slices.Contains(s.Changes, "dashcards") {
		// The full list: Metabase deletes every current dashcard left out.
		body["dashcards"] = dashcards(d, s.dashcard, ref)
		body["tabs"] = []any{}
	}
	return c.do(ctx, http.MethodPut, fmt.Sprintf("/api/dashboard/%d", s.ID), nil, body, nil)
}

// dashcards builds the full dashcards list: a current dashcard showing the
// same card keeps its id, new ones get negative ids.
func dashcards(d *Dashboard, current []remoteDashcard, ref *ids) []map[string]any {
	used := map[int]bool{}
	next := -1
	out := make([]map[string]any, 0, len(d.Cards))
	for _, dc := range d.Cards {
		cardID := ref.cards[dc.Card]
		id := 0
		for _, cur := range current {
			if cur.CardID != nil && *cur.CardID == cardID && !used[cur.ID] {
				id = cur.ID
				used[id] = true
				break
			}
		}
		if id == 0 {
			id = next
			next--
		}
		out = append(out, map[string]any{
			"id": id, "card_id": cardID, "row": dc.Row, "col": dc.Col,
			"size_x": dc.SizeX, "size_y": dc.SizeY,
			"parameter_mappings": []any{}, "series": []any{}, "visualization_settings": map[string]any{},
		})
	}
	return out
}
