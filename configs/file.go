package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// MaxFileSize caps the config file Load reads.
const MaxFileSize = 1 << 20

// readConfigFile reads at most MaxFileSize bytes of path.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: reading %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("config: %s is larger than %d bytes", path, MaxFileSize)
	}
	return data, nil
}

// fileLayer turns YAML bytes into the nested map viper's config layer
// holds, checking every key against the schema and every value against its
// key's kind. Problems go to p, with name:line as their source. The
// returned error is for a document that cannot be walked at all (YAML
// syntax); the map is nil then. Every key given a value is recorded in
// set (may be nil) with its name:line.
//
// Values in the map are already typed (time.Duration, int64, bool, string,
// []any, map[string]any), so decoding cannot reinterpret them: a password
// written 0123 stays the string "0123". Absent and null keys are left out,
// so defaults apply to them.
func fileLayer(data []byte, name string, p *problems, set origins) (map[string]any, error) {
	root, err := parseYAML(data)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", name, err)
	}
	w := walker{name: name, p: p, set: set}
	if root == nil {
		return map[string]any{}, nil
	}
	m := w.mapping(schemaRoot(), root, "")
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// parseYAML parses exactly one YAML document; nil for an empty one.
func parseYAML(data []byte) (root *yaml.Node, err error) {
	// yaml.v3 has had panics on malformed input; this is outside input, so
	// a parser panic becomes an error instead of taking the process down.
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("yaml parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, errors.New("more than one YAML document")
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

type walker struct {
	name string
	p    *problems
	set  origins // keys given a value, with their source; nil = not recorded
}

func (w *walker) src(y *yaml.Node) string {
	return w.name + ":" + strconv.Itoa(y.Line)
}

// resolve follows aliases; nil means null or absent.
func resolve(y *yaml.Node) *yaml.Node {
	for i := 0; y != nil && y.Kind == yaml.AliasNode; i++ {
		if i > 100 {
			return nil
		}
		y = y.Alias
	}
	if y == nil || (y.Kind == yaml.ScalarNode && y.ShortTag() == "!!null") {
		return nil
	}
	return y
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// quote shows a bad value in a message, with any password in it hidden
// (see redactSecrets), shortened.
func quote(s string) string {
	s = redactSecrets(s)
	const max = 60
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strconv.Quote(s)
}

// passwordPair matches password=... in libpq's key=value form, quoted or not.
var passwordPair = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)`)

// RedactSecrets hides what may be a password inside a value shown to
// people (a log line, an error); see redactSecrets.
func RedactSecrets(s string) string { return redactSecrets(s) }

// redactSecrets hides what may be a password inside a value that a message
// or log line repeats: the password of a URL's user info
// (postgres://odoo:pw@db/odoo → postgres://odoo:********@db/odoo), of a
// bare user:pw@host, and password=... of a key=value connection string.
// Everything else is kept, so the reader still recognises the value.
func redactSecrets(s string) string {
	if strings.Contains(s, "assword") || strings.Contains(s, "ASSWORD") { // cheap pre-check for the (?i) regexp
		s = passwordPair.ReplaceAllString(s, "${1}"+RedactedValue)
	}
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		start = i + 3
	}
	userinfo := s[start:at]
	if strings.ContainsAny(userinfo, "/?#") {
		return s // the @ is not in the authority part
	}
	user, _, hasPassword := strings.Cut(userinfo, ":")
	if !hasPassword {
		return s
	}
	return s[:start] + user + ":" + RedactedValue + s[at:]
}

// mapping walks a YAML mapping against a struct schema node.
func (w *walker) mapping(n *node, y *yaml.Node, path string) map[string]any {
	y = resolve(y)
	if y == nil {
		return nil
	}
	if y.Kind != yaml.MappingNode {
		key := path
		if key == "" {
			key = "(top level)"
		}
		w.p.add(key, w.src(y), "must be a mapping of keys")
		return nil
	}
	out := make(map[string]any, len(y.Content)/2)
	seen := make(map[string]bool, len(y.Content)/2)
	for i := 0; i+1 < len(y.Content) && !w.p.full(); i += 2 {
		k, v := resolve(y.Content[i]), y.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			w.p.add(joinKey(path, "?"), w.src(y.Content[i]), "keys must be plain strings")
			continue
		}
		full := joinKey(path, k.Value)
		c := n.child(k.Value)
		if c == nil {
			w.p.unknown(full, w.src(k))
			continue
		}
		if seen[k.Value] {
			w.p.add(full, w.src(k), "key given twice")
			continue
		}
		seen[k.Value] = true
		if val, ok := w.value(c, v, full); ok {
			out[k.Value] = val
			if w.set != nil {
				w.set[full] = w.src(k)
			}
		}
	}
	return out
}

// value walks one value; ok is false when it is null (absent) or bad.
func (w *walker) value(n *node, y *yaml.Node, path string) (any, bool) {
	y = resolve(y)
	if y == nil {
		return nil, false
	}
	scalar := y.Kind == yaml.ScalarNode
	switch n.kind {
	case kindString:
		if !scalar {
			w.p.add(path, w.src(y), "must be a string")
			return nil, false
		}
		return y.Value, true
	case kindBool:
		var b bool
		if !scalar || y.ShortTag() != "!!bool" || y.Decode(&b) != nil {
			w.p.add(path, w.src(y), "must be true or false, got %s", shown(y))
			return nil, false
		}
		return b, true
	case kindInt:
		var i int64
		if !scalar || y.ShortTag() != "!!int" {
			w.p.add(path, w.src(y), "must be an integer, got %s", shown(y))
			return nil, false
		}
		if err := y.Decode(&i); err != nil {
			w.p.add(path, w.src(y), "integer out of range: %s", shown(y))
			return nil, false
		}
		return i, true
	case kindDuration:
		if scalar && y.ShortTag() == "!!int" && y.Value == "0" {
			return time.Duration(0), true
		}
		if scalar && y.ShortTag() == "!!str" {
			if d, err := time.ParseDuration(y.Value); err == nil {
				return d, true
			}
		}
		w.p.add(path, w.src(y), "must be a duration with a unit like \"500ms\" or \"5s\", got %s", shown(y))
		return nil, false
	case kindStrings:
		if y.Kind != yaml.SequenceNode {
			w.p.add(path, w.src(y), "must be a list of strings")
			return nil, false
		}
		out := make([]any, 0, len(y.Content))
		for i, e := range y.Content {
			e = resolve(e)
			if e == nil || e.Kind != yaml.ScalarNode {
				w.p.add(fmt.Sprintf("%s[%d]", path, i), w.src(y), "must be a string")
				continue
			}
			out = append(out, e.Value)
		}
		return out, true
	case kindList:
		if y.Kind != yaml.SequenceNode {
			w.p.add(path, w.src(y), "must be a list")
			return nil, false
		}
		elem := &node{kind: kindStruct, children: n.children}
		out := make([]any, 0, len(y.Content))
		for i, e := range y.Content {
			if w.p.full() {
				break
			}
			ip := fmt.Sprintf("%s[%d]", path, i)
			m := w.mapping(elem, e, ip)
			if m == nil {
				if resolve(e) == nil {
					w.p.add(ip, w.src(y), "must be a mapping, got null")
				}
				m = map[string]any{} // keep the indices of later entries
			}
			out = append(out, m)
		}
		return out, true
	case kindStringMap:
		if y.Kind != yaml.MappingNode {
			w.p.add(path, w.src(y), "must be a mapping")
			return nil, false
		}
		out := map[string]any{}
		for i := 0; i+1 < len(y.Content); i += 2 {
			k, v := y.Content[i], resolve(y.Content[i+1])
			if _, dup := out[k.Value]; dup {
				w.p.add(path+"."+k.Value, w.src(k), "key given twice")
				continue
			}
			if v == nil || v.Kind != yaml.ScalarNode {
				w.p.add(path+"."+k.Value, w.src(k), "must be a string")
				continue
			}
			out[k.Value] = v.Value
		}
		return out, true
	case kindStruct:
		m := w.mapping(n, y, path)
		return m, m != nil
	case kindBackendTLS:
		if scalar {
			return map[string]any{"mode": y.Value}, true
		}
		m := w.mapping(n, y, path)
		return m, m != nil
	}
	return nil, false
}

// shown describes a bad non-string value for a message.
func shown(y *yaml.Node) string {
	switch y.Kind {
	case yaml.ScalarNode:
		return quote(y.Value)
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return "?"
}
