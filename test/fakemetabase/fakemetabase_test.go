package fakemetabase

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type call struct {
	method, path string
	body         any // JSON-encoded unless a string (sent as text/plain)
}

type answer struct {
	status int
	body   string
}

func do(t *testing.T, s *Server, session string, c call) answer {
	t.Helper()
	var rd io.Reader
	ct := ""
	switch b := c.body.(type) {
	case nil:
	case string:
		rd, ct = strings.NewReader(b), "text/plain"
	default:
		j, _ := json.Marshal(b)
		rd, ct = bytes.NewReader(j), "application/json"
	}
	req, _ := http.NewRequest(c.method, s.URL+c.path, rd)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if session != "" {
		req.Header.Set("X-Metabase-Session", session)
	}
	resp, err := s.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, strings.TrimSpace(string(b))}
}

func login(t *testing.T, s *Server) string {
	t.Helper()
	a := do(t, s, "", call{"POST", "/api/session", map[string]string{"username": "a@b.cl", "password": "Secret-123"}})
	var out struct{ ID string }
	if a.status != 200 || json.Unmarshal([]byte(a.body), &out) != nil || out.ID == "" {
		t.Fatalf("login: %+v", a)
	}
	return out.ID
}

func newServer(t *testing.T, opts ...Option) *Server {
	s := New(append(opts, WithUser(User{Email: "a@b.cl", Password: "Secret-123"}))...)
	t.Cleanup(func() { s.ts.Client().CloseIdleConnections(); s.Close() })
	return s
}

// The contract's shapes and status codes, call by call.
func TestContract(t *testing.T) {
	s := newServer(t)
	sess := login(t, s)
	native := map[string]any{"database": 1, "type": "native", "native": map[string]any{"query": "select 1"}}
	steps := []struct {
		name    string
		session string
		call    call
		want    answer // body: a substring
	}{
		{"no session", "", call{"GET", "/api/database", nil}, answer{401, "Unauthenticated"}},
		{"bad session", "bogus", call{"GET", "/api/database", nil}, answer{401, "Unauthenticated"}},
		{"wrong password", "", call{"POST", "/api/session", map[string]string{"username": "a@b.cl", "password": "nope"}}, answer{401, `"password":"did not match stored password"`}},
		{"setup after setup", "", call{"POST", "/api/setup", map[string]any{}}, answer{403, "first user"}},
		{"databases are a page", sess, call{"GET", "/api/database", nil}, answer{200, `{"data":[{"id":1,"name":"Sample Database"`}},
		{"duckdb is not an engine", sess, call{"POST", "/api/database", map[string]any{"name": "d", "engine": "duckdb", "details": map[string]any{}}}, answer{400, `"engine":"value must be a valid database engine."`}},
		{"connection test", sess, call{"POST", "/api/database", map[string]any{"name": "d", "engine": "postgres", "details": map[string]any{"host": "h"}}}, answer{400, "Connection failed"}},
		{"database created with 200", sess, call{"POST", "/api/database", map[string]any{"name": "d", "engine": "postgres",
			"details": map[string]any{"host": "h", "port": 5432, "dbname": "x", "user": "u", "password": "pw"}}}, answer{200, `"password":"**MetabasePass**"`}},
		{"collections are an array with the root", sess, call{"GET", "/api/collection?archived=false", nil}, answer{200, `[{"archived":false,"can_write":true,"id":"root"`}},
		{"the trash is listed from 0.50", sess, call{"GET", "/api/collection?archived=false", nil}, answer{200, `"name":"Trash","description":null,"location":"/","archived":false,"personal_owner_id":null,"type":"trash"`}},
		{"blank collection description", sess, call{"POST", "/api/collection", map[string]any{"name": "c", "description": "", "color": "#509EE3"}}, answer{400, `"description":"nullable value must be a non-blank string."`}},
		{"collection created with 200", sess, call{"POST", "/api/collection", map[string]any{"name": "c", "description": nil, "color": "#509EE3"}}, answer{200, `"location":"/"`}},
		{"card without visualization_settings", sess, call{"POST", "/api/card", map[string]any{"name": "x", "display": "table", "dataset_query": native}}, answer{400, `"visualization_settings":"value must be a map."`}},
		{"card without display", sess, call{"POST", "/api/card", map[string]any{"name": "x", "dataset_query": native, "visualization_settings": map[string]any{}}}, answer{400, `"display":"value must be a non-blank string."`}},
		{"card without database", sess, call{"POST", "/api/card", map[string]any{"name": "x", "display": "table", "visualization_settings": map[string]any{},
			"dataset_query": map[string]any{"type": "native", "native": map[string]any{"query": "select 1"}}}}, answer{400, `"dataset_query"`}},
		{"body ignored without content type", sess, call{"POST", "/api/card", `{"name":"x"}`}, answer{400, `"name":"value must be a non-blank string."`}},
		{"card created with 200", sess, call{"POST", "/api/card", map[string]any{"name": "x", "display": "table", "visualization_settings": map[string]any{}, "dataset_query": native}}, answer{200, `"type":"question"`}},
		{"dashboard created with 200", sess, call{"POST", "/api/dashboard", map[string]any{"name": "D"}}, answer{200, `"dashcards":[]`}},
		{"old add-card endpoint", sess, call{"POST", "/api/dashboard/1/cards", map[string]any{"cardId": 1}}, answer{404, "API endpoint does not exist."}},
		{"unknown endpoint", sess, call{"GET", "/api/nope", nil}, answer{404, "API endpoint does not exist."}},
		{"missing card", sess, call{"GET", "/api/card/99999", nil}, answer{404, "Not found."}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			got := do(t, s, st.session, st.call)
			if got.status != st.want.status || !strings.Contains(got.body, st.want.body) {
				t.Errorf("got %d %s\nwant %d …%s…", got.status, got.body, st.want.status, st.want.body)
			}
		})
	}
}

