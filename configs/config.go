package configs

import (
	"maps"
	"slices"
	"time"
)

// Route values of Listener.Route and Rule.Route.
const (
	RouteRules = ""      // Listener.Route only: the rules and startup parameters decide
	RouteRead  = "read"  // read-only session on a replica
	RouteWrite = "write" // session on the primary
)

// Fallback values of Routing.Fallback: what a read session gets when no
// replica is fit.
const (
	FallbackPrimary = "primary" // the primary, with the session forced read-only
	FallbackReject  = "reject"  // an error 57P03
)

// Modes of BackendTLS.Mode, with libpq's sslmode meaning.
const (
	BackendTLSDisable    = "disable"
	BackendTLSPrefer     = "prefer"
	BackendTLSRequire    = "require"
	BackendTLSVerifyFull = "verify-full"
)

// Modes of Auth.Mode: who authenticates a client.
const (
	AuthPassthrough = "passthrough" // the backend, through the relay; no server connection is reused
	AuthProxy       = "proxy"       // pgproxy itself (auth.file, auth.query); pooling needs it
)

// Modes of Pool.Mode: how long a client holds a server connection.
const (
	PoolSession     = "session"     // from login to logout
	PoolTransaction = "transaction" // for one transaction
)

// Units of Routing.Unit: what one routing decision covers.
const (
	UnitSession     = "session"     // the whole session (today's behaviour)
	UnitTransaction = "transaction" // each transaction; needs PoolTransaction
)

// Levels of Routing.Consistency: what a read on a replica is sure to see.
const (
	ConsistencyEventual = "eventual" // whatever the replica has replayed, within routing.max_lag
	ConsistencySession  = "session"  // every write this client committed through the proxy
	ConsistencyGlobal   = "global"   // every write committed before the read arrived
)

// DefaultAuthQuery is auth.query's default, PgBouncer's auth_query: the
// password verifier of the user given as $1.
const DefaultAuthQuery = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"

// Types of Transport.Type.
const (
	TransportHTTP    = "http"
	TransportFile    = "file"
	TransportConsole = "console"
)

// RedactedValue replaces a secret that is set, in Config.Redacted.
const RedactedValue = "********"

// Config is the whole pgproxy configuration, as Load returns it: defaulted,
// merged from file, environment and flags, and validated. The package doc
// documents every key. A Config is a plain value: callers must not modify
// one that other goroutines read; Load returns a fresh one each time.
type Config struct {
	Listen     []Listener `yaml:"listen" mapstructure:"listen"`
	Backends   []Backend  `yaml:"backends" mapstructure:"backends"`
	Health     Health     `yaml:"health" mapstructure:"health"`
	Routing    Routing    `yaml:"routing" mapstructure:"routing"`
	TLS        TLS        `yaml:"tls" mapstructure:"tls"`
	BackendTLS BackendTLS `yaml:"backend_tls" mapstructure:"backend_tls"`
	HTTP       HTTP       `yaml:"http" mapstructure:"http"`
	Admin      Admin      `yaml:"admin" mapstructure:"admin"`
	Limits     Limits     `yaml:"limits" mapstructure:"limits"`
	Auth       Auth       `yaml:"auth" mapstructure:"auth"`
	Pool       Pool       `yaml:"pool" mapstructure:"pool"`
	Runtime    Runtime    `yaml:"runtime" mapstructure:"runtime"`
	Lineage    Lineage    `yaml:"lineage" mapstructure:"lineage"`
	Masking    Masking    `yaml:"masking" mapstructure:"masking"`
	Log        Log        `yaml:"log" mapstructure:"log"`
}

// Listener is one client-facing TCP listener.
type Listener struct {
	// Addr is host:port; an empty host listens on every interface, port 0
	// picks a free port (tests).
	Addr string `yaml:"addr" mapstructure:"addr"`
	// Route is RouteRules (""), RouteRead or RouteWrite. A non-empty route
	// fixes the route of every session on this listener.
	Route string `yaml:"route" mapstructure:"route"`
}

