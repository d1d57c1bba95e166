package metabase_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ofitec/pgproxy/cmd/metabase-provision/internal/metabase"
	"github.com/ofitec/pgproxy/test/fakemetabase"
)

const (
	admin, adminPass = "admin@ofitec.cl", "Sup3r-secreto!"
	shippedObjects   = 23 // 1 database, 4 collections, 15 cards, 3 dashboards
)

// provision runs the job against fake with the shipped config.
func provision(t *testing.T, fake *fakemetabase.Server, dryRun bool) (*metabase.Result, string, error) {
	t.Helper()
	cfg, err := metabase.LoadConfig("../../../../configs/metabase.yaml", func(k string) string {
		return map[string]string{"MB_URL": fake.URL, "MB_DB_PASS": "ro-pass"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := metabase.NewClient(fake.URL, metabase.ClientOptions{Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	var out bytes.Buffer
	res, err := metabase.Provision(context.Background(), c, metabase.Options{
		Config: cfg, DryRun: dryRun, Out: &out,
		Credentials: metabase.Credentials{User: admin, Password: adminPass, AdminEmail: admin, AdminPassword: adminPass},
	})
	return res, out.String(), err
}

func mustProvision(t *testing.T, fake *fakemetabase.Server, want metabase.Summary) string {
	t.Helper()
	res, out, err := provision(t, fake, false)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if res.Summary != want {
		t.Fatalf("summary %v, want %v\n%s", res.Summary, want, out)
	}
	return out
}

func withAdmin(opts ...fakemetabase.Option) *fakemetabase.Server {
	return fakemetabase.New(append(opts, fakemetabase.WithUser(fakemetabase.User{Email: admin, Password: adminPass}))...)
}

func card(t *testing.T, fake *fakemetabase.Server, name string) fakemetabase.Card {
	t.Helper()
	for _, c := range fake.Cards() {
		if c.Name == name && !c.Archived {
			return c
		}
	}
	t.Fatalf("no card %q", name)
	return fakemetabase.Card{}
}

// From 0.57 cards are read with ?legacy-mbql=true, and a second run is quiet.
func TestVersion057ReadsLegacyQueries(t *testing.T) {
	defer goleak.VerifyNone(t)
	fake := withAdmin(fakemetabase.WithVersion("v0.57.1"))
	defer fake.Close()
	mustProvision(t, fake, metabase.Summary{Created: shippedObjects})
	mustProvision(t, fake, metabase.Summary{Unchanged: shippedObjects})
	reads := 0
	for _, r := range fake.Requests() {
		if strings.HasPrefix(r, "GET /api/card/") {
			reads++
			if !strings.HasSuffix(r, "?legacy-mbql=true") {
				t.Errorf("%s without legacy-mbql=true", r)
			}
		}
	}
	if reads != 15 {
		t.Errorf("%d card reads, want 15", reads)
	}
}

// A change made by hand in Metabase is put back; nothing else is touched.
func TestHandEditsAreReverted(t *testing.T) {
	defer goleak.VerifyNone(t)
	fake := withAdmin()
	defer fake.Close()
	mustProvision(t, fake, metabase.Summary{Created: shippedObjects})
	c := card(t, fake, "EVM por proyecto")
	fake.Edit(c.ID, func(c *fakemetabase.Card) {
		c.Display = "table"
		c.VisualizationSettings = map[string]any{}
	})
	out := mustProvision(t, fake, metabase.Summary{Updated: 1, Unchanged: shippedObjects - 1})
	if !strings.Contains(out, `"EVM por proyecto" (id `+fmt.Sprint(c.ID)+`): display, visualization_settings`) {
		t.Errorf("plan does not name the fields:\n%s", out)
	}
	if got := card(t, fake, "EVM por proyecto"); got.Display != "bar" || len(got.VisualizationSettings) == 0 {
		t.Errorf("not reverted: %+v", got)
	}
}

// Objects with the job's names outside its collection tree, an archived
// collection of the same name, a database with the same name on another
// host: none is taken for the job's own, none is touched.
func TestOnlyOwnedObjectsAreMatched(t *testing.T) {
	defer goleak.VerifyNone(t)
	fake := withAdmin()
	defer fake.Close()
	// Create look-alikes through the API, as a person would.
	c, err := metabase.NewClient(fake.URL, metabase.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	if err := c.Login(context.Background(), admin, adminPass); err != nil {
		t.Fatal(err)
	}
	cfgPath := "../../../../configs/metabase.yaml"
	seed, err := metabase.LoadConfig(cfgPath, func(k string) string {
		return map[string]string{"MB_URL": fake.URL, "MB_DB_PASS": "x", "MB_DB_HOST": "other-host"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	// A same-named database on another host and a same-named card in the root
	// collection (the seed's habit): provision that look-alike state with a
	// different collection name.
	seed.Collection.Name = "Personal OFITEC copy"
	if _, err := metabase.Provision(context.Background(), c, metabase.Options{Config: seed,
		Credentials: metabase.Credentials{User: admin, Password: adminPass}}); err != nil {
		t.Fatal(err)
	}
	before := fake.Cards()

	mustProvision(t, fake, metabase.Summary{Created: shippedObjects})
	dbs := 0
	for _, d := range fake.Databases() {
		if d.Name == "OFITEC (réplica)" {
			dbs++
		}
	}
	if dbs != 2 {
		t.Errorf("%d databases named OFITEC (réplica), want 2 (the other host's is not ours)", dbs)
	}
	for _, b := range before {
		for _, a := range fake.Cards() {
			if a.ID == b.ID && (a.Archived || a.SQL() != b.SQL()) {
				t.Errorf("touched card %d %q outside the owned tree", a.ID, a.Name)
			}
		}
	}
}

// A second card with an owned name (made by hand) is archived; the older one stays.
func TestDuplicateInOwnedTreeIsArchived(t *testing.T) {
	defer goleak.VerifyNone(t)
	fake := withAdmin()
	defer fake.Close()
	mustProvision(t, fake, metabase.Summary{Created: shippedObjects})
	orig := card(t, fake, "KPI CEO")

	dupID := duplicateCard(t, fake, orig)
	out := mustProvision(t, fake, metabase.Summary{Archived: 1, Unchanged: shippedObjects})
	if !strings.Contains(out, fmt.Sprintf(`archived card "KPI CEO" (id %d)`, dupID)) {
		t.Errorf("the duplicate was not archived:\n%s", out)
	}
	if card(t, fake, "KPI CEO").ID != orig.ID {
		t.Error("the original was archived instead of the duplicate")
	}
}

func duplicateCard(t *testing.T, fake *fakemetabase.Server, orig fakemetabase.Card) int {
	t.Helper()
	return fake.AddCard(orig) // same name, collection and content; a new id
}

// Wrong credentials on a set-up instance: a clear error, no writes.
func TestLoginFailureIsAnAPIError(t *testing.T) {
	defer goleak.VerifyNone(t)
	fake := fakemetabase.New(fakemetabase.WithUser(fakemetabase.User{Email: admin, Password: "other-password"}))
	defer fake.Close()
	_, _, err := provision(t, fake, false)
	var ae *metabase.APIError
	if !errors.As(err, &ae) || ae.Status != 401 || !strings.Contains(err.Error(), "logging in as "+admin) {
		t.Fatalf("err %v", err)
	}
	if len(fake.Mutations()) != 0 {
		t.Errorf("writes %v", fake.Mutations())
	}
}

// A dry run on a set-up instance reads but never writes, and its plan is
// what a real run then does.
func TestDryRunPlanMatchesTheRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	fake := withAdmin(fakemetabase.WithVersion("v0.48.3"))
	defer fake.Close()
	dry, _, err := provision(t, fake, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(fake.Mutations()) != 0 {
		t.Fatalf("dry run wrote %v", fake.Mutations())
	}
	real := mustProvision(t, fake, dry.Summary)
	if !slices.ContainsFunc(strings.Split(real, "\n"), func(l string) bool { return strings.HasPrefix(l, "created dashboard") }) {
		t.Errorf("no dashboard created:\n%s", real)
	}
}

// A dashboard removed from the YAML is archived; its cards stay.
func TestRemovedDashboardIsArchived(t *testing.T) {
	defer goleak.VerifyNone(t)
	fake := withAdmin()
	defer fake.Close()
	mustProvision(t, fake, metabase.Summary{Created: shippedObjects})
	cfg, err := metabase.LoadConfig("../../../../configs/metabase.yaml", func(k string) string {
		return map[string]string{"MB_URL": fake.URL}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dashboards = cfg.Dashboards[:2] // drop Proyectos
	c, err := metabase.NewClient(fake.URL, metabase.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	res, err := metabase.Provision(context.Background(), c, metabase.Options{Config: cfg,
		Credentials: metabase.Credentials{User: admin, Password: adminPass}})
	if err != nil {
		t.Fatal(err)
	}
	if want := (metabase.Summary{Archived: 1, Unchanged: shippedObjects - 1}); res.Summary != want {
		t.Fatalf("summary %v, want %v", res.Summary, want)
	}
	for _, d := range fake.Dashboards() {
		if d.Archived != (d.Name == "Proyectos") {
			t.Errorf("dashboard %q archived=%v", d.Name, d.Archived)
		}
	}
	card(t, fake, "EVM por proyecto") // still there
}

// On a fresh instance the setup's admin session is used, whoever MB_USER is.
func TestSetupSessionIsUsedAfterSetup(t *testing.T) {
	defer goleak.VerifyNone(t)
	fake := fakemetabase.New()
	defer fake.Close()
	cfg, err := metabase.LoadConfig("../../../../configs/metabase.yaml", func(k string) string {
		return map[string]string{"MB_URL": fake.URL, "MB_DB_PASS": "x"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := metabase.NewClient(fake.URL, metabase.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	_, err = metabase.Provision(context.Background(), c, metabase.Options{Config: cfg,
		Credentials: metabase.Credentials{User: "reporter@ofitec.cl", Password: "x", AdminEmail: admin, AdminPassword: adminPass}})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(fake.Requests(), "POST /api/session") {
		t.Error("logged in as MB_USER, who does not exist on a fresh instance")
	}
}