func TestDashcardsAreReplacedAsAFullList(t *testing.T) {
	s := newServer(t)
	sess := login(t, s)
	post := func(path string, body any) int {
		a := do(t, s, sess, call{"POST", path, body})
		var out struct{ ID int }
		if a.status != 200 || json.Unmarshal([]byte(a.body), &out) != nil {
			t.Fatalf("%s: %+v", path, a)
		}
		return out.ID
	}
	q := map[string]any{"database": 1, "type": "native", "native": map[string]any{"query": "select 1"}}
	c1 := post("/api/card", map[string]any{"name": "a", "display": "table", "visualization_settings": map[string]any{}, "dataset_query": q})
	c2 := post("/api/card", map[string]any{"name": "b", "display": "table", "visualization_settings": map[string]any{}, "dataset_query": q})
	d := post("/api/dashboard", map[string]any{"name": "D"})
	put := func(dcs ...map[string]any) answer {
		list := make([]any, len(dcs))
		for i, dc := range dcs {
			list[i] = dc
		}
		return do(t, s, sess, call{"PUT", fmt.Sprintf("/api/dashboard/%d", d), map[string]any{"dashcards": list, "tabs": []any{}}})
	}
	cell := func(id, card, col int) map[string]any {
		return map[string]any{"id": id, "card_id": card, "row": 0, "col": col, "size_x": 12, "size_y": 6}
	}
	if a := put(cell(-1, c1, 0), cell(-2, c2, 12)); a.status != 200 {
		t.Fatalf("%+v", a)
	}
	first := s.Dashboards()[0].Dashcards
	if len(first) != 2 || first[0].ID <= 0 {
		t.Fatalf("dashcards %+v", first)
	}
	// Keep the first by id, leave the second out: it is deleted.
	if a := put(cell(first[0].ID, c1, 0)); a.status != 200 {
		t.Fatalf("%+v", a)
	}
	if got := s.Dashboards()[0].Dashcards; len(got) != 1 || got[0].ID != first[0].ID {
		t.Errorf("after replace: %+v", got)
	}
	bad := []struct {
		name string
		dcs  []map[string]any
		want string
	}{
		{"repeated id", []map[string]any{cell(-1, c1, 0), cell(-1, c2, 12)}, "distinct id"},
		{"zero size", []map[string]any{{"id": -1, "card_id": c1, "row": 0, "col": 0, "size_x": 0, "size_y": 6}}, "greater than zero"},
		{"negative col", []map[string]any{cell(-1, c1, -1)}, "greater than or equal to zero"},
		{"off the grid", []map[string]any{cell(-1, c1, 13)}, "24-column grid"},
	}
	for _, b := range bad {
		if a := put(b.dcs...); a.status != 400 || !strings.Contains(a.body, b.want) {
			t.Errorf("%s: got %+v", b.name, a)
		}
	}
	if a := put(cell(-1, 99999, 0)); a.status != 404 {
		t.Errorf("unknown card: %+v", a)
	}
}

