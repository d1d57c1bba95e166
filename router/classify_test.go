package router

import (
	"errors"
	"maps"
	"testing"
	"time"
)

var testRules = []Rule{
	{User: "metabase", Route: RouteRead},
	{Database: "*_ro", Route: RouteRead, StripSuffix: "_ro"},
	{ApplicationName: "Metabase*", Route: RouteRead},
	{User: "etl", Database: "sales", Route: RouteWrite},
	{User: "od?o", Database: "*_w", Route: RouteWrite, StripSuffix: "_w"},
}

func TestClassify(t *testing.T) {
	cfg := &Config{Rules: testRules}
	tests := []struct {
		name       string
		listener   string
		params     map[string]string
		wantRoute  Route
		wantReason string
		wantParams map[string]string // nil: the input unchanged
		wantMaxLag time.Duration
		wantJob    string
	}{
		{name: "nothing: write", params: p("user", "odoo", "database", "odoo"), wantRoute: RouteWrite, wantReason: "default"},
		{name: "read listener", listener: "read", params: p("user", "odoo", "database", "odoo"), wantRoute: RouteRead, wantReason: "listener"},
		{name: "write listener beats a read rule", listener: "write", params: p("user", "metabase"), wantRoute: RouteWrite, wantReason: "listener"},
		{name: "rule on user", params: p("user", "metabase", "database", "analytics"), wantRoute: RouteRead, wantReason: "rule:0"},
		{name: "rule on database strips the suffix", params: p("user", "odoo", "database", "sales_ro"),
			wantRoute: RouteRead, wantReason: "rule:1", wantParams: p("user", "odoo", "database", "sales")},
		{name: "database defaults to the user name for rules and stripping", params: p("user", "report_ro"),
			wantRoute: RouteRead, wantReason: "rule:1", wantParams: p("user", "report_ro", "database", "report")},
		{name: "the bare suffix is not stripped to nothing", params: p("user", "x", "database", "_ro"),
			wantRoute: RouteRead, wantReason: "rule:1"},
		{name: "listener route, rule still strips", listener: "read", params: p("user", "odoo", "database", "sales_ro"),
			wantRoute: RouteRead, wantReason: "listener", wantParams: p("user", "odoo", "database", "sales")},
		{name: "rule on application_name glob", params: p("user", "u", "database", "d", "application_name", "Metabase v0.50.1"),
			wantRoute: RouteRead, wantReason: "rule:2"},
		{name: "application_name glob is case-sensitive", params: p("user", "u", "database", "d", "application_name", "metabase"),
			wantRoute: RouteWrite, wantReason: "default"},
		{name: "all fields of a rule must match", params: p("user", "etl", "database", "other"), wantRoute: RouteWrite, wantReason: "default"},
		{name: "write rule beats the read-only startup parameter", params: p("user", "etl", "database", "sales", "default_transaction_read_only", "on"),
			wantRoute: RouteWrite, wantReason: "rule:3"},
		{name: "? glob and strip on a write rule", params: p("user", "odoo", "database", "main_w"),
			wantRoute: RouteWrite, wantReason: "rule:4", wantParams: p("user", "odoo", "database", "main")},
		{name: "first matching rule wins", params: p("user", "metabase", "database", "x_ro"), wantRoute: RouteRead, wantReason: "rule:0"},
		{name: "read-only startup parameter", params: p("user", "u", "default_transaction_read_only", "on"), wantRoute: RouteRead, wantReason: "startup_param"},
		{name: "read-only parameter name is case-insensitive, value a prefix of true",
			params: p("user", "u", "Default_Transaction_Read_Only", "TR"), wantRoute: RouteRead, wantReason: "startup_param"},
		{name: "read-only yes / 1", params: p("user", "u", "default_transaction_read_only", "1"), wantRoute: RouteRead, wantReason: "startup_param"},
		{name: "read-only off", params: p("user", "u", "default_transaction_read_only", "off"), wantRoute: RouteWrite, wantReason: "default"},
		{name: "read-only garbage is not read", params: p("user", "u", "default_transaction_read_only", "o"), wantRoute: RouteWrite, wantReason: "default"},
		{name: "read-only inside options", params: p("user", "u", "options", "-c default_transaction_read_only=on"),
			wantRoute: RouteRead, wantReason: "startup_param"},
		{name: "read-only inside options, long form with dashes", params: p("user", "u", "options", "--default-transaction-read-only=yes"),
			wantRoute: RouteRead, wantReason: "startup_param"},
		{name: "read-only in options, last one wins", params: p("user", "u", "options", "-c default_transaction_read_only=on -c default_transaction_read_only=off"),
			wantRoute: RouteWrite, wantReason: "default"},
		{name: "the parameter beats options (as in PostgreSQL)", params: p("user", "u", "options", "-cdefault_transaction_read_only=on", "default_transaction_read_only", "off"),
			wantRoute: RouteWrite, wantReason: "default"},
		{name: "escaped space is not a separator", params: p("user", "u", "options", `-c search_path=a\ b -c default_transaction_read_only=on`),
			wantRoute: RouteRead, wantReason: "startup_param"},
		{name: "an argument of another switch is not a setting", params: p("user", "u", "options", "-d -c default_transaction_read_only=on"),
			wantRoute: RouteWrite, wantReason: "default"},
		{name: "after -- nothing is a switch", params: p("user", "u", "options", "-- -c default_transaction_read_only=on"),
			wantRoute: RouteWrite, wantReason: "default"},
		{name: "pgproxy.max_lag consumed from options, the rest kept byte-exact", listener: "read",
			params:     p("user", "u", "options", "-c geqo=off  -c pgproxy.max_lag=2s\t-c work_mem=64MB"),
			wantParams: p("user", "u", "options", "-c geqo=off\t-c work_mem=64MB"), wantRoute: RouteRead, wantReason: "listener", wantMaxLag: 2 * time.Second},
		{name: "only pgproxy settings: options removed", listener: "read",
			params:     p("user", "u", "options", " -c pgproxy.max_lag=500ms --pgproxy.job=nightly-etl "),
			wantParams: p("user", "u"), wantRoute: RouteRead, wantReason: "listener", wantMaxLag: 500 * time.Millisecond, wantJob: "nightly-etl"},
		{name: "attached -c form and uppercase name",
			params:     p("user", "u", "options", "-cPGPROXY.MAX_LAG=1.5 -c default_transaction_read_only=on"),
			wantParams: p("user", "u", "options", "-c default_transaction_read_only=on"), wantRoute: RouteRead, wantReason: "startup_param", wantMaxLag: 1500 * time.Millisecond},
		{name: "pgproxy first, kept word keeps no leading separator",
			params:     p("user", "u", "options", `-c pgproxy.job=a\ b -c x=\\y`),
			wantParams: p("user", "u", "options", `-c x=\\y`), wantRoute: RouteWrite, wantReason: "default", wantJob: "a b"},
		{name: "pgproxy settings as startup parameters are consumed", listener: "read",
			params:     p("user", "u", "pgproxy.max_lag", "3 s", "PgProxy.Job", "j"),
			wantParams: p("user", "u"), wantRoute: RouteRead, wantReason: "listener", wantMaxLag: 3 * time.Second, wantJob: "j"},
		{name: "PostgreSQL units", params: p("user", "u", "options", "-c pgproxy.max_lag=1min"),
			wantParams: p("user", "u"), wantRoute: RouteWrite, wantReason: "default", wantMaxLag: time.Minute},
		{name: "replication connections go to the primary untouched", listener: "read",
			params:    p("user", "u", "replication", "database", "options", "-c pgproxy.max_lag=1s"),
			wantRoute: RouteWrite, wantReason: "replication"},
		{name: "replication=false is a normal session", params: p("user", "metabase", "replication", "false"),
			wantRoute: RouteRead, wantReason: "rule:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := maps.Clone(tt.params)
			s, err := Classify(cfg, tt.listener, tt.params)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(in, tt.params) {
				t.Fatalf("Classify modified its input: %v", tt.params)
			}
			if s.Route != tt.wantRoute || s.Reason != tt.wantReason {
				t.Fatalf("route %s (%s), want %s (%s)", s.Route, s.Reason, tt.wantRoute, tt.wantReason)
			}
			want := tt.wantParams
			if want == nil {
				want = tt.params
			}
			if !maps.Equal(s.Params, want) {
				t.Fatalf("params %q, want %q", s.Params, want)
			}
			if s.MaxLag != tt.wantMaxLag || s.Job != tt.wantJob {
				t.Fatalf("max_lag %v job %q, want %v %q", s.MaxLag, s.Job, tt.wantMaxLag, tt.wantJob)
			}
		})
	}
}

