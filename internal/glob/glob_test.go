package glob

import "testing"

func TestGlobMatch(t *testing.T) {
	for _, tt := range []struct {
		pat, s string
		want   bool
	}{
		{"*", "", true}, {"*", "a/b c", true}, {"", "", true}, {"", "a", false},
		{"*_ro", "sales_ro", true}, {"*_ro", "sales_rw", false}, {"*_ro", "_ro", true},
		{"Metabase*", "Metabase v0.50", true}, {"Metabase*", "metabase", false},
		{"a?c", "abc", true}, {"a?c", "ac", false}, {"a*b*c", "axxbyyc", true}, {"a*b*c", "axxbyy", false},
		{`a\*`, "a*", true}, {`a\*`, "ab", false}, {`\?`, "?", true}, {"**a", "bba", true},
		{"odoo-*", "odoo-1234", true}, {"*x*", "abc", false},
	} {
		if got := Match(tt.pat, tt.s); got != tt.want {
			t.Errorf("Match(%q, %q) = %v", tt.pat, tt.s, got)
		}
	}
}
