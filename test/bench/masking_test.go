package main

import (
	"strings"
	"testing"
)

func TestMaskingFlags(t *testing.T) {
	o, err := parseFlags(nil, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range o.maskingCases("m.sql") {
		names = append(names, c.Name())
		if args := strings.Join(c.Args(5432, maskUser, "postgres", o.duration), " "); !strings.HasPrefix(args, "-n -f m.sql -M "+c.Mode) || strings.Contains(args, "-S") {
			t.Errorf("%s: args %s", c.Name(), args)
		}
	}
	if got := strings.Join(names, ","); got != "-M simple -c 16,-M prepared -c 16" {
		t.Errorf("masking cases: %s", got)
	}
	if o.maskingRuns() != 2*2*3 {
		t.Errorf("masking runs: %d", o.maskingRuns())
	}
	o, err = parseFlags([]string{"-masking=false"}, &strings.Builder{})
	if err != nil || len(o.maskingCases("m.sql")) != 0 || o.maskingRuns() != 0 {
		t.Fatalf("-masking=false: %v %v", o.maskingCases("m.sql"), err)
	}
	if _, err := parseFlags([]string{"-masking-modes", "bogus"}, &strings.Builder{}); err == nil {
		t.Error("-masking-modes bogus: no error")
	}
}

// The goal is met at 0.90× the unmasked TPS and not below, per client count.
func TestMaskingChecks(t *testing.T) {
	cs := []Case{{Mode: "simple", Clients: 16, Script: "m"}, {Mode: "prepared", Clients: 16, Script: "m"}}
	for _, tc := range []struct {
		masked [2]float64
		mark   string
	}{
		{[2]float64{950, 900}, "met"},
		{[2]float64{950, 899}, "**not met**"},
	} {
		tb := newTable(cs, []string{Direct, Pgproxy, PgproxyMasked})
		for i, c := range cs {
			tb.add(c, Pgproxy, Sample{Result: Result{TPS: 1000, Processed: 1000}})
			tb.add(c, PgproxyMasked, Sample{Result: Result{TPS: tc.masked[i], Processed: 1000}})
		}
		r := &MaskingReport{Table: tb}
		ch := r.Checks()
		if len(ch) != 1 || ch[0].mark() != tc.mark {
			t.Errorf("%v: %+v", tc.masked, ch)
		}
		if md := r.Markdown(); !strings.Contains(md, "| `-M prepared -c 16` |") || !strings.Contains(md, tc.mark) {
			t.Errorf("markdown:\n%s", md)
		}
	}
}
