package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestAlertRulesCheck(t *testing.T) {
	promtool := tool(t, "promtool")
	dir := repoPath(t, "deploy", "prometheus")
	out, err := run(t, dir, nil, promtool, "check", "rules", "alerts.yml")
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool check rules printed no SUCCESS:\n%s", out)
	}
}

func TestAlertRulesUnitTests(t *testing.T) {
	promtool := tool(t, "promtool")
	dir := repoPath(t, "deploy", "prometheus")
	out, err := run(t, dir, nil, promtool, "test", "rules", "alerts_test.yml")
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// Every alert in alerts.yml has a unit test that expects it to fire, and a
// runbook anchor that exists in docs/operations.md.
func TestEveryAlertIsTestedAndDocumented(t *testing.T) {
	alerts := alertRules(t)
	if len(alerts) < 6 {
		t.Fatalf("only %d alerts", len(alerts))
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, repoPath(t, "deploy", "prometheus", "alerts_test.yml"), &tests)
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	doc, err := os.ReadFile(repoPath(t, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "#") {
			anchors[githubAnchor(strings.TrimLeft(line, "# "))] = true
		}
	}
	for _, a := range alerts {
		if !fires[a.Alert] {
			t.Errorf("alert %s has no unit test in alerts_test.yml that expects it to fire", a.Alert)
		}
		for _, k := range []string{"summary", "description", "runbook"} {
			if a.Annotations[k] == "" {
				t.Errorf("alert %s has no %s annotation", a.Alert, k)
			}
		}
		if a.Labels["severity"] != "warning" && a.Labels["severity"] != "critical" {
			t.Errorf("alert %s severity %q, want warning or critical", a.Alert, a.Labels["severity"])
		}
		rb := a.Annotations["runbook"]
		file, anchor, _ := strings.Cut(rb, "#")
		if file != "docs/operations.md" || !anchors[anchor] {
			t.Errorf("alert %s runbook %q: no heading with that anchor in docs/operations.md", a.Alert, rb)
		}
	}
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestPrometheusConfig(t *testing.T) {
	promtool := tool(t, "promtool")
	dir := repoPath(t, "deploy", "prometheus")
	out, err := run(t, dir, nil, promtool, "check", "config", "prometheus.yml")
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, filepath.Join(dir, "prometheus.yml"), &cfg)
	// PgproxyDown expects job="pgproxy"; the target is the compose service
	// on the port of http.addr in the shared config.
	want := "pgproxy:" + portOf(t, containerConfig(t, nil).HTTP.Addr)
	found := false
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName == "pgproxy" {
			for _, s := range sc.StaticConfigs {
				found = found || slices.Contains(s.Targets, want)
			}
		}
	}
	if !found {
		t.Errorf("prometheus.yml has no job pgproxy scraping %s", want)
	}
}

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func alertRules(t testing.TB) []alertRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, repoPath(t, "deploy", "prometheus", "alerts.yml"), &f)
	var out []alertRule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

func readYAML(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

var metricName = regexp.MustCompile(`\bpgproxy_[a-z0-9_]+`)

// usedMetricNames are the pgproxy_* names in the alert expressions and the
// dashboard queries, with where each is used.
func usedMetricNames(t testing.TB) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	for _, a := range alertRules(t) {
		for _, n := range metricName.FindAllString(a.Expr, -1) {
			used[n] = append(used[n], "alert "+a.Alert)
		}
	}
	for _, q := range dashboardQueries(t) {
		for _, n := range metricName.FindAllString(q.expr, -1) {
			used[n] = append(used[n], "panel "+q.panel)
		}
	}
	return used
}

type dashQuery struct{ panel, expr string }

type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashPanel `json:"panels"`
}

type dashPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"`
}

func readDashboard(t testing.TB) dashboard {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, "deploy", "grafana", "pgproxy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("pgproxy.json: %v", err)
	}
	return d
}

func dashboardQueries(t testing.TB) []dashQuery {
	t.Helper()
	var out []dashQuery
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, dashQuery{p.Title, tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(readDashboard(t).Panels)
	return out
}

// TestDashboard checks the dashboard's structure and, through promtool,
// that every query is valid PromQL (each becomes a recording rule, with
// Grafana's variables replaced by values).
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID != "pgproxy" || d.Title == "" {
		t.Errorf("uid %q title %q", d.UID, d.Title)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	if !vars["datasource"] || !vars["instance"] {
		t.Errorf("dashboard variables %v, want datasource and instance", vars)
	}
	ids := map[int]bool{}
	titles := map[string]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		titles[p.Title] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type != "row" && (len(p.Targets) == 0 || p.Datasource == nil || p.Datasource.UID != "${datasource}") {
			t.Errorf("panel %q: no query or not on the datasource variable", p.Title)
		}
	}
	// What issue 7 asks the dashboard to show.
	used := usedMetricNames(t)
	for what, metric := range map[string]string{
		"lag per replica":   "pgproxy_replica_lag_seconds",
		"routing decisions": "pgproxy_routing_decisions_total",
		"sessions":          "pgproxy_client_sessions",
		"fallbacks":         "pgproxy_fallbacks_total",
		"lineage":           "pgproxy_lineage_events_total",
		"freshness for BI":  "pgproxy_read_session_staleness_seconds_bucket",
		// issue 17: the pool row.
		"pool servers":         "pgproxy_pool_servers",
		"pool clients waiting": "pgproxy_pool_clients_waiting",
		"pool wait":            "pgproxy_pool_wait_seconds_bucket",
		"pool pins":            "pgproxy_pool_pins_total",
	} {
		found := false
		for _, where := range used[metric] {
			found = found || strings.HasPrefix(where, "panel ")
		}
		if !found {
			t.Errorf("no panel shows %s (%s)", what, metric)
		}
	}

	promtool := tool(t, "promtool")
	repl := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$instance", ".*", "${instance}", ".*")
	var rules []map[string]string
	for i, q := range dashboardQueries(t) {
		rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard:query_%d", i), "expr": repl.Replace(q.expr)})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard_rules.yml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "", nil, promtool, "check", "rules", path); err != nil {
		t.Fatalf("a dashboard query is not valid PromQL: %v\n%s", err, out)
	}
}
