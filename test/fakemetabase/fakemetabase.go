// Package fakemetabase is an in-memory Metabase REST API for tests of
// metabase-provision. Metabase cannot run on the test machines, so the fake
// keeps to the shapes and status codes of /work/shared/contracts/METABASE.md:
// required fields with their 400 messages, list shapes ({"data":...} for
// databases, a plain array for collections), creates answering 200,
// dashcards replaced as a full list by PUT /api/dashboard/:id, 503 while
// initializing, 401 "Unauthenticated", the session header and API keys,
// POST /api/dashboard/:id/cards → 404, passwords answered as
// "**MetabasePass**", descriptions that must be null or non-blank, bodies
// ignored without Content-Type: application/json, MBQL 5 queries from 0.57
// unless ?legacy-mbql=true, a Trash collection from 0.50.
//
// A Server is safe for concurrent use.
package fakemetabase

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
)

// RedactedPassword is what the fake (like Metabase) answers for a database password.
const RedactedPassword = "**MetabasePass**"

// User is a Metabase user.
type User struct {
	ID        int
	Email     string
	Password  string
	Superuser bool
}

// Database is a stored database; Details holds the real password.
type Database struct {
	ID         int            `json:"id"`
	Name       string         `json:"name"`
	Engine     string         `json:"engine"`
	IsSample   bool           `json:"is_sample"`
	Details    map[string]any `json:"details"`
	IsFullSync bool           `json:"is_full_sync"`
	IsOnDemand bool           `json:"is_on_demand"`
	AutoRun    bool           `json:"auto_run_queries"`
	// Syncs counts POST /api/database/:id/sync_schema.
	Syncs int `json:"-"`
}

// Collection is a stored collection.
type Collection struct {
	ID              int     `json:"id"`
	Name            string  `json:"name"`
	Description     *string `json:"description"`
	Color           string  `json:"color,omitempty"`
	Location        string  `json:"location"`
	Archived        bool    `json:"archived"`
	PersonalOwnerID *int    `json:"personal_owner_id"`
	Type            *string `json:"type"`
}

// Card is a stored card (dataset_query in the legacy shape).
type Card struct {
	ID                    int            `json:"id"`
	Name                  string         `json:"name"`
	Type                  string         `json:"type"`
	Description           *string        `json:"description"`
	Display               string         `json:"display"`
	CollectionID          *int           `json:"collection_id"`
	Archived              bool           `json:"archived"`
	VisualizationSettings map[string]any `json:"visualization_settings"`
	DatasetQuery          map[string]any `json:"dataset_query"`
}

// SQL returns the card's native query.
func (c Card) SQL() string {
	n, _ := c.DatasetQuery["native"].(map[string]any)
	s, _ := n["query"].(string)
	return s
}

// Dashboard is a stored dashboard.
type Dashboard struct {
	ID           int        `json:"id"`
	Name         string     `json:"name"`
	Description  *string    `json:"description"`
	CollectionID *int       `json:"collection_id"`
	Archived     bool       `json:"archived"`
	Dashcards    []Dashcard `json:"dashcards"`
	Tabs         []any      `json:"tabs"`
}

// Dashcard places a card on a dashboard.
type Dashcard struct {
	ID                    int            `json:"id"`
	CardID                *int           `json:"card_id"`
	Row                   int            `json:"row"`
	Col                   int            `json:"col"`
	SizeX                 int            `json:"size_x"`
	SizeY                 int            `json:"size_y"`
	ParameterMappings     []any          `json:"parameter_mappings"`
	Series                []any          `json:"series"`
	VisualizationSettings map[string]any `json:"visualization_settings"`
}

// Option configures a Server.
type Option func(*Server)

// WithVersion sets version.tag (default "v0.50.1").
func WithVersion(tag string) Option { return func(s *Server) { s.version = tag } }

// WithInitializing makes the first n requests answer 503 (initializing).
func WithInitializing(n int) Option { return func(s *Server) { s.initializing = n } }

// WithAPIKey accepts key in X-API-Key (on 0.49 and later) as a superuser.
func WithAPIKey(key string) Option { return func(s *Server) { s.apiKeys[key] = true } }

