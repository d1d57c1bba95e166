package admin

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/internal/buildinfo"
	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/proxy"
)

// TimeFormat is how timestamps are shown (PostgreSQL's timestamptz style).
const TimeFormat = "2006-01-02 15:04:05.000Z07:00"

// Column lists of the SHOW commands.
var (
	BackendsColumns = []string{"addr", "role", "state", "lag_seconds", "lag_bytes", "sessions", "paused", "last_error"}
	SessionsColumns = []string{"id", "user", "database", "application_name", "client", "listener", "route", "backend", "read_only", "state", "started", "relay"}
	RoutesColumns   = []string{"step", "match", "route", "strip_suffix", "detail"}
	ConfigColumns   = []string{"key", "value"}
	HelpColumns     = []string{"command", "description"}
	VersionColumns  = []string{"version", "commit", "go_version"}
)

func str(s string) *string { return &s }

func boolText(b bool) *string {
	if b {
		return str("t")
	}
	return str("f")
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (c *Console) showBackends() (Result, error) {
	if c.d.Snapshot == nil {
		return Result{}, notAvailable("SHOW BACKENDS")
	}
	res := Result{Columns: BackendsColumns, Rows: [][]*string{}, Tag: "SHOW"}
	snap := c.d.Snapshot()
	if snap == nil {
		return res, nil
	}
	for i := range snap.Backends {
		b := &snap.Backends[i]
		var lagS, lagB, sessions, paused *string
		if b.LagKnown {
			lagS = str(strconv.FormatFloat(b.LagSeconds, 'f', 3, 64))
			lagB = str(strconv.FormatInt(b.LagBytes, 10))
		}
		if c.d.BackendSessions != nil {
			sessions = str(strconv.Itoa(c.d.BackendSessions(b.Addr)))
		}
		if c.d.Paused != nil {
			paused = boolText(c.d.Paused(b.Addr))
		}
		res.Rows = append(res.Rows, []*string{
			str(b.Addr), str(b.Role.String()), str(b.State.String()),
			lagS, lagB, sessions, paused, nonEmpty(b.LastError),
		})
	}
	return res, nil
}

func (c *Console) showSessions() (Result, error) {
	if c.d.Sessions == nil {
		return Result{}, notAvailable("SHOW SESSIONS")
	}
	list := slices.Clone(c.d.Sessions())
	slices.SortFunc(list, func(a, b proxy.SessionInfo) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	res := Result{Columns: SessionsColumns, Rows: make([][]*string, 0, len(list)), Tag: "SHOW"}
	for _, s := range list {
		var started *string
		if !s.Started.IsZero() {
			started = str(s.Started.UTC().Format(TimeFormat))
		}
		res.Rows = append(res.Rows, []*string{
			str(strconv.FormatUint(s.ID, 10)), str(s.User), str(s.Database), str(s.ApplicationName),
			str(s.Client), str(s.Listener), nonEmpty(s.Route), nonEmpty(s.Backend),
			boolText(s.ReadOnly), str(s.State), started, nonEmpty(s.Relay),
		})
	}
	return res, nil
}

// showRoutes lays out the routing decision in the order the router applies
// it (docs/routing.md): the listener's route, the rules (first match wins),
// the startup parameters, the default; then what a read gets when no
// replica fits, and the lag limits that decide fitness.
func (c *Console) showRoutes() (Result, error) {
	if c.d.Config == nil {
		return Result{}, notAvailable("SHOW ROUTES")
	}
	res := Result{Columns: RoutesColumns, Rows: [][]*string{}, Tag: "SHOW"}
	cfg := c.d.Config()
	if cfg == nil {
		return res, nil
	}
	cfg = cfg.Redacted()
	row := func(step, match, route, strip, detail string) {
		res.Rows = append(res.Rows, []*string{str(step), nonEmpty(match), nonEmpty(route), nonEmpty(strip), nonEmpty(detail)})
	}
	for i, l := range cfg.Listen {
		step := fmt.Sprintf("listener %d", i+1)
		if l.Route == configs.RouteRules {
			row(step, "listener="+l.Addr, "rules", "", "rules, then startup parameters, else write")
		} else {
			row(step, "listener="+l.Addr, l.Route, "", "every session on this listener")
		}
	}
	for i, r := range cfg.Routing.Rules {
		row(fmt.Sprintf("rule %d", i+1), matchText(r.Match), r.Route, r.StripSuffix, "first matching rule wins")
	}
	row("startup", "default_transaction_read_only=on", configs.RouteRead, "", "sent as a startup parameter or in options")
	row("default", "", configs.RouteWrite, "", "nothing above matched")
	limits := "max_lag " + cfg.Routing.MaxLag.String()
	if cfg.Routing.MaxLagBytes > 0 {
		limits += fmt.Sprintf(", max_lag_bytes %d", cfg.Routing.MaxLagBytes)
	}
	switch cfg.Routing.Fallback {
	case configs.FallbackPrimary:
		row("fallback", "read, no replica within "+limits, "primary", "",
			"session forced read-only (default_transaction_read_only=on, 25006 on attempts to turn it off)")
	case configs.FallbackReject:
		row("fallback", "read, no replica within "+limits, "reject", "", "57P03 cannot_connect_now")
	default:
		row("fallback", "read, no replica within "+limits, cfg.Routing.Fallback, "", "")
	}
	row("max_lag", "", "", "", cfg.Routing.MaxLag.String()+" (a session may tighten it: options=-c pgproxy.max_lag=2s)")
	mlb := "0 (no byte limit)"
	if cfg.Routing.MaxLagBytes > 0 {
		mlb = strconv.FormatInt(cfg.Routing.MaxLagBytes, 10)
	}
	row("max_lag_bytes", "", "", "", mlb)
	return res, nil
}

func matchText(m configs.Match) string {
	var parts []string
	if m.User != "" {
		parts = append(parts, "user="+m.User)
	}
	if m.Database != "" {
		parts = append(parts, "database="+m.Database)
	}
	if m.ApplicationName != "" {
		parts = append(parts, "application_name="+m.ApplicationName)
	}
	return strings.Join(parts, " ")
}

// secretKeys are the config keys (last path element) whose values are
// secrets. Redacted() already hides them; SHOW CONFIG checks again so a
// secret added to configs without redaction is still not shown.
var secretKeys = []string{"password", "api_key", "secret", "token", "key_passphrase"}

func (c *Console) showConfig() (Result, error) {
	if c.d.Config == nil {
		return Result{}, notAvailable("SHOW CONFIG")
	}
	res := Result{Columns: ConfigColumns, Rows: [][]*string{}, Tag: "SHOW"}
	cfg := c.d.Config()
	if cfg == nil {
		return res, nil
	}
	y, err := cfg.Redacted().YAML()
	if err != nil {
		return Result{}, &pgerr.Error{Code: pgerr.InternalError, Severity: "ERROR", Message: "SHOW CONFIG: rendering the configuration failed", Err: err}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(y, &doc); err != nil {
		return Result{}, &pgerr.Error{Code: pgerr.InternalError, Severity: "ERROR", Message: "SHOW CONFIG: rendering the configuration failed", Err: err}
	}
	var walk func(key string, n *yaml.Node)
	walk = func(key string, n *yaml.Node) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, ch := range n.Content {
				walk(key, ch)
			}
		case yaml.MappingNode:
			if len(n.Content) == 0 && key != "" {
				res.Rows = append(res.Rows, []*string{str(key), str("{}")})
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if key != "" {
					k = key + "." + k
				}
				walk(k, n.Content[i+1])
			}
		case yaml.SequenceNode:
			if len(n.Content) == 0 {
				res.Rows = append(res.Rows, []*string{str(key), str("[]")})
			}
			for i, ch := range n.Content {
				walk(fmt.Sprintf("%s[%d]", key, i), ch)
			}
		case yaml.AliasNode:
			walk(key, n.Alias)
		default:
			v := n.Value
			if isSecretKey(key) && v != "" {
				v = configs.RedactedValue
			}
			res.Rows = append(res.Rows, []*string{str(key), str(v)})
		}
	}
	walk("", &doc)
	return res, nil
}

func isSecretKey(key string) bool {
	last := key[strings.LastIndexByte(key, '.')+1:]
	return slices.Contains(secretKeys, strings.ToLower(last))
}

func showHelp() Result {
	res := Result{Columns: HelpColumns, Tag: "SHOW"}
	for _, c := range Commands {
		res.Rows = append(res.Rows, []*string{str(c[0]), str(c[1])})
	}
	res.Rows = append(res.Rows, []*string{str("SET ..."), str("accepted and ignored (drivers send it at connect)")})
	return res
}

func showVersion() Result {
	return Result{Columns: VersionColumns, Tag: "SHOW", Rows: [][]*string{{
		str(buildinfo.Version), str(buildinfo.Commit), str(buildinfo.GoVersion()),
	}}}
}
