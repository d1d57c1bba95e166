package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/health"
	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/pool"
	"github.com/ofitec/pgproxy/proxy"
)

// MaxQueryLen is the longest query text Exec accepts; admin commands are
// short, so anything longer is refused with 54000 before it is parsed.
const MaxQueryLen = 64 << 10

// ConfigFileError is SQLSTATE F0000 config_file_error (RELOAD failed).
const ConfigFileError = "F0000"

// Result is one psql-friendly result set: all values are text; nil = NULL.
//
// Columns nil means the command returns no rows (RELOAD, PAUSE, RESUME,
// SET): send only CommandComplete with Tag. Columns non-nil (possibly with
// zero Rows) means RowDescription, one DataRow per row, CommandComplete.
type Result struct {
	Columns []string
	Rows    [][]*string
	// Tag is the CommandComplete tag, e.g. "SHOW", "RELOAD", "PAUSE".
	Tag string
}

// Deps are what the console reads and acts on. Any of them may be nil: the
// commands that need a missing one answer 0A000 (SHOW BACKENDS without
// BackendSessions or Paused shows NULL in those columns).
type Deps struct {
	// Snapshot returns the latest health snapshot (may return nil).
	Snapshot func() *health.Snapshot
	// Sessions lists the open client sessions.
	Sessions func() []proxy.SessionInfo
	// BackendSessions counts the sessions routed to addr.
	BackendSessions func(addr string) int
	// Config returns the configuration in force; the console shows only
	// cfg.Redacted() and never modifies it.
	Config func() *configs.Config
	// Reload re-reads the config file and applies it.
	Reload func() error
	// Pause stops new sessions on addr (open ones finish); Resume undoes
	// it. Both return an error for a backend they do not know.
	Pause, Resume func(addr string) error
	// Paused reports whether addr is paused.
	Paused func(addr string) bool

	// PoolMode is the pool mode of new sessions ("session",
	// "transaction"), or "" when the proxy does not pool (auth.mode:
	// passthrough: SHOW POOLS, SHOW CLIENTS and SHOW SERVERS have no rows,
	// RECONNECT is refused with 0A000). Nil counts as "".
	PoolMode func() string
	// Pools describes every server pool (sorted); Servers lists every
	// pooled server connection (sorted).
	Pools   func() []pool.Stats
	Servers func() []pool.Server
	// Kill ends every client session of database, waits for them to end
	// (within ctx), then closes the database's idle pooled servers; it
	// returns how many sessions and servers.
	Kill func(ctx context.Context, database string) (sessions, servers int)
	// Reconnect closes addr's pooled servers: the idle ones now (it
	// returns how many), the lent ones when their clients release them.
	Reconnect func(addr string) int
	// Now is the clock of wait times (nil: time.Now).
	Now func() time.Time
}

// Console executes admin commands against Deps.
type Console struct {
	d Deps
}

// New returns a Console over d.
func New(d Deps) *Console { return &Console{d: d} }

// Commands lists the commands for the hint of an unrecognized command and
// SHOW HELP, with what they do.
var Commands = [][2]string{
	{"SHOW BACKENDS", "every backend: role, state, lag, sessions, paused, last probe error"},
	{"SHOW SESSIONS", "every open client session: who, from where, which route and backend"},
	{"SHOW ROUTES", "how a session's route is decided (listeners, rules, fallback, lag limits)"},
	{"SHOW CONFIG", "the configuration in force, secrets redacted"},
	{"SHOW POOLS", "every server pool (auth.mode: proxy): clients active and waiting, servers active and idle, longest wait"},
	{"SHOW CLIENTS", "every pooled client session: pool mode, whether it holds a server (its pid), waits, is pinned"},
	{"SHOW SERVERS", "every pooled server connection: backend, database, user, pid, active or idle, the client holding it"},
	{"SHOW HELP", "this list"},
	{"SHOW VERSION", "version, commit and Go version of the proxy"},
	{"RELOAD", "re-read the config file and apply it (like SIGHUP)"},
	{"PAUSE <backend>", "no new sessions on the backend; open sessions finish"},
	{"RESUME <backend>", "undo PAUSE"},
	{"KILL <database>", "end every client session of the database now (57P01) and close its idle pooled servers"},
	{"RECONNECT <backend>", "close the backend's pooled servers: idle ones now, the others when their clients release them"},
}

