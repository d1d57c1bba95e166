// Package proxytest runs a complete pgproxy (app: health monitor,
// router, proxy, HTTP endpoints) in front of a pgcluster.Cluster, for
// integration tests. The configuration is built the way operators build it
// (configs.Load over YAML and environment), then adjusted by the test.
package proxytest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ofitec/pgproxy/app"
	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

// Proxy is a running pgproxy.
type Proxy struct {
	App    *app.App
	Config *configs.Config
	Logs   *observer.ObservedLogs // every log entry at debug and above
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// Options adjust the generated configuration.
type Options struct {
	// YAML is appended to the generated config file (e.g. "routing:\n  max_lag: 2s\n").
	// Keys it sets must not be set by the generated part (listen, backends,
	// health, http); use Mutate for those.
	YAML string
	// Mutate changes the loaded config before the proxy starts.
	Mutate func(*configs.Config)
	// Env adds environment variables (KEY=value) to the config load.
	Env []string
	// NoWait skips waiting for a primary to be seen.
	NoWait bool
}

// Start runs pgproxy with a write listener, a read listener and HTTP on free
// loopback ports, backends = every node of c, health.interval 250ms, and
// stops it when the test ends.
func Start(t testing.TB, c *pgcluster.Cluster, opts *Options) *Proxy {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	var backends []string
	for _, a := range c.Addrs() {
		backends = append(backends, "  - addr: "+a)
	}
	yaml := fmt.Sprintf(`listen:
  - addr: 127.0.0.1:0
  - addr: 127.0.0.1:0
    route: read
backends:
%s
health:
  interval: 250ms
  timeout: 1s
  user: %s
http:
  addr: 127.0.0.1:0
limits:
  drain_timeout: 2s
%s`, strings.Join(backends, "\n"), pgcluster.MonitorUser, opts.YAML)
	env := append([]string{"PGPROXY_HEALTH_PASSWORD=" + pgcluster.MonitorPassword}, opts.Env...)
	if mode := PoolMode(); mode != "" && !setsAuth(opts.YAML) {
		yaml += pooledYAML(t, c, mode)
		env = append(env, "PGPROXY_AUTH_PASSWORD="+PostgresPassword)
	}
	path := filepath.Join(t.TempDir(), "pgproxy.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(configs.LoadOptions{Path: path, Environ: env})
	if err != nil {
		t.Fatalf("proxytest: config: %v\n%s", err, yaml)
	}
	if opts.Mutate != nil {
		opts.Mutate(cfg)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(zapcore.NewTee(core, testCore(t)))
	a, err := app.New(cfg, log, nil)
	if err != nil {
		t.Fatalf("proxytest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{App: a, Config: cfg, Logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- a.Run(ctx) }()
	t.Cleanup(p.Stop)
	if !opts.NoWait {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		if err := a.Monitor().WaitReady(wctx); err != nil {
			t.Fatalf("proxytest: no primary seen: %v", err)
		}
		// Let every backend be probed at least once so replicas are in rotation.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			snap := a.Monitor().Snapshot()
			up := 0
			for _, b := range snap.Backends {
				if b.State.String() == "up" {
					up++
				}
			}
			if up == len(c.Nodes()) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return p
}

// Stop drains and stops the proxy (idempotent; also run at test cleanup).
func (p *Proxy) Stop() {
	p.once.Do(func() {
		p.cancel()
		<-p.done
	})
}

// WriteAddr is the write (rules) listener.
func (p *Proxy) WriteAddr() string { return p.App.ListenAddrs()[0] }

// ReadAddr is the read listener.
func (p *Proxy) ReadAddr() string { return p.App.ListenAddrs()[1] }

// HTTPAddr is the /metrics /status address.
func (p *Proxy) HTTPAddr() string { return p.App.HTTPAddr() }

// DSN is a URL for user on database db through the listener at addr. In a
// pooled run (PoolMode) it carries the user's password when the harness
// knows it (Password): the proxy, not the backend, authenticates then.
func DSN(addr, user, db string) string {
	u := url.User(user)
	if pw := Password(user); pw != "" && PoolMode() != "" {
		u = url.UserPassword(user, pw)
	}
	return fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", u.String(), addr, db)
}

// Get fetches an HTTP endpoint of the proxy ("/metrics").
func (p *Proxy) Get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.HTTPAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func testCore(t testing.TB) zapcore.Core {
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	return zapcore.NewCore(enc, zapcore.AddSync(testWriter{t}), zapcore.InfoLevel)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
