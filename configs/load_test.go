package configs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// writeConfig writes a config file into a temp dir and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pgproxy.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// minimal is the smallest valid file: everything else defaults.
const minimal = "backends:\n  - addr: 127.0.0.1:5432\n"

func mustLoad(t *testing.T, opts LoadOptions) *Config {
	t.Helper()
	c, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func TestLoadFullFile(t *testing.T) {
	got := mustLoad(t, LoadOptions{Path: "testdata/full.yaml"})
	want := &Config{
		Listen: []Listener{
			{Addr: "127.0.0.1:7432"},
			{Addr: "127.0.0.1:7433", Route: RouteRead},
			{Addr: ":7434", Route: RouteWrite},
		},
		Backends: []Backend{{"127.0.0.1:5432"}, {"db-replica-1:5433"}, {"[::1]:5434"}},
		Health: Health{
			Interval: 250 * time.Millisecond, Timeout: 2 * time.Second,
			User: "pgproxy_monitor", Password: "0123", Database: "monitor",
		},
		Routing: Routing{
			MaxLag: 3 * time.Second, MaxLagBytes: 1 << 20, Fallback: FallbackReject,
			Unit: UnitSession, Consistency: ConsistencyEventual, ConsistencyWait: 250 * time.Millisecond,
			Rules: []Rule{
				{Match: Match{User: "metabase"}, Route: RouteRead},
				{Match: Match{Database: "*_ro"}, Route: RouteRead, StripSuffix: "_ro"},
				{Match: Match{ApplicationName: "Metabase*", User: "bi_*"}, Route: RouteWrite},
			},
		},
		TLS:        TLS{Cert: "/etc/pgproxy/tls.crt", Key: "/etc/pgproxy/tls.key"},
		BackendTLS: BackendTLS{Mode: BackendTLSVerifyFull, CA: "/etc/pgproxy/ca.pem"},
		HTTP:       HTTP{Addr: "127.0.0.1:9931"},
		Admin:      Admin{Users: []string{"postgres", "ops"}},
		Limits:     Limits{MaxSessions: 500, StartupTimeout: 3 * time.Second, DrainTimeout: time.Minute},
		Auth: Auth{
			Mode: AuthProxy, File: "testdata/userlist.txt", Query: "SELECT usename, passwd FROM pgproxy.user_lookup($1)",
			User: "pgproxy_auth", Password: "auth-s3cr3t", CacheTTL: 0,
		},
		Pool: Pool{
			Mode: PoolTransaction, Size: 50, MinSize: 5, MaxClientWait: 2 * time.Second,
			ServerIdleTimeout: 0, ServerLifetime: 30 * time.Minute, ResetQuery: "", MaxPreparedStatements: 0,
		},
		Lineage: Lineage{
			Enabled: true, JobNamespace: "acme", DatasetNamespace: "postgres://db-primary:5432",
			Catalog: "configs/catalog.yaml", NormalizeSQL: false,
			Transport: Transport{
				Type: TransportHTTP, URL: "http://marquez:5000", APIKey: "s3cr3t-api-key",
				Path: "/var/log/pgproxy/lineage.jsonl", Queue: 42, Timeout: 7 * time.Second,
			},
		},
		Log: Log{Level: "debug", Format: "console"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load(full.yaml):\n got %+v\nwant %+v", got, want)
	}
	if !got.TLS.Enabled() {
		t.Error("TLS.Enabled() = false with cert and key set")
	}
}

// The shipped example must load, and say what CONFIG.md says.
func TestLoadExampleFile(t *testing.T) {
	c := mustLoad(t, LoadOptions{Path: "pgproxy.yaml"})
	if len(c.Backends) != 3 || len(c.Routing.Rules) != 3 || len(c.Listen) != 2 {
		t.Fatalf("example: %d backends, %d rules, %d listeners; want 3, 3, 2", len(c.Backends), len(c.Routing.Rules), len(c.Listen))
	}
	if c.Listen[1].Route != RouteRead || c.BackendTLS.Mode != BackendTLSPrefer || c.Health.User != "pgproxy_monitor" {
		t.Fatalf("example: unexpected values %+v", c)
	}
	if c.Routing.Rules[1].StripSuffix != "_ro" || c.Routing.Rules[1].Match.Database != "*_ro" {
		t.Fatalf("example rule 1 = %+v", c.Routing.Rules[1])
	}
	for _, b := range c.Backends {
		if !strings.HasPrefix(b.Addr, "127.0.0.1:") {
			t.Errorf("example backend %q is not a loopback address", b.Addr)
		}
	}
}

func TestDefaults(t *testing.T) {
	got := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal)})
	want := Default()
	want.Backends = []Backend{{"127.0.0.1:5432"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", got, want)
	}
	// The values the brief fixes, spelled out so a change of Default shows.
	if got.Health.Interval != 500*time.Millisecond || got.Health.Timeout != time.Second ||
		got.Routing.MaxLag != 5*time.Second || got.Routing.Fallback != "primary" ||
		got.HTTP.Addr != "127.0.0.1:9930" || got.Limits.MaxSessions != 10000 ||
		got.Limits.StartupTimeout != 10*time.Second || got.Limits.DrainTimeout != 30*time.Second ||
		got.Lineage.JobNamespace != "ofitec" || !got.Lineage.NormalizeSQL ||
		got.Lineage.Transport.Queue != 10000 || got.Lineage.Transport.Timeout != 5*time.Second ||
		got.Log.Level != "info" || got.Log.Format != "json" ||
		!slices.Equal(got.Admin.Users, []string{"postgres"}) ||
		!reflect.DeepEqual(got.Listen, []Listener{{Addr: "127.0.0.1:6432"}, {Addr: "127.0.0.1:6433", Route: "read"}}) {
		t.Fatalf("defaults differ from the brief: %+v", got)
	}
}

