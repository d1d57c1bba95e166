package metabase

import (
	"os"
	"slices"
	"strings"
	"testing"
)

const minimalYAML = `
metabase: {url: "http://mb:3000"}
database: {name: DB, host: pgproxy, port: 6433, dbname: ofitec, user: ro}
collection:
  name: OFITEC
  collections: [{name: Finanzas}]
cards:
  - name: A
    collection: Finanzas
    display: line
    sql: select 1 as x, 2 as y
    visualization_settings: {graph.dimensions: [x], graph.metrics: [y]}
dashboards:
  - name: D
    collection: Finanzas
    cards: [{card: A, row: 0, col: 0, size_x: 12, size_y: 6}]
`

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseConfigAppliesEnvAndDefaults(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader(minimalYAML), envOf(map[string]string{
		"MB_URL": "https://bi.ofitec.cl", "MB_DB_HOST": "proxy.internal", "MB_DB_PORT": "7433",
		"MB_DB_NAME": "prod", "MB_DB_USER": "metabase", "MB_DB_PASS": "s3cret",
	}))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Database
	if cfg.Metabase.URL != "https://bi.ofitec.cl" || d.Host != "proxy.internal" || d.Port != 7433 ||
		d.DBName != "prod" || d.User != "metabase" || d.Password != "s3cret" {
		t.Errorf("env not applied: %+v %+v", cfg.Metabase, d)
	}
	if d.Engine != "postgres" || cfg.Collection.Color != "#509EE3" || cfg.Metabase.SiteLocale != "es" {
		t.Errorf("defaults not applied: %+v %+v", d, cfg.Collection)
	}
}