func commandList() string {
	names := make([]string, len(Commands))
	for i, c := range Commands {
		names[i] = c[0]
	}
	return strings.Join(names, ", ")
}

// Exec runs the commands in query (case-insensitive, optional trailing ';',
// whitespace tolerant; several commands separated by ';' run in order) and
// returns one Result per command. On an error it returns the results of
// the commands that ran before it, and the error, which is a *pgerr.Error
// with severity ERROR: the client gets the results, then the
// ErrorResponse, as PostgreSQL does for a multi-statement Query. An empty
// query returns no results and no error (send EmptyQueryResponse).
func (c *Console) Exec(ctx context.Context, query string) ([]Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, &pgerr.Error{Code: pgerr.QueryCanceled, Severity: "ERROR", Message: "canceling statement", Err: err}
	}
	if len(query) > MaxQueryLen {
		return nil, sqlErr(pgerr.ProgramLimitExceeded, "admin command too long (%d bytes, at most %d)", len(query), MaxQueryLen)
	}
	stmts, err := split(query)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, s := range stmts {
		if err := ctx.Err(); err != nil {
			return out, &pgerr.Error{Code: pgerr.QueryCanceled, Severity: "ERROR", Message: "canceling statement", Err: err}
		}
		r, err := c.exec(ctx, s)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// exec runs one command (already split, trimmed, non-empty).
func (c *Console) exec(ctx context.Context, stmt string) (Result, error) {
	words, err := fields(stmt)
	if err != nil {
		return Result{}, err
	}
	verb := strings.ToUpper(words[0])
	args := words[1:]
	switch verb {
	case "SHOW":
		if len(args) == 0 {
			return Result{}, unknown(stmt)
		}
		what := strings.ToUpper(args[0])
		if len(args) > 1 {
			switch what {
			case "BACKENDS", "SESSIONS", "ROUTES", "CONFIG", "HELP", "VERSION", "POOLS", "CLIENTS", "SERVERS":
				return Result{}, syntaxErr("SHOW "+what+" takes no argument", "")
			}
			return Result{}, unknown(stmt)
		}
		switch what {
		case "BACKENDS":
			return c.showBackends()
		case "SESSIONS":
			return c.showSessions()
		case "ROUTES":
			return c.showRoutes()
		case "CONFIG":
			return c.showConfig()
		case "HELP":
			return showHelp(), nil
		case "VERSION":
			return showVersion(), nil
		case "POOLS":
			return c.showPools()
		case "CLIENTS":
			return c.showClients()
		case "SERVERS":
			return c.showServers()
		}
		return Result{}, unknown(stmt)
	case "RELOAD":
		if len(args) > 0 {
			return Result{}, syntaxErr("RELOAD takes no argument", "")
		}
		return c.reload()
	case "PAUSE", "RESUME":
		if len(args) != 1 {
			return Result{}, syntaxErr(verb+" needs exactly one backend",
				fmt.Sprintf("%s <backend>, e.g. %s 127.0.0.1:5433; SHOW BACKENDS lists them", verb, verb))
		}
		return c.pauseResume(verb, args[0])
	case "KILL":
		if len(args) != 1 {
			return Result{}, syntaxErr("KILL needs exactly one database",
				"KILL <database>, e.g. KILL odoo; SHOW CLIENTS and SHOW SESSIONS list the sessions")
		}
		return c.kill(ctx, args[0])
	case "RECONNECT":
		if len(args) != 1 {
			return Result{}, syntaxErr("RECONNECT needs exactly one backend",
				"RECONNECT <backend>, e.g. RECONNECT 127.0.0.1:5433; SHOW BACKENDS lists them")
		}
		return c.reconnect(args[0])
	case "SET":
		// JDBC and other drivers send SET extra_float_digits etc. at connect.
		return Result{Tag: "SET"}, nil
	}
	return Result{}, unknown(stmt)
}

func (c *Console) reload() (Result, error) {
	if c.d.Reload == nil {
		return Result{}, notAvailable("RELOAD")
	}
	if err := c.d.Reload(); err != nil {
		var coded pgerr.Coded
		if errors.As(err, &coded) {
			return Result{}, err
		}
		return Result{}, &pgerr.Error{Code: ConfigFileError, Severity: "ERROR",
			Message: "RELOAD failed: the configuration in force is unchanged",
			Detail:  err.Error(), Err: err}
	}
	return Result{Tag: "RELOAD"}, nil
}

func (c *Console) pauseResume(verb, addr string) (Result, error) {
	fn := c.d.Pause
	if verb == "RESUME" {
		fn = c.d.Resume
	}
	if fn == nil {
		return Result{}, notAvailable(verb)
	}
	addr, err := c.resolveBackend(addr)
	if err != nil {
		return Result{}, err
	}
	if err := fn(addr); err != nil {
		var coded pgerr.Coded
		if errors.As(err, &coded) {
			return Result{}, err
		}
		return Result{}, &pgerr.Error{Code: pgerr.UndefinedObject, Severity: "ERROR",
			Message: fmt.Sprintf("%s %s: %v", verb, addr, err), Err: err}
	}
	return Result{Tag: verb}, nil
}

// resolveBackend returns the known backend named addr (host names compare
// ignoring case), 42704 for one the console does not know, or addr as it
// is when it knows none.
func (c *Console) resolveBackend(addr string) (string, error) {
	known := c.backendAddrs()
	if known != nil && !containsFold(known, addr) {
		return "", &pgerr.Error{Code: pgerr.UndefinedObject, Severity: "ERROR",
			Message: fmt.Sprintf("backend %q does not exist", addr),
			Hint:    "backends: " + strings.Join(known, ", ")}
	}
	if a := matchFold(known, addr); a != "" {
		addr = a
	}
	return addr, nil
}

// backendAddrs are the backends the console knows (configuration, then any
// others in the snapshot); nil when it knows none (no Config nor Snapshot).
func (c *Console) backendAddrs() []string {
	var out []string
	if c.d.Config != nil {
		if cfg := c.d.Config(); cfg != nil {
			for _, b := range cfg.Backends {
				out = append(out, b.Addr)
			}
		}
	}
	if c.d.Snapshot != nil {
		if s := c.d.Snapshot(); s != nil {
			for _, b := range s.Backends {
				if !containsFold(out, b.Addr) {
					out = append(out, b.Addr)
				}
			}
		}
	}
	return out
}

func containsFold(list []string, s string) bool { return matchFold(list, s) != "" }

// matchFold returns the element of list equal to s ignoring case (host
// names are case-insensitive), or "".
func matchFold(list []string, s string) string {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return x
		}
	}
	return ""
}

func sqlErr(code, format string, args ...any) *pgerr.Error {
	return &pgerr.Error{Code: code, Severity: "ERROR", Message: fmt.Sprintf(format, args...)}
}

func syntaxErr(msg, hint string) *pgerr.Error {
	if hint == "" {
		hint = "admin commands: " + commandList()
	}
	return &pgerr.Error{Code: pgerr.SyntaxError, Severity: "ERROR", Message: msg, Hint: hint}
}

// unknown is the error for a command the console does not know; the text is
// echoed shortened, so a huge paste does not come back whole.
func unknown(stmt string) *pgerr.Error {
	const max = 60
	shown := stmt
	if r := []rune(shown); len(r) > max {
		shown = string(r[:max]) + "..."
	}
	return syntaxErr(fmt.Sprintf("unrecognized admin command %q", shown), "")
}

func notAvailable(cmd string) *pgerr.Error {
	return sqlErr(pgerr.FeatureNotSupported, "%s is not available in this proxy", cmd)
}
