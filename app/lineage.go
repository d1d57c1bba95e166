package app

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/lineage"
	"github.com/ofitec/pgproxy/proxy"
)

// lineageHolder owns the current lineage emitter and its worker. Hot reload
// replaces the emitter: the new one starts, every session (old and new)
// sends its next tagged statement to it, and the old one flushes its queue
// and stops. All methods are safe for concurrent use.
type lineageHolder struct {
	log *zap.Logger
	reg *swapRegisterer
	cur atomic.Pointer[lineage.Emitter]

	mu      sync.Mutex
	ctx     context.Context // set by start; nil before Run
	workers sync.WaitGroup
}

func newLineageHolder(log *zap.Logger, reg prometheus.Registerer) *lineageHolder {
	return &lineageHolder{log: log, reg: &swapRegisterer{Registerer: reg}}
}

// set builds the emitter for cfg (nil when lineage is disabled) and makes it
// current; the previous one is flushed and stopped in the background.
func (h *lineageHolder) set(cfg lineage.Config) error {
	var next *lineage.Emitter
	if cfg.Enabled {
		var err error
		if next, err = lineage.NewEmitter(cfg, h.log, h.reg); err != nil {
			return err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.cur.Swap(next)
	if h.ctx != nil {
		h.runLocked(next)
		if old != nil {
			h.workers.Add(1)
			go func() {
				defer h.workers.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := old.Close(ctx); err != nil {
					h.log.Warn("previous lineage emitter: flush incomplete", zap.Error(err))
				}
			}()
		}
	}
	return nil
}

// start runs the current emitter's worker until stop.
func (h *lineageHolder) start(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ctx = ctx
	h.runLocked(h.cur.Load())
}

func (h *lineageHolder) runLocked(e *lineage.Emitter) {
	if e == nil {
		return
	}
	h.workers.Add(1)
	go func() {
		defer h.workers.Done()
		if err := e.Run(h.ctx); err != nil && !errors.Is(err, context.Canceled) {
			h.log.Error("lineage worker stopped", zap.Error(err))
		}
	}()
}

// stop flushes the current emitter within ctx and waits for every worker.
func (h *lineageHolder) stop(ctx context.Context) {
	if e := h.cur.Load(); e != nil {
		if err := e.Close(ctx); err != nil {
			h.log.Warn("lineage flush incomplete", zap.Error(err))
		}
	}
	h.workers.Wait()
}

// sink returns the proxy's hook, or nil while lineage is disabled (sessions
// then pay nothing for it).
func (h *lineageHolder) sink() proxy.LineageSink {
	if h.cur.Load() == nil {
		return nil
	}
	return lineageSink{h}
}

// lineageSink adapts the current *lineage.Emitter to proxy.LineageSink.
type lineageSink struct{ h *lineageHolder }

func (l lineageSink) Tagged(sql []byte) bool { return lineage.HasTag(sql) }

func (l lineageSink) Begin(info proxy.LineageSession, sql string) proxy.LineageRun {
	e := l.h.cur.Load()
	if e == nil {
		return nil
	}
	tags, ok := lineage.ParseTags(sql)
	if !ok && info.Job == "" {
		return nil
	}
	run := e.Start(lineage.SessionInfo{
		Database: info.Database, User: info.User, ApplicationName: info.ApplicationName,
		ServerVersion: info.ServerVersion, SessionJob: info.Job,
	}, sql, tags)
	if run == nil {
		return nil
	}
	return run
}

// swapRegisterer registers collectors on the real registry, replacing a
// previously registered collector with the same metric descriptors: a
// reloaded emitter takes over the lineage metrics (its counters restart
// from zero, which Prometheus' rate() treats as a reset).
type swapRegisterer struct {
	prometheus.Registerer
	mu     sync.Mutex
	byDesc map[string]prometheus.Collector
}

func descIDs(c prometheus.Collector) []string {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	var ids []string
	for d := range ch {
		ids = append(ids, d.String())
	}
	return ids
}

func (s *swapRegisterer) Register(c prometheus.Collector) error {
	ids := descIDs(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byDesc == nil {
		s.byDesc = make(map[string]prometheus.Collector)
	}
	for _, id := range ids {
		if old, ok := s.byDesc[id]; ok {
			s.Registerer.Unregister(old)
			for k, v := range s.byDesc {
				if v == old {
					delete(s.byDesc, k)
				}
			}
		}
	}
	if err := s.Registerer.Register(c); err != nil {
		return err
	}
	for _, id := range ids {
		s.byDesc[id] = c
	}
	return nil
}

func (s *swapRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := s.Register(c); err != nil {
			panic(err)
		}
	}
}
