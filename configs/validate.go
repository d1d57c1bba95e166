package configs

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Validate checks c as Load does and returns every problem joined (nil if
// none). Use it for a Config built in code (tests, the demo). Not knowing
// which keys were given, it counts a pool key as given in passthrough mode
// when its value differs from Default's.
func (c *Config) Validate() error {
	p := &problems{}
	c.validate(p, nil)
	return p.err()
}

// validate adds every problem of c to p. set holds the keys the layers
// gave a value (see origins); nil = unknown.
func (c *Config) validate(p *problems, set origins) {
	// listen
	if len(c.Listen) == 0 {
		p.add("listen", "", "at least one listener is required")
	}
	seen := map[string]int{}
	for i, l := range c.Listen {
		key := fmt.Sprintf("listen[%d]", i)
		if err := checkAddr(l.Addr, true); err != nil {
			p.add(key+".addr", "", "%v", err)
		} else if _, port, _ := net.SplitHostPort(l.Addr); port != "0" {
			if j, dup := seen[normAddr(l.Addr)]; dup {
				p.add(key+".addr", "", "%s is already used by listen[%d]", quote(l.Addr), j)
			} else {
				seen[normAddr(l.Addr)] = i
			}
		}
		switch l.Route {
		case RouteRules, RouteRead, RouteWrite:
		default:
			p.add(key+".route", "", "must be \"read\", \"write\" or empty (rules decide), got %s", quote(l.Route))
		}
	}

	// backends
	if len(c.Backends) == 0 {
		p.add("backends", "", "at least one backend is required (or set READ_REPLICA_DSN)")
	}
	seen = map[string]int{}
	for i, b := range c.Backends {
		key := fmt.Sprintf("backends[%d].addr", i)
		if err := checkAddr(b.Addr, false); err != nil {
			if hint := dsnHint(b.Addr); hint != "" {
				p.add(key, "", "must be host:port, got a connection string %s: %s", quote(b.Addr), hint)
			} else {
				p.add(key, "", "%v", err)
			}
			continue
		}
		if j, dup := seen[normAddr(b.Addr)]; dup {
			p.add(key, "", "%s is already backends[%d]", quote(b.Addr), j)
		} else {
			seen[normAddr(b.Addr)] = i
		}
	}

	// health
	if c.Health.Interval <= 0 {
		p.add("health.interval", "", "must be > 0, got %s", c.Health.Interval)
	}
	if c.Health.Timeout <= 0 {
		p.add("health.timeout", "", "must be > 0, got %s", c.Health.Timeout)
	}
	if c.Health.Database == "" {
		p.add("health.database", "", "must not be empty")
	}

	// routing
	if c.Routing.MaxLag <= 0 {
		p.add("routing.max_lag", "", "must be > 0, got %s", c.Routing.MaxLag)
	}
	if c.Routing.MaxLagBytes < 0 {
		p.add("routing.max_lag_bytes", "", "must be >= 0 (0 = no byte limit), got %d", c.Routing.MaxLagBytes)
	}
	switch c.Routing.Fallback {
	case FallbackPrimary, FallbackReject:
	default:
		p.add("routing.fallback", "", "must be \"primary\" or \"reject\", got %s", quote(c.Routing.Fallback))
	}
	c.validateUnit(p)
	for i, r := range c.Routing.Rules {
		key := fmt.Sprintf("routing.rules[%d]", i)
		m := r.Match
		if m.User == "" && m.Database == "" && m.ApplicationName == "" {
			p.add(key+".match", "", "needs at least one of user, database, application_name")
		}
		for _, g := range []struct{ k, v string }{
			{"user", m.User}, {"database", m.Database}, {"application_name", m.ApplicationName},
		} {
			if _, err := path.Match(g.v, ""); err != nil {
				p.add(key+".match."+g.k, "", "bad glob %s: %v", quote(g.v), err)
			}
		}
		switch r.Route {
		case RouteRead, RouteWrite:
		default:
			p.add(key+".route", "", "must be \"read\" or \"write\", got %s", quote(r.Route))
		}
	}

	c.validateMasking(p)

	// tls
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		if c.TLS.Cert == "" {
			p.add("tls.cert", "", "is required when tls.key is set")
		} else {
			p.add("tls.key", "", "is required when tls.cert is set")
		}
	}
	switch c.BackendTLS.Mode {
	case BackendTLSDisable, BackendTLSPrefer, BackendTLSRequire, BackendTLSVerifyFull:
	default:
		p.add("backend_tls.mode", "", "must be one of disable, prefer, require, verify-full, got %s", quote(c.BackendTLS.Mode))
	}
	if c.BackendTLS.CA != "" && c.BackendTLS.Mode == BackendTLSDisable {
		p.add("backend_tls.ca", "", "is set but backend_tls.mode is disable")
	}

	// http
	if c.HTTP.Addr != "" {
		if err := checkAddr(c.HTTP.Addr, true); err != nil {
			p.add("http.addr", "", "%v", err)
		}
	}

	// admin
	for i, u := range c.Admin.Users {
		if u == "" {
			p.add(fmt.Sprintf("admin.users[%d]", i), "", "must not be empty")
		}
	}

	// limits
	if c.Limits.MaxSessions <= 0 {
		p.add("limits.max_sessions", "", "must be > 0, got %d", c.Limits.MaxSessions)
	}
	if c.Limits.StartupTimeout <= 0 {
		p.add("limits.startup_timeout", "", "must be > 0, got %s", c.Limits.StartupTimeout)
	}
	if c.Limits.DrainTimeout < 0 {
		p.add("limits.drain_timeout", "", "must be >= 0, got %s", c.Limits.DrainTimeout)
	}

	c.validateAuth(p)
	c.validatePool(p, set)

	if c.Runtime.GOMAXPROCS < 0 {
		p.add("runtime.gomaxprocs", "", "must be >= 0 (0 = Go's default), got %d", c.Runtime.GOMAXPROCS)
	}
	if c.Runtime.EventLoops < -1 {
		p.add("runtime.event_loops", "", "must be >= -1 (0 = one per GOMAXPROCS thread, -1 = none), got %d", c.Runtime.EventLoops)
	}

	// lineage
	t := c.Lineage.Transport
	switch t.Type {
	case TransportHTTP, TransportFile, TransportConsole:
	default:
		p.add("lineage.transport.type", "", "must be one of http, file, console, got %s", quote(t.Type))
	}
	if t.URL != "" {
		if err := checkHTTPURL(t.URL); err != nil {
			p.add("lineage.transport.url", "", "%v", err)
		}
	}
	if t.Queue <= 0 {
		p.add("lineage.transport.queue", "", "must be > 0, got %d", t.Queue)
	}
	if t.Timeout <= 0 {
		p.add("lineage.transport.timeout", "", "must be > 0, got %s", t.Timeout)
	}
	if c.Lineage.Enabled {
		if c.Lineage.JobNamespace == "" {
			p.add("lineage.job_namespace", "", "must not be empty when lineage.enabled")
		}
		switch {
		case t.Type == TransportHTTP && t.URL == "":
			p.add("lineage.transport.url", "", "is required when lineage.enabled and transport.type is http (or set MARQUEZ_URL)")
		case t.Type == TransportFile && t.Path == "":
			p.add("lineage.transport.path", "", "is required when lineage.enabled and transport.type is file")
		}
	}

	// log
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "", "must be one of debug, info, warn, error, got %s", quote(c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		p.add("log.format", "", "must be \"json\" or \"console\", got %s", quote(c.Log.Format))
	}
}

