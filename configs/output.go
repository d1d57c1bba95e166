package configs

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// YAML renders c as a config file, every key in the order of the package
// doc, durations as Go durations ("500ms"), except the pool section in
// passthrough mode when it holds only defaults (Load refuses pool keys
// there; a comment says it is left out). Load of the output yields c
// again. It prints secrets as they are: call it on Redacted() for anything
// shown to people (pgproxy check, SHOW CONFIG).
func (c *Config) YAML() ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("config: YAML of a nil Config")
	}
	root := toNode(reflect.ValueOf(*c), false)
	if c.Auth.Mode == AuthPassthrough && c.Pool == Default().Pool {
		// Pool keys are refused in passthrough mode, so that a file cannot
		// look like it pools when it does not; the output leaves them out
		// to load back.
		omitKey(root, "pool", "pool: none in passthrough mode (auth.mode: proxy enables it)")
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("config: encoding YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: encoding YAML: %w", err)
	}
	return buf.Bytes(), nil
}

// omitKey removes key from the mapping n and leaves comment in its place
// (on the key that follows it).
func omitKey(n *yaml.Node, key, comment string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != key {
			continue
		}
		n.Content = append(n.Content[:i], n.Content[i+2:]...)
		if i < len(n.Content) {
			n.Content[i].HeadComment = comment
		}
		return
	}
}

// toNode renders v; inList leaves out empty strings (unset rule and
// listener fields) to keep list items short.
func toNode(v reflect.Value, inList bool) *yaml.Node {
	switch {
	case v.Type() == durationType:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v.Interface().(fmt.Stringer).String()}
	case v.Kind() == reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode}
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			f := v.Field(i)
			if name == "" || name == "-" || (inList && f.Kind() == reflect.String && f.String() == "") {
				continue
			}
			n.Content = append(n.Content,
				&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name},
				toNode(f, inList))
		}
		return n
	case v.Kind() == reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode}
		if v.Len() == 0 || v.Type().Elem().Kind() == reflect.String {
			n.Style = yaml.FlowStyle
		}
		for i := range v.Len() {
			n.Content = append(n.Content, toNode(v.Index(i), true))
		}
		return n
	case v.Kind() == reflect.String:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v.String()}
	case v.Kind() == reflect.Bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v.Bool())}
	case v.CanInt():
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(v.Int(), 10)}
	}
	panic("configs: no YAML form for " + v.Type().String()) // programming error, caught by tests
}
