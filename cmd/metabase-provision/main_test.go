package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/ofitec/pgproxy/test/fakemetabase"
)

func TestMain(m *testing.M) {
	// signal.NotifyContext starts the runtime's signal loop once per process.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("os/signal.signal_recv"))
}

const (
	configPath = "../../configs/metabase.yaml"
	adminEmail = "admin@ofitec.cl"
	adminPass  = "Sup3r-secreto!"
	dbPass     = "ro-Secret-123"
	apiKey     = "mb_AbCdEf0123456789"
	// 1 database + 4 collections + 15 cards + 3 dashboards in configs/metabase.yaml.
	objects = 23
)

type result struct {
	code        int
	out, errOut string
}

func runJob(t *testing.T, fake *fakemetabase.Server, env map[string]string, args ...string) result {
	t.Helper()
	vars := map[string]string{"MB_URL": fake.URL, "MB_USER": adminEmail, "MB_PASS": adminPass, "MB_DB_PASS": dbPass}
	for k, v := range env {
		vars[k] = v
	}
	var out, errOut bytes.Buffer
	if !slices.Contains(args, "--config") {
		args = append([]string{"--config", configPath}, args...)
	}
	args = append([]string{"--backoff", "5ms"}, args...)
	code := run(args, func(k string) string { return vars[k] }, &out, &errOut)
	r := result{code, out.String(), errOut.String()}
	t.Logf("metabase-provision %s → exit %d\n%s%s", strings.Join(args, " "), code, r.out, r.errOut)
	for _, secret := range []string{adminPass, dbPass, apiKey} {
		if strings.Contains(r.out+r.errOut, secret) {
			t.Errorf("output shows a secret:\n%s%s", r.out, r.errOut)
		}
	}
	return r
}

func mustSucceed(t *testing.T, r result, summary string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.out, r.errOut)
	}
	if !strings.Contains(r.out, "done: "+summary) {
		t.Fatalf("want %q in the output:\n%s", "done: "+summary, r.out)
	}
}

// newMutations returns the mutating requests the fake saw after the first n.
func newMutations(fake *fakemetabase.Server, n int) []string { return fake.Mutations()[n:] }

// editedConfig writes a copy of configs/metabase.yaml changed by edit.
func editedConfig(t *testing.T, edit func(doc map[string]any)) string {
	t.Helper()
	b, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	edit(doc)
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "metabase.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func cardByName(fake *fakemetabase.Server, name string) (fakemetabase.Card, bool) {
	for _, c := range fake.Cards() {
		if c.Name == name && !c.Archived {
			return c, true
		}
	}
	return fakemetabase.Card{}, false
}