// validateUnit checks routing.unit, routing.consistency,
// routing.consistency_wait and routing.read_functions.
func (c *Config) validateUnit(p *problems) {
	r := c.Routing
	switch r.Unit {
	case UnitSession:
	case UnitTransaction:
		if c.Pool.Mode != PoolTransaction {
			p.add("routing.unit", "", "transaction needs pool.mode: transaction, got pool.mode %s", quote(c.Pool.Mode))
		}
	default:
		p.add("routing.unit", "", "must be \"session\" or \"transaction\", got %s", quote(r.Unit))
	}
	switch r.Consistency {
	case ConsistencyEventual:
	case ConsistencySession, ConsistencyGlobal:
		if r.Unit != UnitTransaction {
			p.add("routing.consistency", "", "%s needs routing.unit: transaction", r.Consistency)
		}
	default:
		p.add("routing.consistency", "", "must be one of eventual, session, global, got %s", quote(r.Consistency))
	}
	if r.ConsistencyWait < 0 {
		p.add("routing.consistency_wait", "", "must be >= 0 (0 = no wait), got %s", r.ConsistencyWait)
	}
	for i, f := range r.ReadFunctions {
		parts := strings.Split(f, ".")
		if len(parts) > 2 || slices.Contains(parts, "") || strings.ContainsAny(f, " \t\n\"'();") {
			p.add(fmt.Sprintf("routing.read_functions[%d]", i), "", "must be a function name or schema.name, got %s", quote(f))
		}
	}
}

