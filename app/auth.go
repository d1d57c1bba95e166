package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/health"
	"github.com/ofitec/pgproxy/internal/pgauth"
	"github.com/ofitec/pgproxy/internal/sqlscan"
	"github.com/ofitec/pgproxy/pool"
	"github.com/ofitec/pgproxy/proxy"
)

// authSource answers the proxy's user lookups (auth.mode: proxy): auth.file
// first (read at start and on every reload), then auth.query on the
// primary. Safe for concurrent use.
type authSource struct {
	log      *zap.Logger
	snapshot func() *health.Snapshot

	users atomic.Pointer[pgauth.Userlist] // nil: no auth.file
	// mock is the SCRAM material of auth.file (pgauth.UserlistMockMaterial):
	// what unknown users' fake secrets are derived from (mockKey).
	mock       atomic.Pointer[[]byte]
	warnedMock atomic.Bool

	mu    sync.Mutex
	query *pgauth.QuerySource // nil: no auth.query
	qcfg  configs.Auth        // what query was made from
}

// load (re)reads auth.file and (re)builds the auth.query source for cfg.
// On error nothing changes.
func (a *authSource) load(cfg *configs.Config) error {
	var ul *pgauth.Userlist
	if cfg.Auth.File != "" {
		u, warnings, err := pgauth.LoadUserlist(cfg.Auth.File)
		if err != nil {
			return fmt.Errorf("auth.file: %w", err)
		}
		for _, w := range warnings {
			a.log.Warn("auth.file: "+w, zap.String("file", cfg.Auth.File))
		}
		ul = &u
		a.log.Info("auth.file loaded", zap.String("file", cfg.Auth.File), zap.Int("users", len(u)))
	}
	a.users.Store(ul)
	var material []byte
	if ul != nil {
		material = pgauth.UserlistMockMaterial(*ul)
	}
	a.mock.Store(&material)

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.query != nil && a.qcfg == cfg.Auth {
		return nil
	}
	if a.query != nil {
		a.query.Close()
		a.query = nil
	}
	a.qcfg = cfg.Auth
	if cfg.Auth.User == "" {
		return nil
	}
	a.query = &pgauth.QuerySource{
		Addr: a.primary, User: cfg.Auth.User, Password: cfg.Auth.Password,
		Database: cfg.Health.Database, Query: cfg.Auth.Query, TTL: cfg.Auth.CacheTTL,
	}
	return nil
}

func (a *authSource) primary() (string, error) {
	snap := a.snapshot()
	if snap == nil || snap.Primary() == nil {
		return "", errors.New("no primary available for auth.query")
	}
	return snap.Primary().Addr, nil
}

// lookup is proxy.ProxyAuth.Lookup.
func (a *authSource) lookup(ctx context.Context, user string) (pgauth.Secret, bool, error) {
	if ul := a.users.Load(); ul != nil {
		if sec, ok := (*ul)[user]; ok {
			return sec, true, nil
		}
	}
	a.mu.Lock()
	q := a.query
	a.mu.Unlock()
	if q == nil {
		return pgauth.Secret{}, false, nil
	}
	return q.Lookup(ctx, user)
}

// mockKey is the key of unknown users' fake SCRAM secrets: derived from
// the SCRAM verifiers of auth.file or, without any, from the private key of
// tls (the same on every restart and on every instance given the same
// files; it changes when they do), else nil (a random key per process:
// an unknown user's salt then changes at each restart, which is warned
// about once).
func (a *authSource) mockKey(tc *tls.Config) []byte {
	if m := a.mock.Load(); m != nil && len(*m) > 0 {
		return pgauth.MockKey(*m)
	}
	if tc != nil && len(tc.Certificates) > 0 {
		if der, err := x509.MarshalPKCS8PrivateKey(tc.Certificates[0].PrivateKey); err == nil {
			return pgauth.MockKey([]byte("tls key"), der)
		}
	}
	if !a.warnedMock.Swap(true) {
		a.log.Warn("no SCRAM verifier in auth.file and no tls key: unknown users' fake SCRAM salts are random per process and change at each restart (a prober comparing salts across restarts can tell unknown users from real ones)")
	}
	return nil
}

func (a *authSource) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.query != nil {
		a.query.Close()
		a.query = nil
	}
}

// poolConfig maps the pool.* keys onto the proxy's pool settings.
func poolConfig(cfg *configs.Config) proxy.PoolConfig {
	p := cfg.Pool
	return proxy.PoolConfig{
		Config: pool.Config{
			Size: p.Size, MinSize: p.MinSize, MaxWait: p.MaxClientWait,
			IdleTimeout: p.ServerIdleTimeout, Lifetime: p.ServerLifetime,
			// A server keeping many more statements than one client may is
			// closed when released: bounded memory on the backends.
			MaxPrepared: 4 * max(p.MaxPreparedStatements, 100),
		},
		Transaction: p.Mode == configs.PoolTransaction,
		ResetQuery:  p.ResetQuery,
		MaxPrepared: p.MaxPreparedStatements,
	}
}

// withAuth adds proxy-side authentication and pooling to pc (on: auth.mode
// is proxy; a reload cannot change that).
func (a *App) withAuth(pc *proxy.Config, cfg *configs.Config, on bool) {
	if !on {
		return
	}
	pc.Auth = &proxy.ProxyAuth{Lookup: a.auth.lookup, MockKey: a.auth.mockKey(pc.TLS)}
	pc.Pool = poolConfig(cfg)
	pc.SessionState = sqlscan.SessionState
	pc.SessionSetting = func(sql string) (proxy.Setting, bool) {
		name, value, reset, ok := sqlscan.SessionSetting(sql)
		return proxy.Setting{Name: name, Value: value, Reset: reset}, ok
	}
	if cfg.Routing.Unit == configs.UnitTransaction {
		if a.classifier == nil || !slices.Equal(a.classifierFuncs, cfg.Routing.ReadFunctions) {
			a.classifier = sqlscan.NewClassifier(cfg.Routing.ReadFunctions)
			a.classifierFuncs = slices.Clone(cfg.Routing.ReadFunctions)
		}
		pc.Routing = proxy.TxRouting{Classify: a.classifier.Classify, Consistency: cfg.Routing.Consistency, Wait: cfg.Routing.ConsistencyWait}
	}
}

// watchBackends drains the pools of a backend that goes down or changes
// role (a promoted replica, a fenced primary): their connections must not
// serve another transaction.
func (a *App) watchBackends(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	type seen struct {
		role  health.Role
		state health.State
	}
	last := map[string]seen{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		snap := a.monitor.Snapshot()
		if snap == nil {
			continue
		}
		for _, b := range snap.Backends {
			now := seen{b.Role, b.State}
			prev, ok := last[b.Addr]
			last[b.Addr] = now
			if ok && prev != now && (now.state != health.StateUp || prev.role != now.role) {
				if n := a.server.DrainBackend(b.Addr); n > 0 || prev.role != now.role {
					a.log.Info("server pool drained", zap.String("backend", b.Addr),
						zap.String("role", now.role.String()), zap.String("state", now.state.String()), zap.Int("closed_idle", n))
				}
			}
		}
	}
}