// Backend is one PostgreSQL server of the cluster; its role (primary or
// replica) is discovered by the health checker, never declared.
type Backend struct {
	Addr string `yaml:"addr" mapstructure:"addr"` // host:port
}

// Health configures the backend probes.
type Health struct {
	Interval time.Duration `yaml:"interval" mapstructure:"interval"` // probe period per backend
	Timeout  time.Duration `yaml:"timeout" mapstructure:"timeout"`   // deadline of one probe
	User     string        `yaml:"user" mapstructure:"user"`         // needs pg_monitor
	Password string        `yaml:"password" mapstructure:"password"` // secret
	Database string        `yaml:"database" mapstructure:"database"`
}

// Routing configures how a session's route and backend are chosen.
type Routing struct {
	// MaxLag: a replica staler than this gets no new read session.
	MaxLag time.Duration `yaml:"max_lag" mapstructure:"max_lag"`
	// MaxLagBytes: a replica whose replay is further behind than this many
	// WAL bytes gets no new read session; 0 = no byte limit.
	MaxLagBytes int64 `yaml:"max_lag_bytes" mapstructure:"max_lag_bytes"`
	// Fallback is FallbackPrimary or FallbackReject.
	Fallback string `yaml:"fallback" mapstructure:"fallback"`
	// Unit is UnitSession or UnitTransaction (needs Pool.Mode
	// PoolTransaction and Auth.Mode AuthProxy).
	Unit string `yaml:"unit" mapstructure:"unit"`
	// Consistency is ConsistencyEventual, ConsistencySession or
	// ConsistencyGlobal; the last two need UnitTransaction.
	Consistency string `yaml:"consistency" mapstructure:"consistency"`
	// ConsistencyWait is how long a read may wait for a replica to reach
	// its LSN floor before it runs on the primary; 0 = no wait.
	ConsistencyWait time.Duration `yaml:"consistency_wait" mapstructure:"consistency_wait"`
	// ReadFunctions are the user's functions that only read (immutable
	// or stable): a statement calling them may still go to a replica
	// with UnitTransaction. "name" matches a call with or without a
	// schema, "schema.name" a call written so.
	ReadFunctions []string `yaml:"read_functions" mapstructure:"read_functions"`
	// Rules are tried in order; the first match wins.
	Rules []Rule `yaml:"rules" mapstructure:"rules"`
}

// Rule routes the sessions whose startup parameters match.
type Rule struct {
	Match Match  `yaml:"match" mapstructure:"match"`
	Route string `yaml:"route" mapstructure:"route"` // RouteRead or RouteWrite
	// StripSuffix is removed from the end of the database name before
	// connecting to the backend (database "sales_ro" → "sales").
	StripSuffix string `yaml:"strip_suffix" mapstructure:"strip_suffix"`
}

// Match holds globs in path.Match syntax; empty fields are ignored, every
// non-empty field must match, and at least one is non-empty.
type Match struct {
	User            string `yaml:"user" mapstructure:"user"`
	Database        string `yaml:"database" mapstructure:"database"`
	ApplicationName string `yaml:"application_name" mapstructure:"application_name"`
}

// TLS is the client-facing TLS; enabled iff both files are set.
type TLS struct {
	Cert string `yaml:"cert" mapstructure:"cert"` // PEM certificate chain file
	Key  string `yaml:"key" mapstructure:"key"`   // PEM private key file
}

// Enabled reports whether the proxy answers SSLRequest with S.
func (t TLS) Enabled() bool { return t.Cert != "" && t.Key != "" }

// BackendTLS is the TLS towards the backends. In YAML it is either a scalar
// (backend_tls: prefer) or a mapping (backend_tls: {mode: verify-full, ca: F}).
type BackendTLS struct {
	Mode string `yaml:"mode" mapstructure:"mode"` // disable | prefer | require | verify-full
	CA   string `yaml:"ca" mapstructure:"ca"`     // PEM CA bundle; empty = system roots
}