func TestFreshInstanceSetupCreatesEverythingThenSecondRunChangesNothing(t *testing.T) {
	fake := fakemetabase.New()
	defer fake.Close()

	r := runJob(t, fake, nil)
	mustSucceed(t, r, fmt.Sprintf("%d created, 0 updated, 0 archived, 0 unchanged", objects))
	if !strings.Contains(r.out, "first-run setup") || !fake.HasUserSetup() {
		t.Fatalf("no first-run setup:\n%s", r.out)
	}

	// The database points at the proxy's read listener, with the env password.
	var dbs []fakemetabase.Database
	for _, d := range fake.Databases() {
		if !d.IsSample {
			dbs = append(dbs, d)
		}
	}
	if len(dbs) != 1 {
		t.Fatalf("databases: %+v", dbs)
	}
	db := dbs[0]
	if db.Engine != "postgres" || db.Details["host"] != "pgproxy" || db.Details["port"] != float64(6433) ||
		db.Details["dbname"] != "ofitec_prod" || db.Details["password"] != dbPass || db.Syncs != 1 {
		t.Errorf("database: %+v (syncs %d)", db, db.Syncs)
	}

	// One OFITEC collection with its three sub-collections.
	var root fakemetabase.Collection
	children := map[string]string{}
	for _, c := range fake.Collections() {
		if c.Name == "OFITEC" {
			root = c
		}
	}
	for _, c := range fake.Collections() {
		if c.Location == fmt.Sprintf("/%d/", root.ID) {
			children[c.Name] = c.Location
		}
	}
	if root.ID == 0 || root.Location != "/" || len(children) != 3 || children["Finanzas"] == "" {
		t.Fatalf("collections: root %+v children %v", root, children)
	}

	// Cards: native, on the database, with visualization settings.
	cards := fake.Cards()
	if len(cards) != 15 {
		t.Fatalf("%d cards, want 15", len(cards))
	}
	for _, c := range cards {
		if c.DatasetQuery["database"] != float64(db.ID) || c.DatasetQuery["type"] != "native" || c.SQL() == "" ||
			len(c.VisualizationSettings) == 0 || c.Display == "" || c.CollectionID == nil || c.Type != "question" {
			t.Errorf("card %q: %+v", c.Name, c)
		}
	}
	dias, _ := cardByName(fake, "Días de Caja")
	if !strings.Contains(dias.SQL(), "mart_fact_cashflow") {
		t.Errorf("Días de Caja SQL: %s", dias.SQL())
	}

	// Three dashboards with their cards on the grid.
	want := map[string]int{"Dirección (C-level)": 8, "Finanzas": 5, "Proyectos": 3}
	dashes := fake.Dashboards()
	if len(dashes) != 3 {
		t.Fatalf("dashboards: %+v", dashes)
	}
	for _, d := range dashes {
		if len(d.Dashcards) != want[d.Name] {
			t.Errorf("dashboard %q has %d dashcards, want %d", d.Name, len(d.Dashcards), want[d.Name])
		}
		for _, dc := range d.Dashcards {
			if dc.CardID == nil || dc.Col+dc.SizeX > 24 {
				t.Errorf("dashboard %q: dashcard %+v", d.Name, dc)
			}
		}
	}

	// Second run: nothing created, nothing updated, nothing written.
	before, nCards, nColls := len(fake.Mutations()), len(fake.Cards()), len(fake.Collections())
	r = runJob(t, fake, nil)
	mustSucceed(t, r, fmt.Sprintf("0 created, 0 updated, 0 archived, %d unchanged", objects))
	if m := newMutations(fake, before); len(m) != 0 {
		t.Errorf("second run wrote: %v", m)
	}
	if len(fake.Cards()) != nCards || len(fake.Dashboards()) != 3 || len(fake.Collections()) != nColls || len(fake.Databases()) != 2 {
		t.Error("second run added objects")
	}
}

func TestChangedSQLUpdatesExactlyThatCard(t *testing.T) {
	fake := fakemetabase.New(fakemetabase.WithUser(fakemetabase.User{Email: adminEmail, Password: adminPass}))
	defer fake.Close()
	mustSucceed(t, runJob(t, fake, nil), fmt.Sprintf("%d created", objects))
	card, _ := cardByName(fake, "KPI CEO")

	const newSQL = "select fecha, dias_caja, backlog_clp, iva_por_pagar_clp, iva_diferido_clp, lead_time_abastecimiento_dias from mart_kpi_ceo order by fecha desc limit 60\n"
	cfg := editedConfig(t, func(doc map[string]any) {
		for _, c := range doc["cards"].([]any) {
			if m := c.(map[string]any); m["name"] == "KPI CEO" {
				m["sql"] = newSQL
			}
		}
	})
	before := len(fake.Mutations())
	r := runJob(t, fake, nil, "--config", cfg)
	mustSucceed(t, r, fmt.Sprintf("0 created, 1 updated, 0 archived, %d unchanged", objects-1))
	if got, want := newMutations(fake, before), []string{fmt.Sprintf("PUT /api/card/%d", card.ID)}; !slices.Equal(got, want) {
		t.Errorf("writes %v, want %v", got, want)
	}
	if !regexp.MustCompile(`update\s+card\s+"KPI CEO" \(id \d+\): sql`).MatchString(r.out) {
		t.Errorf("plan does not show the update:\n%s", r.out)
	}
	if got, _ := cardByName(fake, "KPI CEO"); got.SQL() != newSQL || got.ID != card.ID {
		t.Errorf("card after update: id %d sql %q", got.ID, got.SQL())
	}
}

