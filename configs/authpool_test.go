package configs

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// The wave 2 keys default to today's behaviour: pass-through
// authentication, session pools, session routing, eventual consistency.
func TestAuthPoolDefaults(t *testing.T) {
	c := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal)})
	wantAuth := Auth{
		Mode:     "passthrough",
		Query:    "SELECT usename, passwd FROM pg_shadow WHERE usename = $1",
		CacheTTL: 30 * time.Second,
	}
	wantPool := Pool{
		Mode: "session", Size: 20, MinSize: 0, MaxClientWait: 5 * time.Second,
		ServerIdleTimeout: 10 * time.Minute, ServerLifetime: time.Hour,
		ResetQuery: "DISCARD ALL", MaxPreparedStatements: 500,
	}
	if c.Auth != wantAuth {
		t.Errorf("auth = %+v, want %+v", c.Auth, wantAuth)
	}
	if c.Pool != wantPool {
		t.Errorf("pool = %+v, want %+v", c.Pool, wantPool)
	}
	if c.Routing.Unit != "session" || c.Routing.Consistency != "eventual" || c.Routing.ConsistencyWait != 100*time.Millisecond {
		t.Errorf("routing = %+v", c.Routing)
	}
	if AuthPassthrough != "passthrough" || AuthProxy != "proxy" || PoolSession != "session" || PoolTransaction != "transaction" {
		t.Error("mode constants differ from CONFIG.md")
	}
	// Code-built: Default with a backend is valid as it is.
	d := Default()
	d.Backends = []Backend{{"127.0.0.1:5432"}}
	if err := d.Validate(); err != nil {
		t.Fatalf("Default + backend: %v", err)
	}
}

