package admin

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/pool"
	"github.com/ofitec/pgproxy/proxy"
)

// Column lists of the pool commands. SHOW POOLS starts with the columns of
// CONFIG.md, in its order; read_only and sv_opening follow.
var (
	PoolsColumns   = []string{"database", "user", "backend", "mode", "cl_active", "cl_waiting", "sv_active", "sv_idle", "maxwait_ms", "sv_opening", "read_only"}
	ClientsColumns = []string{"id", "user", "database", "application_name", "client", "backend", "mode", "state", "tx_state", "server_pid", "wait_ms", "pinned", "started"}
	ServersColumns = []string{"backend", "database", "user", "read_only", "pid", "state", "client_id", "connected", "idle_since"}
)

func (c *Console) poolMode() string {
	if c.d.PoolMode == nil {
		return ""
	}
	return c.d.PoolMode()
}

func (c *Console) now() time.Time {
	if c.d.Now != nil {
		return c.d.Now()
	}
	return time.Now()
}

// pooledSessions are the sessions of pooled clients (the admin console's
// own and pass-through sessions have no pool mode), sorted by id.
func (c *Console) pooledSessions() []proxy.SessionInfo {
	if c.d.Sessions == nil {
		return nil
	}
	list := slices.DeleteFunc(slices.Clone(c.d.Sessions()), func(s proxy.SessionInfo) bool { return s.Pool.Mode == "" })
	slices.SortFunc(list, func(a, b proxy.SessionInfo) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return list
}

func itoa(n int) *string { return str(strconv.Itoa(n)) }

func millis(d time.Duration) *string {
	return str(strconv.FormatInt(max(d, 0).Milliseconds(), 10))
}

func timeText(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	return str(t.UTC().Format(TimeFormat))
}

// showPools has a row per pool (backend, database, user, read-only).
// With Sessions, the client columns count the pool's sessions: cl_waiting
// those waiting for a server (queued or while one is opened, at login or
// before a transaction), cl_active the other logged-in ones, and
// maxwait_ms is the longest wait now. Without it they are pool.Stats'
// (clients using the pool, clients queued).
func (c *Console) showPools() (Result, error) {
	if c.d.Pools == nil {
		return Result{}, notAvailable("SHOW POOLS")
	}
	res := Result{Columns: PoolsColumns, Rows: [][]*string{}, Tag: "SHOW"}
	mode := c.poolMode()
	if mode == "" {
		return res, nil
	}
	type clients struct {
		active, waiting int
		maxWait         time.Duration
	}
	var per map[pool.Key]*clients
	now := c.now()
	if c.d.Sessions != nil {
		per = map[pool.Key]*clients{}
		for _, s := range c.pooledSessions() {
			n := per[s.Pool.Key]
			if n == nil {
				n = &clients{}
				per[s.Pool.Key] = n
			}
			switch {
			case !s.Pool.WaitingSince.IsZero():
				n.waiting++
				n.maxWait = max(n.maxWait, now.Sub(s.Pool.WaitingSince))
			case s.Pool.LoggedIn:
				n.active++
			}
		}
	}
	for _, st := range c.d.Pools() {
		cl := clients{active: st.Clients, waiting: st.Waiting, maxWait: st.MaxWait}
		if per != nil {
			n := per[st.Key]
			if n == nil {
				n = &clients{}
			}
			cl.active, cl.waiting, cl.maxWait = n.active, n.waiting, max(n.maxWait, st.MaxWait)
		}
		res.Rows = append(res.Rows, []*string{
			str(st.Key.Database), str(st.Key.User), str(st.Key.Addr), str(mode),
			itoa(cl.active), itoa(cl.waiting), itoa(st.Active), itoa(st.Idle), millis(cl.maxWait),
			itoa(st.Opening), boolText(st.Key.ReadOnly),
		})
	}
	return res, nil
}

// clientState is SHOW CLIENTS' state: startup (not logged in to a pool
// yet), waiting (for a server), active (holds one), idle (between
// transactions).
func clientState(p proxy.PoolClient) string {
	switch {
	case !p.WaitingSince.IsZero():
		return "waiting"
	case !p.LoggedIn:
		return "startup"
	case p.HoldsServer:
		return "active"
	}
	return "idle"
}

func (c *Console) showClients() (Result, error) {
	if c.d.Sessions == nil {
		return Result{}, notAvailable("SHOW CLIENTS")
	}
	list := c.pooledSessions()
	res := Result{Columns: ClientsColumns, Rows: make([][]*string, 0, len(list)), Tag: "SHOW"}
	now := c.now()
	for _, s := range list {
		var pid, wait *string
		if s.Pool.HoldsServer {
			pid = str(strconv.FormatUint(uint64(s.Pool.ServerPID), 10))
		}
		if !s.Pool.WaitingSince.IsZero() {
			wait = millis(now.Sub(s.Pool.WaitingSince))
		}
		res.Rows = append(res.Rows, []*string{
			str(strconv.FormatUint(s.ID, 10)), str(s.User), str(s.Database), str(s.ApplicationName),
			str(s.Client), nonEmpty(s.Backend), str(s.Pool.Mode), str(clientState(s.Pool)), str(s.State),
			pid, wait, nonEmpty(s.Pool.Pinned), timeText(s.Started),
		})
	}
	return res, nil
}

func (c *Console) showServers() (Result, error) {
	if c.d.Servers == nil {
		return Result{}, notAvailable("SHOW SERVERS")
	}
	res := Result{Columns: ServersColumns, Rows: [][]*string{}, Tag: "SHOW"}
	if c.poolMode() == "" {
		return res, nil
	}
	type held struct {
		key pool.Key
		pid uint32
	}
	holder := map[held]uint64{}
	for _, s := range c.pooledSessions() {
		if s.Pool.HoldsServer {
			holder[held{s.Pool.Key, s.Pool.ServerPID}] = s.ID
		}
	}
	for _, sv := range c.d.Servers() {
		state, client := "idle", (*string)(nil)
		if sv.Active {
			state = "active"
			if id, ok := holder[held{sv.Key, sv.PID}]; ok {
				client = str(strconv.FormatUint(id, 10))
			}
		}
		res.Rows = append(res.Rows, []*string{
			str(sv.Key.Addr), str(sv.Key.Database), str(sv.Key.User), boolText(sv.Key.ReadOnly),
			str(strconv.FormatUint(uint64(sv.PID), 10)), str(state), client,
			timeText(sv.Created), timeText(sv.IdleAt),
		})
	}
	return res, nil
}

func (c *Console) kill(ctx context.Context, database string) (Result, error) {
	if c.d.Kill == nil {
		return Result{}, notAvailable("KILL")
	}
	if database == proxy.AdminDatabase {
		return Result{}, &pgerr.Error{Code: pgerr.FeatureNotSupported, Severity: "ERROR",
			Message: "KILL pgproxy: the admin console does not kill its own sessions"}
	}
	sessions, servers := c.d.Kill(ctx, database)
	if sessions == 0 && servers == 0 {
		return Result{}, &pgerr.Error{Code: pgerr.InvalidCatalogName, Severity: "ERROR",
			Message: fmt.Sprintf("no client session or pooled server uses database %q", database),
			Hint:    "SHOW CLIENTS and SHOW SESSIONS list the sessions (database names are case-sensitive)"}
	}
	return Result{Tag: "KILL"}, nil
}

func (c *Console) reconnect(addr string) (Result, error) {
	if c.d.Reconnect == nil {
		return Result{}, notAvailable("RECONNECT")
	}
	if c.poolMode() == "" {
		return Result{}, &pgerr.Error{Code: pgerr.FeatureNotSupported, Severity: "ERROR",
			Message: "RECONNECT: pooling is off (auth.mode: passthrough)",
			Detail:  "Each server connection belongs to its client session.",
			Hint:    "KILL <database> ends client sessions, PAUSE <backend> keeps new ones away"}
	}
	addr, err := c.resolveBackend(addr)
	if err != nil {
		return Result{}, err
	}
	c.d.Reconnect(addr)
	return Result{Tag: "RECONNECT"}, nil
}