// HTTP configures the metrics and health endpoint server.
type HTTP struct {
	// Addr is host:port of /metrics /livez /readyz /status; empty disables it.
	Addr string `yaml:"addr" mapstructure:"addr"`
}

// Admin configures the admin console (database "pgproxy").
type Admin struct {
	Users []string `yaml:"users" mapstructure:"users"`
}

// Limits are the hardening limits.
type Limits struct {
	MaxSessions    int           `yaml:"max_sessions" mapstructure:"max_sessions"`
	StartupTimeout time.Duration `yaml:"startup_timeout" mapstructure:"startup_timeout"`
	DrainTimeout   time.Duration `yaml:"drain_timeout" mapstructure:"drain_timeout"`
}

// Auth says who authenticates clients. In AuthPassthrough mode (the
// default) the backend does, through the relay, and every client session
// has its own server connection; in AuthProxy mode pgproxy checks the
// password itself against File and/or the result of Query, which is what
// lets a server connection serve more than one client (Pool).
type Auth struct {
	// Mode is AuthPassthrough or AuthProxy.
	Mode string `yaml:"mode" mapstructure:"mode"`
	// File is a PgBouncer auth_file ("user" "SCRAM-SHA-256$…" lines). Load
	// checks that it can be read; its content is parsed by the proxy. Its
	// SCRAM verifiers (else the tls key) are also what unknown users' fake
	// SCRAM salts are derived from, so that those stay the same across
	// restarts and instances (docs/pooling.md).
	File string `yaml:"file" mapstructure:"file"`
	// Query looks up the password verifier of the user given as $1, on the
	// primary as User; used only when User is set.
	Query string `yaml:"query" mapstructure:"query"`
	// User is the role Query runs as; empty = no auth query.
	User string `yaml:"user" mapstructure:"user"`
	// Password is User's password; secret.
	Password string `yaml:"password" mapstructure:"password"`
	// CacheTTL is how long a verifier that Query returned is reused for
	// the logins of that user before it is looked up again; 0 = every
	// login runs Query.
	CacheTTL time.Duration `yaml:"cache_ttl" mapstructure:"cache_ttl"`
}

// Pool configures the server connection pools, one per (backend, database,
// user). Every key needs Auth.Mode AuthProxy.
type Pool struct {
	// Mode is PoolSession or PoolTransaction.
	Mode string `yaml:"mode" mapstructure:"mode"`
	// Size is the most server connections of one pool, >= 1.
	Size int `yaml:"size" mapstructure:"size"`
	// MinSize is how many server connections a pool keeps open, <= Size.
	MinSize int `yaml:"min_size" mapstructure:"min_size"`
	// MaxClientWait: a client waiting longer for a server gets 53300.
	MaxClientWait time.Duration `yaml:"max_client_wait" mapstructure:"max_client_wait"`
	// ServerIdleTimeout: a server idle longer is closed; 0 = never.
	ServerIdleTimeout time.Duration `yaml:"server_idle_timeout" mapstructure:"server_idle_timeout"`
	// ServerLifetime: a server older than this is closed when it is
	// released; 0 = never.
	ServerLifetime time.Duration `yaml:"server_lifetime" mapstructure:"server_lifetime"`
	// ResetQuery runs on a server when a session-mode client leaves it;
	// empty = none.
	ResetQuery string `yaml:"reset_query" mapstructure:"reset_query"`
	// MaxPreparedStatements: in transaction mode, named prepared statements
	// kept per client and re-prepared on the next server; 0 = none kept.
	MaxPreparedStatements int `yaml:"max_prepared_statements" mapstructure:"max_prepared_statements"`
}

