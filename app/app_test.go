package app

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ofitec/pgproxy/configs"
)

// TestStartupLogs: one line says what started, from which file, where it
// listens (no line per listener); a backend that cannot be reached is a
// warning; the lineage logger is named once ("lineage", not
// "lineage.lineage"). Needs no PostgreSQL: the backend refuses.
func TestStartupLogs(t *testing.T) {
	cfg := configs.Default()
	cfg.Listen = []configs.Listener{{Addr: "127.0.0.1:0"}, {Addr: "127.0.0.1:0", Route: configs.RouteRead}}
	cfg.Backends = []configs.Backend{{Addr: "127.0.0.1:1"}}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Health.Interval = 50 * time.Millisecond
	cfg.Lineage.Enabled = true
	cfg.Lineage.DatasetNamespace = "postgres://db:5432"
	cfg.Lineage.Transport = configs.Transport{Type: configs.TransportFile, Path: filepath.Join(t.TempDir(), "lineage.jsonl"), Queue: 10, Timeout: time.Second}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	a, err := New(cfg, zap.New(core), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.SetConfigPath("/etc/pgproxy/pgproxy.yaml")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for logs.FilterMessage("backend state changed").Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	started := logs.FilterMessage("pgproxy started").All()
	if len(started) != 1 {
		t.Fatalf("%d start-up lines, want 1", len(started))
	}
	m := started[0].ContextMap()
	addrs := a.ListenAddrs()
	want := []any{addrs[0] + " (rules)", addrs[1] + " (read)"}
	if m["config"] != "/etc/pgproxy/pgproxy.yaml" || m["http_addr"] != a.HTTPAddr() || m["version"] == nil ||
		len(m["listeners"].([]any)) != 2 || m["listeners"].([]any)[0] != want[0] || m["listeners"].([]any)[1] != want[1] {
		t.Errorf("start-up line: %v", m)
	}
	if n := logs.FilterMessage("listening").Len(); n != 0 {
		t.Errorf("%d per-listener lines besides the start-up line", n)
	}
	down := logs.FilterMessage("backend state changed").Filter(func(e observer.LoggedEntry) bool { return e.ContextMap()["state"] == "down" }).All()
	if len(down) == 0 || down[0].Level != zapcore.WarnLevel || down[0].LoggerName != "health" {
		t.Errorf("backend down: %v", down)
	}
	for _, e := range logs.All() {
		if strings.Contains(e.LoggerName, "lineage.lineage") {
			t.Errorf("logger named twice: %s (%s)", e.LoggerName, e.Message)
		}
	}
	if l := logs.FilterMessage("lineage enabled").All(); len(l) != 1 || l[0].LoggerName != "lineage" {
		t.Errorf("lineage enabled lines: %v", l)
	}
}