// A section given partly keeps the defaults of its other keys; a null
// value counts as absent.
func TestPartialSectionsKeepDefaults(t *testing.T) {
	c := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal+"health:\n  user: mon\n  timeout:\nlineage:\n  transport:\n    queue: 7\ntls:\n")})
	if c.Health.User != "mon" || c.Health.Interval != 500*time.Millisecond || c.Health.Timeout != time.Second {
		t.Errorf("health = %+v", c.Health)
	}
	if c.Lineage.Transport.Queue != 7 || c.Lineage.Transport.Timeout != 5*time.Second || c.Lineage.Transport.Type != "http" {
		t.Errorf("transport = %+v", c.Lineage.Transport)
	}
}

func TestBackendTLSForms(t *testing.T) {
	for _, tc := range []struct{ yaml, mode, ca string }{
		{"backend_tls: disable", "disable", ""},
		{"backend_tls: require", "require", ""},
		{"backend_tls: {mode: verify-full, ca: /ca.pem}", "verify-full", "/ca.pem"},
		{"backend_tls:\n  ca: /ca.pem", "prefer", "/ca.pem"},
	} {
		c := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal+tc.yaml+"\n")})
		if c.BackendTLS.Mode != tc.mode || c.BackendTLS.CA != tc.ca {
			t.Errorf("%q: got %+v, want mode %q ca %q", tc.yaml, c.BackendTLS, tc.mode, tc.ca)
		}
	}
}

