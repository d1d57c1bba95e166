// Package app assembles a running pgproxy from a configs.Config: listeners,
// the health monitor, the router, the proxy server, lineage and the HTTP
// endpoints. cmd/pgproxy and the integration tests both use it, so tests
// exercise exactly what operators run.
//
// Ownership: Run starts every goroutine (monitor, lineage worker, one
// Serve per listener, the HTTP server) and returns only after all of them
// have stopped.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/health"
	"github.com/ofitec/pgproxy/internal/buildinfo"
	"github.com/ofitec/pgproxy/internal/sqlscan"
	"github.com/ofitec/pgproxy/lineage"
	"github.com/ofitec/pgproxy/proxy"
	"github.com/ofitec/pgproxy/router"
)

// App is one pgproxy instance.
type App struct {
	log      *zap.Logger
	level    zap.AtomicLevel
	reg      *prometheus.Registry
	monitor  *health.Monitor
	router   *router.Router
	server   *proxy.Server
	lineage  *lineageHolder
	masking  *maskingHolder
	director *director
	admin    adminAdapter
	auth     *authSource
	// classifier serves routing.unit transaction (its cache survives
	// reloads that keep routing.read_functions).
	classifier      *sqlscan.Classifier
	classifierFuncs []string

	mu         sync.Mutex
	cfg        *configs.Config
	reloader   func() (*configs.Config, error)
	configPath string // for the start-up line only
	gomaxprocs int

	listeners []boundListener
	httpLn    net.Listener
	httpSrv   *http.Server
}

type boundListener struct {
	ln  net.Listener
	cfg proxy.Listener
}

// New builds an App and binds its listeners (so their addresses are known
// before Run). level may be nil (then the log level cannot be reloaded).
func New(cfg *configs.Config, log *zap.Logger, level *zap.AtomicLevel) (a *App, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	a = &App{log: log, cfg: cfg, reg: prometheus.NewRegistry()}
	if level != nil {
		a.level = *level
	}
	built := a // the error returns below set a to nil
	defer func() {
		if err != nil {
			built.closeListeners()
		}
	}()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.gomaxprocs = applyGOMAXPROCS(cfg.Runtime.GOMAXPROCS) // logged in the start-up line

	a.monitor, err = health.NewMonitor(healthConfig(cfg), log.Named("health"), a.reg)
	if err != nil {
		return nil, err
	}
	a.router = router.New(routerConfig(cfg), a.monitor.Snapshot, a.reg)
	a.director = &director{router: a.router, snapshot: a.monitor.Snapshot,
		staleness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pgproxy_read_session_staleness_seconds",
			Help:    "Freshness SLO view: the replication lag of the backend each read session was given (0 for the primary).",
			Buckets: []float64{0, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30},
		})}
	a.reg.MustRegister(a.director.staleness)
	a.director.cfg.Store(cfg)

	pcfg, err := proxyConfig(cfg)
	if err != nil {
		return nil, err
	}
	a.auth = &authSource{log: log.Named("auth"), snapshot: a.monitor.Snapshot}
	if err := a.auth.load(cfg); err != nil {
		return nil, err
	}
	a.withAuth(&pcfg, cfg, cfg.Auth.Mode == configs.AuthProxy)
	a.lineage = newLineageHolder(log.Named("lineage"), a.reg)
	if err := a.lineage.set(lineageConfig(cfg)); err != nil {
		return nil, fmt.Errorf("lineage: %w", err)
	}
	pcfg.Lineage = a.lineage.sink()
	a.masking = newMaskingHolder()
	if err := a.masking.set(cfg); err != nil {
		return nil, err
	}
	a.masking.wire(&pcfg)
	a.server = proxy.NewServer(pcfg, a.director, log.Named("proxy"), proxy.NewMetrics(a.reg))
	a.reg.MustRegister(a.server.PoolCollector())
	a.admin = adminAdapter{a.adminConsole()}
	pcfg.Admin = a.admin
	a.server.SetConfig(pcfg)

	for _, l := range cfg.Listen {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", l.Addr, err)
		}
		a.listeners = append(a.listeners, boundListener{ln: ln, cfg: proxy.Listener{Addr: ln.Addr().String(), Route: l.Route}})
	}
	if cfg.HTTP.Addr != "" {
		a.httpLn, err = net.Listen("tcp", cfg.HTTP.Addr)
		if err != nil {
			return nil, fmt.Errorf("http.addr %s: %w", cfg.HTTP.Addr, err)
		}
	}
	return a, nil
}

