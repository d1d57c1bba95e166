package configs

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// Secrets used in the redaction tests; none may appear in any output.
var secrets = []string{"file-health-secret", "file-api-secret", "url-secret", "env-health-secret", "env-api-secret", "dsn-secret"}

func TestRedactedYAMLHasNoSecret(t *testing.T) {
	file := minimal + `health:
  user: mon
  password: file-health-secret
lineage:
  enabled: true
  transport:
    url: http://lineage:url-secret@marquez:5000
    api_key: file-api-secret
`
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"secrets in the file", nil},
		{"secrets in env", []string{"PGPROXY_HEALTH_PASSWORD=env-health-secret", "PGPROXY_LINEAGE_TRANSPORT_API_KEY=env-api-secret"}},
		{"secret in a seed DSN", []string{"READ_REPLICA_DSN=postgres://u:dsn-secret@127.0.0.1:5499/db", "PGPROXY_HEALTH_USER="}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := file
			if strings.Contains(tc.name, "DSN") {
				body = minimal + "lineage: {transport: {url: 'http://lineage:url-secret@marquez:5000'}}\n"
			}
			c := mustLoad(t, LoadOptions{Path: writeConfig(t, body), Environ: tc.env})
			if c.Health.Password == "" {
				t.Fatal("test setup: no health password loaded")
			}
			before := *c
			r := c.Redacted()
			out, err := r.YAML()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range secrets {
				if strings.Contains(string(out), s) {
					t.Errorf("redacted YAML contains secret %q:\n%s", s, out)
				}
			}
			if !strings.Contains(string(out), RedactedValue) {
				t.Errorf("redacted YAML shows no %q:\n%s", RedactedValue, out)
			}
			if r.Health.Password != RedactedValue || !strings.Contains(r.Lineage.Transport.URL, "lineage:") {
				t.Errorf("redacted: password %q url %q", r.Health.Password, r.Lineage.Transport.URL)
			}
			// The original is untouched.
			if !reflect.DeepEqual(*c, before) || c.Health.Password == RedactedValue {
				t.Error("Redacted modified its receiver")
			}
		})
	}
}

func TestRedactedLeavesUnsetSecretsEmpty(t *testing.T) {
	c := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal)})
	r := c.Redacted()
	if r.Health.Password != "" || r.Lineage.Transport.APIKey != "" {
		t.Fatalf("unset secrets shown as set: %+v", r)
	}
	// A deep copy: changing the copy's lists does not change c.
	r.Backends[0].Addr = "changed:1"
	r.Admin.Users[0] = "changed"
	if c.Backends[0].Addr == "changed:1" || c.Admin.Users[0] == "changed" {
		t.Fatal("Redacted shares slices with its receiver")
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                              "",
		"http://marquez:5000":           "http://marquez:5000",
		"http://u@marquez:5000":         "http://u@marquez:5000",
		"http://u:p@marquez:5000/x?y=1": "http://u:" + RedactedValue + "@marquez:5000/x?y=1",
		"http://u:p@[bad":               RedactedValue,
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// No error message of Load repeats a secret, even when the file holding it
// is broken elsewhere.
func TestErrorsHaveNoSecret(t *testing.T) {
	body := `backends: [{addr: nope}]
health: {password: file-health-secret, interval: x}
lineage: {transport: {api_key: file-api-secret, url: "http://u:url-secret@"}}
routing: {fallback: file-api-secret}
`
	_, err := Load(LoadOptions{Path: writeConfig(t, body), Environ: []string{
		"PGPROXY_HEALTH_PASSWORD=env-health-secret", "READ_REPLICA_DSN=postgres://u:dsn-secret@h:x/db",
	}})
	if err == nil {
		t.Fatal("Load succeeded")
	}
	// routing.fallback echoes its bad value by design (it is not a secret
	// key), so only the secrets of secret keys are checked.
	for _, s := range []string{"file-health-secret", "url-secret", "env-health-secret", "dsn-secret"} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error contains %q: %v", s, err)
		}
	}
}

