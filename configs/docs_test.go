package configs

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// docs/configuration.md is the operator's reference: every key the loader
// accepts is there with its flag and environment variable, and every key
// it lists as planned is one the loader still refuses (so the page cannot
// claim more, or less, than exists).
func TestConfigurationReference(t *testing.T) {
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	current, planned, ok := strings.Cut(doc, "## Planned, not yet implemented")
	if !ok {
		t.Fatal(`docs/configuration.md has no "## Planned, not yet implemented" section`)
	}

	var walk func(ns []*node)
	walk = func(ns []*node) {
		for _, n := range ns {
			if (n.kind != kindStruct && n.kind != kindBackendTLS) || strings.Contains(n.path, "[]") {
				if !strings.Contains(current, "`"+n.path+"`") {
					t.Errorf("key %s is missing from docs/configuration.md", n.path)
				}
			}
			walk(n.children)
		}
	}
	walk(schemaRoot().children)
	for _, s := range settings() {
		if s.noEnv != "" {
			continue
		}
		for _, w := range []string{"`--" + s.key + "`", "`" + s.env + "`"} {
			if !strings.Contains(current, w) {
				t.Errorf("%s of key %s is missing from docs/configuration.md", w, s.key)
			}
		}
	}
	for _, v := range []string{EnvReadReplicaDSN, EnvReplicaMaxLagS, EnvMarquezURL} {
		if !strings.Contains(current, "`"+v+"`") {
			t.Errorf("seed variable %s is missing from docs/configuration.md", v)
		}
	}
	for _, code := range []string{"57P03", "53300", "25006", "57P01", "08P01", "28000", "28P01"} {
		if !strings.Contains(current, "`"+code+"`") {
			t.Errorf("SQLSTATE %s is missing from docs/configuration.md", code)
		}
	}

	keys := regexp.MustCompile("(?m)^\\| `([a-z_.]+)` \\|").FindAllStringSubmatch(planned, -1)
	for _, m := range keys {
		key := m[1]
		parts := strings.Split(key, ".")
		var y strings.Builder
		for i, p := range parts {
			y.WriteString(strings.Repeat("  ", i) + p + ":")
			if i < len(parts)-1 {
				y.WriteString("\n")
			}
		}
		y.WriteString(" x\n")
		_, err := Load(LoadOptions{Path: writeConfig(t, minimal+y.String())})
		refused := false
		for _, p := range Problems(err) {
			if p.unknown && (p.Key == key || strings.HasPrefix(key, p.Key+".")) {
				refused = true
			}
		}
		if !refused {
			t.Errorf("planned key %s is accepted by the loader (err %v): move it to the keys that exist", key, err)
		}
	}
}
