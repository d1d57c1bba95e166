package health

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Monitor probes every backend and publishes snapshots. Snapshot and
// WaitReady are safe for concurrent use from any goroutine; Update may be
// called concurrently with Run.
type Monitor struct {
	log  *zap.Logger
	cfg  atomic.Pointer[Config]
	snap atomic.Pointer[Snapshot]

	ready     chan struct{} // closed once a primary has been seen
	readyOnce sync.Once

	mu      sync.Mutex // guards the fields below
	tr      *tracker
	ran     bool
	running bool
	runCtx  context.Context
	probers map[string]context.CancelFunc
	wg      sync.WaitGroup
}

// NewMonitor validates cfg and returns a monitor whose Snapshot lists every
// backend as down ("not probed yet") until Run probes them. When reg is not
// nil the backend metrics are registered on it.
func NewMonitor(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Monitor, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	m := &Monitor{
		log:     log,
		ready:   make(chan struct{}),
		probers: map[string]context.CancelFunc{},
	}
	m.cfg.Store(&c)
	now := time.Now()
	m.tr = newTracker(c, log, now)
	m.snap.Store(m.tr.snapshot(now))
	if reg != nil {
		if err := reg.Register(newCollector(m)); err != nil {
			return nil, fmt.Errorf("health: register metrics: %w", err)
		}
	}
	return m, nil
}

// Snapshot returns the latest snapshot; never nil. The caller must not
// modify it.
func (m *Monitor) Snapshot() *Snapshot { return m.snap.Load() }

// Run starts one probing goroutine per backend and returns nil once ctx is
// done and every goroutine has stopped (monitoring connections closed). It
// may be called only once.
func (m *Monitor) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.ran {
		m.mu.Unlock()
		return errors.New("health: Monitor.Run called twice")
	}
	m.ran, m.running, m.runCtx = true, true, ctx
	for _, a := range m.cfg.Load().Backends {
		m.startProber(a)
	}
	m.mu.Unlock()

	<-ctx.Done()

	m.mu.Lock()
	m.running = false
	for a, cancel := range m.probers {
		cancel()
		delete(m.probers, a)
	}
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}

// startProber starts the goroutine of one backend. m.mu must be held and
// the monitor running.
func (m *Monitor) startProber(addr string) {
	ctx, cancel := context.WithCancel(m.runCtx)
	m.probers[addr] = cancel
	p := &prober{addr: addr, observe: m.observe, config: m.cfg.Load}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer cancel()
		p.run(ctx)
	}()
}

// observe applies one probe result and publishes a new snapshot.
func (m *Monitor) observe(o observation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tr.observe(o)
	m.publish(time.Now())
}

// publish stores a new snapshot. m.mu must be held.
func (m *Monitor) publish(now time.Time) {
	s := m.tr.snapshot(now)
	m.snap.Store(s)
	if s.PrimaryIndex >= 0 {
		m.readyOnce.Do(func() { close(m.ready) })
	}
}

// Update applies a new configuration (hot reload): probers start for added
// backends and stop for removed ones, limits and intervals apply from the
// next probe, a changed login reconnects. An invalid cfg is refused and the
// monitor keeps its current configuration.
func (m *Monitor) Update(cfg Config) error {
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg.Store(&c)
	now := time.Now()
	m.tr.setConfig(c, now)
	if m.running {
		want := make(map[string]bool, len(c.Backends))
		for _, a := range c.Backends {
			want[a] = true
			if m.probers[a] == nil {
				m.startProber(a)
			}
		}
		for a, cancel := range m.probers {
			if !want[a] {
				cancel()
				delete(m.probers, a)
			}
		}
	}
	m.publish(now)
	m.log.Info("health config updated", zap.Strings("backends", c.Backends), zap.Float64("interval_s", c.Interval.Seconds()),
		zap.Float64("max_lag_s", c.MaxLag.Seconds()), zap.Int64("max_lag_bytes", c.MaxLagBytes))
	return nil
}

// WaitReady returns nil once a primary has been seen (for /readyz), or
// ctx's error.
func (m *Monitor) WaitReady(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("health: no primary seen yet: %w", ctx.Err())
	}
}

// Ready reports without blocking whether a primary has been seen.
func (m *Monitor) Ready() bool {
	select {
	case <-m.ready:
		return true
	default:
		return false
	}
}