// Every problem of the auth, pool and routing.unit keys names the key.
func TestAuthPoolErrors(t *testing.T) {
	dir := t.TempDir()
	userlist := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(userlist, []byte(`"a" "md5abc"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "unreadable.txt")
	if err := os.WriteFile(unreadable, []byte(`"a" "md5abc"`+"\n"), 0o000); err != nil {
		t.Fatal(err)
	}
	proxy := "auth: {mode: proxy, file: " + userlist + "}\n"
	const pass = "needs auth.mode: proxy: in passthrough mode each client has its own server connection"
	for _, tc := range []struct {
		name  string
		yaml  string
		env   []string
		flags []string
		want  []string
		not   []string // must not appear
	}{
		{name: "unknown auth mode", yaml: "auth: {mode: ldap}\n",
			want: []string{`config: auth.mode: must be "passthrough" or "proxy", got "ldap"`}},
		{name: "proxy without file or user", yaml: "auth: {mode: proxy}\n",
			want: []string{"config: auth.mode: proxy needs auth.file or auth.user"}},
		{name: "file in passthrough", yaml: "auth: {file: " + userlist + "}\n",
			want: []string{"config: auth.file: is set but auth.mode is passthrough (set auth.mode: proxy)"}},
		{name: "user in passthrough", yaml: "auth: {user: pgproxy_auth}\n",
			want: []string{"config: auth.user: is set but auth.mode is passthrough (set auth.mode: proxy)"}},
		{name: "file missing", yaml: "auth: {mode: proxy, file: " + filepath.Join(dir, "nope.txt") + "}\n",
			want: []string{`config: auth.file: "` + filepath.Join(dir, "nope.txt") + `" cannot be read: no such file or directory`}},
		{name: "file is a directory", yaml: "auth: {mode: proxy, file: " + dir + "}\n",
			want: []string{"config: auth.file: ", "is a directory, not a file"}},
		{name: "file unreadable", yaml: "auth: {mode: proxy, file: " + unreadable + "}\n",
			want: []string{"config: auth.file: ", "cannot be read: permission denied"}},
		{name: "empty query", yaml: "auth: {mode: proxy, user: a, query: \" \"}\n",
			want: []string{"config: auth.query: must not be empty when auth.user is set"}},
		{name: "query without $1", yaml: "auth: {mode: proxy, user: a, query: SELECT usename, passwd FROM pg_shadow}\n",
			want: []string{"config: auth.query: must take the user name as $1"}},
		{name: "password without user", yaml: proxy, env: []string{"PGPROXY_AUTH_PASSWORD=pw-TOPSECRET"},
			want: []string{"config: auth.password: is set but auth.user is not"}, not: []string{"TOPSECRET"}},
		{name: "negative cache ttl", yaml: "auth: {cache_ttl: -1s}\n",
			want: []string{"config: auth.cache_ttl: must be >= 0"}},
		{name: "pool mode", yaml: proxy + "pool: {mode: statement}\n",
			want: []string{`config: pool.mode: must be "session" or "transaction", got "statement"`}},
		{name: "pool size 0", yaml: proxy + "pool: {size: 0}\n",
			want: []string{"config: pool.size: must be >= 1, got 0"}},
		{name: "min size above size", yaml: proxy + "pool: {size: 5, min_size: 6}\n",
			want: []string{"config: pool.min_size: must be <= pool.size (5), got 6"}},
		{name: "min size above default size", yaml: proxy + "pool: {min_size: 21}\n",
			want: []string{"config: pool.min_size: must be <= pool.size (20), got 21"}},
		{name: "negative min size", yaml: proxy + "pool: {min_size: -1}\n",
			want: []string{"config: pool.min_size: must be >= 0"}},
		{name: "max client wait 0", yaml: proxy + "pool: {max_client_wait: 0s}\n",
			want: []string{"config: pool.max_client_wait: must be > 0"}},
		{name: "negative idle timeout", yaml: proxy + "pool: {server_idle_timeout: -1s}\n",
			want: []string{"config: pool.server_idle_timeout: must be >= 0 (0 = never)"}},
		{name: "negative lifetime", yaml: proxy + "pool: {server_lifetime: -1m}\n",
			want: []string{"config: pool.server_lifetime: must be >= 0 (0 = never)"}},
		{name: "negative prepared statements", yaml: proxy + "pool: {max_prepared_statements: -1}\n",
			want: []string{"config: pool.max_prepared_statements: must be >= 0"}},
		// A pool key given at all in passthrough mode, even with its default
		// value, from any layer, is refused by name and source.
		{name: "pool key in the file, default value", yaml: "pool:\n  size: 20\n",
			want: []string{"config: pool.size: " + pass + " (", "pgproxy.yaml:4)"}},
		{name: "pool key in env", env: []string{"PGPROXY_POOL_MODE=session"},
			want: []string{"config: pool.mode: " + pass + " (env PGPROXY_POOL_MODE)"}},
		{name: "pool key as a flag", flags: []string{"--pool.reset_query="},
			want: []string{"config: pool.reset_query: " + pass + " (flag --pool.reset_query)"}},
		{name: "every pool key given is named", yaml: "pool: {mode: transaction, max_client_wait: 1s}\n",
			want: []string{"config: pool.mode: " + pass, "config: pool.max_client_wait: " + pass},
			not:  []string{"pool.size"}},
		{name: "unit transaction with session pools", yaml: "routing: {unit: transaction}\n",
			want: []string{`config: routing.unit: transaction needs pool.mode: transaction, got pool.mode "session"`}},
		{name: "bad read function", yaml: proxy + "pool: {mode: transaction}\nrouting: {unit: transaction, read_functions: [ok_fn, 'a.b.c', 'f()']}\n",
			want: []string{`config: routing.read_functions[1]: must be a function name or schema.name, got "a.b.c"`,
				`config: routing.read_functions[2]: must be a function name or schema.name, got "f()"`},
			not: []string{"read_functions[0]"}},
		{name: "unknown unit", yaml: "routing: {unit: statement}\n",
			want: []string{`config: routing.unit: must be "session" or "transaction", got "statement"`}},
		{name: "consistency without unit transaction", yaml: "routing: {consistency: session}\n",
			want: []string{"config: routing.consistency: session needs routing.unit: transaction"}},
		{name: "global consistency", env: []string{"PGPROXY_ROUTING_CONSISTENCY=global"},
			want: []string{"config: routing.consistency: global needs routing.unit: transaction"}},
		{name: "unknown consistency", yaml: "routing: {consistency: strong}\n",
			want: []string{"config: routing.consistency: must be one of eventual, session, global, got \"strong\""}},
		{name: "negative consistency wait", yaml: "routing: {consistency_wait: -1ms}\n",
			want: []string{"config: routing.consistency_wait: must be >= 0"}},
		{name: "bad env pool size", yaml: proxy, env: []string{"PGPROXY_POOL_SIZE=many"},
			want: []string{"config: pool.size: must be an integer", "(env PGPROXY_POOL_SIZE)"}},
		{name: "bad flag wait", yaml: proxy, flags: []string{"--pool.max_client_wait=5"},
			want: []string{"config: pool.max_client_wait: must be a duration", "(flag --pool.max_client_wait)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "file unreadable" && os.Geteuid() == 0 {
				t.Skip("root reads any file")
			}
			opts := LoadOptions{Path: writeConfig(t, minimal+tc.yaml), Environ: tc.env}
			if tc.flags != nil {
				fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
				RegisterFlags(fs)
				if err := fs.Parse(tc.flags); err != nil {
					t.Fatal(err)
				}
				opts.Flags = fs
			}
			c, err := Load(opts)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ncontains %q", err, w)
				}
			}
		})
	}
}

// What the rules allow loads: proxy mode with a file or a user, pool keys
// in proxy mode, and in passthrough mode a pool section with no key, the
// auth keys that do not need proxy mode, and the defaults.
func TestAuthPoolAccepted(t *testing.T) {
	userlist := filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(userlist, []byte(`"a" "md5abc"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		yaml  string
		env   []string
		check func(t *testing.T, c *Config)
	}{
		{"proxy with a file", "auth: {mode: proxy, file: " + userlist + "}\n", nil, func(t *testing.T, c *Config) {
			if c.Auth.Mode != AuthProxy || c.Auth.File != userlist || c.Auth.User != "" {
				t.Errorf("auth = %+v", c.Auth)
			}
		}},
		{"proxy with a user, password from env", "auth: {mode: proxy, user: pgproxy_auth}\n", []string{"PGPROXY_AUTH_PASSWORD=pw"}, func(t *testing.T, c *Config) {
			if c.Auth.User != "pgproxy_auth" || c.Auth.Password != "pw" || c.Auth.Query != DefaultAuthQuery {
				t.Errorf("auth = %+v", c.Auth)
			}
		}},
		{"proxy with both and every pool key", "auth: {mode: proxy, user: u, file: " + userlist + "}\n" +
			"pool: {mode: transaction, size: 1, min_size: 1, max_client_wait: 1ms, server_idle_timeout: 0s, server_lifetime: 0s, reset_query: '', max_prepared_statements: 0}\n",
			nil, func(t *testing.T, c *Config) {
				want := Pool{Mode: PoolTransaction, Size: 1, MinSize: 1, MaxClientWait: time.Millisecond}
				if c.Pool != want {
					t.Errorf("pool = %+v, want %+v", c.Pool, want)
				}
			}},
		{"pool keys from env in proxy mode", "auth: {mode: proxy, user: u}\n",
			[]string{"PGPROXY_POOL_MODE=transaction", "PGPROXY_POOL_SIZE=7", "PGPROXY_POOL_SERVER_LIFETIME=90s", "PGPROXY_AUTH_CACHE_TTL=0s"},
			func(t *testing.T, c *Config) {
				if c.Pool.Mode != PoolTransaction || c.Pool.Size != 7 || c.Pool.ServerLifetime != 90*time.Second || c.Auth.CacheTTL != 0 {
					t.Errorf("pool = %+v auth = %+v", c.Pool, c.Auth)
				}
			}},
		{"passthrough with an empty pool section", "pool: {}\nauth: {mode: passthrough, cache_ttl: 1m, query: 'SELECT 1, 2 WHERE $1 = ''x'''}\n", nil, func(t *testing.T, c *Config) {
			if c.Pool != Default().Pool || c.Auth.CacheTTL != time.Minute {
				t.Errorf("pool = %+v auth = %+v", c.Pool, c.Auth)
			}
		}},
		{"per-transaction routing", "auth: {mode: proxy, file: " + userlist + "}\n" + "pool: {mode: transaction}\nrouting: {unit: transaction, consistency: global, consistency_wait: 50ms, read_functions: [report_total, billing.safe_sum]}\n", nil, func(t *testing.T, c *Config) {
			if c.Routing.Unit != UnitTransaction || c.Routing.Consistency != ConsistencyGlobal || c.Routing.ConsistencyWait != 50*time.Millisecond ||
				len(c.Routing.ReadFunctions) != 2 || c.Routing.ReadFunctions[1] != "billing.safe_sum" {
				t.Errorf("routing = %+v", c.Routing)
			}
		}},
		{"routing keys at their defaults", "routing: {unit: session, consistency: eventual, consistency_wait: 0s}\n", nil, func(t *testing.T, c *Config) {
			if c.Routing.Unit != UnitSession || c.Routing.Consistency != ConsistencyEventual || c.Routing.ConsistencyWait != 0 {
				t.Errorf("routing = %+v", c.Routing)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal+tc.yaml), Environ: tc.env})
			tc.check(t, c)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate of what Load accepted: %v", err)
			}
		})
	}
}

