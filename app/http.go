package app

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ofitec/pgproxy/internal/buildinfo"
)

// httpHandler serves /metrics, /livez, /readyz and /status.
func (a *App) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case a.server.Draining():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case !a.monitor.Ready():
			http.Error(w, "no primary seen yet", http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ready\n"))
		}
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.Status())
	})
	return mux
}

// Status is the /status document.
type Status struct {
	Version  string          `json:"version"`
	Draining bool            `json:"draining"`
	Sessions int             `json:"sessions"`
	Taken    time.Time       `json:"snapshot_taken"`
	Backends []BackendStatus `json:"backends"`
}

// BackendStatus is one backend in /status.
type BackendStatus struct {
	Addr       string    `json:"addr"`
	Role       string    `json:"role"`
	State      string    `json:"state"`
	Reason     string    `json:"reason,omitempty"`
	Since      time.Time `json:"since"`
	LagSeconds *float64  `json:"lag_seconds"`
	LagBytes   *int64    `json:"lag_bytes"`
	LastError  string    `json:"last_probe_error,omitempty"`
	LastProbe  time.Time `json:"last_probe"`
	Sessions   int       `json:"sessions"`
	Paused     bool      `json:"paused"` // PAUSEd in the admin console: no new sessions
}

// Status reports every backend as the latest health snapshot has it.
func (a *App) Status() Status {
	snap := a.monitor.Snapshot()
	st := Status{Version: buildinfo.Version, Draining: a.server.Draining(), Sessions: a.server.SessionCount(), Taken: snap.Taken}
	for _, b := range snap.Backends {
		bs := BackendStatus{
			Addr: b.Addr, Role: b.Role.String(), State: b.State.String(), Reason: b.Reason, Since: b.Since,
			LastError: b.LastError, LastProbe: b.LastProbe, Sessions: a.router.Sessions(b.Addr),
			Paused: a.director.isPaused(b.Addr),
		}
		if b.LagKnown {
			s, by := b.LagSeconds, b.LagBytes
			bs.LagSeconds, bs.LagBytes = &s, &by
		}
		st.Backends = append(st.Backends, bs)
	}
	return st
}