func TestClassifyErrors(t *testing.T) {
	tests := []struct {
		name     string
		listener string
		params   map[string]string
		code     string
	}{
		{"bad max_lag", "", p("options", "-c pgproxy.max_lag=fast"), SQLStateInvalidParameter},
		{"negative max_lag", "", p("options", "-c pgproxy.max_lag=-1s"), SQLStateInvalidParameter},
		{"zero max_lag", "", p("pgproxy.max_lag", "0"), SQLStateInvalidParameter},
		{"NaN max_lag", "", p("pgproxy.max_lag", "NaN"), SQLStateInvalidParameter},
		{"huge max_lag", "", p("pgproxy.max_lag", "1e300"), SQLStateInvalidParameter},
		{"unknown pgproxy setting", "", p("options", "--pgproxy.maxlag=1s"), SQLStateUndefinedObject},
		{"pgproxy setting without value", "", p("options", "-c pgproxy.max_lag"), SQLStateProtocolViolation},
		{"pgproxy setting grouped behind a flag", "", p("options", "-ecpgproxy.max_lag=1s"), SQLStateProtocolViolation},
		{"empty job", "", p("options", "-c pgproxy.job="), SQLStateInvalidParameter},
		{"unknown consistency", "", p("options", "-c pgproxy.consistency=strong"), SQLStateInvalidParameter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Classify(&Config{}, tt.listener, tt.params)
			var pe *ParamError
			if !errors.As(err, &pe) || pe.SQLState() != tt.code || pe.Error() == "" {
				t.Fatalf("err = %v, want a ParamError with %s", err, tt.code)
			}
		})
	}
	if _, err := Classify(nil, "sideways", nil); err == nil {
		t.Fatal("unknown listener route accepted")
	}
}

