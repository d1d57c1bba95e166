package admin

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/health"
	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/proxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Secrets set in testConfig; no result of any command may contain them.
const (
	secretPassword = "hunter2-health-pw"
	secretAPIKey   = "lineage-api-key-xyz"
	secretURLPass  = "url-pass-987"
	secretAuthPass = "auth-query-pw-654"
)

func testConfig() *configs.Config {
	cfg := configs.Default()
	cfg.Listen = []configs.Listener{{Addr: "127.0.0.1:6432"}, {Addr: "127.0.0.1:6433", Route: configs.RouteRead}}
	cfg.Backends = []configs.Backend{{Addr: "127.0.0.1:5432"}, {Addr: "db-b.example:5433"}, {Addr: "127.0.0.1:5434"}}
	cfg.Health.User = "pgproxy_monitor"
	cfg.Health.Password = secretPassword
	cfg.Routing.Rules = []configs.Rule{
		{Match: configs.Match{User: "metabase"}, Route: configs.RouteRead},
		{Match: configs.Match{Database: "*_ro", ApplicationName: "BI*"}, Route: configs.RouteRead, StripSuffix: "_ro"},
	}
	cfg.Lineage.Enabled = true
	cfg.Lineage.DatasetNamespace = "postgres://db:5432"
	cfg.Lineage.Transport.URL = "http://marquez:" + secretURLPass + "@marquez:5000"
	cfg.Lineage.Transport.APIKey = secretAPIKey
	return cfg
}

var t0 = time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)

func testSnapshot() *health.Snapshot {
	return &health.Snapshot{
		Taken: t0, Interval: 500 * time.Millisecond, PrimaryIndex: 0,
		Backends: []health.Backend{
			{Addr: "127.0.0.1:5432", Role: health.RolePrimary, State: health.StateUp, LagKnown: true},
			{Addr: "db-b.example:5433", Role: health.RoleReplica, State: health.StateLagging, LagSeconds: 12.3456, LagBytes: 1 << 20, LagKnown: true, Reason: "lag 12.3s > 5s"},
			{Addr: "127.0.0.1:5434", Role: health.RoleReplica, State: health.StateDown, LagSeconds: 1, LagKnown: false, LastError: "dial tcp 127.0.0.1:5434: connect: connection refused"},
		},
	}
}

// fake records what the console did.
type fake struct {
	paused    map[string]bool
	calls     []string
	reloadErr error
	pauseErr  error
}

func newFake() *fake { return &fake{paused: map[string]bool{}} }

func (f *fake) deps() Deps {
	return Deps{
		Snapshot: testSnapshot,
		Sessions: func() []proxy.SessionInfo {
			return []proxy.SessionInfo{
				{ID: 7, Listener: "127.0.0.1:6433", Client: "10.0.0.9:51000", User: "metabase", Database: "sales", ApplicationName: "Metabase v0.50",
					Backend: "db-b.example:5433", Route: "read", ReadOnly: true, State: "idle", Started: t0.Add(time.Minute), Relay: "goroutines"},
				{ID: 3, Listener: "127.0.0.1:6432", Client: "10.0.0.8:50000", User: "odoo", Database: "odoo",
					Backend: "127.0.0.1:5432", Route: "write", State: "in transaction", Started: t0, Relay: "event_loop"},
				{ID: 9, Listener: "127.0.0.1:6432", Client: "10.0.0.7:40000", User: "x", Database: "y", State: "startup"},
			}
		},
		BackendSessions: func(addr string) int { return len(addr) % 5 },
		Config:          testConfig,
		Reload: func() error {
			f.calls = append(f.calls, "reload")
			return f.reloadErr
		},
		Pause: func(addr string) error {
			f.calls = append(f.calls, "pause "+addr)
			if f.pauseErr != nil {
				return f.pauseErr
			}
			f.paused[addr] = true
			return nil
		},
		Resume: func(addr string) error {
			f.calls = append(f.calls, "resume "+addr)
			if f.pauseErr != nil {
				return f.pauseErr
			}
			delete(f.paused, addr)
			return nil
		},
		Paused: func(addr string) bool { return f.paused[addr] },
	}
}

