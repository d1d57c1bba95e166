package health

import (
	"fmt"
	"time"
)

// Role is what a backend reported itself to be.
type Role int

// Roles.
const (
	RoleUnknown Role = iota // never probed successfully
	RolePrimary             // not in recovery
	RoleReplica             // in recovery
)

var roleNames = [...]string{"unknown", "primary", "replica"}

// String returns "unknown", "primary" or "replica".
func (r Role) String() string {
	if r < 0 || int(r) >= len(roleNames) {
		return fmt.Sprintf("role(%d)", int(r))
	}
	return roleNames[r]
}

// MarshalText makes Role a JSON string.
func (r Role) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// State is the routing-relevant state of a backend.
type State int

// States.
const (
	StateDown    State = iota // the last probe failed, or no probe yet
	StateUp                   // serves sessions of its role
	StateLagging              // replica beyond the lag limits (hysteresis applies)
	StateFenced               // a primary that must not get sessions
)

var stateNames = [...]string{"down", "up", "lagging", "fenced"}

// String returns "down", "up", "lagging" or "fenced".
func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("state(%d)", int(s))
	}
	return stateNames[s]
}

// MarshalText makes State a JSON string.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Snapshot is the monitor's view of every backend at one moment. It is
// immutable once published: never modify a Snapshot or its Backends.
type Snapshot struct {
	// Taken is when the snapshot was computed (local clock).
	Taken time.Time `json:"taken"`
	// Interval is the probe interval in force (the granularity of lag seconds).
	Interval time.Duration `json:"interval_ns"`
	// Backends in configuration order.
	Backends []Backend `json:"backends"`
	// PrimaryIndex is the index in Backends of the primary that takes
	// writes (role primary, state up), or -1 when there is none.
	PrimaryIndex int `json:"primary_index"`
}

// Primary returns the current primary, or nil.
func (s *Snapshot) Primary() *Backend {
	if s == nil || s.PrimaryIndex < 0 || s.PrimaryIndex >= len(s.Backends) {
		return nil
	}
	return &s.Backends[s.PrimaryIndex]
}

// Backend returns the backend with addr, or nil.
func (s *Snapshot) Backend(addr string) *Backend {
	if s == nil {
		return nil
	}
	for i := range s.Backends {
		if s.Backends[i].Addr == addr {
			return &s.Backends[i]
		}
	}
	return nil
}

// Backend is one backend in a Snapshot.
type Backend struct {
	// Addr is the configured host:port.
	Addr string `json:"addr"`
	// Role as discovered by the last successful probe (kept while down).
	Role Role `json:"role"`
	// State decides whether the router may use the backend.
	State State `json:"state"`
	// Reason explains State (e.g. "lag 12.3s > 5s", "connection refused").
	Reason string `json:"reason"`
	// Since is when State last changed.
	Since time.Time `json:"since"`
	// LagSeconds is the replica's staleness on the proxy's clock; LagBytes
	// the primary LSN minus the replay LSN. Zero for primaries.
	LagSeconds float64 `json:"lag_seconds"`
	LagBytes   int64   `json:"lag_bytes"`
	// LagKnown is false when the lag could not be measured at the last probe
	// (no primary up, or never measured): LagSeconds/LagBytes then hold the
	// last known values.
	LagKnown bool `json:"lag_known"`
	// ReplayPaused reports pg_get_wal_replay_pause_state() <> 'not paused'.
	ReplayPaused bool `json:"replay_paused"`
	// Streaming reports a WAL receiver in status "streaming".
	Streaming bool `json:"streaming"`
	// Timeline of the primary's WAL insert position, or the timeline the
	// replica receives (0 when unknown).
	Timeline int `json:"timeline"`
	// LSN is the current WAL position (primary) or the replay position (replica).
	LSN int64 `json:"lsn"`
	// LastError is the error of the last failed probe ("" after a success).
	LastError string `json:"last_error,omitempty"`
	// LastProbe is when the last probe (successful or not) finished.
	LastProbe time.Time `json:"last_probe"`
	// Probes and ProbeFailures count probes since the backend was added.
	Probes        uint64 `json:"probes"`
	ProbeFailures uint64 `json:"probe_failures"`
}

// Usable reports whether the backend may take new sessions of its role.
func (b *Backend) Usable() bool { return b.State == StateUp }