func TestParseConfigErrors(t *testing.T) {
	replace := func(old, new string) string {
		if !strings.Contains(minimalYAML, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(minimalYAML, old, new, 1)
	}
	cases := []struct {
		name string
		yaml string
		env  map[string]string
		want string
	}{
		{"empty", "", nil, "config is empty"},
		{"unknown key", replace("metabase: {url:", "metabase: {colour: red, url:"), nil, "metabase.colour (line 2): unknown key; the keys here are url, site_name, site_locale, admin_first_name, admin_last_name"},
		{"password in yaml", replace("user: ro}", "user: ro, password: x}"), nil, "database.password (line 3): the database password is never read from the file: set MB_DB_PASS"},
		{"unknown nested key", replace("size_y: 6}]", "size_y: 6, width: 3}]"), nil, "dashboards[0].cards[0].width (line 16): unknown key; the keys here are card, row, col, size_x, size_y"},
		{"port not a number", replace("port: 6433", "port: six"), nil, `database.port (line 3): must be a whole number, got "six"`},
		{"cards not a list", replace("cards:\n  - name: A", "cards:\n  name: A\nx:\n  - name: A"), nil, "cards (line 8): must be a list"},
		{"no url", replace(`metabase: {url: "http://mb:3000"}`, "metabase: {}"), nil, "metabase.url: required"},
		{"engine", replace("name: DB,", "name: DB, engine: duckdb,"), nil, `database.engine: "duckdb" is not supported`},
		{"bad port env", minimalYAML, map[string]string{"MB_DB_PORT": "x"}, "MB_DB_PORT"},
		{"no dbname", replace("dbname: ofitec, ", ""), nil, "database.dbname: required"},
		{"unknown collection", replace("    collection: Finanzas\n    display", "    collection: Ventas\n    display"), nil, `"Ventas" is not a sub-collection`},
		{"display", replace("display: line", "display: chart"), nil, `"chart" is not a Metabase display type`},
		{"no sql", replace("sql: select 1 as x, 2 as y", "sql: ' '"), nil, "sql: required"},
		{"no settings", replace("visualization_settings: {graph.dimensions: [x], graph.metrics: [y]}", "description: y"), nil, "visualization_settings: required"},
		{"settings without columns", replace("{graph.dimensions: [x], graph.metrics: [y]}", "{graph.x_axis.title_text: X}"), nil, "names no column"},
		{"null settings", replace("{graph.dimensions: [x], graph.metrics: [y]}", "null"), nil, "visualization_settings: required"},
		{"repeated card", replace("dashboards:", "  - {name: A, display: table, sql: select 1 as z, visualization_settings: {scalar.field: z}}\ndashboards:"), nil, "name is repeated"},
		{"unknown card on dashboard", replace("card: A,", "card: B,"), nil, `"B" is not a card of this config`},
		{"off the grid", replace("col: 0, size_x: 12", "col: 13, size_x: 12"), nil, "exceeds the 24-column grid"},
		{"zero size", replace("size_y: 6", "size_y: 0"), nil, "size_x and size_y must be > 0"},
		{"overlap", replace("size_y: 6}]", "size_y: 6}, {card: A, row: 5, col: 11, size_x: 2, size_y: 2}]"), nil, "overlaps"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(strings.NewReader(tc.yaml), envOf(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
			if err != nil && (strings.Contains(err.Error(), "metabase.") && strings.Contains(err.Error(), "in type") || strings.Contains(err.Error(), "unmarshal")) {
				t.Errorf("error names Go types: %v", err)
			}
		})
	}
}

func TestCardColumns(t *testing.T) {
	cases := []struct {
		name string
		vs   map[string]any
		want []string
	}{
		{"graph", map[string]any{"graph.dimensions": []any{"fecha", "tramo"}, "graph.metrics": []any{"monto"}}, []string{"fecha", "monto", "tramo"}},
		{"scalar", map[string]any{"scalar.field": "dias_caja"}, []string{"dias_caja"}},
		{"table skips disabled", map[string]any{"table.columns": []any{
			map[string]any{"name": "a", "enabled": true}, map[string]any{"name": "b", "enabled": false}, map[string]any{"name": "c"},
		}}, []string{"a", "c"}},
		{"repeats once", map[string]any{"graph.dimensions": []any{"x"}, "graph.metrics": []any{"x"}, "scalar.field": "x"}, []string{"x"}},
		{"titles are not columns", map[string]any{"graph.x_axis.title_text": "Fecha"}, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := (Card{VisualizationSettings: tc.vs}).Columns(); !slices.Equal(got, tc.want) {
				t.Errorf("Columns() = %v, want %v", got, tc.want)
			}
		})
	}
}

// The shipped configs/metabase.yaml carries what the issue asks for.
func TestShippedConfig(t *testing.T) {
	cfg, err := LoadConfig("../../../../configs/metabase.yaml", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Database.Engine != "postgres" || cfg.Database.Port != 6433 {
		t.Errorf("database should be pgproxy's read listener: %+v", cfg.Database)
	}
	var dashboards []string
	for _, d := range cfg.Dashboards {
		dashboards = append(dashboards, d.Name)
	}
	if !slices.Equal(dashboards, []string{"Dirección (C-level)", "Finanzas", "Proyectos"}) {
		t.Errorf("dashboards %v", dashboards)
	}
	sources := map[string]bool{}
	for _, c := range cfg.Cards {
		for _, table := range []string{"mart_fact_cashflow", "mart_ar_aging", "mart_ap_aging", "mart_kpi_ceo", "mart_fact_wip", "of_ceo_kpi_daily"} {
			if strings.Contains(c.SQL, table) {
				sources[table] = true
			}
		}
	}
	if len(sources) != 6 {
		t.Errorf("cards read only %v", sources)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add(minimalYAML)
	if b, err := os.ReadFile("../../../../configs/metabase.yaml"); err == nil {
		f.Add(string(b))
	}
	f.Add("cards: [{name: x, visualization_settings: {table.columns: [1, {name: 2}]}}]")
	f.Add("dashboards: [{cards: [{size_x: -1}]}]\n")
	f.Add("&a [*a]")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := ParseConfig(strings.NewReader(s), envOf(nil))
		if err == nil {
			if cfg.Validate() != nil {
				t.Fatal("accepted a config that does not validate")
			}
			for _, c := range cfg.Cards {
				_ = c.Columns()
			}
		}
	})
}