func TestRemovedCardIsArchivedAndItsDashcardRemoved(t *testing.T) {
	fake := fakemetabase.New(fakemetabase.WithUser(fakemetabase.User{Email: adminEmail, Password: adminPass}))
	defer fake.Close()
	mustSucceed(t, runJob(t, fake, nil), fmt.Sprintf("%d created", objects))
	gone, _ := cardByName(fake, "Flujo de caja mensual")
	keptIDs := map[int]bool{}
	for _, d := range fake.Dashboards() {
		if d.Name == "Finanzas" {
			for _, dc := range d.Dashcards {
				if *dc.CardID != gone.ID {
					keptIDs[dc.ID] = true
				}
			}
		}
	}

	cfg := editedConfig(t, func(doc map[string]any) {
		doc["cards"] = slices.DeleteFunc(doc["cards"].([]any), func(c any) bool {
			return c.(map[string]any)["name"] == "Flujo de caja mensual"
		})
		for _, d := range doc["dashboards"].([]any) {
			dm := d.(map[string]any)
			dm["cards"] = slices.DeleteFunc(dm["cards"].([]any), func(c any) bool {
				return c.(map[string]any)["card"] == "Flujo de caja mensual"
			})
		}
	})
	r := runJob(t, fake, nil, "--config", cfg)
	mustSucceed(t, r, fmt.Sprintf("0 created, 1 updated, 1 archived, %d unchanged", objects-2))
	for _, c := range fake.Cards() {
		if c.ID == gone.ID && !c.Archived {
			t.Errorf("card %q not archived", c.Name)
		}
	}
	for _, d := range fake.Dashboards() {
		if d.Name != "Finanzas" {
			continue
		}
		if len(d.Dashcards) != 4 {
			t.Errorf("Finanzas has %d dashcards, want 4", len(d.Dashcards))
		}
		for _, dc := range d.Dashcards {
			if *dc.CardID == gone.ID {
				t.Error("the removed card is still on the dashboard")
			}
			if !keptIDs[dc.ID] {
				t.Errorf("dashcard %d was recreated instead of kept", dc.ID)
			}
		}
	}
	// And a run after that is quiet again.
	mustSucceed(t, runJob(t, fake, nil, "--config", cfg), fmt.Sprintf("0 created, 0 updated, 0 archived, %d unchanged", objects-1))
}

func TestAPIKeyNeedsNoLogin(t *testing.T) {
	fake := fakemetabase.New(fakemetabase.WithVersion("v0.49.2"), fakemetabase.WithAPIKey(apiKey),
		fakemetabase.WithUser(fakemetabase.User{Email: adminEmail, Password: adminPass}))
	defer fake.Close()
	r := runJob(t, fake, map[string]string{"MB_USER": "", "MB_PASS": "", "MB_API_KEY": apiKey})
	mustSucceed(t, r, fmt.Sprintf("%d created", objects))
	for _, req := range fake.Requests() {
		if strings.HasPrefix(req, "POST /api/session") {
			t.Errorf("logged in although an API key was given: %s", req)
		}
	}
	mustSucceed(t, runJob(t, fake, map[string]string{"MB_USER": "", "MB_PASS": "", "MB_API_KEY": apiKey}),
		fmt.Sprintf("0 created, 0 updated, 0 archived, %d unchanged", objects))
}

func TestAPIKeyOnVersionWithoutKeysFails(t *testing.T) {
	fake := fakemetabase.New(fakemetabase.WithVersion("v0.48.6"), fakemetabase.WithAPIKey(apiKey),
		fakemetabase.WithUser(fakemetabase.User{Email: adminEmail, Password: adminPass}))
	defer fake.Close()
	r := runJob(t, fake, map[string]string{"MB_API_KEY": apiKey})
	if r.code != 1 || !strings.Contains(r.errOut, "has no API keys") || len(fake.Mutations()) != 0 {
		t.Fatalf("exit %d, stderr %q, writes %v", r.code, r.errOut, fake.Mutations())
	}
}

func TestWaitsWhileInitializing(t *testing.T) {
	fake := fakemetabase.New(fakemetabase.WithInitializing(3))
	defer fake.Close()
	r := runJob(t, fake, nil)
	mustSucceed(t, r, fmt.Sprintf("%d created", objects))
	if n := strings.Count(r.out, "initializing"); n != 3 {
		t.Errorf("%d initializing lines, want 3:\n%s", n, r.out)
	}
	if reqs := fake.Requests(); !slices.Equal(reqs[:4], []string{"GET /api/health", "GET /api/health", "GET /api/health", "GET /api/health"}) {
		t.Errorf("first requests: %v", reqs[:4])
	}
}

