package configs

import (
	"reflect"
	"strings"
	"sync"
	"time"
)

// kind is how a key's value is written and parsed.
type kind int

const (
	kindString     kind = iota
	kindBool            // true | false
	kindInt             // base-10 integer
	kindDuration        // Go duration: 500ms, 5s, 1m30s
	kindStrings         // YAML sequence of strings; comma list in env/flags
	kindStruct          // YAML mapping of known keys
	kindList            // YAML sequence of mappings
	kindBackendTLS      // scalar mode or mapping {mode, ca}
	kindStringMap       // YAML mapping of any keys to strings (masking.rules[].columns)
)

// node is one key of the schema, derived from the Config struct tags so
// the schema and the struct cannot disagree.
type node struct {
	name     string // YAML key
	path     string // full dotted key, "routing.max_lag"
	kind     kind
	children []*node // kindStruct, kindBackendTLS: fields; kindList: element fields
}

func (n *node) child(name string) *node {
	for _, c := range n.children {
		if c.name == name {
			return c
		}
	}
	return nil
}

var (
	durationType   = reflect.TypeOf(time.Duration(0))
	backendTLSType = reflect.TypeOf(BackendTLS{})
)

// schemaRoot returns the schema of Config, built once.
var schemaRoot = sync.OnceValue(func() *node {
	return &node{kind: kindStruct, children: buildFields(reflect.TypeOf(Config{}), "")}
})

func buildFields(t reflect.Type, prefix string) []*node {
	var out []*node
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		n := &node{name: name, path: prefix + name}
		switch ft := f.Type; {
		case ft == durationType:
			n.kind = kindDuration
		case ft == backendTLSType:
			n.kind = kindBackendTLS
			n.children = buildFields(ft, n.path+".")
		case ft.Kind() == reflect.String:
			n.kind = kindString
		case ft.Kind() == reflect.Bool:
			n.kind = kindBool
		case ft.Kind() == reflect.Int || ft.Kind() == reflect.Int64:
			n.kind = kindInt
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.String:
			n.kind = kindStrings
		case ft.Kind() == reflect.Map && ft.Key().Kind() == reflect.String && ft.Elem().Kind() == reflect.String:
			n.kind = kindStringMap
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			n.kind = kindList
			n.children = buildFields(ft.Elem(), n.path+"[].")
		case ft.Kind() == reflect.Struct:
			n.kind = kindStruct
			n.children = buildFields(ft, n.path+".")
		default:
			panic("configs: field type not in the schema: " + ft.String()) // programming error, caught by tests
		}
		out = append(out, n)
	}
	return out
}

// setting is a key that environment variables and flags can set.
type setting struct {
	key  string // dotted key, also the flag name
	env  string // PGPROXY_ variable
	kind kind   // kindStrings for admin.users; kindList only for "listen" and "backends"
	// noEnv explains why a known key cannot come from env/flags (lists of
	// mappings); empty when it can.
	noEnv string
}

// EnvPrefix is the prefix of every environment variable naming a key.
const EnvPrefix = "PGPROXY_"

// settings returns every leaf key in schema order, built once.
var settings = sync.OnceValue(func() []setting {
	var out []setting
	var walk func(ns []*node)
	walk = func(ns []*node) {
		for _, n := range ns {
			switch n.kind {
			case kindStruct, kindBackendTLS:
				walk(n.children)
				continue
			}
			s := setting{key: n.path, env: envName(n.path), kind: n.kind}
			if n.kind == kindList && n.path != "backends" && n.path != "listen" {
				s.noEnv = "a list of mappings can only be set in the config file"
			}
			out = append(out, s)
		}
	}
	walk(schemaRoot().children)
	return out
})

// envName maps a dotted key to its environment variable.
func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// envAliases are extra variable names: backend_tls can be written as a
// scalar in YAML, so PGPROXY_BACKEND_TLS sets its mode.
var envAliases = map[string]string{
	EnvPrefix + "BACKEND_TLS": "backend_tls.mode",
}

// Keys returns every dotted key that environment variables and flags can
// set, in the order of the config file.
func Keys() []string {
	var out []string
	for _, s := range settings() {
		if s.noEnv == "" {
			out = append(out, s.key)
		}
	}
	return out
}

// EnvVar returns the environment variable of a dotted key
// ("routing.max_lag" → "PGPROXY_ROUTING_MAX_LAG").
func EnvVar(key string) string { return envName(key) }