func TestInitializingThenReady(t *testing.T) {
	s := newServer(t, WithInitializing(2))
	for i, want := range []answer{{503, `"status":"initializing"`}, {503, "initializing"}, {200, `{"status":"ok"}`}} {
		path := "/api/health"
		if i == 1 {
			path = "/api/session/properties"
		}
		if got := do(t, s, "", call{"GET", path, nil}); got.status != want.status || !strings.Contains(got.body, want.body) {
			t.Errorf("request %d: %+v, want %+v", i, got, want)
		}
	}
}

func TestAPIKeyFrom049(t *testing.T) {
	for _, tc := range []struct {
		version string
		status  int
	}{{"v0.48.9", 401}, {"v0.49.0", 200}} {
		s := newServer(t, WithVersion(tc.version), WithAPIKey("mb_k"))
		req, _ := http.NewRequest("GET", s.URL+"/api/database", nil)
		req.Header.Set("X-API-Key", "mb_k")
		resp, err := s.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: X-API-Key answered %d, want %d", tc.version, resp.StatusCode, tc.status)
		}
	}
}

func TestFreshInstanceSetup(t *testing.T) {
	s := New()
	defer func() { s.ts.Client().CloseIdleConnections(); s.Close() }()
	var props struct {
		Token        *string `json:"setup-token"`
		HasUserSetup bool    `json:"has-user-setup"`
	}
	a := do(t, s, "", call{"GET", "/api/session/properties", nil})
	if json.Unmarshal([]byte(a.body), &props) != nil || props.Token == nil || props.HasUserSetup {
		t.Fatalf("properties: %s", a.body)
	}
	user := map[string]any{"first_name": "A", "last_name": "B", "email": "a@b.cl", "password": "Secret-123"}
	if a := do(t, s, "", call{"POST", "/api/setup", map[string]any{"token": "bad", "user": user}}); a.status != 400 {
		t.Errorf("bad token: %+v", a)
	}
	weak := map[string]any{"first_name": "A", "last_name": "B", "email": "a@b.cl", "password": "password"}
	if a := do(t, s, "", call{"POST", "/api/setup", map[string]any{"token": *props.Token, "user": weak}}); a.status != 400 {
		t.Errorf("weak password: %+v", a)
	}
	if a := do(t, s, "", call{"POST", "/api/setup", map[string]any{"token": *props.Token, "user": user}}); a.status != 200 || !strings.Contains(a.body, `"id"`) {
		t.Fatalf("setup: %+v", a)
	}
	a = do(t, s, "", call{"GET", "/api/session/properties", nil})
	if !strings.Contains(a.body, `"setup-token":null`) || !strings.Contains(a.body, `"has-user-setup":true`) {
		t.Errorf("after setup: %s", a.body)
	}
}