// validateAuth checks the auth keys; auth.file must be a readable file
// now (its content is the proxy's to parse). auth.password is never
// repeated.
func (c *Config) validateAuth(p *problems) {
	a := c.Auth
	switch a.Mode {
	case AuthPassthrough:
		if a.File != "" {
			p.add("auth.file", "", "is set but auth.mode is passthrough (set auth.mode: proxy)")
		}
		if a.User != "" {
			p.add("auth.user", "", "is set but auth.mode is passthrough (set auth.mode: proxy)")
		}
	case AuthProxy:
		if a.File == "" && a.User == "" {
			p.add("auth.mode", "", "proxy needs auth.file or auth.user (or both): where the proxy finds the password verifier of a client's user")
		}
	default:
		p.add("auth.mode", "", "must be \"passthrough\" or \"proxy\", got %s", quote(a.Mode))
	}
	if a.File != "" {
		if err := checkReadable(a.File); err != nil {
			p.add("auth.file", "", "%s %v", quote(a.File), err)
		}
	}
	if a.User != "" {
		switch {
		case strings.TrimSpace(a.Query) == "":
			p.add("auth.query", "", "must not be empty when auth.user is set")
		case !strings.Contains(a.Query, "$1"):
			p.add("auth.query", "", "must take the user name as $1")
		}
	} else if a.Password != "" {
		p.add("auth.password", "", "is set but auth.user is not (it is auth.user's password, for auth.query)")
	}
	if a.CacheTTL < 0 {
		p.add("auth.cache_ttl", "", "must be >= 0 (0 = no cache), got %s", a.CacheTTL)
	}
}

// validatePool checks the pool keys. Pooling needs auth.mode proxy: in
// passthrough mode a pool key that was given (set) is refused by name.
func (c *Config) validatePool(p *problems, set origins) {
	if c.Auth.Mode == AuthPassthrough {
		for _, k := range c.givenKeys("pool.", set) {
			p.add(k.key, k.source, "needs auth.mode: proxy: in passthrough mode each client has its own server connection")
		}
	}
	o := c.Pool
	switch o.Mode {
	case PoolSession, PoolTransaction:
	default:
		p.add("pool.mode", "", "must be \"session\" or \"transaction\", got %s", quote(o.Mode))
	}
	if o.Size < 1 {
		p.add("pool.size", "", "must be >= 1, got %d", o.Size)
	}
	switch {
	case o.MinSize < 0:
		p.add("pool.min_size", "", "must be >= 0, got %d", o.MinSize)
	case o.Size >= 1 && o.MinSize > o.Size:
		p.add("pool.min_size", "", "must be <= pool.size (%d), got %d", o.Size, o.MinSize)
	}
	if o.MaxClientWait <= 0 {
		p.add("pool.max_client_wait", "", "must be > 0, got %s", o.MaxClientWait)
	}
	if o.ServerIdleTimeout < 0 {
		p.add("pool.server_idle_timeout", "", "must be >= 0 (0 = never), got %s", o.ServerIdleTimeout)
	}
	if o.ServerLifetime < 0 {
		p.add("pool.server_lifetime", "", "must be >= 0 (0 = never), got %s", o.ServerLifetime)
	}
	if o.MaxPreparedStatements < 0 {
		p.add("pool.max_prepared_statements", "", "must be >= 0 (0 = none kept), got %d", o.MaxPreparedStatements)
	}
}

// keySource is a key that was given a value, and where.
type keySource struct{ key, source string }

// givenKeys returns the keys under prefix ("pool.") that were given a
// value, in schema order. With set nil (a Config built in code) a key
// counts as given when its value differs from Default's.
func (c *Config) givenKeys(prefix string, set origins) []keySource {
	var out []keySource
	var now, def map[string]any
	if set == nil {
		now, def = flatten(c), flatDefaults()
	}
	for _, s := range settings() {
		if !strings.HasPrefix(s.key, prefix) {
			continue
		}
		if set != nil {
			if src, ok := set[s.key]; ok {
				out = append(out, keySource{s.key, src})
			}
		} else if !reflect.DeepEqual(now[s.key], def[s.key]) {
			out = append(out, keySource{key: s.key})
		}
	}
	return out
}

// checkReadable checks that path is a regular file this process can open
// for reading, without reading it.
func checkReadable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already in the message
		}
		return fmt.Errorf("cannot be read: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cannot be read: %w", err)
	}
	if st.IsDir() {
		return errors.New("is a directory, not a file")
	}
	return nil
}