// YAML output loads back to the same Config.
func TestYAMLRoundTrip(t *testing.T) {
	for _, src := range []string{"testdata/full.yaml", "pgproxy.yaml"} {
		t.Run(src, func(t *testing.T) {
			c := mustLoad(t, LoadOptions{Path: src})
			out, err := c.YAML()
			if err != nil {
				t.Fatal(err)
			}
			again := mustLoad(t, LoadOptions{Path: writeConfig(t, string(out))})
			if !reflect.DeepEqual(c, again) {
				t.Fatalf("round trip differs:\n was %+v\n now %+v\nYAML:\n%s", c, again, out)
			}
		})
	}
}

// The output lists every key, in file order, with durations readable;
// in passthrough mode it leaves out the pool section (Load refuses pool
// keys there) and says so.
func TestYAMLShowsEveryKey(t *testing.T) {
	c := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal)})
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, k := range Keys() {
		if strings.HasPrefix(k, "pool.") {
			continue // below
		}
		last := k[strings.LastIndex(k, ".")+1:]
		if !regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(last) + `:`).MatchString(s) {
			t.Errorf("YAML output lacks key %s:\n%s", k, s)
		}
	}
	if regexp.MustCompile(`(?m)^pool:`).MatchString(s) || !strings.Contains(s, "# pool: none in passthrough mode") {
		t.Errorf("passthrough YAML output: pool section shown or not explained:\n%s", s)
	}
	proxy := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal+"auth: {mode: proxy, user: a}\n")})
	pout, err := proxy.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		if !strings.HasPrefix(k, "pool.") {
			continue
		}
		if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(strings.TrimPrefix(k, "pool.")) + `:`).Match(pout) {
			t.Errorf("proxy-mode YAML output lacks key %s:\n%s", k, pout)
		}
	}
	for _, want := range []string{"interval: 500ms", "max_lag: 5s", "drain_timeout: 30s"} {
		if !strings.Contains(s, want) {
			t.Errorf("YAML output lacks %q", want)
		}
	}
	if strings.Index(s, "listen:") > strings.Index(s, "log:") {
		t.Error("YAML output is not in file order")
	}
}

func TestRestartRequired(t *testing.T) {
	base := mustLoad(t, LoadOptions{Path: "testdata/full.yaml"})
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   []string
	}{
		{"nothing", func(c *Config) {}, nil},
		{"hot keys only", func(c *Config) {
			c.Routing.MaxLag *= 2
			c.Backends = c.Backends[:1]
			c.Log.Level = "info"
			c.Health.Password = "new"
			c.TLS.Cert = "/new.crt"
		}, nil},
		{"listener addr", func(c *Config) { c.Listen[0].Addr = "127.0.0.1:1" }, []string{"listen"}},
		{"listener route", func(c *Config) { c.Listen[0].Route = RouteRead }, []string{"listen"}},
		{"listener added", func(c *Config) { c.Listen = append(c.Listen, Listener{Addr: "127.0.0.1:2"}) }, []string{"listen"}},
		{"http addr", func(c *Config) { c.HTTP.Addr = "" }, []string{"http.addr"}},
		{"both", func(c *Config) { c.HTTP.Addr = ":1"; c.Listen = c.Listen[1:] }, []string{"listen", "http.addr"}},
		{"auth mode", func(c *Config) { c.Auth.Mode = AuthPassthrough }, []string{"auth.mode"}},
		{"pool mode", func(c *Config) { c.Pool.Mode = PoolSession }, []string{"pool.mode"}},
		{"other auth and pool keys", func(c *Config) {
			c.Auth.File, c.Auth.Password, c.Auth.CacheTTL = "/other", "new", time.Hour
			c.Pool.Size, c.Pool.ResetQuery, c.Pool.ServerLifetime = 3, "RESET ALL", time.Minute
			c.Routing.ConsistencyWait = time.Second
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := base.Clone()
			tc.change(next)
			if got := next.RestartRequired(base); !slices.Equal(got, tc.want) {
				t.Fatalf("RestartRequired = %v, want %v", got, tc.want)
			}
		})
	}
	if got := base.RestartRequired(nil); got != nil {
		t.Fatalf("RestartRequired(nil) = %v", got)
	}
}