// Runtime tunes the Go runtime the relay runs on.
type Runtime struct {
	// GOMAXPROCS is how many OS threads run the relay at once; 0 = the
	// GOMAXPROCS environment variable if set, else half of Go's default
	// (the CPUs, or the container's CPU limit), at least one.
	GOMAXPROCS int `yaml:"gomaxprocs" mapstructure:"gomaxprocs"`
	// EventLoops is how many event loops relay plain TCP sessions: 0 = one
	// per GOMAXPROCS thread, -1 = none (a goroutine per direction, as TLS
	// sessions always are). Takes effect at start.
	EventLoops int `yaml:"event_loops" mapstructure:"event_loops"`
}

// Lineage configures OpenLineage events of tagged queries.
type Lineage struct {
	Enabled          bool      `yaml:"enabled" mapstructure:"enabled"`
	JobNamespace     string    `yaml:"job_namespace" mapstructure:"job_namespace"`
	DatasetNamespace string    `yaml:"dataset_namespace" mapstructure:"dataset_namespace"`
	Catalog          string    `yaml:"catalog" mapstructure:"catalog"` // catalog file path
	NormalizeSQL     bool      `yaml:"normalize_sql" mapstructure:"normalize_sql"`
	Transport        Transport `yaml:"transport" mapstructure:"transport"`
}

// Masking is column masking for the sessions a rule matches (package
// masking; docs/masking.md). Applied on reload.
type Masking struct {
	// Rules are tried in order; the first match wins.
	Rules []MaskingRule `yaml:"rules" mapstructure:"rules"`
	// AllowFunctions are functions other than PostgreSQL's own that masked
	// sessions may call ("schema.name" or "name" globs): the proxy cannot
	// see what a function reads, so any other is refused.
	AllowFunctions []string `yaml:"allow_functions" mapstructure:"allow_functions"`
	// Key is the secret of the hash method; required when a rule uses it.
	// Secret: set it with PGPROXY_MASKING_KEY.
	Key string `yaml:"key" mapstructure:"key"`
}

// MaskingRule masks columns for the sessions whose startup parameters match.
type MaskingRule struct {
	Match Match `yaml:"match" mapstructure:"match"`
	// Columns maps schema.table.column to hash, redact, partial or null.
	Columns map[string]string `yaml:"columns" mapstructure:"columns"`
	// PIIFromCatalog is the method of the columns lineage.catalog flags
	// pii: true; empty = those are not masked by this rule.
	PIIFromCatalog string `yaml:"pii_from_catalog" mapstructure:"pii_from_catalog"`
}

// Masking methods (masking.rules[].columns values, pii_from_catalog).
var MaskingMethods = []string{"hash", "redact", "partial", "null"}

// Transport is where lineage events go.
type Transport struct {
	Type    string        `yaml:"type" mapstructure:"type"`       // http | file | console
	URL     string        `yaml:"url" mapstructure:"url"`         // http: POST {url}/api/v1/lineage
	APIKey  string        `yaml:"api_key" mapstructure:"api_key"` // http: bearer token; secret
	Path    string        `yaml:"path" mapstructure:"path"`       // file: events appended as JSON lines
	Queue   int           `yaml:"queue" mapstructure:"queue"`     // events buffered before dropping
	Timeout time.Duration `yaml:"timeout" mapstructure:"timeout"` // per delivery
}

// Log configures the zap logger.
type Log struct {
	Level  string `yaml:"level" mapstructure:"level"`   // debug | info | warn | error
	Format string `yaml:"format" mapstructure:"format"` // json | console
}