// PGPROXY_AUTH_PASSWORD (or the file's auth.password) never shows in
// Redacted output or in errors.
func TestAuthPasswordRedacted(t *testing.T) {
	const secret = "auth-TOPSECRET"
	for _, tc := range []struct {
		name string
		yaml string
		env  []string
	}{
		{"env", "auth: {mode: proxy, user: pgproxy_auth}\n", []string{"PGPROXY_AUTH_PASSWORD=" + secret}},
		{"file", "auth: {mode: proxy, user: pgproxy_auth, password: " + secret + "}\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal+tc.yaml), Environ: tc.env})
			if c.Auth.Password != secret {
				t.Fatalf("auth.password = %q, want it loaded", c.Auth.Password)
			}
			r := c.Redacted()
			if r.Auth.Password != RedactedValue || c.Auth.Password != secret {
				t.Errorf("Redacted: %q, original %q", r.Auth.Password, c.Auth.Password)
			}
			out, err := r.YAML()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), secret) || !strings.Contains(string(out), "password: '"+RedactedValue+"'") {
				t.Errorf("redacted YAML:\n%s", out)
			}
			// Broken elsewhere, including auth's own keys: no error repeats it.
			_, err = Load(LoadOptions{Path: writeConfig(t, minimal+tc.yaml+"pool: {size: x}\nrouting: {unit: x}\n"),
				Environ: append(tc.env, "PGPROXY_AUTH_CACHE_TTL=x", "PGPROXY_AUTH_QUERY=SELECT")})
			if err == nil || strings.Contains(err.Error(), secret) {
				t.Errorf("error %v: nil, or repeats the password", err)
			}
		})
	}
	// Unset stays empty.
	if r := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal)}).Redacted(); r.Auth.Password != "" {
		t.Errorf("unset auth.password shown as %q", r.Auth.Password)
	}
}