// checkAddr checks host:port. Listening addresses may have an empty host
// (every interface) and port 0 (any free port); backend addresses may not.
func checkAddr(a string, listening bool) error {
	if a == "" {
		return fmt.Errorf("must be host:port, got an empty string")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("must be host:port, got %s", quote(a))
	}
	if host == "" && !listening {
		return fmt.Errorf("must be host:port with a host, got %s", quote(a))
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("bad host in %s", quote(a))
	}
	n, err := strconv.Atoi(port)
	lo := 1
	if listening {
		lo = 0
	}
	if err != nil || n < lo || n > 65535 {
		return fmt.Errorf("port must be a number from %d to 65535, got %s", lo, quote(port))
	}
	return nil
}

// checkHTTPURL checks an http(s) URL without ever repeating it (it may
// hold a password).
func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("must be an http:// or https:// URL")
	}
	if u.Host == "" {
		return fmt.Errorf("URL has no host")
	}
	return nil
}

// redactURL hides the password inside a URL.
func redactURL(s string) string {
	if s == "" {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		if strings.Contains(s, "@") {
			return RedactedValue
		}
		return s
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			// url escapes '*' in a password; put the marker in afterwards.
			const marker = "REDACTEDPASSWORD"
			u.User = url.UserPassword(u.User.Username(), marker)
			return strings.Replace(u.String(), ":"+marker+"@", ":"+RedactedValue+"@", 1)
		}
	}
	return s
}

// dsnHint explains where the parts of a connection string put under
// backends belong; "" when s does not look like one.
func dsnHint(s string) string {
	if !strings.Contains(s, "://") && !strings.Contains(s, "=") && !strings.Contains(s, "@") {
		return ""
	}
	where := "host:port only"
	if d, err := parseDSN(s); err == nil {
		where = fmt.Sprintf("host:port only (here %s)", quote(d.addr))
	}
	return "a backend is " + where + "; the health checks' user and password go in health.user and " +
		EnvVar("health.password") + " (the application users log in through the proxy with their own), " +
		"or give the whole DSN of the replicas as " + EnvReadReplicaDSN
}

// validateMasking checks masking.rules: match globs as routing.rules,
// columns named schema.table.column with a known method, pii_from_catalog
// only with a lineage.catalog, the key when hash is used, and health.user
// (the catalog lookups log in as it).
func (c *Config) validateMasking(p *problems) {
	isMethod := func(m string) bool { return slices.Contains(MaskingMethods, m) }
	hash := false
	for i, r := range c.Masking.Rules {
		key := fmt.Sprintf("masking.rules[%d]", i)
		m := r.Match
		if m.User == "" && m.Database == "" && m.ApplicationName == "" {
			p.add(key+".match", "", "needs at least one of user, database, application_name")
		}
		for _, g := range []struct{ k, v string }{
			{"user", m.User}, {"database", m.Database}, {"application_name", m.ApplicationName},
		} {
			if _, err := path.Match(g.v, ""); err != nil {
				p.add(key+".match."+g.k, "", "bad glob %s: %v", quote(g.v), err)
			}
		}
		if len(r.Columns) == 0 && r.PIIFromCatalog == "" {
			p.add(key, "", "masks nothing: give columns or pii_from_catalog")
		}
		for _, col := range slices.Sorted(maps.Keys(r.Columns)) {
			parts := strings.Split(col, ".")
			if len(parts) != 3 || slices.Contains(parts, "") {
				p.add(key+".columns", "", "%s: want schema.table.column", quote(col))
			}
			if !isMethod(r.Columns[col]) {
				p.add(key+".columns."+col, "", "must be one of hash, redact, partial, null, got %s", quote(r.Columns[col]))
			}
			hash = hash || r.Columns[col] == "hash"
		}
		if r.PIIFromCatalog != "" {
			if !isMethod(r.PIIFromCatalog) {
				p.add(key+".pii_from_catalog", "", "must be one of hash, redact, partial, null (or empty), got %s", quote(r.PIIFromCatalog))
			}
			if c.Lineage.Catalog == "" {
				p.add(key+".pii_from_catalog", "", "needs lineage.catalog (the file whose columns say pii: true)")
			}
			hash = hash || r.PIIFromCatalog == "hash"
		}
	}
	if hash && c.Masking.Key == "" {
		p.add("masking.key", "", "is required when a masking rule uses hash: set %s", EnvVar("masking.key"))
	}
	if len(c.Masking.Rules) > 0 && c.Health.User == "" {
		p.add("masking.rules", "", "need health.user: the proxy reads each backend's catalog as that role")
	}
}