// WithUser adds a user; an instance with a user is already set up. The
// first user is a superuser whatever u.Superuser says.
func WithUser(u User) Option {
	return func(s *Server) {
		if len(s.users) == 0 {
			u.Superuser = true
		}
		s.addUser(u)
	}
}

// Server is a running fake Metabase.
type Server struct {
	// URL is the base URL, e.g. "http://127.0.0.1:port".
	URL string
	ts  *httptest.Server

	mu           sync.Mutex
	version      string
	level        int
	initializing int
	setupToken   string
	apiKeys      map[string]bool
	users        []*User
	sessions     map[string]*User
	failedLogins int
	nextID       int
	databases    []*Database
	collections  []*Collection
	cards        []*Card
	dashboards   []*Dashboard
	requests     []string
	mutations    []string
}

// New starts a fake Metabase; Close it when done.
func New(opts ...Option) *Server {
	s := &Server{version: "v0.50.1", apiKeys: map[string]bool{}, sessions: map[string]*User{},
		setupToken: uuid.NewString(), nextID: 100}
	s.databases = []*Database{{ID: 1, Name: "Sample Database", Engine: "h2", IsSample: true,
		Details: map[string]any{"db": "file:/plugins/sample-database.db"}}}
	for _, o := range opts {
		o(s)
	}
	s.level = level(s.version)
	for _, u := range s.users {
		s.addPersonal(u)
	}
	if s.level >= 50 {
		trash := "trash"
		s.collections = append(s.collections, &Collection{ID: s.id(), Name: "Trash", Location: "/", Type: &trash})
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.ts.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.ts.Close() }

func level(tag string) int {
	parts := strings.Split(strings.TrimPrefix(tag, "v"), ".")
	if len(parts) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(parts[1])
	return n
}

func (s *Server) id() int { s.nextID++; return s.nextID }

func (s *Server) addUser(u User) {
	u.ID = len(s.users) + 1
	s.users = append(s.users, &u)
}

func (s *Server) addPersonal(u *User) {
	owner := u.ID
	s.collections = append(s.collections, &Collection{ID: s.id(), Name: u.Email + "'s Personal Collection",
		Location: "/", PersonalOwnerID: &owner})
}

// Requests returns "METHOD /path[?query]" of every request so far.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// Mutations returns "METHOD /path" of every request that could change the
// instance (any method but GET, except POST /api/session), answered or not.
func (s *Server) Mutations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.mutations...)
}

// Databases returns copies of the stored databases (with real passwords).
func (s *Server) Databases() []Database {
	out := snapshot(s, s.databases)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range out {
		out[i].Syncs = s.databases[i].Syncs
	}
	return out
}

// Collections returns copies of the stored collections (not the virtual root).
func (s *Server) Collections() []Collection { return snapshot(s, s.collections) }

// Cards returns copies of every stored card, archived ones included.
func (s *Server) Cards() []Card { return snapshot(s, s.cards) }

// Dashboards returns copies of every stored dashboard.
func (s *Server) Dashboards() []Dashboard { return snapshot(s, s.dashboards) }

// HasUserSetup reports whether the first-run setup has happened.
func (s *Server) HasUserSetup() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.users) > 0
}

// Edit runs f on a stored card under the lock, to simulate a change made
// by hand in Metabase.
func (s *Server) Edit(cardID int, f func(*Card)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.cards {
		if c.ID == cardID {
			f(c)
			return true
		}
	}
	return false
}

// AddCard stores a copy of c under a new id, as if made by hand in
// Metabase, and returns the id.
func (s *Server) AddCard(c Card) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.ID = s.id()
	if c.Type == "" {
		c.Type = "question"
	}
	s.cards = append(s.cards, &c)
	return c.ID
}

func snapshot[T any](s *Server, list []*T) []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]T, 0, len(list))
	for _, p := range list {
		var c T
		b, _ := json.Marshal(p) // deep copy through JSON keeps the fields tests read
		_ = json.Unmarshal(b, &c)
		out = append(out, c)
	}
	return out
}

// ---- HTTP ----

type reply struct {
	status int
	body   any // JSON value, or a string sent as text/plain
}