func TestParseBoolMatchesPostgres(t *testing.T) {
	for v, want := range map[string]int{ // 1 true, 0 false, -1 invalid
		"on": 1, "ON": 1, "t": 1, "tru": 1, "true": 1, "y": 1, "YES": 1, "1": 1,
		"off": 0, "of": 0, "f": 0, "false": 0, "n": 0, "no": 0, "0": 0,
		"o": -1, "": -1, "truee": -1, "yess": -1, "onn": -1, "2": -1, "10": -1, " on": -1, "enable": -1,
	} {
		b, ok := parseBool(v)
		got := -1
		if ok {
			got = 0
			if b {
				got = 1
			}
		}
		if got != want {
			t.Errorf("parseBool(%q) = %d, want %d", v, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Rules: testRules, MaxLag: time.Second, Fallback: "reject"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Config{
		{Fallback: "secondary"},
		{MaxLag: -1},
		{Rules: []Rule{{User: "x"}}},
		{Rules: []Rule{{Route: RouteRead}}},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// p builds a map from key, value pairs.
func p(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestClassifyConsistency(t *testing.T) {
	s, err := Classify(&Config{}, "", map[string]string{"user": "u", "options": "-c pgproxy.consistency=Global -c work_mem=1MB"})
	if err != nil || s.Consistency != "global" || s.Params["options"] != "-c work_mem=1MB" {
		t.Fatalf("session %+v, err %v", s, err)
	}
}