// Every bad key or value gives an error that names the key and the problem.
func TestBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"unknown top key", minimal + "routng: {}\n", []string{`unknown key "routng"`, ":3)"}},
		{"unknown nested key", minimal + "routing:\n  max_lagg: 5s\n", []string{`config: unknown key "routing.max_lagg"`}},
		{"unknown key in list item", "backends:\n  - adr: 127.0.0.1:5432\n", []string{`unknown key "backends[0].adr"`}},
		{"unknown key in rule match", minimal + "routing:\n  rules:\n    - match: {usr: x}\n      route: read\n", []string{`unknown key "routing.rules[0].match.usr"`, "routing.rules[0].match: needs at least one"}},
		{"unknown deep key", minimal + "lineage:\n  transport:\n    apikey: x\n", []string{`unknown key "lineage.transport.apikey"`}},
		{"keys are case-sensitive", minimal + "Routing: {}\n", []string{`unknown key "Routing"`}},
		{"duplicate key", minimal + "log: {level: info, level: debug}\n", []string{"log.level: key given twice"}},
		{"fallback", minimal + "routing: {fallback: primry}\n", []string{`config: routing.fallback: must be "primary" or "reject", got "primry"`}},
		{"duration without unit", minimal + "health: {interval: 5}\n", []string{"health.interval: must be a duration", `got "5"`}},
		{"duration garbage", minimal + "limits: {drain_timeout: soon}\n", []string{"limits.drain_timeout: must be a duration"}},
		{"duration zero", minimal + "health: {interval: 0s}\n", []string{"health.interval: must be > 0"}},
		{"negative duration", minimal + "routing: {max_lag: -1s}\n", []string{"routing.max_lag: must be > 0"}},
		{"int as string", minimal + "limits: {max_sessions: many}\n", []string{"limits.max_sessions: must be an integer", `"many"`}},
		{"int zero", minimal + "limits: {max_sessions: 0}\n", []string{"limits.max_sessions: must be > 0"}},
		{"int overflow", minimal + "routing: {max_lag_bytes: 99999999999999999999}\n", []string{"routing.max_lag_bytes: must be an integer", "99999999999999999999"}},
		{"negative gomaxprocs", minimal + "runtime: {gomaxprocs: -1}\n", []string{"runtime.gomaxprocs: must be >= 0"}},
		{"event_loops below -1", minimal + "runtime: {event_loops: -2}\n", []string{"runtime.event_loops: must be >= -1"}},
		{"negative bytes", minimal + "routing: {max_lag_bytes: -1}\n", []string{"routing.max_lag_bytes: must be >= 0"}},
		{"bool", minimal + "lineage: {enabled: sometimes}\n", []string{"lineage.enabled: must be true or false"}},
		{"string given a list", minimal + "health: {user: [a, b]}\n", []string{"health.user: must be a string"}},
		{"section given a scalar", minimal + "routing: fast\n", []string{"routing: must be a mapping"}},
		{"list given a mapping", "backends: {addr: 127.0.0.1:5432}\n", []string{"backends: must be a list"}},
		{"strings given a scalar", minimal + "admin: {users: postgres}\n", []string{"admin.users: must be a list of strings"}},
		{"null list item", "backends:\n  - \n", []string{"backends[0]: must be a mapping"}},
		{"top level not a mapping", "- a\n- b\n", []string{"(top level): must be a mapping"}},
		{"no listener", minimal + "listen: []\n", []string{"listen: at least one listener"}},
		{"no backend", "log: {level: info}\n", []string{"backends: at least one backend"}},
		{"empty file", "", []string{"backends: at least one backend"}},
		{"addr without port", minimal + "listen:\n  - addr: 127.0.0.1\n  - addr: localhost\n", []string{"listen[0].addr: must be host:port", "listen[1].addr: must be host:port"}},
		{"port out of range", "backends:\n  - addr: h:70000\n", []string{"backends[0].addr: port must be a number from 1 to 65535"}},
		{"backend port 0", "backends:\n  - addr: h:0\n", []string{"backends[0].addr: port must be"}},
		{"backend without host", "backends:\n  - addr: :5432\n", []string{"backends[0].addr: must be host:port with a host"}},
		{"duplicate listener", minimal + "listen:\n  - addr: 127.0.0.1:6432\n  - addr: 127.0.0.1:6432\n    route: read\n", []string{"listen[1].addr: \"127.0.0.1:6432\" is already used by listen[0]"}},
		{"duplicate backend", "backends:\n  - addr: H:1\n  - addr: h:1\n", []string{"backends[1].addr: \"h:1\" is already backends[0]"}},
		{"listener route", minimal + "listen:\n  - addr: 127.0.0.1:1\n    route: replica\n", []string{"listen[0].route: must be", `"replica"`}},
		{"rule without match", minimal + "routing:\n  rules:\n    - route: read\n", []string{"routing.rules[0].match: needs at least one of user, database, application_name"}},
		{"rule route", minimal + "routing:\n  rules:\n    - match: {user: x}\n      route: readonly\n", []string{"routing.rules[0].route: must be \"read\" or \"write\", got \"readonly\""}},
		{"rule route missing", minimal + "routing:\n  rules:\n    - match: {user: x}\n", []string{"routing.rules[0].route: must be"}},
		{"bad glob", minimal + "routing:\n  rules:\n    - match: {database: \"[a\"}\n      route: read\n", []string{"routing.rules[0].match.database: bad glob"}},
		{"tls cert without key", minimal + "tls: {cert: /c.pem}\n", []string{"tls.key: is required when tls.cert is set"}},
		{"tls key without cert", minimal + "tls: {key: /k.pem}\n", []string{"tls.cert: is required when tls.key is set"}},
		{"backend tls mode", minimal + "backend_tls: verify-ca\n", []string{"backend_tls.mode: must be one of", `"verify-ca"`}},
		{"backend tls ca with disable", minimal + "backend_tls: {mode: disable, ca: /ca}\n", []string{"backend_tls.ca: is set but backend_tls.mode is disable"}},
		{"http addr", minimal + "http: {addr: 9930}\n", []string{"http.addr: must be host:port"}},
		{"empty admin user", minimal + "admin: {users: [\"\"]}\n", []string{"admin.users[0]: must not be empty"}},
		{"lineage http without url", minimal + "lineage: {enabled: true}\n", []string{"lineage.transport.url: is required when lineage.enabled"}},
		{"lineage file without path", minimal + "lineage: {enabled: true, transport: {type: file}}\n", []string{"lineage.transport.path: is required"}},
		{"lineage transport type", minimal + "lineage: {transport: {type: kafka}}\n", []string{"lineage.transport.type: must be one of http, file, console"}},
		{"lineage url scheme", minimal + "lineage: {transport: {url: \"ftp://x\"}}\n", []string{"lineage.transport.url: must be an http:// or https:// URL"}},
		{"lineage job namespace", minimal + "lineage: {enabled: true, job_namespace: \"\", transport: {type: console}}\n", []string{"lineage.job_namespace: must not be empty"}},
		{"log level", minimal + "log: {level: verbose}\n", []string{"log.level: must be one of debug, info, warn, error"}},
		{"log format", minimal + "log: {format: text}\n", []string{"log.format: must be \"json\" or \"console\""}},
		{"yaml syntax", "backends: [\n", []string{"config: ", "pgproxy.yaml"}},
		{"two documents", minimal + "---\n" + minimal, []string{"more than one YAML document"}},
		{"merge key is not a key", minimal + "health: &h {user: a}\nrouting:\n  <<: *h\n", []string{`unknown key "routing.<<"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(LoadOptions{Path: writeConfig(t, tc.yaml)})
			if err == nil {
				t.Fatalf("Load succeeded: %+v", c)
			}
			if c != nil {
				t.Error("Load returned a Config with an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

// All problems are reported, not only the first, each as a FieldError.
func TestCollectsAllProblems(t *testing.T) {
	body := `listen:
  - addr: nope
backends:
  - addr: 127.0.0.1:5432
routing:
  max_lagg: 1s
  fallback: primry
health:
  interval: 5
log:
  level: loud
`
	_, err := Load(LoadOptions{Path: writeConfig(t, body)})
	var keys []string
	for _, fe := range Problems(err) {
		keys = append(keys, fe.Key)
	}
	want := []string{"routing.max_lagg", "health.interval", "listen[0].addr", "routing.fallback", "log.level"}
	slices.Sort(keys)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("problem keys = %v, want %v\nerror: %v", keys, want, err)
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatal("errors.As(*FieldError) failed")
	}
	// Problems from the file carry file:line.
	for _, fe := range Problems(err) {
		if fe.Key == "health.interval" && !strings.HasSuffix(fe.Source, "pgproxy.yaml:9") {
			t.Errorf("health.interval source = %q, want …pgproxy.yaml:9", fe.Source)
		}
	}
}

// A hostile file cannot make the error list unbounded.
func TestProblemsAreCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString(minimal)
	for i := range 1000 {
		b.WriteString("k")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString(strings.Repeat("y", i/26))
		b.WriteString(": 1\n")
	}
	_, err := Load(LoadOptions{Path: writeConfig(t, b.String())})
	if n := len(Problems(err)); n != maxProblems {
		t.Fatalf("%d problems, want the cap %d", n, maxProblems)
	}
	if !strings.Contains(err.Error(), "too many problems") {
		t.Error("capped error does not say so")
	}
}

func TestFileTooLarge(t *testing.T) {
	body := minimal + "#" + strings.Repeat("x", MaxFileSize) + "\n"
	if _, err := Load(LoadOptions{Path: writeConfig(t, body)}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want a size error", err)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(LoadOptions{Path: filepath.Join(t.TempDir(), "nope.yaml")})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
}

// A value that YAML would read as a number stays the literal string.
func TestStringsKeepTheirLiteral(t *testing.T) {
	c := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal+"health:\n  user: 0123\n  password: 1e3\nlineage:\n  catalog: true\n")})
	if c.Health.User != "0123" || c.Health.Password != "1e3" || c.Lineage.Catalog != "true" {
		t.Fatalf("got user %q password %q catalog %q", c.Health.User, c.Health.Password, c.Lineage.Catalog)
	}
}

func TestAnchorsAndAliases(t *testing.T) {
	body := `backends:
  - &b {addr: 127.0.0.1:5432}
  - {addr: 127.0.0.1:5433}
routing:
  rules:
    - match: &m {user: metabase}
      route: read
    - match: *m
      route: write
`
	c := mustLoad(t, LoadOptions{Path: writeConfig(t, body)})
	if len(c.Routing.Rules) != 2 || c.Routing.Rules[1].Match.User != "metabase" {
		t.Fatalf("rules = %+v", c.Routing.Rules)
	}
}

func TestPrecedence(t *testing.T) {
	file := minimal + "routing: {max_lag: 3s}\nlog: {level: warn}\n"
	for _, tc := range []struct {
		name  string
		file  bool
		env   []string
		flags []string
		want  time.Duration
	}{
		{"default", false, nil, nil, 5 * time.Second},
		{"file over default", true, nil, nil, 3 * time.Second},
		{"env over file", true, []string{"PGPROXY_ROUTING_MAX_LAG=2s"}, nil, 2 * time.Second},
		{"flag over env", true, []string{"PGPROXY_ROUTING_MAX_LAG=2s"}, []string{"--routing.max_lag=1s"}, time.Second},
		{"flag over file", true, nil, []string{"--routing.max_lag=1500ms"}, 1500 * time.Millisecond},
		{"seed env over file", true, []string{"REPLICA_MAX_LAG_S=9"}, nil, 9 * time.Second},
		{"PGPROXY over seed", true, []string{"REPLICA_MAX_LAG_S=9", "PGPROXY_ROUTING_MAX_LAG=4s"}, nil, 4 * time.Second},
		{"unset flag does not override", true, []string{"PGPROXY_ROUTING_MAX_LAG=2s"}, []string{}, 2 * time.Second},
		{"empty env is unset", true, []string{"PGPROXY_ROUTING_MAX_LAG="}, nil, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := LoadOptions{Environ: tc.env}
			if tc.file {
				opts.Path = writeConfig(t, file)
			} else {
				opts.Environ = append(opts.Environ, "PGPROXY_BACKENDS=127.0.0.1:5432")
			}
			if tc.flags != nil {
				fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
				RegisterFlags(fs)
				if err := fs.Parse(tc.flags); err != nil {
					t.Fatal(err)
				}
				opts.Flags = fs
			}
			c := mustLoad(t, opts)
			if c.Routing.MaxLag != tc.want {
				t.Fatalf("routing.max_lag = %v, want %v", c.Routing.MaxLag, tc.want)
			}
			if tc.file && c.Log.Level != "warn" {
				t.Fatalf("log.level = %q, want the file's warn (untouched by env/flags)", c.Log.Level)
			}
		})
	}
}

func TestEnvironment(t *testing.T) {
	env := []string{
		"PGPROXY_BACKENDS=10.0.0.1:5432, 10.0.0.2:5432,",
		"PGPROXY_ADMIN_USERS=postgres,ops",
		"PGPROXY_BACKEND_TLS=require",
		"PGPROXY_BACKEND_TLS_CA=/ca.pem",
		"PGPROXY_HEALTH_USER=mon",
		"PGPROXY_HEALTH_PASSWORD=env-health-pass",
		"PGPROXY_LINEAGE_TRANSPORT_API_KEY=env-api-key",
		"PGPROXY_LINEAGE_NORMALIZE_SQL=false",
		"PGPROXY_LIMITS_MAX_SESSIONS=77",
		"PGPROXY_ROUTING_MAX_LAG_BYTES=1000",
		"PGPROXY_LOG_FORMAT=console",
		"PGPROXY_PG_BIN=/usr/lib/postgresql/15/bin", // someone else's variable
		"PGPROXY_CONFIG=/etc/pgproxy.yaml",          // the caller's --config
		"NOT_OURS=1",
		"malformed-entry",
	}
	// The file's backends are replaced by the env list, not merged.
	c := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal), Environ: env})
	if !reflect.DeepEqual(c.Backends, []Backend{{"10.0.0.1:5432"}, {"10.0.0.2:5432"}}) {
		t.Errorf("backends = %+v", c.Backends)
	}
	if !slices.Equal(c.Admin.Users, []string{"postgres", "ops"}) {
		t.Errorf("admin.users = %v", c.Admin.Users)
	}
	if c.BackendTLS != (BackendTLS{Mode: "require", CA: "/ca.pem"}) {
		t.Errorf("backend_tls = %+v", c.BackendTLS)
	}
	if c.Health.User != "mon" || c.Health.Password != "env-health-pass" || c.Lineage.Transport.APIKey != "env-api-key" {
		t.Errorf("secrets not taken from env: %+v %+v", c.Health, c.Lineage.Transport)
	}
	if c.Lineage.NormalizeSQL || c.Limits.MaxSessions != 77 || c.Routing.MaxLagBytes != 1000 || c.Log.Format != "console" {
		t.Errorf("typed env values not applied: %+v", c)
	}

	// PGPROXY_BACKEND_TLS_MODE beats the PGPROXY_BACKEND_TLS alias.
	c = mustLoad(t, LoadOptions{Path: writeConfig(t, minimal), Environ: []string{"PGPROXY_BACKEND_TLS=require", "PGPROXY_BACKEND_TLS_MODE=disable"}})
	if c.BackendTLS.Mode != "disable" {
		t.Errorf("backend_tls.mode = %q, want disable", c.BackendTLS.Mode)
	}
}

func TestBadEnvironment(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want []string
	}{
		{"PGPROXY_ROUTING_MAX_LAGG=5s", []string{"PGPROXY_ROUTING_MAX_LAGG: names no config key"}},
		{"PGPROXY_HEALTH=x", []string{"PGPROXY_HEALTH: names no config key"}},
		{"PGPROXY_ROUTING_MAX_LAG=five", []string{"routing.max_lag: must be a duration", "(env PGPROXY_ROUTING_MAX_LAG)"}},
		{"PGPROXY_LIMITS_MAX_SESSIONS=1e4", []string{"limits.max_sessions: must be an integer", "(env PGPROXY_LIMITS_MAX_SESSIONS)"}},
		{"PGPROXY_LINEAGE_ENABLED=yes please", []string{"lineage.enabled: must be true or false"}},
		{"PGPROXY_LISTEN=127.0.0.1:1/replica", []string{`listen: "127.0.0.1:1/replica": the route after / must be read or write`, "(env PGPROXY_LISTEN)"}},
		{"PGPROXY_ROUTING_RULES=x", []string{"routing.rules: a list of mappings"}},
		{"PGPROXY_ROUTING_FALLBACK=primry", []string{`routing.fallback: must be "primary" or "reject", got "primry"`}},
		{"REPLICA_MAX_LAG_S=2.5", []string{"REPLICA_MAX_LAG_S: must be a whole number of seconds"}},
		{"REPLICA_MAX_LAG_S=-3", []string{"REPLICA_MAX_LAG_S: must be a whole number"}},
		{"REPLICA_MAX_LAG_S=0", []string{"REPLICA_MAX_LAG_S: must be a whole number of seconds > 0"}},
		{"MARQUEZ_URL=marquez:5000", []string{"lineage.transport.url: must be an http:// or https:// URL"}},
	} {
		t.Run(tc.env, func(t *testing.T) {
			_, err := Load(LoadOptions{Path: writeConfig(t, minimal), Environ: []string{tc.env}})
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestSeedEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name         string
		file         string
		env          []string
		backends     []string
		user, pass   string
		maxLag       time.Duration
		ttype, turl  string
		fileTransprt bool
	}{
		{
			name:     "url form appended to file backends, dedup",
			file:     "backends:\n  - addr: 127.0.0.1:5432\n  - addr: 127.0.0.1:5433\n",
			env:      []string{"READ_REPLICA_DSN=postgres://replica_user:rp%40ss@127.0.0.1:5433/odoo?sslmode=disable"},
			backends: []string{"127.0.0.1:5432", "127.0.0.1:5433"},
			user:     "replica_user", pass: "rp@ss",
		},
		{
			name:     "comma list of both forms, default port",
			file:     minimal,
			env:      []string{"READ_REPLICA_DSN=postgresql://u1:p1@replica1/db, host=replica2 port=5434 user=u2 password='p 2'"},
			backends: []string{"127.0.0.1:5432", "replica1:5432", "replica2:5434"},
			user:     "u1", pass: "p1",
		},
		{
			name:     "health.user from the file wins",
			file:     minimal + "health: {user: mon}\n",
			env:      []string{"READ_REPLICA_DSN=postgres://u:p@127.0.0.1:5433/db"},
			backends: []string{"127.0.0.1:5432", "127.0.0.1:5433"},
			user:     "mon", pass: "",
		},
		{
			name:     "PGPROXY_HEALTH_PASSWORD wins over the DSN password",
			file:     minimal,
			env:      []string{"READ_REPLICA_DSN=postgres://u:p@127.0.0.1:5433/db", "PGPROXY_HEALTH_PASSWORD=explicit"},
			backends: []string{"127.0.0.1:5432", "127.0.0.1:5433"},
			user:     "u", pass: "explicit",
		},
		{
			name:     "seed only, no file",
			env:      []string{"READ_REPLICA_DSN=host=::1 port=6000 user=u", "REPLICA_MAX_LAG_S=12", "MARQUEZ_URL=http://127.0.0.1:5000"},
			backends: []string{"[::1]:6000"},
			user:     "u", maxLag: 12 * time.Second, ttype: "http", turl: "http://127.0.0.1:5000",
		},
		{
			name:         "MARQUEZ_URL overrides the file transport (env > file)",
			file:         minimal + "lineage: {transport: {type: file, path: /x}}\n",
			env:          []string{"MARQUEZ_URL=http://m:5000"},
			backends:     []string{"127.0.0.1:5432"},
			ttype:        "http",
			turl:         "http://m:5000",
			fileTransprt: true,
		},
		{
			name:     "PGPROXY_ transport vars win over MARQUEZ_URL",
			file:     minimal,
			env:      []string{"MARQUEZ_URL=http://m:5000", "PGPROXY_LINEAGE_TRANSPORT_TYPE=console", "PGPROXY_LINEAGE_TRANSPORT_URL=https://other"},
			backends: []string{"127.0.0.1:5432"},
			ttype:    "console", turl: "https://other",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := LoadOptions{Environ: tc.env}
			if tc.file != "" {
				opts.Path = writeConfig(t, tc.file)
			}
			c := mustLoad(t, opts)
			var addrs []string
			for _, b := range c.Backends {
				addrs = append(addrs, b.Addr)
			}
			if !slices.Equal(addrs, tc.backends) {
				t.Errorf("backends = %v, want %v", addrs, tc.backends)
			}
			if c.Health.User != tc.user || c.Health.Password != tc.pass {
				t.Errorf("health user/password = %q/%q, want %q/%q", c.Health.User, c.Health.Password, tc.user, tc.pass)
			}
			if tc.maxLag != 0 && c.Routing.MaxLag != tc.maxLag {
				t.Errorf("max_lag = %v, want %v", c.Routing.MaxLag, tc.maxLag)
			}
			if tc.ttype != "" && (c.Lineage.Transport.Type != tc.ttype || c.Lineage.Transport.URL != tc.turl) {
				t.Errorf("transport = %+v, want type %q url %q", c.Lineage.Transport, tc.ttype, tc.turl)
			}
			if tc.fileTransprt && c.Lineage.Transport.Path != "/x" {
				t.Errorf("file keys lost: %+v", c.Lineage.Transport)
			}
		})
	}
}

// A bad DSN is reported by variable and entry, never with its password.
func TestBadReplicaDSN(t *testing.T) {
	for _, dsn := range []string{
		"postgres://u:TOPSECRET@h:notaport/db",
		"postgres://u:TOPSECRET@/db",
		"host=/var/run/postgresql user=u password=TOPSECRET",
		"host=h password='TOPSECRET",
		"user TOPSECRET",
		"postgres://u:TOPSECRET@h:5432/db%zz",
	} {
		t.Run(dsn, func(t *testing.T) {
			_, err := Load(LoadOptions{Path: writeConfig(t, minimal), Environ: []string{"READ_REPLICA_DSN=postgres://ok@h:1/d," + dsn}})
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !strings.Contains(err.Error(), "READ_REPLICA_DSN: entry 2:") {
				t.Errorf("error %q does not name READ_REPLICA_DSN entry 2", err)
			}
			if strings.Contains(err.Error(), "TOPSECRET") {
				t.Errorf("error leaks the password: %q", err)
			}
		})
	}
}

func TestFlags(t *testing.T) {
	fs := pflag.NewFlagSet("pgproxy", pflag.ContinueOnError)
	fs.String("config", "", "config file") // the caller's own flag is left alone
	RegisterFlags(fs)
	for _, k := range Keys() {
		if fs.Lookup(k) == nil {
			t.Errorf("RegisterFlags did not define --%s", k)
		}
	}
	err := fs.Parse([]string{
		"--config=x", "--backends=127.0.0.1:1,127.0.0.1:2", "--admin.users=a, b",
		"--lineage.enabled", "--lineage.transport.type=console", "--health.interval=2s",
		"--limits.max_sessions=9", "--backend_tls.mode=disable",
	})
	if err != nil {
		t.Fatal(err)
	}
	c := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal), Flags: fs})
	if !reflect.DeepEqual(c.Backends, []Backend{{"127.0.0.1:1"}, {"127.0.0.1:2"}}) ||
		!slices.Equal(c.Admin.Users, []string{"a", "b"}) || !c.Lineage.Enabled ||
		c.Health.Interval != 2*time.Second || c.Limits.MaxSessions != 9 || c.BackendTLS.Mode != "disable" {
		t.Fatalf("flags not applied: %+v", c)
	}

	// A flag set defined by the caller with its own types works too.
	own := pflag.NewFlagSet("own", pflag.ContinueOnError)
	own.Duration("routing.max_lag", 0, "")
	own.Int("limits.max_sessions", 0, "")
	own.StringSlice("backends", nil, "")
	if err := own.Parse([]string{"--routing.max_lag=750ms", "--limits.max_sessions=3", "--backends=h:1", "--backends=h:2"}); err != nil {
		t.Fatal(err)
	}
	c = mustLoad(t, LoadOptions{Path: writeConfig(t, minimal), Flags: own})
	if c.Routing.MaxLag != 750*time.Millisecond || c.Limits.MaxSessions != 3 || !reflect.DeepEqual(c.Backends, []Backend{{"h:1"}, {"h:2"}}) {
		t.Fatalf("typed flags not applied: %+v", c)
	}

	// listen is a flag too (it had none): host:port[/read|/write].
	fs = pflag.NewFlagSet("pgproxy", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse([]string{"--listen=0.0.0.0:7432,0.0.0.0:7433/read", "--listen=[::1]:7434/write", "--backends=h:1", "--backends=h:2"}); err != nil {
		t.Fatal(err)
	}
	c = mustLoad(t, LoadOptions{Path: writeConfig(t, minimal), Flags: fs, Environ: []string{"PGPROXY_LISTEN=127.0.0.1:9"}})
	if want := []Listener{{"0.0.0.0:7432", ""}, {"0.0.0.0:7433", RouteRead}, {"[::1]:7434", RouteWrite}}; !reflect.DeepEqual(c.Listen, want) {
		t.Fatalf("--listen: %+v, want %+v", c.Listen, want)
	}
	if !reflect.DeepEqual(c.Backends, []Backend{{"h:1"}, {"h:2"}}) {
		t.Fatalf("a list flag given twice: %+v", c.Backends)
	}
	c = mustLoad(t, LoadOptions{Path: writeConfig(t, minimal), Environ: []string{"PGPROXY_LISTEN=127.0.0.1:9/read"}})
	if want := []Listener{{"127.0.0.1:9", RouteRead}}; !reflect.DeepEqual(c.Listen, want) {
		t.Fatalf("PGPROXY_LISTEN: %+v, want %+v", c.Listen, want)
	}
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct{ arg, want string }{
		{"--routing.max_lag=soon", "routing.max_lag: must be a duration"},
		{"--limits.max_sessions=lots", "limits.max_sessions: must be an integer"},
		{"--log.level=chatty", "log.level: must be one of"},
	} {
		fs := pflag.NewFlagSet("pgproxy", pflag.ContinueOnError)
		RegisterFlags(fs)
		if err := fs.Parse([]string{tc.arg}); err != nil {
			t.Fatal(err)
		}
		_, err := Load(LoadOptions{Path: writeConfig(t, minimal), Flags: fs})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.arg, err, tc.want)
		}
		if tc.arg != "--log.level=chatty" && (err == nil || !strings.Contains(err.Error(), "(flag --")) {
			t.Errorf("%s: err = %v does not name the flag", tc.arg, err)
		}
	}
}

// Load keeps no global state: concurrent loads with different inputs do
// not see each other (run with -race).
func TestLoadConcurrent(t *testing.T) {
	path := writeConfig(t, minimal)
	errs := make(chan error, 16)
	for i := range 16 {
		go func() {
			want := time.Duration(i+1) * time.Second
			c, err := Load(LoadOptions{Path: path, Environ: []string{"PGPROXY_ROUTING_MAX_LAG=" + want.String()}})
			switch {
			case err != nil:
				errs <- err
			case c.Routing.MaxLag != want:
				errs <- fmt.Errorf("max_lag = %v, want %v", c.Routing.MaxLag, want)
			default:
				errs <- nil
			}
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// A connection string put where host:port belongs is never echoed with
// its password, and the error says where its parts go (issue 16: the
// whole DSN used to be repeated).
func TestDSNUnderBackendsIsRedacted(t *testing.T) {
	const pw = "S3cr3tPW"
	for _, tc := range []struct {
		name, yaml string
		env        []string
		want       []string
	}{
		{"url in the file", "backends:\n  - addr: postgres://odoo:" + pw + "@db-replica:5432/odoo\n", nil,
			[]string{`backends[0].addr: must be host:port, got a connection string "postgres://odoo:********@db-replica:5432/odoo"`,
				`(here "db-replica:5432")`, "health.user", "PGPROXY_HEALTH_PASSWORD", "READ_REPLICA_DSN"}},
		{"key=value in the file", "backends:\n  - addr: host=db2 port=5433 user=odoo password='" + pw + " x'\n", nil,
			[]string{`"host=db2 port=5433 user=odoo password=********"`, `(here "db2:5433")`, "READ_REPLICA_DSN"}},
		{"user:pw@host in env", "", []string{"PGPROXY_BACKENDS=odoo:" + pw + "@db3:5432"},
			[]string{`"odoo:********@db3:5432"`, "health.user"}},
		{"listener", "", []string{"PGPROXY_LISTEN=u:" + pw + "@h:1"}, []string{`listen[0].addr`, `"u:********@h:1"`}},
		{"http.addr", "http:\n  addr: postgres://u:" + pw + "@x\n", nil, []string{`http.addr: must be host:port, got "postgres://u:********@x"`}},
		{"enum", "routing:\n  fallback: postgres://u:" + pw + "@x/y\n", nil, []string{`routing.fallback: must be "primary" or "reject", got "postgres://u:********@x/y"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := "listen:\n  - addr: 127.0.0.1:6432\n"
			if !strings.Contains(tc.yaml, "backends:") {
				body += "backends:\n  - addr: 127.0.0.1:5432\n"
			}
			_, err := Load(LoadOptions{Path: writeConfig(t, body+tc.yaml), Environ: tc.env})
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("error leaks the password:\n%v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestRedactSecrets(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://odoo:pw@db:5432/odoo":     "postgres://odoo:********@db:5432/odoo",
		"postgres://odoo@db:5432/odoo":        "postgres://odoo@db:5432/odoo",
		"http://a:b@c@marquez:5000":           "http://a:********@marquez:5000",
		"odoo:pw@db:5432":                     "odoo:********@db:5432",
		"host=h password=pw user=u":           "host=h password=******** user=u",
		"host=h PASSWORD = 'p w\\' x' user=u": "host=h PASSWORD = ******** user=u",
		"127.0.0.1:6432":                      "127.0.0.1:6432",
		"primry":                              "primry",
		"http://h/path@x":                     "http://h/path@x",
	} {
		if got := redactSecrets(in); got != want {
			t.Errorf("redactSecrets(%q) = %q, want %q", in, got, want)
		}
	}
}