// Every key has a unique environment variable and help, and the package doc
// documents every key of the schema (including list item keys).
func TestEveryKeyDocumented(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	var walk func(ns []*node)
	walk = func(ns []*node) {
		for _, n := range ns {
			paths = append(paths, n.path)
			walk(n.children)
		}
	}
	walk(schemaRoot().children)
	if len(paths) < 40 {
		t.Fatalf("schema has only %d keys", len(paths))
	}
	for _, p := range paths {
		if !regexp.MustCompile(`(?m)^//\t` + regexp.QuoteMeta(p) + `\s`).Match(doc) {
			t.Errorf("doc.go does not document key %s", p)
		}
	}
	envs := map[string]string{}
	for _, s := range settings() {
		if other, dup := envs[s.env]; dup {
			t.Errorf("keys %s and %s share %s", other, s.key, s.env)
		}
		envs[s.env] = s.key
		if s.noEnv == "" && keyHelp[s.key] == "" {
			t.Errorf("key %s has no flag help", s.key)
		}
	}
	if EnvVar("routing.max_lag") != "PGPROXY_ROUTING_MAX_LAG" || EnvVar("lineage.transport.api_key") != "PGPROXY_LINEAGE_TRANSPORT_API_KEY" {
		t.Error("EnvVar does not follow CONFIG.md")
	}
	for k := range keyHelp {
		if !slices.Contains(Keys(), k) {
			t.Errorf("help for unknown key %s", k)
		}
	}
}

// RegisterFlags shows the env variable and the default in the help.
func TestFlagHelp(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	RegisterFlags(fs)
	f := fs.Lookup("routing.max_lag")
	if f == nil || !strings.Contains(f.Usage, "PGPROXY_ROUTING_MAX_LAG") || !strings.Contains(f.Usage, "default 5s") {
		t.Fatalf("help of --routing.max_lag: %+v", f)
	}
	if f := fs.Lookup("lineage.normalize_sql"); f == nil || f.DefValue != "true" {
		t.Fatalf("--lineage.normalize_sql: %+v", f)
	}
	// --help shows the real type of each flag, not "string" for all.
	help := fs.FlagUsages()
	for _, want := range []string{
		"--routing.max_lag duration", "--limits.max_sessions int", "--routing.max_lag_bytes int",
		"--backends list", "--admin.users list", "--listen list", "--log.level string",
	} {
		if !strings.Contains(help, want+" ") {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	if strings.Contains(help, "--lineage.enabled bool") || !strings.Contains(help, "--listen list") ||
		!strings.Contains(help, "default 127.0.0.1:6432,127.0.0.1:6433/read") {
		t.Errorf("help of bools or of --listen:\n%s", help)
	}
	// Every key that env can set is a flag, listen included; only lists of
	// mappings other than listen and backends are file-only.
	for _, s := range settings() {
		if (s.noEnv == "") != (fs.Lookup(s.key) != nil) {
			t.Errorf("key %s: noEnv %q but flag defined = %v", s.key, s.noEnv, fs.Lookup(s.key) != nil)
		}
		if s.noEnv != "" && s.key != "routing.rules" && s.key != "masking.rules" {
			t.Errorf("key %s has no flag", s.key)
		}
	}
}

func TestValidateMethod(t *testing.T) {
	c := Default()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "backends: at least one backend") {
		t.Fatalf("Default().Validate() = %v, want a missing-backend error", err)
	}
	c.Backends = []Backend{{"127.0.0.1:5432"}}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

// The YAML goes through a file the same way `pgproxy check` would print it.
func TestYAMLOfRedactedLoads(t *testing.T) {
	c := mustLoad(t, LoadOptions{Path: "testdata/full.yaml"})
	out, err := c.Redacted().YAML()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "check.yaml")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	again := mustLoad(t, LoadOptions{Path: p})
	if again.Health.Password != RedactedValue {
		t.Fatalf("password = %q", again.Health.Password)
	}
}
