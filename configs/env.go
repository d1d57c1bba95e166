package configs

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Seed variables of the OFITEC .env (docs/configuration.md).
const (
	EnvReadReplicaDSN = "READ_REPLICA_DSN"
	EnvReplicaMaxLagS = "REPLICA_MAX_LAG_S"
	EnvMarquezURL     = "MARQUEZ_URL"
)

// environ turns os.Environ() form into a map; the last duplicate wins like
// in getenv, and entries without "=" are ignored.
func environ(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// envLayer builds the nested map of the environment variables that name
// keys (PGPROXY_*), under which the seed variables REPLICA_MAX_LAG_S and
// MARQUEZ_URL fill what PGPROXY_* leaves unset. An empty value counts as
// unset (as with viper's default). A PGPROXY_ variable inside a known
// section that names no key (PGPROXY_ROUTING_MAX_LAGG) is a problem;
// other PGPROXY_ variables (PGPROXY_CONFIG, PGPROXY_PG_BIN) belong to
// other tools and are ignored. Every key set is recorded in set with the
// variable's name.
func envLayer(env map[string]string, p *problems, set origins) map[string]any {
	byName := make(map[string]setting)
	for _, s := range settings() {
		byName[s.env] = s
	}
	for alias, key := range envAliases {
		for _, s := range settings() {
			if s.key == key {
				byName[alias] = s
			}
		}
	}
	var sections []string
	for _, n := range schemaRoot().children {
		sections = append(sections, strings.ToUpper(n.name))
	}

	names := make([]string, 0, len(env))
	for k := range env {
		if strings.HasPrefix(k, EnvPrefix) && env[k] != "" {
			names = append(names, k)
		}
	}
	slices.Sort(names) // deterministic problems; the alias sorts before _MODE so _MODE wins

	out := map[string]any{}
	for _, name := range names {
		s, ok := byName[name]
		if !ok {
			rest := strings.TrimPrefix(name, EnvPrefix)
			for _, sec := range sections {
				if rest == sec || strings.HasPrefix(rest, sec+"_") {
					p.add(name, "environment", "names no config key (a typo?)")
					break
				}
			}
			continue
		}
		src := "env " + name
		if s.noEnv != "" {
			p.add(s.key, src, "%s", s.noEnv)
			continue
		}
		v, err := parseSetting(s, env[name])
		if err != nil {
			p.add(s.key, src, "%v", err)
			continue
		}
		setPath(out, s.key, v)
		set[s.key] = src
	}

	// Seeds: PGPROXY_* wins.
	if raw := env[EnvReplicaMaxLagS]; raw != "" && !hasPath(out, "routing.max_lag") {
		n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 32)
		if err != nil || n <= 0 {
			p.add(EnvReplicaMaxLagS, "environment", "must be a whole number of seconds > 0, got %s", quote(raw))
		} else {
			setPath(out, "routing.max_lag", time.Duration(n)*time.Second)
			set["routing.max_lag"] = "env " + EnvReplicaMaxLagS
		}
	}
	if raw := env[EnvMarquezURL]; raw != "" {
		if !hasPath(out, "lineage.transport.type") {
			setPath(out, "lineage.transport.type", TransportHTTP)
			set["lineage.transport.type"] = "env " + EnvMarquezURL
		}
		if !hasPath(out, "lineage.transport.url") {
			setPath(out, "lineage.transport.url", raw)
			set["lineage.transport.url"] = "env " + EnvMarquezURL
		}
	}
	return out
}

// parseSetting parses an environment or flag value of a key's kind. Only
// non-string kinds fail, so a secret is never shown in an error.
func parseSetting(s setting, raw string) (any, error) {
	switch s.kind {
	case kindBool:
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("must be true or false, got %s", quote(raw))
		}
		return b, nil
	case kindInt:
		i, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("must be an integer, got %s", quote(raw))
		}
		return i, nil
	case kindDuration:
		d, err := time.ParseDuration(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("must be a duration with a unit like \"500ms\" or \"5s\", got %s", quote(raw))
		}
		return d, nil
	case kindStrings:
		return splitList(raw), nil
	case kindList:
		if s.key == "listen" {
			return parseListeners(raw)
		}
		// backends: a comma list of addresses
		var out []any
		for _, a := range splitList(raw) {
			out = append(out, map[string]any{"addr": a})
		}
		return out, nil
	}
	return raw, nil
}

// parseListeners parses the flag/env form of listen: a comma list of
// host:port, each optionally followed by /read or /write (the listener's
// route; none = the rules decide): "0.0.0.0:6432,0.0.0.0:6433/read".
func parseListeners(raw string) (any, error) {
	var out []any
	for _, e := range splitList(raw) {
		addr, route, hasRoute := strings.Cut(e.(string), "/")
		l := map[string]any{"addr": addr}
		if hasRoute {
			if route != RouteRead && route != RouteWrite {
				return nil, fmt.Errorf("%s: the route after / must be read or write (none = the rules decide)", quote(e.(string)))
			}
			l["route"] = route
		}
		out = append(out, l)
	}
	return out, nil
}

// splitList splits a comma list, trimming spaces and dropping empty items.
func splitList(raw string) []any {
	out := []any{}
	for _, s := range strings.Split(raw, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func setPath(m map[string]any, key string, v any) {
	parts := strings.Split(key, ".")
	for _, k := range parts[:len(parts)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

func hasPath(m map[string]any, key string) bool {
	parts := strings.Split(key, ".")
	for _, k := range parts[:len(parts)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			return false
		}
		m = next
	}
	_, ok := m[parts[len(parts)-1]]
	return ok
}
