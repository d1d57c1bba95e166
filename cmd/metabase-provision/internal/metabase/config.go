package metabase

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// GridColumns is the width of Metabase's dashboard grid.
const GridColumns = 24

// maxConfigBytes bounds what ParseConfig reads.
const maxConfigBytes = 4 << 20

// Config is the desired state, read from YAML (configs/metabase.yaml) and
// the environment. Build it with [LoadConfig] or [ParseConfig], which
// validate it.
type Config struct {
	// Metabase holds instance-level settings.
	Metabase Instance `yaml:"metabase"`
	// Database is the warehouse Metabase queries: pgproxy's read listener.
	Database Database `yaml:"database"`
	// Collection is the collection tree the job owns.
	Collection Collection `yaml:"collection"`
	// Cards are native SQL questions.
	Cards []Card `yaml:"cards"`
	// Dashboards place cards on the 24-column grid.
	Dashboards []Dashboard `yaml:"dashboards"`
}

// Instance holds settings of the Metabase instance itself.
type Instance struct {
	// URL of Metabase (env MB_URL overrides).
	URL string `yaml:"url"`
	// SiteName and SiteLocale are sent with the first-run setup.
	SiteName   string `yaml:"site_name"`
	SiteLocale string `yaml:"site_locale"`
	// AdminFirstName and AdminLastName name the admin created by the
	// first-run setup (its email and password come from the environment).
	AdminFirstName string `yaml:"admin_first_name"`
	AdminLastName  string `yaml:"admin_last_name"`
}

// Database describes the Metabase database (engine postgres). The job finds
// it by Name + Host + DBName.
type Database struct {
	Name   string `yaml:"name"`
	Engine string `yaml:"engine"`
	// Host, Port, DBName, User: env MB_DB_HOST, MB_DB_PORT, MB_DB_NAME,
	// MB_DB_USER override them.
	Host   string `yaml:"host"`
	Port   int    `yaml:"port"`
	DBName string `yaml:"dbname"`
	User   string `yaml:"user"`
	SSL    bool   `yaml:"ssl"`
	// Password comes only from the environment (MB_DB_PASS), never from YAML.
	Password string `yaml:"-"`
}

// Collection is the job's top-level collection and its sub-collections.
type Collection struct {
	Name        string          `yaml:"name"`
	Description string          `yaml:"description"`
	Color       string          `yaml:"color"`
	Children    []SubCollection `yaml:"collections"`
}

// SubCollection is a collection directly under the job's collection.
type SubCollection struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
}

// Card is a native SQL question.
type Card struct {
	Name string `yaml:"name"`
	// Collection names a sub-collection; empty means the top collection.
	Collection  string `yaml:"collection"`
	Description string `yaml:"description"`
	// Display is Metabase's visualization type (line, bar, scalar, table, ...).
	Display string `yaml:"display"`
	SQL     string `yaml:"sql"`
	// VisualizationSettings is sent as is; it must name the columns the
	// visualization uses (graph.dimensions/graph.metrics, scalar.field,
	// table.columns).
	VisualizationSettings map[string]any `yaml:"visualization_settings"`
}

// Dashboard is a dashboard and the cards placed on it.
type Dashboard struct {
	Name        string     `yaml:"name"`
	Collection  string     `yaml:"collection"`
	Description string     `yaml:"description"`
	Cards       []DashCard `yaml:"cards"`
}

// DashCard places a card (by name) on a dashboard's grid.
type DashCard struct {
	Card  string `yaml:"card"`
	Row   int    `yaml:"row"`
	Col   int    `yaml:"col"`
	SizeX int    `yaml:"size_x"`
	SizeY int    `yaml:"size_y"`
}

// Displays are the visualization types a card may use.
var displays = map[string]bool{
	"table": true, "scalar": true, "line": true, "bar": true, "row": true, "area": true,
	"combo": true, "pie": true, "smartscalar": true, "progress": true, "gauge": true,
	"funnel": true, "waterfall": true, "scatter": true, "pivot": true, "map": true, "object": true,
}

// LoadConfig reads the YAML file at path, applies the environment (getenv,
// usually os.Getenv) and validates the result.
func LoadConfig(path string, getenv func(string) string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	cfg, err := ParseConfig(f, getenv)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML from r (unknown keys are errors), applies the
// environment and validates. getenv may be nil (no environment).
func ParseConfig(r io.Reader, getenv func(string) string) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("config larger than %d bytes", maxConfigBytes)
	}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty")
		}
		return nil, fmt.Errorf("parsing config: %w", err)
	}
	// Every key and value is checked against Config first, so that
	// problems are named by key (database.password, metabase.sitename),
	// not by Go type as the decoder names them.
	var problems []error
	checkNode(&doc, reflect.TypeOf(Config{}), "", &problems)
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	var cfg Config
	if err := doc.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("parsing config: %w", err)
	}
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if err := cfg.applyEnv(getenv); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) applyEnv(getenv func(string) string) error {
	set := func(dst *string, key string) {
		if v := getenv(key); v != "" {
			*dst = v
		}
	}
	set(&c.Metabase.URL, "MB_URL")
	set(&c.Database.Host, "MB_DB_HOST")
	set(&c.Database.DBName, "MB_DB_NAME")
	set(&c.Database.User, "MB_DB_USER")
	set(&c.Database.Password, "MB_DB_PASS")
	if v := getenv("MB_DB_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("MB_DB_PORT: %q is not a port number", v)
		}
		c.Database.Port = p
	}
	return nil
}