func TestWaitGivesUpAtTheDeadline(t *testing.T) {
	fake := fakemetabase.New(fakemetabase.WithInitializing(1 << 30))
	defer fake.Close()
	r := runJob(t, fake, nil, "--wait", "100ms")
	if r.code != 1 || !strings.Contains(r.errOut, "not healthy after 100ms") || !strings.Contains(r.errOut, "HTTP 503") {
		t.Fatalf("exit %d, stderr %q", r.code, r.errOut)
	}
	// One line with the real problem, no stray "context deadline exceeded"
	// line after it (issue 16).
	if strings.Count(strings.TrimSpace(r.errOut), "\n") != 0 || strings.Contains(r.errOut, "context deadline exceeded") {
		t.Errorf("stderr is not one line with the last real error:\n%s", r.errOut)
	}
}

// --help lists the MB_* variables (they are how the job is configured) and
// exits 0; a bad flag says which and exits 2.
func TestHelpListsEnvironment(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--help"}, func(string) string { return "" }, &out, &errOut); code != 0 {
		t.Fatalf("--help: exit %d\n%s", code, errOut.String())
	}
	for _, v := range []string{"MB_URL", "MB_USER", "MB_PASS", "MB_API_KEY", "MB_ADMIN_EMAIL", "MB_ADMIN_PASS",
		"MB_DB_HOST", "MB_DB_PORT", "MB_DB_NAME", "MB_DB_USER", "MB_DB_PASS", "-dry-run", "-config", "exit status"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("--help lacks %s:\n%s", v, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"--bogus"}, func(string) string { return "" }, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "-bogus") || !strings.Contains(errOut.String(), "MB_URL") {
		t.Errorf("--bogus: exit %d\n%s", code, errOut.String())
	}
}

// A password in the YAML is refused by key, pointing to MB_DB_PASS; an
// unknown key is named by its path, not by a Go type.
func TestConfigErrorsNameTheKey(t *testing.T) {
	fake := fakemetabase.New()
	defer fake.Close()
	b, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ edit, want string }{
		{"database:\n  password: hunter2-yaml", "database.password (line "},
		{"metabase:\n  sitename: X", "metabase.sitename (line "},
	} {
		key, _, _ := strings.Cut(tc.edit, "\n")
		text := strings.Replace(string(b), key+"\n", tc.edit+"\n", 1)
		p := filepath.Join(t.TempDir(), "metabase.yaml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		r := runJob(t, fake, nil, "--config", p)
		if r.code != 2 || !strings.Contains(r.errOut, tc.want) || strings.Contains(r.errOut, "in type metabase.") || strings.Contains(r.errOut, "hunter2") {
			t.Errorf("exit %d, stderr %q, want %q", r.code, r.errOut, tc.want)
		}
		if strings.Contains(tc.edit, "password") && !strings.Contains(r.errOut, "MB_DB_PASS") {
			t.Errorf("the password error does not point to MB_DB_PASS: %q", r.errOut)
		}
	}
	if len(fake.Requests()) != 0 {
		t.Errorf("requests sent with a bad config: %v", fake.Requests())
	}
}

func TestWrongPasswordFailsClearlyWithoutRetry(t *testing.T) {
	fake := fakemetabase.New(fakemetabase.WithUser(fakemetabase.User{Email: adminEmail, Password: adminPass}))
	defer fake.Close()
	r := runJob(t, fake, map[string]string{"MB_PASS": "wrong-password"})
	if r.code != 1 {
		t.Fatalf("exit %d, want 1", r.code)
	}
	for _, want := range []string{"logging in as " + adminEmail, "POST /api/session", "HTTP 401", "did not match stored password"} {
		if !strings.Contains(r.errOut, want) {
			t.Errorf("stderr %q lacks %q", r.errOut, want)
		}
	}
	logins := 0
	for _, req := range fake.Requests() {
		if req == "POST /api/session" {
			logins++
		}
	}
	if logins != 1 || len(fake.Mutations()) != 0 {
		t.Errorf("%d login attempts (want 1, a 401 is not retried), writes %v", logins, fake.Mutations())
	}
}

