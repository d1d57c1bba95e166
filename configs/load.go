package configs

import (
	"fmt"
	"net"
	"reflect"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// LoadOptions says where Load takes the configuration from.
type LoadOptions struct {
	// Path of the YAML config file; empty = none (defaults, env and flags
	// only).
	Path string
	// Flags may be nil. A flag whose name is a key ("routing.max_lag",
	// see RegisterFlags and Keys) overrides that key when it was set on the
	// command line.
	Flags *pflag.FlagSet
	// Environ is the environment in os.Environ() form; nil means none
	// (Load never reads the process environment itself).
	Environ []string
}

// Load builds the configuration: defaults, then the file, then the
// environment (PGPROXY_* and the seed variables), then flags, each layer
// overriding the ones before (flag > env > file > default). Then it
// validates the result.
//
// On any problem it returns a nil Config and an error joining one
// *FieldError per problem (all of them, not only the first; see Problems),
// each naming the key. Load is safe for concurrent use: it uses its own
// viper instance and no global state.
func Load(opts LoadOptions) (*Config, error) {
	var data []byte
	if opts.Path != "" {
		var err error
		if data, err = readConfigFile(opts.Path); err != nil {
			return nil, err
		}
	}
	return load(data, opts)
}

// load is Load with the file already read (data is ignored when
// opts.Path is empty).
func load(data []byte, opts LoadOptions) (*Config, error) {
	p := &problems{}
	set := origins{}
	v := viper.New()
	for key, val := range flatDefaults() {
		v.SetDefault(key, val)
	}

	if opts.Path != "" {
		m, err := fileLayer(data, opts.Path, p, set)
		if err != nil {
			return nil, err
		}
		if err := v.MergeConfigMap(m); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}

	env := environ(opts.Environ)
	if err := v.MergeConfigMap(envLayer(env, p, set)); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var seeds []seedDSN
	if raw := env[EnvReadReplicaDSN]; raw != "" {
		seeds = parseReplicaDSNs(raw, p)
	}

	if opts.Flags != nil {
		// Flags of RegisterFlags are parsed like environment variables and
		// merged last, so they win over env and file; a flag the caller
		// defined with its own type is bound to viper instead.
		flags := map[string]any{}
		for _, s := range settings() {
			f := opts.Flags.Lookup(s.key)
			if f == nil || s.noEnv != "" {
				continue
			}
			if kv, ok := f.Value.(*keyValue); ok {
				if !f.Changed {
					continue
				}
				val, err := parseSetting(s, kv.text)
				if err != nil {
					p.add(s.key, "flag --"+s.key, "%v", err)
					continue
				}
				setPath(flags, s.key, val)
				set[s.key] = "flag --" + s.key
				continue
			}
			if err := v.BindPFlag(s.key, f); err != nil {
				return nil, fmt.Errorf("config: binding flag --%s: %w", s.key, err)
			}
			if f.Changed {
				set[s.key] = "flag --" + s.key
			}
		}
		if err := v.MergeConfigMap(flags); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}

	var cfg Config
	err := v.Unmarshal(&cfg, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		backendsHook, stringsHook, mapstructure.StringToTimeDurationHookFunc(),
	)), func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.ZeroFields = true
	})
	if err != nil {
		if len(p.list) > 0 {
			return nil, p.err() // a bad flag value; already reported by key
		}
		return nil, fmt.Errorf("config: decoding: %w", err)
	}

	cfg.normalize()
	applySeeds(&cfg, seeds)
	cfg.validate(p, set)
	if err := p.err(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// applySeeds appends the READ_REPLICA_DSN replicas to the backends (once)
// and uses the first DSN credentials for the health checks unless
// health.user (resp. health.password) is set.
func applySeeds(cfg *Config, seeds []seedDSN) {
	have := make(map[string]bool, len(cfg.Backends))
	for _, b := range cfg.Backends {
		have[normAddr(b.Addr)] = true
	}
	for _, s := range seeds {
		if k := normAddr(s.addr); !have[k] {
			have[k] = true
			cfg.Backends = append(cfg.Backends, Backend{Addr: s.addr})
		}
	}
	if cfg.Health.User != "" {
		return
	}
	for _, s := range seeds {
		if s.user != "" {
			cfg.Health.User = s.user
			if cfg.Health.Password == "" {
				cfg.Health.Password = s.password
			}
			return
		}
	}
}

// normAddr makes equal addresses compare equal (host case).
func normAddr(a string) string {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return a
	}
	return net.JoinHostPort(strings.ToLower(host), port)
}

// origins records where each key that a layer set came from
// ("pgproxy.yaml:12", "env PGPROXY_POOL_SIZE", "flag --pool.size"), the
// last layer winning. A key absent from it was left to its default, which
// is how validate tells a pool key given in passthrough mode (an error)
// from one that merely has its default.
type origins map[string]string

// flatDefaults returns Default() as dotted key → value, lists whole.
func flatDefaults() map[string]any { return flatten(Default()) }

// flatten returns c as dotted key → value, lists whole.
func flatten(c *Config) map[string]any {
	out := map[string]any{}
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			key := prefix + name
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct {
				walk(key+".", fv)
				continue
			}
			out[key] = plain(fv)
		}
	}
	walk("", reflect.ValueOf(*c))
	return out
}

// plain turns a struct field value into the untyped form of the viper
// layers: scalars as they are, slices as []any, structs as maps.
func plain(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Slice:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = plain(v.Index(i))
		}
		return out
	case reflect.Struct:
		m := map[string]any{}
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			m[name] = plain(v.Field(i))
		}
		return m
	}
	return v.Interface()
}

var (
	backendsType = reflect.TypeOf([]Backend(nil))
	stringsType  = reflect.TypeOf([]string(nil))
)

// backendsHook decodes a comma list or []string (a flag) into backends.
func backendsHook(from, to reflect.Type, data any) (any, error) {
	if to != backendsType {
		return data, nil
	}
	var addrs []any
	switch d := data.(type) {
	case string:
		addrs = splitList(d)
	case []string:
		for _, s := range d {
			addrs = append(addrs, splitList(s)...)
		}
	default:
		return data, nil
	}
	out := make([]Backend, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, Backend{Addr: a.(string)})
	}
	return out, nil
}

// stringsHook decodes a comma list (a string flag) into []string.
func stringsHook(from, to reflect.Type, data any) (any, error) {
	s, ok := data.(string)
	if !ok || to != stringsType {
		return data, nil
	}
	out := []string{}
	for _, a := range splitList(s) {
		out = append(out, a.(string))
	}
	return out, nil
}

// normalize makes empty lists nil, so that "rules: []", an absent key and
// Default compare equal.
func (c *Config) normalize() {
	if len(c.Listen) == 0 {
		c.Listen = nil
	}
	if len(c.Backends) == 0 {
		c.Backends = nil
	}
	if len(c.Routing.Rules) == 0 {
		c.Routing.Rules = nil
	}
	if len(c.Routing.ReadFunctions) == 0 {
		c.Routing.ReadFunctions = nil
	}
	if len(c.Admin.Users) == 0 {
		c.Admin.Users = nil
	}
	if len(c.Masking.Rules) == 0 {
		c.Masking.Rules = nil
	}
	if len(c.Masking.AllowFunctions) == 0 {
		c.Masking.AllowFunctions = nil
	}
}