// table renders rows with NULL for nil.
func table(r Result) [][]string {
	out := make([][]string, len(r.Rows))
	for i, row := range r.Rows {
		out[i] = make([]string, len(row))
		for j, v := range row {
			if v == nil {
				out[i][j] = "NULL"
			} else {
				out[i][j] = *v
			}
		}
	}
	return out
}

func exec(t *testing.T, c *Console, q string) ([]Result, error) {
	t.Helper()
	return c.Exec(context.Background(), q)
}

func pgErr(t *testing.T, err error) *pgerr.Error {
	t.Helper()
	var pe *pgerr.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *pgerr.Error", err, err)
	}
	if pe.Severity != "ERROR" {
		t.Errorf("severity %q, want ERROR (the console session must stay open)", pe.Severity)
	}
	return pe
}

func TestParsingAndTags(t *testing.T) {
	cases := []struct {
		q    string
		tags []string
		cols [][]string
	}{
		{"SHOW BACKENDS", []string{"SHOW"}, [][]string{BackendsColumns}},
		{"show backends", []string{"SHOW"}, [][]string{BackendsColumns}},
		{"  \tShOw \n BaCkEnDs  ;  ", []string{"SHOW"}, [][]string{BackendsColumns}},
		{"SHOW SESSIONS;", []string{"SHOW"}, [][]string{SessionsColumns}},
		{"SHOW ROUTES;;", []string{"SHOW"}, [][]string{RoutesColumns}},
		{"SHOW CONFIG", []string{"SHOW"}, [][]string{ConfigColumns}},
		{"SHOW HELP; SHOW VERSION", []string{"SHOW", "SHOW"}, [][]string{HelpColumns, VersionColumns}},
		{"-- a comment\nSHOW HELP -- trailing", []string{"SHOW"}, [][]string{HelpColumns}},
		{"/* c */ SHOW /* ; */ VERSION", []string{"SHOW"}, [][]string{VersionColumns}},
		{"RELOAD", []string{"RELOAD"}, [][]string{nil}},
		{"reload;", []string{"RELOAD"}, [][]string{nil}},
		{"SET extra_float_digits = 3", []string{"SET"}, [][]string{nil}},
		{"SET application_name = 'a;b'", []string{"SET"}, [][]string{nil}},
		{"pause 127.0.0.1:5432", []string{"PAUSE"}, [][]string{nil}},
		{"RESUME '127.0.0.1:5432';", []string{"RESUME"}, [][]string{nil}},
		{"", nil, nil},
		{" ; ;\n", nil, nil},
		{"-- only a comment", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.q, func(t *testing.T) {
			c := New(newFake().deps())
			res, err := exec(t, c, tc.q)
			if err != nil {
				t.Fatalf("Exec(%q): %v", tc.q, err)
			}
			if len(res) != len(tc.tags) {
				t.Fatalf("Exec(%q): %d results, want %d", tc.q, len(res), len(tc.tags))
			}
			for i, r := range res {
				if r.Tag != tc.tags[i] {
					t.Errorf("result %d tag %q, want %q", i, r.Tag, tc.tags[i])
				}
				if !reflect.DeepEqual(r.Columns, tc.cols[i]) {
					t.Errorf("result %d columns %v, want %v", i, r.Columns, tc.cols[i])
				}
				for j, row := range r.Rows {
					if len(row) != len(r.Columns) {
						t.Errorf("result %d row %d has %d values for %d columns", i, j, len(row), len(r.Columns))
					}
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name, q   string
		code      string
		msg, hint string // substrings
		mutate    func(*fake, *Deps)
		results   int // results returned before the error
		calls     []string
	}{
		{name: "unknown command", q: "SELECT 1", code: pgerr.SyntaxError, msg: `unrecognized admin command "SELECT 1"`, hint: "SHOW BACKENDS, SHOW SESSIONS, SHOW ROUTES, SHOW CONFIG"},
		{name: "unknown show", q: "SHOW STATS", code: pgerr.SyntaxError, msg: "unrecognized admin command", hint: "RELOAD, PAUSE <backend>, RESUME <backend>, KILL <database>, RECONNECT <backend>"},
		{name: "bare show", q: "SHOW;", code: pgerr.SyntaxError, msg: "unrecognized admin command"},
		{name: "show with argument", q: "SHOW BACKENDS now", code: pgerr.SyntaxError, msg: "SHOW BACKENDS takes no argument"},
		{name: "reload with argument", q: "RELOAD now", code: pgerr.SyntaxError, msg: "RELOAD takes no argument"},
		{name: "long unknown is shortened", q: "BOGUS " + strings.Repeat("x", 500), code: pgerr.SyntaxError, msg: `..."`},
		{name: "unterminated quote", q: "PAUSE '127.0.0.1:5432", code: pgerr.SyntaxError, msg: "unterminated quoted string"},
		{name: "unterminated comment", q: "SHOW HELP /* x", code: pgerr.SyntaxError, msg: "unterminated /* comment"},
		{name: "pause without backend", q: "PAUSE", code: pgerr.SyntaxError, msg: "PAUSE needs exactly one backend", hint: "PAUSE <backend>"},
		{name: "resume two backends", q: "RESUME a:1 b:2", code: pgerr.SyntaxError, msg: "RESUME needs exactly one backend"},
		{name: "pause unknown backend", q: "PAUSE 10.9.9.9:5432", code: pgerr.UndefinedObject, msg: `backend "10.9.9.9:5432" does not exist`, hint: "127.0.0.1:5432, db-b.example:5433, 127.0.0.1:5434"},
		{name: "resume unknown backend", q: "RESUME nope", code: pgerr.UndefinedObject, msg: `backend "nope" does not exist`},
		{name: "pause error from deps", q: "PAUSE 127.0.0.1:5434", code: pgerr.UndefinedObject, msg: "PAUSE 127.0.0.1:5434: no such backend",
			mutate: func(f *fake, _ *Deps) { f.pauseErr = errors.New("no such backend") }, calls: []string{"pause 127.0.0.1:5434"}},
		{name: "pause coded error passes through", q: "PAUSE 127.0.0.1:5434", code: pgerr.ObjectNotInPrerequisiteSta, msg: "busy",
			mutate: func(f *fake, _ *Deps) {
				f.pauseErr = &pgerr.Error{Code: pgerr.ObjectNotInPrerequisiteSta, Severity: "ERROR", Message: "busy"}
			}, calls: []string{"pause 127.0.0.1:5434"}},
		{name: "reload fails", q: "RELOAD", code: ConfigFileError, msg: "RELOAD failed",
			mutate: func(f *fake, _ *Deps) {
				f.reloadErr = fmt.Errorf("config: %w", errors.New("routing.max_lag: must be > 0"))
			}, calls: []string{"reload"}},
		{name: "reload not wired", q: "RELOAD", code: pgerr.FeatureNotSupported, msg: "RELOAD is not available",
			mutate: func(_ *fake, d *Deps) { d.Reload = nil }},
		{name: "pause not wired", q: "PAUSE 127.0.0.1:5432", code: pgerr.FeatureNotSupported, msg: "PAUSE is not available",
			mutate: func(_ *fake, d *Deps) { d.Pause = nil }},
		{name: "show backends not wired", q: "SHOW BACKENDS", code: pgerr.FeatureNotSupported, msg: "SHOW BACKENDS is not available",
			mutate: func(_ *fake, d *Deps) { d.Snapshot = nil }},
		{name: "error after results", q: "SHOW HELP; RELOAD; BOGUS; PAUSE 127.0.0.1:5432", code: pgerr.SyntaxError, msg: `"BOGUS"`,
			results: 2, calls: []string{"reload"}},
		{name: "too long", q: "SHOW HELP " + strings.Repeat(" ", MaxQueryLen), code: pgerr.ProgramLimitExceeded, msg: "too long"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			d := f.deps()
			if tc.mutate != nil {
				tc.mutate(f, &d)
			}
			res, err := exec(t, New(d), tc.q)
			if err == nil {
				t.Fatalf("Exec(%.40q) succeeded, want %s", tc.q, tc.code)
			}
			pe := pgErr(t, err)
			if pe.Code != tc.code {
				t.Errorf("code %s, want %s (%v)", pe.Code, tc.code, err)
			}
			if !strings.Contains(pe.Message, tc.msg) {
				t.Errorf("message %q lacks %q", pe.Message, tc.msg)
			}
			if !strings.Contains(pe.Hint, tc.hint) {
				t.Errorf("hint %q lacks %q", pe.Hint, tc.hint)
			}
			if len(pe.Message) > 200 {
				t.Errorf("message of %d bytes echoes too much input", len(pe.Message))
			}
			if len(res) != tc.results {
				t.Errorf("%d results before the error, want %d", len(res), tc.results)
			}
			if !reflect.DeepEqual(f.calls, tc.calls) {
				t.Errorf("deps calls %v, want %v", f.calls, tc.calls)
			}
			resp := pgerr.Response(err, pgerr.InternalError, "internal error")
			if resp.Code != tc.code || resp.Severity != "ERROR" {
				t.Errorf("ErrorResponse %s %s, want ERROR %s", resp.Severity, resp.Code, tc.code)
			}
		})
	}
}

func TestReloadDetail(t *testing.T) {
	f := newFake()
	f.reloadErr = errors.New("routing.max_lag: must be > 0")
	_, err := exec(t, New(f.deps()), "RELOAD")
	pe := pgErr(t, err)
	if pe.Detail != "routing.max_lag: must be > 0" || !errors.Is(err, f.reloadErr) {
		t.Errorf("detail %q / unwrap %v: want the reload error", pe.Detail, errors.Unwrap(err))
	}
}

func TestPauseResume(t *testing.T) {
	f := newFake()
	c := New(f.deps())
	steps := []struct {
		q      string
		paused map[string]bool
	}{
		{"PAUSE 127.0.0.1:5434", map[string]bool{"127.0.0.1:5434": true}},
		{`pause "DB-B.example:5433";`, map[string]bool{"127.0.0.1:5434": true, "db-b.example:5433": true}}, // host case folded to the configured name
		{"PAUSE 127.0.0.1:5434", map[string]bool{"127.0.0.1:5434": true, "db-b.example:5433": true}},       // idempotent
		{"RESUME 127.0.0.1:5434", map[string]bool{"db-b.example:5433": true}},
	}
	for _, s := range steps {
		if _, err := exec(t, c, s.q); err != nil {
			t.Fatalf("%s: %v", s.q, err)
		}
		if !reflect.DeepEqual(f.paused, s.paused) {
			t.Fatalf("after %s: paused %v, want %v", s.q, f.paused, s.paused)
		}
	}
	res, err := exec(t, c, "SHOW BACKENDS")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, row := range table(res[0]) {
		got[row[0]] = row[6]
	}
	want := map[string]string{"127.0.0.1:5432": "f", "db-b.example:5433": "t", "127.0.0.1:5434": "f"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("paused column %v, want %v", got, want)
	}
}

func TestShowBackends(t *testing.T) {
	res, err := exec(t, New(newFake().deps()), "SHOW BACKENDS")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"127.0.0.1:5432", "primary", "up", "0.000", "0", "4", "f", "NULL"},
		{"db-b.example:5433", "replica", "lagging", "12.346", "1048576", "2", "f", "NULL"},
		{"127.0.0.1:5434", "replica", "down", "NULL", "NULL", "4", "f", "dial tcp 127.0.0.1:5434: connect: connection refused"},
	}
	if got := table(res[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("SHOW BACKENDS\n got %q\nwant %q", got, want)
	}

	// Without session counts or pause state, those columns are NULL; a nil
	// snapshot is an empty result, not an error.
	d := newFake().deps()
	d.BackendSessions, d.Paused = nil, nil
	res, err = exec(t, New(d), "SHOW BACKENDS")
	if err != nil {
		t.Fatal(err)
	}
	if row := table(res[0])[0]; row[5] != "NULL" || row[6] != "NULL" {
		t.Errorf("sessions/paused without deps = %q/%q, want NULL", row[5], row[6])
	}
	d.Snapshot = func() *health.Snapshot { return nil }
	res, err = exec(t, New(d), "SHOW BACKENDS")
	if err != nil || len(res[0].Rows) != 0 || res[0].Columns == nil {
		t.Errorf("nil snapshot: %v rows=%d cols=%v, want an empty result set", err, len(res[0].Rows), res[0].Columns)
	}
}

func TestShowSessions(t *testing.T) {
	res, err := exec(t, New(newFake().deps()), "SHOW SESSIONS")
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"3", "odoo", "odoo", "", "10.0.0.8:50000", "127.0.0.1:6432", "write", "127.0.0.1:5432", "f", "in transaction", "2026-11-27 05:00:00.000Z", "event_loop"},
		{"7", "metabase", "sales", "Metabase v0.50", "10.0.0.9:51000", "127.0.0.1:6433", "read", "db-b.example:5433", "t", "idle", "2026-11-27 05:01:00.000Z", "goroutines"},
		{"9", "x", "y", "", "10.0.0.7:40000", "127.0.0.1:6432", "NULL", "NULL", "f", "startup", "NULL", "NULL"},
	}
	if got := table(res[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("SHOW SESSIONS\n got %q\nwant %q", got, want)
	}
}

func TestShowRoutes(t *testing.T) {
	f := newFake()
	d := f.deps()
	cfgFn := d.Config
	for _, tc := range []struct {
		name     string
		mutate   func(*configs.Config)
		fallback []string
	}{
		{"fallback primary", func(*configs.Config) {}, []string{"fallback", "read, no replica within max_lag 5s", "primary", "NULL"}},
		{"fallback reject with bytes", func(c *configs.Config) {
			c.Routing.Fallback = configs.FallbackReject
			c.Routing.MaxLagBytes = 1 << 20
			c.Routing.MaxLag = 2 * time.Second
		}, []string{"fallback", "read, no replica within max_lag 2s, max_lag_bytes 1048576", "reject", "NULL", "57P03 cannot_connect_now"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d.Config = func() *configs.Config { c := cfgFn(); tc.mutate(c); return c }
			res, err := exec(t, New(d), "SHOW ROUTES")
			if err != nil {
				t.Fatal(err)
			}
			got := table(res[0])
			wantPrefix := [][]string{
				{"listener 1", "listener=127.0.0.1:6432", "rules", "NULL", "rules, then startup parameters, else write"},
				{"listener 2", "listener=127.0.0.1:6433", "read", "NULL", "every session on this listener"},
				{"rule 1", "user=metabase", "read", "NULL", "first matching rule wins"},
				{"rule 2", "database=*_ro application_name=BI*", "read", "_ro", "first matching rule wins"},
				{"startup", "default_transaction_read_only=on", "read", "NULL", "sent as a startup parameter or in options"},
				{"default", "NULL", "write", "NULL", "nothing above matched"},
			}
			if len(got) != len(wantPrefix)+3 {
				t.Fatalf("%d rows, want %d: %q", len(got), len(wantPrefix)+3, got)
			}
			if !reflect.DeepEqual(got[:len(wantPrefix)], wantPrefix) {
				t.Errorf("SHOW ROUTES\n got %q\nwant %q", got[:len(wantPrefix)], wantPrefix)
			}
			fb := got[len(wantPrefix)]
			if !reflect.DeepEqual(fb[:len(tc.fallback)], tc.fallback) {
				t.Errorf("fallback row %q, want prefix %q", fb, tc.fallback)
			}
			if got[len(wantPrefix)+1][0] != "max_lag" || got[len(wantPrefix)+2][0] != "max_lag_bytes" {
				t.Errorf("last rows %q, want max_lag, max_lag_bytes", got[len(wantPrefix)+1:])
			}
		})
	}
}

func TestShowConfigRedactsSecrets(t *testing.T) {
	t.Run("passthrough", func(t *testing.T) { testShowConfig(t, testConfig()) })
	t.Run("proxy", func(t *testing.T) {
		cfg := testConfig()
		cfg.Auth.Mode, cfg.Auth.User, cfg.Auth.Password = configs.AuthProxy, "pgproxy_auth", secretAuthPass
		testShowConfig(t, cfg)
	})
}

func testShowConfig(t *testing.T, cfg *configs.Config) {
	d := newFake().deps()
	d.Config = func() *configs.Config { return cfg }
	res, err := exec(t, New(d), "SHOW CONFIG")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, row := range table(res[0]) {
		if _, dup := got[row[0]]; dup {
			t.Errorf("key %s twice", row[0])
		}
		got[row[0]] = row[1]
		for _, secret := range []string{secretPassword, secretAPIKey, secretURLPass, secretAuthPass} {
			if strings.Contains(row[0]+row[1], secret) {
				t.Errorf("SHOW CONFIG shows a secret: %s = %s", row[0], row[1])
			}
		}
	}
	want := map[string]string{
		"listen[0].addr":                  "127.0.0.1:6432",
		"listen[1].route":                 "read",
		"backends[1].addr":                "db-b.example:5433",
		"health.interval":                 "500ms",
		"health.user":                     "pgproxy_monitor",
		"health.password":                 configs.RedactedValue,
		"routing.max_lag":                 "5s",
		"routing.rules[1].match.database": "*_ro",
		"routing.rules[1].strip_suffix":   "_ro",
		"admin.users[0]":                  "postgres",
		"limits.max_sessions":             "10000",
		"lineage.transport.api_key":       configs.RedactedValue,
		"lineage.transport.url":           "http://marquez:" + configs.RedactedValue + "@marquez:5000",
		"lineage.enabled":                 "true",
		"log.level":                       "info",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if cfg.Auth.Password != "" && got["auth.password"] != configs.RedactedValue {
		t.Errorf("auth.password = %q, want %q", got["auth.password"], configs.RedactedValue)
	}
	// Every documented key appears (lists by index), but for the pool
	// section in passthrough mode, which the configuration leaves out.
	for _, key := range configs.Keys() {
		if strings.HasPrefix(key, "pool.") && cfg.Auth.Mode == configs.AuthPassthrough {
			if _, shown := got[key]; shown {
				t.Errorf("%s shown in passthrough mode", key)
			}
			continue
		}
		found := false
		for k := range got {
			if k == key || strings.HasPrefix(k, key+".") || strings.HasPrefix(k, key+"[") {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("documented key %s missing from SHOW CONFIG", key)
		}
	}
}

// A secret the configs package would forget to redact is still hidden.
func TestSecretKeyBackstop(t *testing.T) {
	for key, want := range map[string]bool{
		"health.password": true, "lineage.transport.api_key": true, "x.token": true,
		"health.user": false, "tls.key": false, "password.user": false,
	} {
		if got := isSecretKey(key); got != want {
			t.Errorf("isSecretKey(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f := newFake()
	_, err := New(f.deps()).Exec(ctx, "RELOAD")
	if pe := pgErr(t, err); pe.Code != pgerr.QueryCanceled {
		t.Errorf("code %s, want 57014", pe.Code)
	}
	if len(f.calls) != 0 {
		t.Errorf("canceled Exec still ran %v", f.calls)
	}
}

func TestShowHelpListsEveryCommand(t *testing.T) {
	res, err := exec(t, New(Deps{}), "SHOW HELP")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, row := range table(res[0]) {
		names = append(names, row[0])
	}
	for _, want := range []string{"SHOW BACKENDS", "SHOW SESSIONS", "SHOW ROUTES", "SHOW CONFIG", "RELOAD", "PAUSE <backend>", "RESUME <backend>",
		"SHOW POOLS", "SHOW CLIENTS", "SHOW SERVERS", "KILL <database>", "RECONNECT <backend>"} {
		if !strings.Contains(strings.Join(names, "|"), want) {
			t.Errorf("SHOW HELP lacks %s: %v", want, names)
		}
	}
}
