package main

import (
	"strings"
	"testing"
	"time"
)

func TestRoutingFlags(t *testing.T) {
	o, err := parseFlags(nil, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range o.routing.cases() {
		names = append(names, c.Name())
	}
	if got := strings.Join(names, ","); got != "-M simple -c 16,-M prepared -c 16" || !o.routing.mixed || o.routing.reads != 4 {
		t.Fatalf("defaults: cases %s, %+v", got, o.routing)
	}
	// 2 rounds × (2 cases × 5 targets + the mixed script on 2), 12 s each, and the starts.
	if got, want := o.routing.estimate(o), time.Duration(2*(2*5+2))*12*time.Second+80*time.Second; got != want {
		t.Errorf("estimate %s, want %s", got, want)
	}
	o, err = parseFlags([]string{"-quick"}, &strings.Builder{})
	if err != nil || len(o.routing.cases()) != 1 || o.routing.cases()[0].Mode != "simple" {
		t.Fatalf("-quick: %v %v", o.routing.cases(), err)
	}
	o, err = parseFlags([]string{"-routing=false"}, &strings.Builder{})
	if err != nil || len(o.routing.cases()) != 0 || o.routing.estimate(o) != 0 {
		t.Fatalf("-routing=false: %v %v", o.routing.cases(), err)
	}
	if _, err := parseFlags([]string{"-routing-modes", "fast"}, &strings.Builder{}); err == nil {
		t.Error("-routing-modes fast accepted")
	}
}

func TestParseRouted(t *testing.T) {
	text := `# HELP pgproxy_transactions_routed_total ...
pgproxy_transactions_routed_total{target="primary"} 10
pgproxy_transactions_routed_total{target="replica"} 36
pgproxy_transactions_routed_total{target="primary_fallback"} 4
pgproxy_consistency_fallbacks_total 4
pgproxy_consistency_waits_seconds_bucket{le="0.0001"} 1
pgproxy_consistency_waits_seconds_count 7
`
	r := parseRouted(text).Sub(parseRouted(`pgproxy_transactions_routed_total{target="replica"} 6`))
	if r.Targets["replica"] != 30 || r.Targets["primary"] != 10 || r.Reads() != 34 || r.Fallbacks != 4 || r.Waits != 7 {
		t.Fatalf("%+v, reads %v", r, r.Reads())
	}
}

// TestRoutingChecks: the issue 18 goals on medians (session ≥ 0.95×
// eventual, global ≥ eventual / 1.5), not met below them.
func TestRoutingChecks(t *testing.T) {
	c := Case{Mode: "simple", Clients: 16}
	tab := newTable([]Case{c}, routingTargets)
	for name, tps := range map[string]float64{Direct: 20000, RouteSessions: 12000, RouteEventual: 10000, RouteSession: 9400, RouteGlobal: 7000} {
		tab.add(c, name, Sample{Result: Result{TPS: tps, LatencyMS: 1, Processed: 1000}})
	}
	p := &RoutingReport{Table: tab}
	cs := p.Checks()
	if len(cs) != 2 || cs[0].OK == nil || *cs[0].OK || cs[0].Result != "simple 0.94×" || cs[1].OK == nil || !*cs[1].OK || cs[1].Result != "simple 0.70×" {
		t.Fatalf("%+v %+v", cs[0], cs[1])
	}
	md := p.Markdown()
	for _, want := range []string{"| `-M simple -c 16` | 20000 | 12000 | 10000 | 9400 | 7000 | 0.94× | 0.70× | 0.83× | 0.50× |", "**not met**", "| met |"} {
		if !strings.Contains(md, want) {
			t.Errorf("no %q in\n%s", want, md)
		}
	}
}