func (c *Config) applyDefaults() {
	if c.Database.Engine == "" {
		c.Database.Engine = "postgres"
	}
	if c.Database.Port == 0 {
		c.Database.Port = 5432
	}
	if c.Collection.Color == "" {
		c.Collection.Color = "#509EE3"
	}
	if c.Metabase.SiteName == "" {
		c.Metabase.SiteName = "OFITEC"
	}
	if c.Metabase.SiteLocale == "" {
		c.Metabase.SiteLocale = "es"
	}
	if c.Metabase.AdminFirstName == "" {
		c.Metabase.AdminFirstName = "Admin"
	}
	if c.Metabase.AdminLastName == "" {
		c.Metabase.AdminLastName = "OFITEC"
	}
}

// Validate reports every problem of the desired state, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	blank := func(s string) bool { return strings.TrimSpace(s) == "" }

	if blank(c.Metabase.URL) {
		bad("metabase.url: required (or env MB_URL)")
	}
	d := c.Database
	if blank(d.Name) {
		bad("database.name: required")
	}
	if d.Engine != "postgres" {
		bad("database.engine: %q is not supported (only postgres)", d.Engine)
	}
	if blank(d.Host) {
		bad("database.host: required (or env MB_DB_HOST)")
	}
	if d.Port <= 0 || d.Port > 65535 {
		bad("database.port: %d is out of range", d.Port)
	}
	if blank(d.DBName) {
		bad("database.dbname: required (or env MB_DB_NAME)")
	}
	if blank(d.User) {
		bad("database.user: required (or env MB_DB_USER)")
	}
	if blank(c.Collection.Name) {
		bad("collection.name: required")
	}
	children := map[string]bool{"": true}
	for i, ch := range c.Collection.Children {
		switch {
		case blank(ch.Name):
			bad("collection.collections[%d].name: required", i)
		case children[ch.Name]:
			bad("collection.collections[%d].name: %q is repeated", i, ch.Name)
		}
		children[ch.Name] = true
	}
	cards := map[string]bool{}
	for i, cd := range c.Cards {
		at := fmt.Sprintf("cards[%d]", i)
		if blank(cd.Name) {
			bad("%s.name: required", at)
		} else {
			at = fmt.Sprintf("cards[%d] %q", i, cd.Name)
			if cards[cd.Name] {
				bad("%s: name is repeated (card names must be unique in the collection tree)", at)
			}
			cards[cd.Name] = true
		}
		if !children[cd.Collection] {
			bad("%s.collection: %q is not a sub-collection of %q", at, cd.Collection, c.Collection.Name)
		}
		if !displays[cd.Display] {
			bad("%s.display: %q is not a Metabase display type", at, cd.Display)
		}
		if blank(cd.SQL) {
			bad("%s.sql: required", at)
		}
		if cd.VisualizationSettings == nil {
			bad("%s.visualization_settings: required (name the columns the chart uses)", at)
		} else if len(cd.Columns()) == 0 {
			bad("%s.visualization_settings: names no column (graph.dimensions/graph.metrics, scalar.field or table.columns)", at)
		}
	}
	dashboards := map[string]bool{}
	for i, db := range c.Dashboards {
		at := fmt.Sprintf("dashboards[%d]", i)
		if blank(db.Name) {
			bad("%s.name: required", at)
		} else {
			at = fmt.Sprintf("dashboards[%d] %q", i, db.Name)
			if dashboards[db.Name] {
				bad("%s: name is repeated", at)
			}
			dashboards[db.Name] = true
		}
		if !children[db.Collection] {
			bad("%s.collection: %q is not a sub-collection of %q", at, db.Collection, c.Collection.Name)
		}
		for j, dc := range db.Cards {
			dat := fmt.Sprintf("%s.cards[%d]", at, j)
			if !cards[dc.Card] {
				bad("%s.card: %q is not a card of this config", dat, dc.Card)
			}
			if dc.SizeX <= 0 || dc.SizeY <= 0 {
				bad("%s: size_x and size_y must be > 0", dat)
			}
			if dc.Row < 0 || dc.Col < 0 {
				bad("%s: row and col must be >= 0", dat)
			}
			if dc.Col+dc.SizeX > GridColumns {
				bad("%s: col %d + size_x %d exceeds the %d-column grid", dat, dc.Col, dc.SizeX, GridColumns)
			}
			for k := range j {
				if o := db.Cards[k]; overlap(o, dc) {
					bad("%s: overlaps %s.cards[%d] (%q)", dat, at, k, o.Card)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func overlap(a, b DashCard) bool {
	return a.Col < b.Col+b.SizeX && b.Col < a.Col+a.SizeX &&
		a.Row < b.Row+b.SizeY && b.Row < a.Row+a.SizeY
}

// Columns returns the result columns the card's visualization_settings name
// (graph.dimensions, graph.metrics, scalar.field, and the names of enabled
// table.columns), sorted and without repeats.
func (c Card) Columns() []string {
	seen := map[string]bool{}
	add := func(v any) {
		if s, ok := v.(string); ok && s != "" {
			seen[s] = true
		}
	}
	vs := c.VisualizationSettings
	for _, key := range []string{"graph.dimensions", "graph.metrics"} {
		if list, ok := vs[key].([]any); ok {
			for _, v := range list {
				add(v)
			}
		}
	}
	add(vs["scalar.field"])
	if list, ok := vs["table.columns"].([]any); ok {
		for _, v := range list {
			if m, ok := v.(map[string]any); ok {
				if en, ok := m["enabled"].(bool); ok && !en {
					continue
				}
				add(m["name"])
			}
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Credentials are how the job authenticates, read from the environment by
// [CredentialsFromEnv]. They are never printed.
type Credentials struct {
	// User and Password log in (POST /api/session); env MB_USER, MB_PASS.
	User, Password string
	// APIKey (0.49+) replaces the login when set; env MB_API_KEY.
	APIKey string
	// AdminEmail and AdminPassword create the first admin on a fresh
	// instance; env MB_ADMIN_EMAIL, MB_ADMIN_PASS, defaulting to MB_USER,
	// MB_PASS.
	AdminEmail, AdminPassword string
}

// CredentialsFromEnv reads MB_USER, MB_PASS, MB_API_KEY, MB_ADMIN_EMAIL and
// MB_ADMIN_PASS.
func CredentialsFromEnv(getenv func(string) string) Credentials {
	c := Credentials{
		User:          getenv("MB_USER"),
		Password:      getenv("MB_PASS"),
		APIKey:        getenv("MB_API_KEY"),
		AdminEmail:    getenv("MB_ADMIN_EMAIL"),
		AdminPassword: getenv("MB_ADMIN_PASS"),
	}
	if c.AdminEmail == "" {
		c.AdminEmail = c.User
	}
	if c.AdminPassword == "" {
		c.AdminPassword = c.Password
	}
	return c
}

// String never shows secrets.
func (c Credentials) String() string {
	switch {
	case c.APIKey != "":
		return "api key"
	case c.User != "":
		return "user " + c.User
	default:
		return "no credentials"
	}
}

// checkNode checks a YAML node against the type the decoder will fill and
// adds one error per problem, named by its key path and line: unknown keys
// (with the keys that exist there), a database password in the file, and
// values of the wrong kind. Values the job keeps as they are
// (visualization_settings) are not looked into.
func checkNode(n *yaml.Node, t reflect.Type, path string, problems *[]error) {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n == nil {
		return
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) > 0 {
			checkNode(n.Content[0], t, path, problems)
		}
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	bad := func(format string, args ...any) {
		key := path
		if key == "" {
			key = "(top level)"
		}
		*problems = append(*problems, fmt.Errorf("%s (line %d): %s", key, n.Line, fmt.Sprintf(format, args...)))
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad("must be a mapping of keys")
			return
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = t.Field(i).Type
			names = append(names, name)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := k.Value
			if path != "" {
				key = path + "." + k.Value
			}
			ft, ok := fields[k.Value]
			switch {
			case ok:
				checkNode(v, ft, key, problems)
			case key == "database.password":
				*problems = append(*problems, fmt.Errorf("%s (line %d): the database password is never read from the file: set MB_DB_PASS in the environment instead", key, k.Line))
			default:
				*problems = append(*problems, fmt.Errorf("%s (line %d): unknown key; the keys here are %s", key, k.Line, strings.Join(names, ", ")))
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad("must be a list")
			return
		}
		for i, e := range n.Content {
			checkNode(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), problems)
		}
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			bad("must be a whole number, got %s", shownValue(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			bad("must be true or false, got %s", shownValue(n))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			bad("must be a text, got %s", shownValue(n))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			bad("must be a mapping")
		}
	}
}

// shownValue describes a bad value for a message.
func shownValue(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	return strconv.Quote(v)
}