// ListenAddrs are the bound client listener addresses, in config order.
func (a *App) ListenAddrs() []string {
	out := make([]string, len(a.listeners))
	for i, l := range a.listeners {
		out[i] = l.cfg.Addr
	}
	return out
}

// HTTPAddr is the bound HTTP address ("" when disabled).
func (a *App) HTTPAddr() string {
	if a.httpLn == nil {
		return ""
	}
	return a.httpLn.Addr().String()
}

// Registry exposes the metrics registry (tests, admin).
func (a *App) Registry() *prometheus.Registry { return a.reg }

// Monitor exposes the health monitor.
func (a *App) Monitor() *health.Monitor { return a.monitor }

// Server exposes the proxy server.
func (a *App) Server() *proxy.Server { return a.server }

// Run serves until ctx is done, then drains: listeners close at once,
// /readyz turns 503, open sessions get limits.drain_timeout to finish, the
// lineage queue is flushed. It returns after every goroutine has stopped.
func (a *App) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	errc := make(chan error, len(a.listeners)+3)

	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.monitor.Run(bg); err != nil && !errors.Is(err, context.Canceled) {
			errc <- fmt.Errorf("health monitor: %w", err)
		}
	}()
	a.lineage.start(bg)
	if a.Config().Auth.Mode == configs.AuthProxy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.watchBackends(bg)
		}()
	}
	if a.httpLn != nil {
		a.httpSrv = &http.Server{Handler: a.httpHandler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.httpSrv.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http: %w", err)
			}
		}()
	}
	for _, l := range a.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.server.Serve(l.ln, l.cfg); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	a.logStarted()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		a.log.Error("stopping after a fatal error", zap.Error(runErr))
	}

	a.mu.Lock()
	drain := a.cfg.Limits.DrainTimeout
	a.mu.Unlock()
	a.log.Info("draining", zap.Int("sessions", a.server.SessionCount()), zap.Float64("drain_timeout_s", drain.Seconds()))
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	if err := a.server.Shutdown(dctx); err != nil {
		a.log.Warn("drain timeout: remaining sessions were closed", zap.Error(err))
	}
	cancel()
	if a.httpSrv != nil {
		hctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = a.httpSrv.Shutdown(hctx)
		cancel()
	}
	lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
	a.lineage.stop(lctx)
	lcancel()
	stopBG()
	wg.Wait()
	a.auth.close()
	a.masking.close()
	a.log.Info("stopped")
	return runErr
}

// SetConfigPath names the config file in the start-up line ("" = none).
// Call it before Run.
func (a *App) SetConfigPath(path string) { a.configPath = path }

// logStarted writes the one start-up line: what runs, from which file,
// where it listens.
func (a *App) logStarted() {
	listeners := make([]string, len(a.listeners))
	for i, l := range a.listeners {
		listeners[i] = l.cfg.Addr + " (" + routeLabel(l.cfg.Route) + ")"
	}
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	backends := make([]string, len(cfg.Backends))
	for i, b := range cfg.Backends {
		backends[i] = b.Addr
	}
	httpAddr := a.HTTPAddr()
	if httpAddr == "" {
		httpAddr = "disabled"
	}
	a.log.Info("pgproxy started",
		zap.String("version", buildinfo.Version), zap.String("commit", buildinfo.Commit), zap.String("go_version", buildinfo.GoVersion()),
		zap.String("config", a.configPath), zap.Strings("listeners", listeners), zap.String("http_addr", httpAddr),
		zap.Strings("backends", backends), zap.Int("gomaxprocs", a.gomaxprocs))
}

func (a *App) closeListeners() {
	for _, l := range a.listeners {
		l.ln.Close()
	}
	if a.httpLn != nil {
		a.httpLn.Close()
	}
}

