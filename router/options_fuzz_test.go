package router

import (
	"slices"
	"strings"
	"testing"
)

// FuzzClassifyOptions checks, for any options string, that Classify does not
// panic and that rewriting options removes exactly the pgproxy.* settings:
// the words that remain are the original words minus those settings, with
// the same values, and an options string without pgproxy settings is
// forwarded byte for byte.
func FuzzClassifyOptions(f *testing.F) {
	for _, seed := range []string{
		"", " ", "-c geqo=off", "-c pgproxy.max_lag=2s", "--pgproxy.job=x -c a=b",
		`-c search_path=a\ b -c pgproxy.max_lag=1s`, "-cpgproxy.max_lag=1 -c default_transaction_read_only=on",
		"-d -c pgproxy.max_lag=1s", "-- -c pgproxy.max_lag=1s", `\`, `-c x=\\`, "-c", "-ec x=1",
		"\t-c\tpgproxy.job=a\n-c\vb=c\f", "-c pgproxy.job=\xff\x00",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, opts string) {
		s, err := Classify(&Config{}, "", map[string]string{"user": "u", "options": opts})
		origWords := splitOptions(opts)
		origSets := parseOptionSettings(origWords)
		hasPgproxy := slices.ContainsFunc(origSets, func(s optSetting) bool { return strings.HasPrefix(s.name, pgproxyPrefix) })
		if err != nil {
			if !hasPgproxy {
				t.Fatalf("error without any pgproxy setting in %q: %v", opts, err)
			}
			return
		}
		out, kept := s.Params["options"]
		if !hasPgproxy {
			if !kept || out != opts {
				t.Fatalf("options without pgproxy settings changed: %q → %q (kept %v)", opts, out, kept)
			}
			return
		}
		drop := map[int]bool{}
		for _, set := range origSets {
			if strings.HasPrefix(set.name, pgproxyPrefix) {
				drop[set.words[0]] = true
				if set.words[1] >= 0 {
					drop[set.words[1]] = true
				}
			}
		}
		var want []string
		for i, w := range origWords {
			if !drop[i] {
				want = append(want, w.val)
			}
		}
		var got []string
		for _, w := range splitOptions(out) {
			got = append(got, w.val)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("options %q → %q: words %q, want %q", opts, out, got, want)
		}
		if !kept && len(want) != 0 {
			t.Fatalf("options %q dropped entirely, want words %q", opts, want)
		}
		if strings.Contains(strings.ToLower(out), "pgproxy.") {
			for _, set := range parseOptionSettings(splitOptions(out)) {
				if strings.HasPrefix(set.name, pgproxyPrefix) {
					t.Fatalf("options %q → %q still sets %s", opts, out, set.name)
				}
			}
		}
	})
}
