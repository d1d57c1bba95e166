package configs

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/spf13/pflag"
)

// keyHelp is the one-line help of every key that env/flags can set.
var keyHelp = map[string]string{
	"listen":                    "client listeners host:port[/read|/write], comma-separated (replaces the file's list)",
	"backends":                  "backend addresses host:port, comma-separated (replaces the file's list)",
	"health.interval":           "probe period per backend",
	"health.timeout":            "deadline of one probe",
	"health.user":               "health-check user (needs pg_monitor)",
	"health.password":           "health-check password (secret)",
	"health.database":           "database the probes connect to",
	"routing.max_lag":           "a replica staler than this gets no new read session",
	"routing.max_lag_bytes":     "a replica further behind than this many WAL bytes gets no new read session; 0 = no limit",
	"routing.fallback":          "read session with no fit replica: primary (forced read-only) | reject",
	"routing.unit":              "what a routing decision covers: session | transaction (needs pool.mode transaction)",
	"routing.consistency":       "what a replica read sees: eventual | session | global (needs routing.unit transaction)",
	"routing.consistency_wait":  "how long a read waits for a replica to reach its LSN floor, then the primary; 0 = no wait",
	"routing.read_functions":    "user functions that only read (routing.unit transaction may send their calls to replicas), comma-separated",
	"tls.cert":                  "client-facing TLS certificate file (PEM)",
	"tls.key":                   "client-facing TLS key file (PEM)",
	"backend_tls.mode":          "TLS to backends: disable | prefer | require | verify-full",
	"backend_tls.ca":            "CA bundle for backend TLS verification (PEM)",
	"http.addr":                 "address of /metrics /livez /readyz /status; empty disables",
	"admin.users":               "users allowed on the admin console, comma-separated",
	"limits.max_sessions":       "client sessions beyond this get 53300",
	"limits.startup_timeout":    "a socket that has not finished startup + auth by then is closed",
	"limits.drain_timeout":      "on SIGTERM, how long sessions may finish before they are closed",
	"runtime.gomaxprocs":        "OS threads running the relay at once (Go's GOMAXPROCS); 0 = the GOMAXPROCS env, else half the CPUs (at least 1)",
	"runtime.event_loops":       "event loops relaying plain TCP sessions; 0 = one per GOMAXPROCS thread, -1 = a goroutine per direction",
	"lineage.enabled":           "publish OpenLineage events for tagged queries",
	"lineage.job_namespace":     "OpenLineage job namespace",
	"lineage.dataset_namespace": "OpenLineage dataset namespace (postgres://host:port)",
	"lineage.catalog":           "catalog file of lineage datasets",
	"lineage.normalize_sql":     "send SQL with literals replaced by placeholders",
	"lineage.transport.type":    "where events go: http | file | console",
	"lineage.transport.url":     "http transport: events are POSTed to {url}/api/v1/lineage",
	"lineage.transport.api_key": "http transport: bearer API key (secret)",
	"lineage.transport.path":    "file transport: file events are appended to",
	"lineage.transport.queue":   "events buffered before new ones are dropped",
	"lineage.transport.timeout": "deadline of one delivery",
	"masking.allow_functions":   "functions other than PostgreSQL's own that masked sessions may call (schema.name globs), comma-separated",
	"masking.key":               "secret of the masking hash method (secret)",
	"log.level":                 "debug | info | warn | error",
	"log.format":                "json | console",

	// Authentication and pooling (wave 2).
	"auth.mode":                    "who authenticates clients: passthrough (the backend) | proxy (pgproxy; pooling needs it)",
	"auth.file":                    "PgBouncer auth_file of user password verifiers (auth.mode proxy)",
	"auth.query":                   "query returning the verifier of user $1, run on the primary as auth.user",
	"auth.user":                    "role auth.query runs as; empty = no auth query",
	"auth.password":                "auth.user's password (secret)",
	"auth.cache_ttl":               "how long a verifier from auth.query is reused; 0 = query at every login",
	"pool.mode":                    "how long a client holds a server: session | transaction (needs auth.mode proxy)",
	"pool.size":                    "server connections per (backend, database, user) at most",
	"pool.min_size":                "server connections kept open per pool",
	"pool.max_client_wait":         "a client waiting longer for a server gets 53300",
	"pool.server_idle_timeout":     "a server idle longer is closed; 0 = never",
	"pool.server_lifetime":         "a server older than this is closed when released; 0 = never",
	"pool.reset_query":             "run when a session-mode client leaves its server; empty = none",
	"pool.max_prepared_statements": "transaction mode: named prepared statements kept per client; 0 = none",
}

// keyValue is the pflag.Value of a key flag. It keeps the text as given
// and names the key's kind as its type, so that --help shows
// "--routing.max_lag duration"; Load parses and checks the text exactly
// like the key's environment variable, and reports a bad one by key.
type keyValue struct {
	kind kind
	text string
	set  bool
}

func (v *keyValue) String() string { return v.text }

// Set keeps the text; a list flag given twice (--backends=a --backends=b)
// collects both, as pflag's own slice flags do.
func (v *keyValue) Set(s string) error {
	if v.set && (v.kind == kindStrings || v.kind == kindList) {
		v.text += "," + s
	} else {
		v.text = s
	}
	v.set = true
	return nil
}

// Type is the name --help shows after the flag.
func (v *keyValue) Type() string {
	switch v.kind {
	case kindBool:
		return "bool"
	case kindInt:
		return "int"
	case kindDuration:
		return "duration"
	case kindStrings, kindList:
		return "list"
	}
	return "string"
}

// RegisterFlags defines one flag per key of Keys on fs, named like the key
// (--routing.max_lag); Load then applies the ones set on the command line,
// parsed and checked like their environment variables (durations "5s",
// lists comma-separated, listeners host:port[/read|/write]). --help shows
// each flag's type (bool, int, duration, list, string). The caller owns fs
// and still defines its own flags (--config).
func RegisterFlags(fs *pflag.FlagSet) {
	def := flatDefaults()
	for _, s := range settings() {
		if s.noEnv != "" {
			continue
		}
		usage := fmt.Sprintf("%s (env %s", keyHelp[s.key], s.env)
		if d := showDefault(def[s.key]); d != "" && s.kind != kindBool {
			usage += ", default " + d
		}
		usage += ")"
		f := fs.VarPF(&keyValue{kind: s.kind}, s.key, "", usage)
		if s.kind == kindBool {
			f.NoOptDefVal = "true" // --lineage.enabled alone means true
			f.DefValue = fmt.Sprint(def[s.key])
		}
	}
}

func showDefault(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		return ""
	case []any:
		var parts []string
		for _, e := range x {
			switch e := e.(type) {
			case string:
				parts = append(parts, e)
			case map[string]any: // listen, backends
				s, _ := e["addr"].(string)
				if r, _ := e["route"].(string); r != "" {
					s += "/" + r
				}
				parts = append(parts, s)
			}
		}
		return strings.Join(parts, ",")
	}
	if reflect.ValueOf(v).IsZero() {
		return ""
	}
	return fmt.Sprint(v)
}