func ok(v any) reply { return reply{http.StatusOK, v} }

func fieldErr(field, msg string) reply {
	return reply{http.StatusBadRequest, map[string]any{"errors": map[string]any{field: msg}}}
}

var (
	unauthenticated = reply{http.StatusUnauthorized, "Unauthenticated"}
	forbidden       = reply{http.StatusForbidden, "You don't have permissions to do that."}
	notFound        = reply{http.StatusNotFound, "Not found."}
	noEndpoint      = reply{http.StatusNotFound, "API endpoint does not exist."}
)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if len(b) > 0 {
			if err := json.Unmarshal(b, &body); err != nil {
				write(w, reply{http.StatusBadRequest, map[string]any{"message": "Malformed JSON in request body."}})
				return
			}
		}
	}
	s.mu.Lock()
	rep := s.route(r, body)
	s.mu.Unlock()
	write(w, rep)
}

func write(w http.ResponseWriter, rep reply) {
	if rep.status == http.StatusNoContent {
		w.WriteHeader(rep.status)
		return
	}
	if str, ok := rep.body.(string); ok {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(rep.status)
		_, _ = io.WriteString(w, str)
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(rep.status)
	_ = json.NewEncoder(w).Encode(rep.body)
}

func (s *Server) route(r *http.Request, body map[string]any) reply {
	path := strings.TrimSuffix(r.URL.Path, "/")
	logged := r.Method + " " + path
	if r.URL.RawQuery != "" {
		logged += "?" + r.URL.RawQuery
	}
	s.requests = append(s.requests, logged)
	if r.Method != http.MethodGet && path != "/api/session" {
		s.mutations = append(s.mutations, r.Method+" "+path)
	}
	if s.initializing > 0 {
		s.initializing--
		if path == "/api/health" {
			return reply{http.StatusServiceUnavailable, map[string]any{"status": "initializing", "progress": 0.4}}
		}
		return reply{http.StatusServiceUnavailable, "Metabase is still initializing. Please sit tight..."}
	}
	seg := strings.Split(strings.TrimPrefix(path, "/api/"), "/")
	m := r.Method

	// Endpoints without authentication.
	switch {
	case m == "GET" && path == "/api/health":
		return ok(map[string]any{"status": "ok"})
	case m == "GET" && path == "/api/session/properties":
		var token any
		if len(s.users) == 0 {
			token = s.setupToken
		}
		return ok(map[string]any{"version": map[string]any{"tag": s.version}, "setup-token": token,
			"has-user-setup": len(s.users) > 0, "site-locale": "en"})
	case m == "POST" && path == "/api/setup":
		return s.setup(body)
	case m == "POST" && path == "/api/session":
		return s.login(body)
	}

	user := s.authenticate(r)
	if user == nil {
		return unauthenticated
	}
	id := 0
	if len(seg) > 1 {
		n, err := strconv.Atoi(seg[1])
		if err != nil {
			return notFound
		}
		id = n
	}
	switch {
	case seg[0] == "database" && len(seg) == 1 && m == "GET":
		return s.listDatabases()
	case seg[0] == "database" && len(seg) == 1 && m == "POST":
		if !user.Superuser {
			return forbidden
		}
		return s.createDatabase(body)
	case seg[0] == "database" && len(seg) == 2 && m == "GET":
		if d := find(s.databases, func(d *Database) bool { return d.ID == id }); d != nil {
			return ok(redact(d))
		}
		return notFound
	case seg[0] == "database" && len(seg) == 2 && m == "PUT":
		if !user.Superuser {
			return forbidden
		}
		return s.updateDatabase(id, body)
	case seg[0] == "database" && len(seg) == 3 && seg[2] == "sync_schema" && m == "POST":
		d := find(s.databases, func(d *Database) bool { return d.ID == id })
		if d == nil {
			return notFound
		}
		d.Syncs++
		return ok(map[string]any{"status": "ok"})

	case seg[0] == "collection" && len(seg) == 1 && m == "GET":
		return s.listCollections(r)
	case seg[0] == "collection" && len(seg) == 1 && m == "POST":
		return s.createCollection(body)
	case seg[0] == "collection" && len(seg) == 2 && m == "GET":
		if c := find(s.collections, func(c *Collection) bool { return c.ID == id }); c != nil {
			return ok(c)
		}
		return notFound
	case seg[0] == "collection" && len(seg) == 2 && m == "PUT":
		return s.updateCollection(id, body)
	case seg[0] == "collection" && len(seg) == 3 && seg[2] == "items" && m == "GET":
		return s.items(id, r)

	case seg[0] == "card" && len(seg) == 1 && m == "POST":
		return s.createCard(body)
	case seg[0] == "card" && len(seg) == 2 && m == "GET":
		c := find(s.cards, func(c *Card) bool { return c.ID == id })
		if c == nil {
			return notFound
		}
		return ok(s.cardJSON(c, r.URL.Query().Get("legacy-mbql") == "true"))
	case seg[0] == "card" && len(seg) == 2 && m == "PUT":
		return s.updateCard(id, body)
	case seg[0] == "card" && len(seg) == 2 && m == "DELETE":
		for i, c := range s.cards {
			if c.ID == id {
				s.cards = append(s.cards[:i], s.cards[i+1:]...)
				return reply{http.StatusNoContent, nil}
			}
		}
		return notFound

	case seg[0] == "dashboard" && len(seg) == 1 && m == "POST":
		return s.createDashboard(body)
	case seg[0] == "dashboard" && len(seg) == 2 && m == "GET":
		d := find(s.dashboards, func(d *Dashboard) bool { return d.ID == id })
		if d == nil {
			return notFound
		}
		return ok(s.dashboardJSON(d))
	case seg[0] == "dashboard" && len(seg) == 2 && m == "PUT":
		return s.updateDashboard(id, body)
	case seg[0] == "dashboard" && len(seg) == 3 && seg[2] == "cards":
		return noEndpoint // POST /api/dashboard/:id/cards was removed in 0.47; the fake starts at 0.48
	}
	return noEndpoint
}

func find[T any](list []*T, pred func(*T) bool) *T {
	for _, x := range list {
		if pred(x) {
			return x
		}
	}
	return nil
}

// ---- setup and auth ----

func (s *Server) setup(body map[string]any) reply {
	if len(s.users) > 0 {
		return reply{http.StatusForbidden, "The /api/setup route can only be used to create the first user, however a user currently exists."}
	}
	if tok, _ := body["token"].(string); tok != s.setupToken {
		return fieldErr("token", "Token does not match the setup token.")
	}
	u, _ := body["user"].(map[string]any)
	email, _ := u["email"].(string)
	pass, _ := u["password"].(string)
	if !strings.Contains(email, "@") {
		return fieldErr("email", "value must be a valid email address.")
	}
	if len(pass) < 6 || strings.EqualFold(pass, "password") || pass == "123456" {
		return fieldErr("password", "password is too common.")
	}
	s.addUser(User{Email: email, Password: pass, Superuser: true})
	s.addPersonal(s.users[len(s.users)-1])
	return ok(map[string]any{"id": s.newSession(s.users[len(s.users)-1])})
}

func (s *Server) newSession(u *User) string {
	id := uuid.NewString()
	s.sessions[id] = u
	return id
}

func (s *Server) login(body map[string]any) reply {
	name, _ := body["username"].(string)
	pass, _ := body["password"].(string)
	if name == "" {
		return fieldErr("username", "value must be a non-blank string.")
	}
	if pass == "" {
		return fieldErr("password", "value must be a non-blank string.")
	}
	if s.failedLogins >= 5 {
		return fieldErr("username", "Too many attempts! You must wait 15 seconds before trying again.")
	}
	for _, u := range s.users {
		if strings.EqualFold(u.Email, name) && u.Password == pass {
			s.failedLogins = 0
			return ok(map[string]any{"id": s.newSession(u)})
		}
	}
	s.failedLogins++
	return reply{http.StatusUnauthorized, map[string]any{"errors": map[string]any{"password": "did not match stored password"}}}
}

func (s *Server) authenticate(r *http.Request) *User {
	if u := s.sessions[r.Header.Get("X-Metabase-Session")]; u != nil {
		return u
	}
	if key := r.Header.Get("X-API-Key"); key != "" && s.level >= 49 && s.apiKeys[key] {
		return &User{ID: -1, Email: "api-key", Superuser: true}
	}
	return nil
}

// ---- databases ----

var engines = map[string]bool{"postgres": true, "h2": true, "mysql": true, "sqlserver": true,
	"redshift": true, "snowflake": true, "bigquery-cloud-sdk": true, "sqlite": true}

func redact(d *Database) Database {
	c := *d
	c.Details = map[string]any{}
	for k, v := range d.Details {
		c.Details[k] = v
	}
	if _, has := c.Details["password"]; has {
		c.Details["password"] = RedactedPassword
	}
	return c
}

func (s *Server) listDatabases() reply {
	data := make([]Database, 0, len(s.databases))
	for _, d := range s.databases {
		data = append(data, redact(d))
	}
	return ok(map[string]any{"data": data, "total": len(data)})
}

// testConnection stands for Metabase's connection test before saving.
func testConnection(details map[string]any) reply {
	for _, k := range []string{"host", "dbname", "user"} {
		if v, _ := details[k].(string); v == "" {
			return reply{http.StatusBadRequest, map[string]any{"message": "Connection failed: missing " + k,
				"errors": map[string]any{k: "missing " + k}}}
		}
	}
	if _, isNum := details["port"].(float64); !isNum {
		return reply{http.StatusBadRequest, map[string]any{"errors": map[string]any{"port": "value must be an integer."}}}
	}
	return reply{}
}

func (s *Server) createDatabase(body map[string]any) reply {
	name, _ := body["name"].(string)
	engine, _ := body["engine"].(string)
	details, isMap := body["details"].(map[string]any)
	switch {
	case strings.TrimSpace(name) == "":
		return fieldErr("name", "value must be a non-blank string.")
	case !engines[engine]:
		return fieldErr("engine", "value must be a valid database engine.")
	case !isMap:
		return fieldErr("details", "value must be a map.")
	}
	if rep := testConnection(details); rep.status != 0 {
		return rep
	}
	d := &Database{ID: s.id(), Name: name, Engine: engine, Details: details}
	d.IsFullSync, _ = body["is_full_sync"].(bool)
	d.IsOnDemand, _ = body["is_on_demand"].(bool)
	d.AutoRun, _ = body["auto_run_queries"].(bool)
	s.databases = append(s.databases, d)
	return ok(redact(d))
}

func (s *Server) updateDatabase(id int, body map[string]any) reply {
	d := find(s.databases, func(d *Database) bool { return d.ID == id })
	if d == nil {
		return notFound
	}
	if name, has := body["name"]; has {
		n, _ := name.(string)
		if strings.TrimSpace(n) == "" {
			return fieldErr("name", "value must be a non-blank string.")
		}
		d.Name = n
	}
	if raw, has := body["details"]; has {
		details, isMap := raw.(map[string]any)
		if !isMap {
			return fieldErr("details", "value must be a map.")
		}
		if details["password"] == RedactedPassword {
			details["password"] = d.Details["password"]
		}
		if rep := testConnection(details); rep.status != 0 {
			return rep
		}
		d.Details = details
	}
	return ok(redact(d))
}

// ---- collections ----

func (s *Server) listCollections(r *http.Request) reply {
	archived := r.URL.Query().Get("archived") == "true"
	out := []any{map[string]any{"id": "root", "name": "Our analytics", "location": nil, "archived": false,
		"personal_owner_id": nil, "can_write": true}}
	for _, c := range s.collections {
		if c.Archived == archived {
			out = append(out, c)
		}
	}
	return ok(out)
}

// nonBlankOrNull checks a description: null or a non-blank string.
func nonBlankOrNull(body map[string]any, key string) (*string, reply, bool) {
	v, has := body[key]
	if !has || v == nil {
		return nil, reply{}, true
	}
	str, isStr := v.(string)
	if !isStr || strings.TrimSpace(str) == "" {
		return nil, fieldErr(key, "nullable value must be a non-blank string."), false
	}
	return &str, reply{}, true
}

func (s *Server) createCollection(body map[string]any) reply {
	name, _ := body["name"].(string)
	if strings.TrimSpace(name) == "" {
		return fieldErr("name", "value must be a non-blank string.")
	}
	desc, rep, good := nonBlankOrNull(body, "description")
	if !good {
		return rep
	}
	color, _ := body["color"].(string)
	if s.level < 50 && (len(color) != 7 || color[0] != '#') {
		return fieldErr("color", "value must be a string that matches the regex `^#[0-9A-Fa-f]{6}$`.")
	}
	loc := "/"
	if p, has := body["parent_id"]; has && p != nil {
		pid, _ := p.(float64)
		parent := find(s.collections, func(c *Collection) bool { return c.ID == int(pid) && c.PersonalOwnerID == nil && c.Type == nil })
		if parent == nil {
			return notFound
		}
		loc = fmt.Sprintf("%s%d/", parent.Location, parent.ID)
	}
	c := &Collection{ID: s.id(), Name: name, Description: desc, Color: color, Location: loc}
	s.collections = append(s.collections, c)
	return ok(c)
}

func (s *Server) updateCollection(id int, body map[string]any) reply {
	c := find(s.collections, func(c *Collection) bool { return c.ID == id })
	if c == nil {
		return notFound
	}
	if _, has := body["description"]; has {
		desc, rep, good := nonBlankOrNull(body, "description")
		if !good {
			return rep
		}
		c.Description = desc
	}
	if n, has := body["name"].(string); has {
		c.Name = n
	}
	if a, has := body["archived"].(bool); has {
		c.Archived = a
	}
	return ok(c)
}

func (s *Server) items(id int, r *http.Request) reply {
	if find(s.collections, func(c *Collection) bool { return c.ID == id }) == nil {
		return notFound
	}
	models := r.URL.Query()["models"]
	want := func(m string) bool {
		if len(models) == 0 {
			return true
		}
		for _, x := range models {
			if x == m {
				return true
			}
		}
		return false
	}
	data := []any{}
	if want("card") {
		for _, c := range s.cards {
			if c.CollectionID != nil && *c.CollectionID == id && !c.Archived && c.Type == "question" {
				data = append(data, map[string]any{"id": c.ID, "name": c.Name, "model": "card", "display": c.Display})
			}
		}
	}
	if want("dashboard") {
		for _, d := range s.dashboards {
			if d.CollectionID != nil && *d.CollectionID == id && !d.Archived {
				data = append(data, map[string]any{"id": d.ID, "name": d.Name, "model": "dashboard"})
			}
		}
	}
	return ok(map[string]any{"total": len(data), "data": data, "models": models, "limit": nil, "offset": nil})
}

// ---- cards ----

func (s *Server) collectionRef(body map[string]any) (*int, reply, bool) {
	v, has := body["collection_id"]
	if !has || v == nil {
		return nil, reply{}, true
	}
	f, isNum := v.(float64)
	if !isNum {
		return nil, fieldErr("collection_id", "nullable value must be an integer greater than zero."), false
	}
	id := int(f)
	if find(s.collections, func(c *Collection) bool { return c.ID == id }) == nil {
		return nil, notFound, false
	}
	return &id, reply{}, true
}

func validQuery(dq map[string]any) bool {
	if _, hasDB := dq["database"].(float64); !hasDB {
		return false
	}
	switch dq["type"] {
	case "native":
		n, _ := dq["native"].(map[string]any)
		q, _ := n["query"].(string)
		return q != ""
	case "query":
		return true
	}
	return false
}

func (s *Server) createCard(body map[string]any) reply {
	name, _ := body["name"].(string)
	display, _ := body["display"].(string)
	dq, dqMap := body["dataset_query"].(map[string]any)
	vs, vsMap := body["visualization_settings"].(map[string]any)
	switch {
	case strings.TrimSpace(name) == "":
		return fieldErr("name", "value must be a non-blank string.")
	case !dqMap:
		return fieldErr("dataset_query", "value must be a map.")
	case strings.TrimSpace(display) == "":
		return fieldErr("display", "value must be a non-blank string.")
	case !vsMap:
		return fieldErr("visualization_settings", "value must be a map.")
	case !validQuery(dq):
		return fieldErr("dataset_query", "value must be a valid query with a database.")
	}
	desc, rep, good := nonBlankOrNull(body, "description")
	if !good {
		return rep
	}
	coll, rep, good := s.collectionRef(body)
	if !good {
		return rep
	}
	typ := "question"
	if t, has := body["type"].(string); has && s.level >= 49 {
		typ = t
	}
	c := &Card{ID: s.id(), Name: name, Type: typ, Description: desc, Display: display,
		CollectionID: coll, VisualizationSettings: vs, DatasetQuery: dq}
	s.cards = append(s.cards, c)
	return ok(s.cardJSON(c, true))
}

func (s *Server) updateCard(id int, body map[string]any) reply {
	c := find(s.cards, func(c *Card) bool { return c.ID == id })
	if c == nil {
		return notFound
	}
	next := *c
	if rep, good := s.patchCommon(body, &next.Name, &next.Description, &next.CollectionID, &next.Archived); !good {
		return rep
	}
	if v, has := body["display"]; has {
		d, _ := v.(string)
		if strings.TrimSpace(d) == "" {
			return fieldErr("display", "value must be a non-blank string.")
		}
		next.Display = d
	}
	if v, has := body["visualization_settings"]; has {
		vs, isMap := v.(map[string]any)
		if !isMap {
			return fieldErr("visualization_settings", "value must be a map.")
		}
		next.VisualizationSettings = vs
	}
	if v, has := body["dataset_query"]; has {
		dq, isMap := v.(map[string]any)
		if !isMap {
			return fieldErr("dataset_query", "value must be a map.")
		}
		if !validQuery(dq) {
			return fieldErr("dataset_query", "value must be a valid query with a database.")
		}
		next.DatasetQuery = dq
	}
	*c = next
	return ok(s.cardJSON(c, true))
}

// patchCommon applies the fields cards and dashboards share (name,
// description, collection_id, archived) from a PUT body.
func (s *Server) patchCommon(body map[string]any, name *string, desc **string, coll **int, archived *bool) (reply, bool) {
	if v, has := body["name"]; has {
		n, _ := v.(string)
		if strings.TrimSpace(n) == "" {
			return fieldErr("name", "value must be a non-blank string."), false
		}
		*name = n
	}
	if _, has := body["description"]; has {
		d, rep, good := nonBlankOrNull(body, "description")
		if !good {
			return rep, false
		}
		*desc = d
	}
	if _, has := body["collection_id"]; has {
		c, rep, good := s.collectionRef(body)
		if !good {
			return rep, false
		}
		*coll = c
	}
	if a, has := body["archived"].(bool); has {
		*archived = a
	}
	return reply{}, true
}

// cardJSON answers a card; from 0.57 the query is MBQL 5 unless legacy is asked.
func (s *Server) cardJSON(c *Card, legacy bool) map[string]any {
	var m map[string]any
	b, _ := json.Marshal(c)
	_ = json.Unmarshal(b, &m)
	m["query_type"] = c.DatasetQuery["type"]
	if s.level >= 57 && !legacy && c.DatasetQuery["type"] == "native" {
		n, _ := c.DatasetQuery["native"].(map[string]any)
		m["dataset_query"] = map[string]any{
			"lib/type": "mbql/query", "database": c.DatasetQuery["database"],
			"stages": []any{map[string]any{"lib/type": "mbql.stage/native", "native": n["query"],
				"template-tags": n["template-tags"]}},
		}
	}
	return m
}

// ---- dashboards ----

func (s *Server) createDashboard(body map[string]any) reply {
	name, _ := body["name"].(string)
	if strings.TrimSpace(name) == "" {
		return fieldErr("name", "value must be a non-blank string.")
	}
	desc, rep, good := nonBlankOrNull(body, "description")
	if !good {
		return rep
	}
	coll, rep, good := s.collectionRef(body)
	if !good {
		return rep
	}
	d := &Dashboard{ID: s.id(), Name: name, Description: desc, CollectionID: coll, Dashcards: []Dashcard{}, Tabs: []any{}}
	s.dashboards = append(s.dashboards, d)
	return ok(s.dashboardJSON(d))
}

func (s *Server) dashboardJSON(d *Dashboard) map[string]any {
	var m map[string]any
	b, _ := json.Marshal(d)
	_ = json.Unmarshal(b, &m)
	dcs, _ := m["dashcards"].([]any)
	for i, raw := range dcs {
		dc := raw.(map[string]any)
		if cid := d.Dashcards[i].CardID; cid != nil {
			if c := find(s.cards, func(c *Card) bool { return c.ID == *cid }); c != nil {
				dc["card"] = s.cardJSON(c, true)
			}
		}
		dc["dashboard_id"] = d.ID
	}
	return m
}

func (s *Server) updateDashboard(id int, body map[string]any) reply {
	d := find(s.dashboards, func(d *Dashboard) bool { return d.ID == id })
	if d == nil {
		return notFound
	}
	next := *d
	if rep, good := s.patchCommon(body, &next.Name, &next.Description, &next.CollectionID, &next.Archived); !good {
		return rep
	}
	if raw, has := body["dashcards"]; has {
		dcs, rep := s.replaceDashcards(d, raw)
		if rep.status != 0 {
			return rep
		}
		next.Dashcards = dcs
	}
	if raw, has := body["tabs"]; has {
		tabs, _ := raw.([]any)
		next.Tabs = append([]any{}, tabs...)
	}
	*d = next
	return ok(s.dashboardJSON(d))
}

// replaceDashcards applies the full-replace semantics: negative ids create,
// existing ids update, current dashcards left out are deleted.
func (s *Server) replaceDashcards(d *Dashboard, raw any) ([]Dashcard, reply) {
	list, isList := raw.([]any)
	if !isList {
		return nil, fieldErr("dashcards", "value must be an array.")
	}
	seen := map[int]bool{}
	out := make([]Dashcard, 0, len(list))
	for _, item := range list {
		m, isMap := item.(map[string]any)
		if !isMap {
			return nil, fieldErr("dashcards", "value must be an array of maps.")
		}
		fid, hasID := m["id"].(float64)
		num := func(k string) (int, bool) { f, ok := m[k].(float64); return int(f), ok }
		row, okR := num("row")
		col, okC := num("col")
		sx, okX := num("size_x")
		sy, okY := num("size_y")
		if !hasID {
			return nil, fieldErr("dashcards", "value must be an array. Each value must be a map with an integer id.")
		}
		id := int(fid)
		if seen[id] {
			return nil, fieldErr("dashcards", "value must be an array. Each value must be a map with a distinct id.")
		}
		seen[id] = true
		if !okR || !okC || row < 0 || col < 0 {
			return nil, fieldErr("dashcards", "value must be an array. Each value must be a map with row and col integers greater than or equal to zero.")
		}
		if !okX || !okY || sx <= 0 || sy <= 0 {
			return nil, fieldErr("dashcards", "value must be an array. Each value must be a map with size_x and size_y integers greater than zero.")
		}
		if col+sx > 24 {
			return nil, fieldErr("dashcards", "value must be an array. Each card must fit the 24-column grid.")
		}
		dc := Dashcard{Row: row, Col: col, SizeX: sx, SizeY: sy, ParameterMappings: []any{}, Series: []any{},
			VisualizationSettings: map[string]any{}}
		if v, has := m["card_id"]; has && v != nil {
			cf, isNum := v.(float64)
			cid := int(cf)
			if !isNum || find(s.cards, func(c *Card) bool { return c.ID == cid }) == nil {
				return nil, notFound
			}
			dc.CardID = &cid
		}
		if vs, isMap := m["visualization_settings"].(map[string]any); isMap {
			dc.VisualizationSettings = vs
		}
		if id < 0 {
			dc.ID = s.id()
		} else {
			known := false
			for _, cur := range d.Dashcards {
				known = known || cur.ID == id
			}
			if !known {
				return nil, notFound
			}
			dc.ID = id
		}
		out = append(out, dc)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, reply{}
}
