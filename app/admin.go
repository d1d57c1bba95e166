package app

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ofitec/pgproxy/app/admin"
	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/proxy"
	"go.uber.org/zap"
)

// SetReloader sets how RELOAD (admin console) and SIGHUP re-read the
// configuration: cmd/pgproxy passes its file+env+flags loader.
func (a *App) SetReloader(load func() (*configs.Config, error)) {
	a.mu.Lock()
	a.reloader = load
	a.mu.Unlock()
}

// ReloadFromSource re-reads the configuration with the reloader and applies
// it; an invalid configuration leaves the old one in force.
func (a *App) ReloadFromSource() error {
	a.mu.Lock()
	load := a.reloader
	a.mu.Unlock()
	if load == nil {
		return &pgerr.Error{Code: pgerr.ObjectNotInPrerequisiteSta, Severity: "ERROR", Message: "no configuration source to reload from"}
	}
	cfg, err := load()
	if err != nil {
		return &pgerr.Error{Code: admin.ConfigFileError, Severity: "ERROR", Message: "reload rejected, the old configuration stays in force: " + err.Error()}
	}
	_, err = a.Reload(cfg)
	return err
}

func (a *App) adminConsole() *admin.Console {
	return admin.New(admin.Deps{
		Snapshot:        a.monitor.Snapshot,
		Sessions:        a.server.Sessions,
		BackendSessions: a.router.Sessions,
		Config:          a.Config,
		Reload:          a.ReloadFromSource,
		Pause:           func(addr string) error { return a.pause(addr, true) },
		Resume:          func(addr string) error { return a.pause(addr, false) },
		Paused:          a.director.isPaused,
		PoolMode:        a.server.PoolMode,
		Pools:           a.server.PoolStats,
		Servers:         a.server.PoolServers,
		Kill:            a.kill,
		Reconnect:       a.reconnect,
	})
}

// killWait bounds how long KILL waits for the sessions it ends before it
// closes the database's idle servers.
const killWait = 5 * time.Second

// kill runs KILL <database> from the admin console, and logs it.
func (a *App) kill(ctx context.Context, database string) (sessions, servers int) {
	ctx, cancel := context.WithTimeout(ctx, killWait)
	defer cancel()
	sessions, servers = a.server.KillDatabase(ctx, database, "KILL "+database+" on the pgproxy admin console")
	a.log.Info("KILL: client sessions ended and idle pooled servers closed", zap.String("database", database),
		zap.Int("sessions", sessions), zap.Int("servers_closed", servers))
	return sessions, servers
}

// reconnect runs RECONNECT <backend> from the admin console, and logs it.
func (a *App) reconnect(addr string) int {
	n := a.server.DrainBackend(addr)
	a.log.Info("RECONNECT: idle pooled servers closed, the others close when released", zap.String("backend", addr), zap.Int("closed_idle", n))
	return n
}

// adminAdapter adapts *admin.Console to proxy.AdminConsole.
type adminAdapter struct{ c *admin.Console }

func (ad adminAdapter) Exec(ctx context.Context, query string) ([]proxy.AdminResult, error) {
	rs, err := ad.c.Exec(ctx, query)
	out := make([]proxy.AdminResult, len(rs))
	for i, r := range rs {
		out[i] = proxy.AdminResult{Columns: r.Columns, Rows: r.Rows, Tag: r.Tag}
	}
	return out, err
}

// pause runs PAUSE (paused) or RESUME from the admin console, and logs it.
func (a *App) pause(addr string, paused bool) error {
	if err := a.director.setPaused(a.Config(), addr, paused); err != nil {
		return err
	}
	if paused {
		a.log.Info("backend paused: no new sessions until RESUME", zap.String("backend", addr))
	} else {
		a.log.Info("backend resumed", zap.String("backend", addr))
	}
	return nil
}

func (d *director) setPaused(cfg *configs.Config, addr string, paused bool) error {
	if !slices.ContainsFunc(cfg.Backends, func(b configs.Backend) bool { return b.Addr == addr }) {
		return &pgerr.Error{Code: pgerr.UndefinedObject, Severity: "ERROR", Message: fmt.Sprintf("backend %q does not exist", addr)}
	}
	if paused {
		d.paused.Store(addr, true)
	} else {
		d.paused.Delete(addr)
	}
	return nil
}

func (d *director) isPaused(addr string) bool {
	_, ok := d.paused.Load(addr)
	return ok
}
