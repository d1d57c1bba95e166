// Package configs loads pgproxy's configuration: a YAML file, PGPROXY_*
// environment variables, the OFITEC seed variables and command-line flags,
// merged through a local viper instance into the documented, validated
// Config. It is the only package that imports viper.
//
// # Sources and precedence
//
// flag > environment > file > default. Load never reads the process
// environment or global flags itself: the caller passes os.Environ() and
// its pflag.FlagSet in LoadOptions.
//
//   - File: YAML, one document, at most MaxFileSize bytes. Keys are
//     case-sensitive and exactly those below; an unknown key anywhere is an
//     error naming its full path (config: unknown key "routing.max_lagg").
//     A key given twice is an error. A null value (key:) counts as absent.
//   - Environment: every key except routing.rules and masking.rules (lists of mappings)
//     has a variable PGPROXY_ + the key upper-cased with dots as
//     underscores (routing.max_lag → PGPROXY_ROUTING_MAX_LAG,
//     health.password → PGPROXY_HEALTH_PASSWORD). Names are resolved
//     against the known key list, so keys containing underscores are not
//     ambiguous. Lists are comma-separated
//     (PGPROXY_BACKENDS=10.0.0.1:5432,10.0.0.2:5432,
//     PGPROXY_ADMIN_USERS=postgres,ops); a listener is host:port, with
//     /read or /write for its route
//     (PGPROXY_LISTEN=0.0.0.0:6432,0.0.0.0:6433/read). PGPROXY_BACKEND_TLS sets
//     backend_tls.mode. An empty value counts as unset. A PGPROXY_ variable
//     inside a known section that names no key (PGPROXY_ROUTING_MAX_LAGG)
//     is an error; other PGPROXY_ variables (PGPROXY_CONFIG, PGPROXY_PG_BIN)
//     are left to their owners.
//   - Seed variables (the OFITEC .env), below PGPROXY_* and above the file:
//     READ_REPLICA_DSN is one DSN or a comma-separated list, each
//     postgres://user:pass@host:port/db or key=value (host=h port=p user=u
//     password=pw); each host:port is appended to backends unless already
//     there, and the first DSN with a user gives health.user (and
//     health.password, unless set) unless health.user is set.
//     REPLICA_MAX_LAG_S is whole seconds for routing.max_lag.
//     MARQUEZ_URL sets lineage.transport.type=http and
//     lineage.transport.url. Multi-host DSNs and unix sockets are not
//     supported there.
//   - Flags: a flag named like a key (--routing.max_lag=2s, --listen=...)
//     that was set on the command line wins; its value is written and
//     checked as the environment variable's. RegisterFlags defines them
//     all, each with its type (bool, int, duration, list, string).
//
// docs/configuration.md is the operator's reference of every key; a test
// fails when a key of Config is missing from it.
//
// # Keys
//
// Durations are Go durations with a unit ("500ms", "5s", "1m"). Globs use
// path.Match syntax. Defaults in brackets.
//
//	listen                       list of client listeners [127.0.0.1:6432 (rules) and 127.0.0.1:6433 (read)]
//	listen[].addr                host:port; empty host = every interface, port 0 = any free port
//	listen[].route               "" (rules decide, then startup parameters, else write) | read | write
//	backends                     list of every server of the cluster; roles are discovered [none: required]
//	backends[].addr              host:port
//	health                       backend probes
//	health.interval              probe period per backend [500ms]
//	health.timeout               deadline of one probe [1s]
//	health.user                  probe user, needs pg_monitor [""]
//	health.password              probe password; secret, redacted in output [""]
//	health.database              database the probes connect to [postgres]
//	routing                      how sessions are routed
//	routing.max_lag              a replica staler than this gets no new read session; > 0 [5s]
//	routing.max_lag_bytes        a replica further behind in WAL bytes gets no new read session; 0 = no limit [0]
//	routing.fallback             read session with no fit replica: primary (forced read-only) | reject [primary]
//	routing.unit                 what one routing decision covers: session | transaction (needs pool.mode transaction) [session]
//	routing.consistency          what a replica read sees: eventual | session | global (needs routing.unit transaction) [eventual]
//	routing.consistency_wait     how long a read waits for a replica to reach its LSN floor, then the primary; 0 = no wait [100ms]
//	routing.read_functions       user functions that only read: calls may go to replicas with routing.unit transaction [none]
//	routing.rules                list of rules, first match wins [none]
//	routing.rules[].match        globs; every field given must match, at least one field
//	routing.rules[].match.user              glob on the startup user
//	routing.rules[].match.database          glob on the startup database
//	routing.rules[].match.application_name  glob on application_name
//	routing.rules[].route        read | write
//	routing.rules[].strip_suffix removed from the end of the database name before connecting
//	tls                          client-facing TLS; absent = SSLRequest is answered N
//	tls.cert                     client-facing TLS certificate (PEM file); TLS is on iff cert and key are set
//	tls.key                      client-facing TLS key (PEM file)
//	backend_tls                  scalar mode, or a mapping of the two keys below
//	backend_tls.mode             disable | prefer | require | verify-full, as libpq's sslmode [prefer]
//	backend_tls.ca               CA bundle (PEM) for verify-full; empty = system roots [""]
//	http                         metrics and health endpoints
//	http.addr                    host:port of /metrics /livez /readyz /status; empty disables [127.0.0.1:9930]
//	admin                        admin console
//	admin.users                  users who may open the admin console (database "pgproxy") [postgres]
//	limits                       hardening limits
//	limits.max_sessions          client sessions beyond this get 53300 [10000]
//	limits.startup_timeout       socket closed if startup + auth is not done by then [10s]
//	limits.drain_timeout         on SIGTERM, time sessions get to finish before being closed; 0 = none [30s]
//	auth                         who authenticates clients
//	auth.mode                    passthrough (the backend, one server connection per client) | proxy (pgproxy; pooling needs it); restart [passthrough]
//	auth.file                    PgBouncer auth_file of "user" "verifier" lines; must be a readable file at load; needs auth.mode proxy [""]
//	auth.query                   returns the verifier of the user given as $1, run on the primary as auth.user; used only when auth.user is set [SELECT usename, passwd FROM pg_shadow WHERE usename = $1]
//	auth.user                    role auth.query runs as; empty = no auth query; needs auth.mode proxy [""]
//	auth.password                auth.user's password; secret, redacted in output [""]
//	auth.cache_ttl               how long a verifier from auth.query is reused for that user's logins; 0 = query at every login [30s]
//	pool                         server connection pools, one per (backend, database, user); every key needs auth.mode proxy
//	pool.mode                    session (a client holds a server until it leaves) | transaction (for one transaction); restart [session]
//	pool.size                    server connections per pool at most; >= 1 [20]
//	pool.min_size                server connections kept open per pool; <= pool.size [0]
//	pool.max_client_wait         a client waiting longer for a server gets 53300; > 0 [5s]
//	pool.server_idle_timeout     a server idle longer is closed; 0 = never [10m]
//	pool.server_lifetime         a server older than this is closed when released; 0 = never [1h]
//	pool.reset_query             run when a session-mode client leaves its server; empty = none [DISCARD ALL]
//	pool.max_prepared_statements transaction mode: named prepared statements kept per client, re-prepared on the next server; 0 = none [500]
//	runtime                      Go runtime
//	runtime.gomaxprocs           OS threads running the relay at once (GOMAXPROCS); 0 = the GOMAXPROCS env, else half the CPUs (at least 1) [0]
//	runtime.event_loops          event loops relaying plain TCP sessions; 0 = one per GOMAXPROCS thread, -1 = a goroutine per direction; restart [0]
//	lineage                      OpenLineage events of tagged queries
//	lineage.enabled              publish OpenLineage events for tagged queries [false]
//	lineage.job_namespace        OpenLineage job namespace [ofitec]
//	lineage.dataset_namespace    OpenLineage dataset namespace, e.g. postgres://db-primary:5432 [""]
//	lineage.catalog              catalog file of datasets [""]
//	lineage.normalize_sql        replace literals in the SQL sent with events [true]
//	lineage.transport            where events go
//	lineage.transport.type       http | file | console [http]
//	lineage.transport.url        http: events are POSTed to {url}/api/v1/lineage; required when enabled [""]
//	lineage.transport.api_key    http: bearer API key; secret, redacted in output [""]
//	lineage.transport.path       file: events are appended as JSON lines; required when enabled [""]
//	lineage.transport.queue      events buffered before new ones are dropped [10000]
//	lineage.transport.timeout    deadline of one delivery [5s]
//	masking                      column masking for BI published to third parties (docs/masking.md)
//	masking.rules                list of rules, first match wins [none]
//	masking.rules[].match        globs as routing.rules: user, database, application_name
//	masking.rules[].match.user              glob on the startup user
//	masking.rules[].match.database          glob on the startup database
//	masking.rules[].match.application_name  glob on application_name
//	masking.rules[].columns      schema.table.column: hash | redact | partial | null
//	masking.rules[].pii_from_catalog  method of the columns lineage.catalog flags pii: true [none]
//	masking.allow_functions      functions other than PostgreSQL's own masked sessions may call [none]
//	masking.key                  secret of the hash method (PGPROXY_MASKING_KEY) [""]
//	log                          logger
//	log.level                    debug | info | warn | error [info]
//	log.format                   json | console [json]
//
// # Errors
//
// Load collects every problem (errors.Join of *FieldError, up to 100), each
// naming the key and, when known, where the value came from:
//
//	config: unknown key "routing.max_lagg" (pgproxy.yaml:14)
//	config: routing.fallback: must be "primary" or "reject", got "primry"
//	config: health.interval: must be a duration with a unit like "500ms" or "5s", got "5" (pgproxy.yaml:9)
//	config: routing.max_lag: must be a duration ... (env PGPROXY_ROUTING_MAX_LAG)
//
// A key that needs another key's value says so by name:
//
//	config: auth.file: is set but auth.mode is passthrough (set auth.mode: proxy)
//	config: pool.size: needs auth.mode: proxy: in passthrough mode each client has its own server connection (pgproxy.yaml:31)
//
// The second is about a key that was given at all (in the file, the
// environment or a flag), even with its default value; Load tracks which
// keys its layers set. Validate, which cannot know, counts a pool key as
// given when it differs from Default.
//
// Messages never contain a secret: secret keys (health.password,
// auth.password, lineage.transport.api_key) and URLs are never repeated, READ_REPLICA_DSN
// errors do not echo their input, and any other value a message repeats
// has its user info and password=... replaced by ******** first. A
// connection string put under backends gets where its parts belong:
//
//	config: backends[0].addr: must be host:port, got a connection string "postgres://odoo:********@db:5432/odoo": a backend is host:port only (here "db:5432"); ...
//
// # Output and reload
//
// Config.Redacted returns a copy with secrets replaced by RedactedValue;
// Config.YAML renders a Config as a file that loads back to the same
// Config (pgproxy check prints c.Redacted().YAML()); in passthrough mode
// it leaves out the pool section, which Load would refuse there.
// Config.RestartRequired tells a reload which changes it cannot apply in
// place (listen, http.addr, runtime.event_loops, auth.mode, pool.mode).
package configs