func TestOldVersionIsRefusedBeforeWriting(t *testing.T) {
	fake := fakemetabase.New(fakemetabase.WithVersion("v0.46.5"),
		fakemetabase.WithUser(fakemetabase.User{Email: adminEmail, Password: adminPass}))
	defer fake.Close()
	r := runJob(t, fake, nil)
	if r.code != 1 || !strings.Contains(r.errOut, "unsupported Metabase version v0.46.5") {
		t.Fatalf("exit %d, stderr %q", r.code, r.errOut)
	}
	if m := fake.Mutations(); len(m) != 0 {
		t.Errorf("writes: %v", m)
	}
	if reqs := fake.Requests(); slices.Contains(reqs, "POST /api/session") {
		t.Errorf("logged in: %v", reqs)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	t.Run("fresh instance", func(t *testing.T) {
		fake := fakemetabase.New()
		defer fake.Close()
		r := runJob(t, fake, nil, "--dry-run")
		if r.code != 0 || !strings.Contains(r.out, fmt.Sprintf("would do %d created", objects)) ||
			!strings.Contains(r.out, "first-run setup") {
			t.Fatalf("exit %d\n%s%s", r.code, r.out, r.errOut)
		}
		if m := fake.Mutations(); len(m) != 0 || fake.HasUserSetup() {
			t.Errorf("dry run wrote: %v", m)
		}
	})
	t.Run("changed card", func(t *testing.T) {
		fake := fakemetabase.New(fakemetabase.WithUser(fakemetabase.User{Email: adminEmail, Password: adminPass}))
		defer fake.Close()
		mustSucceed(t, runJob(t, fake, nil), fmt.Sprintf("%d created", objects))
		cfg := editedConfig(t, func(doc map[string]any) {
			doc["cards"].([]any)[0].(map[string]any)["display"] = "area"
		})
		before := len(fake.Mutations())
		r := runJob(t, fake, nil, "--config", cfg, "--dry-run")
		if r.code != 0 || !strings.Contains(r.out, "would do 0 created, 1 updated") ||
			!regexp.MustCompile(`update\s+card\s+"Días de Caja" \(id \d+\): display`).MatchString(r.out) {
			t.Fatalf("exit %d\n%s%s", r.code, r.out, r.errOut)
		}
		if m := newMutations(fake, before); len(m) != 0 {
			t.Errorf("dry run wrote: %v", m)
		}
		if c, _ := cardByName(fake, "Días de Caja"); c.Display != "line" {
			t.Errorf("display changed to %q", c.Display)
		}
	})
}

func TestUsageAndConfigErrorsExit2(t *testing.T) {
	fake := fakemetabase.New()
	defer fake.Close()
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("metabase:\n  url: http://x\n  colour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--nope"}, nil, "flag provided but not defined"},
		{"unknown config key", []string{"--config", bad}, nil, "metabase.colour (line 3): unknown key"},
		{"missing config", []string{"--config", "/nonexistent.yaml"}, nil, "no such file"},
		{"no credentials", nil, map[string]string{"MB_USER": "", "MB_PASS": ""}, "no credentials"},
		{"bad url", nil, map[string]string{"MB_URL": "ftp://metabase"}, "want http(s)://"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runJob(t, fake, tc.env, tc.args...)
			if r.code != 2 || !strings.Contains(r.errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", r.code, r.errOut, tc.want)
			}
		})
	}
	if len(fake.Requests()) != 0 {
		t.Errorf("requests: %v", fake.Requests())
	}
}

func TestDatabasePasswordRequiredToCreate(t *testing.T) {
	fake := fakemetabase.New(fakemetabase.WithUser(fakemetabase.User{Email: adminEmail, Password: adminPass}))
	defer fake.Close()
	r := runJob(t, fake, map[string]string{"MB_DB_PASS": ""})
	if r.code != 1 || !strings.Contains(r.errOut, "MB_DB_PASS") || len(fake.Mutations()) != 0 {
		t.Fatalf("exit %d, stderr %q, writes %v", r.code, r.errOut, fake.Mutations())
	}
}