func TestAuthPoolFlags(t *testing.T) {
	fs := pflag.NewFlagSet("pgproxy", pflag.ContinueOnError)
	RegisterFlags(fs)
	err := fs.Parse([]string{
		"--auth.mode=proxy", "--auth.user=pgproxy_auth", "--auth.password=pw", "--auth.cache_ttl=1m",
		"--auth.query=SELECT u, p FROM f($1)", "--pool.mode=transaction", "--pool.size=9", "--pool.min_size=2",
		"--pool.max_client_wait=750ms", "--pool.server_idle_timeout=0", "--pool.server_lifetime=2h",
		"--pool.reset_query=", "--pool.max_prepared_statements=10", "--routing.consistency_wait=1s",
	})
	if err != nil {
		t.Fatal(err)
	}
	c := mustLoad(t, LoadOptions{Path: writeConfig(t, minimal), Flags: fs})
	wantAuth := Auth{Mode: AuthProxy, Query: "SELECT u, p FROM f($1)", User: "pgproxy_auth", Password: "pw", CacheTTL: time.Minute}
	wantPool := Pool{Mode: PoolTransaction, Size: 9, MinSize: 2, MaxClientWait: 750 * time.Millisecond,
		ServerLifetime: 2 * time.Hour, MaxPreparedStatements: 10}
	if c.Auth != wantAuth || c.Pool != wantPool || c.Routing.ConsistencyWait != time.Second {
		t.Fatalf("flags not applied:\n auth %+v\n pool %+v\n wait %v", c.Auth, c.Pool, c.Routing.ConsistencyWait)
	}
	help := fs.FlagUsages()
	for _, want := range []string{
		"--auth.mode string", "PGPROXY_AUTH_MODE, default passthrough", "--auth.cache_ttl duration",
		"--pool.size int", "PGPROXY_POOL_SIZE, default 20", "--pool.max_client_wait duration",
		"PGPROXY_POOL_RESET_QUERY, default DISCARD ALL", "--routing.unit string", "PGPROXY_AUTH_PASSWORD",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	// Flag beats env beats file.
	fs = pflag.NewFlagSet("pgproxy", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse([]string{"--pool.size=3"}); err != nil {
		t.Fatal(err)
	}
	c = mustLoad(t, LoadOptions{Path: writeConfig(t, minimal+"auth: {mode: proxy, user: u}\npool: {size: 1, min_size: 1}\n"),
		Environ: []string{"PGPROXY_POOL_SIZE=2", "PGPROXY_POOL_MIN_SIZE=2"}, Flags: fs})
	if c.Pool.Size != 3 || c.Pool.MinSize != 2 {
		t.Fatalf("pool size %d min %d, want 3 (flag) and 2 (env)", c.Pool.Size, c.Pool.MinSize)
	}
}

// Validate of a Config built in code cannot know what was given: a pool
// value other than the default counts as given.
func TestValidatePoolInPassthrough(t *testing.T) {
	c := Default()
	c.Backends = []Backend{{"127.0.0.1:5432"}}
	c.Pool.Size = 30
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "config: pool.size: needs auth.mode: proxy") || strings.Contains(err.Error(), "pool.mode") {
		t.Fatalf("Validate = %v, want only pool.size refused", err)
	}
	c.Auth.Mode, c.Auth.User = AuthProxy, "u"
	if err := c.Validate(); err != nil {
		t.Fatalf("proxy mode: %v", err)
	}
}

// The commented auth and pool examples of configs/pgproxy.yaml load once
// uncommented (with auth.mode proxy and a file that exists), and hold the
// defaults.
func TestExampleCommentedKeys(t *testing.T) {
	b, err := os.ReadFile("pgproxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^(\s*)# (\s*[a-z_]+:(?: .*)?)$`)
	body := re.ReplaceAllString(string(b), "$1$2")
	if n := len(re.FindAllString(string(b), -1)); n < 14 {
		t.Fatalf("only %d commented keys in pgproxy.yaml", n)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse([]string{"--auth.mode=proxy", "--auth.file=testdata/userlist.txt"}); err != nil {
		t.Fatal(err)
	}
	c := mustLoad(t, LoadOptions{Path: writeConfig(t, body), Flags: fs})
	d := Default()
	if c.Pool != d.Pool || c.Auth.Query != d.Auth.Query || c.Auth.CacheTTL != d.Auth.CacheTTL || c.Auth.User != "pgproxy_auth" {
		t.Fatalf("uncommented example: auth %+v pool %+v", c.Auth, c.Pool)
	}
	if !reflect.DeepEqual(c.Routing.ConsistencyWait, d.Routing.ConsistencyWait) || !c.TLS.Enabled() {
		t.Fatalf("uncommented example: routing %+v tls %+v", c.Routing, c.TLS)
	}
}