// Reload applies a new configuration without dropping sessions: backends,
// routing, limits for new sessions, lineage settings, masking (new
// sessions get the new rules; every catalog cache is emptied), log level,
// runtime.gomaxprocs. Settings
// that need a restart (listener and HTTP addresses, runtime.event_loops,
// auth.mode, pool.mode: see configs.Config.RestartRequired) are reported
// and left as they are.
func (a *App) Reload(cfg *configs.Config) ([]string, error) {
	pcfg, err := proxyConfig(cfg)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	old := a.cfg
	a.mu.Unlock()
	restart := cfg.RestartRequired(old)
	if old.Auth.Mode == configs.AuthProxy {
		// auth.mode needs a restart: a proxy that pools keeps pooling, with
		// auth.file re-read.
		if err := a.auth.load(cfg); err != nil {
			return nil, err
		}
		a.withAuth(&pcfg, cfg, true)
	}
	// Lineage first: building the new emitter can fail (catalog file), and
	// then nothing has changed yet.
	if !reflect.DeepEqual(cfg.Lineage, old.Lineage) {
		if err := a.lineage.set(lineageConfig(cfg)); err != nil {
			return nil, fmt.Errorf("lineage: %w", err)
		}
	}
	// Masking is built before anything changes too (a bad catalog file
	// fails the reload), put in force with the rest.
	maskPolicy, err := maskingPolicy(cfg)
	if err != nil {
		return nil, err
	}
	if err := a.monitor.Update(healthConfig(cfg)); err != nil {
		return nil, err
	}
	a.router.SetConfig(routerConfig(cfg))
	pcfg.Lineage = a.lineage.sink()
	a.masking.store(cfg, maskPolicy)
	a.masking.wire(&pcfg)
	pcfg.Admin = a.admin
	a.server.SetConfig(pcfg)
	a.director.cfg.Store(cfg)
	if lvl, err := zap.ParseAtomicLevel(cfg.Log.Level); err == nil && a.level != (zap.AtomicLevel{}) {
		a.level.SetLevel(lvl.Level())
	}
	if cfg.Runtime.GOMAXPROCS != old.Runtime.GOMAXPROCS {
		a.log.Info("runtime.gomaxprocs", zap.Int("gomaxprocs", applyGOMAXPROCS(cfg.Runtime.GOMAXPROCS)))
	}
	a.mu.Lock()
	a.cfg = cfg
	a.mu.Unlock()
	a.log.Info("configuration reloaded", zap.Int("backends", len(cfg.Backends)), zap.Strings("needs_restart", restart))
	return restart, nil
}

// Config is the configuration in force.
func (a *App) Config() *configs.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

func routeLabel(r string) string {
	if r == "" {
		return "rules"
	}
	return r
}

func backendAddrs(cfg *configs.Config) []string {
	out := make([]string, len(cfg.Backends))
	for i, b := range cfg.Backends {
		out[i] = b.Addr
	}
	return out
}

func healthConfig(cfg *configs.Config) health.Config {
	return health.Config{
		Backends: backendAddrs(cfg),
		Interval: cfg.Health.Interval, Timeout: cfg.Health.Timeout,
		User: cfg.Health.User, Password: cfg.Health.Password, Database: cfg.Health.Database,
		MaxLag: cfg.Routing.MaxLag, MaxLagBytes: cfg.Routing.MaxLagBytes,
	}
}

func proxyConfig(cfg *configs.Config) (proxy.Config, error) {
	pc := proxy.Config{
		MaxSessions:    cfg.Limits.MaxSessions,
		StartupTimeout: cfg.Limits.StartupTimeout,
		Backends:       backendAddrs(cfg),
		ReadOnlyCheck:  sqlscan.ReadOnlyViolation,
		AdminUsers:     cfg.Admin.Users,
		RelayLoops:     cfg.Runtime.EventLoops,
	}
	if cfg.TLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return pc, fmt.Errorf("tls: %w", err)
		}
		pc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	pc.BackendTLS.Mode = cfg.BackendTLS.Mode
	if cfg.BackendTLS.CA != "" {
		pem, err := os.ReadFile(cfg.BackendTLS.CA)
		if err != nil {
			return pc, fmt.Errorf("backend_tls.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return pc, fmt.Errorf("backend_tls.ca: no PEM certificate in %s", cfg.BackendTLS.CA)
		}
		pc.BackendTLS.Config = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return pc, nil
}

func lineageConfig(cfg *configs.Config) lineage.Config {
	l := cfg.Lineage
	return lineage.Config{
		Enabled: l.Enabled, JobNamespace: l.JobNamespace, DatasetNamespace: l.DatasetNamespace,
		CatalogPath: l.Catalog, NormalizeSQL: l.NormalizeSQL,
		Transport: lineage.TransportConfig{
			Type: l.Transport.Type, URL: l.Transport.URL, APIKey: l.Transport.APIKey,
			Path: l.Transport.Path, Queue: l.Transport.Queue, Timeout: l.Transport.Timeout,
		},
	}
}