// Default returns the configuration used for every key that no file,
// environment variable or flag sets. It has no backends, so it does not
// validate on its own.
func Default() *Config {
	return &Config{
		Listen: []Listener{
			{Addr: "127.0.0.1:6432"},
			{Addr: "127.0.0.1:6433", Route: RouteRead},
		},
		Health: Health{
			Interval: 500 * time.Millisecond,
			Timeout:  time.Second,
			Database: "postgres",
		},
		Routing: Routing{
			MaxLag:          5 * time.Second,
			Fallback:        FallbackPrimary,
			Unit:            UnitSession,
			Consistency:     ConsistencyEventual,
			ConsistencyWait: 100 * time.Millisecond,
		},
		BackendTLS: BackendTLS{Mode: BackendTLSPrefer},
		HTTP:       HTTP{Addr: "127.0.0.1:9930"},
		Admin:      Admin{Users: []string{"postgres"}},
		Limits: Limits{
			MaxSessions:    10000,
			StartupTimeout: 10 * time.Second,
			DrainTimeout:   30 * time.Second,
		},
		Auth: Auth{
			Mode:     AuthPassthrough,
			Query:    DefaultAuthQuery,
			CacheTTL: 30 * time.Second,
		},
		Pool: Pool{
			Mode:                  PoolSession,
			Size:                  20,
			MaxClientWait:         5 * time.Second,
			ServerIdleTimeout:     10 * time.Minute,
			ServerLifetime:        time.Hour,
			ResetQuery:            "DISCARD ALL",
			MaxPreparedStatements: 500,
		},
		Lineage: Lineage{
			JobNamespace: "ofitec",
			NormalizeSQL: true,
			Transport: Transport{
				Type:    TransportHTTP,
				Queue:   10000,
				Timeout: 5 * time.Second,
			},
		},
		Log: Log{Level: "info", Format: "json"},
	}
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	if c == nil {
		return nil
	}
	out := *c
	out.Listen = slices.Clone(c.Listen)
	out.Backends = slices.Clone(c.Backends)
	out.Routing.Rules = slices.Clone(c.Routing.Rules)
	out.Routing.ReadFunctions = slices.Clone(c.Routing.ReadFunctions)
	out.Admin.Users = slices.Clone(c.Admin.Users)
	out.Masking.Rules = slices.Clone(c.Masking.Rules)
	for i, r := range out.Masking.Rules {
		out.Masking.Rules[i].Columns = maps.Clone(r.Columns)
	}
	out.Masking.AllowFunctions = slices.Clone(c.Masking.AllowFunctions)
	return &out
}

// Redacted returns a deep copy of c in which every secret that is set
// (health.password, auth.password, lineage.transport.api_key, masking.key, the password
// inside lineage.transport.url) is replaced by RedactedValue. Use it for
// anything printed or logged.
func (c *Config) Redacted() *Config {
	out := c.Clone()
	if out == nil {
		return nil
	}
	if out.Health.Password != "" {
		out.Health.Password = RedactedValue
	}
	if out.Auth.Password != "" {
		out.Auth.Password = RedactedValue
	}
	if out.Lineage.Transport.APIKey != "" {
		out.Lineage.Transport.APIKey = RedactedValue
	}
	if out.Masking.Key != "" {
		out.Masking.Key = RedactedValue
	}
	out.Lineage.Transport.URL = redactURL(out.Lineage.Transport.URL)
	return out
}

// RestartRequired lists the keys whose change from old to c a running proxy
// cannot apply in place: "listen" (any listener added, removed or
// changed), "http.addr" (sockets that are already bound),
// "runtime.event_loops", "auth.mode" and "pool.mode" (sessions already
// relayed one way cannot switch to the other). Every other key is applied
// by a reload. It returns nil when nothing needs a restart or old
// is nil.
func (c *Config) RestartRequired(old *Config) []string {
	if c == nil || old == nil {
		return nil
	}
	var keys []string
	if !slices.Equal(c.Listen, old.Listen) {
		keys = append(keys, "listen")
	}
	if c.HTTP.Addr != old.HTTP.Addr {
		keys = append(keys, "http.addr")
	}
	if c.Runtime.EventLoops != old.Runtime.EventLoops {
		keys = append(keys, "runtime.event_loops")
	}
	if c.Auth.Mode != old.Auth.Mode {
		keys = append(keys, "auth.mode")
	}
	if c.Pool.Mode != old.Pool.Mode {
		keys = append(keys, "pool.mode")
	}
	return keys
}
