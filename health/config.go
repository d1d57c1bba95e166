package health

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"
)

// Defaults applied by NewMonitor and Update to zero fields.
const (
	DefaultInterval = 500 * time.Millisecond
	DefaultTimeout  = time.Second
	DefaultDatabase = "postgres"
)

// Config configures a Monitor. The zero value of a field means its default.
type Config struct {
	// Backends are the host:port of every server of the cluster, in the
	// order the snapshot lists them. Roles are discovered.
	Backends []string
	// Interval between two probes of one backend (default 500ms).
	Interval time.Duration
	// Timeout bounds one probe, reconnect included (default 1s).
	Timeout time.Duration
	// User, Password and Database of the monitoring login (a role with
	// pg_monitor). Database defaults to "postgres". Password is never logged.
	User, Password, Database string
	// MaxLag: a replica whose staleness goes above it becomes lagging; it is
	// up again once below MaxLag/2. 0 = no limit on seconds.
	MaxLag time.Duration
	// MaxLagBytes: the same for the byte lag. 0 = no limit on bytes.
	MaxLagBytes int64
	// TLS for the monitoring connections; nil = no TLS.
	TLS *tls.Config
}

// withDefaults returns a copy of c with defaults applied, validated.
func (c Config) withDefaults() (Config, error) {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Database == "" {
		c.Database = DefaultDatabase
	}
	c.Backends = slices.Clone(c.Backends)
	var errs []error
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval %v must be positive", c.Interval))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v must be positive", c.Timeout))
	}
	if c.MaxLag < 0 {
		errs = append(errs, fmt.Errorf("max_lag %v must not be negative", c.MaxLag))
	}
	if c.MaxLagBytes < 0 {
		errs = append(errs, fmt.Errorf("max_lag_bytes %d must not be negative", c.MaxLagBytes))
	}
	seen := make(map[string]bool, len(c.Backends))
	for _, a := range c.Backends {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("backend %q: %w", a, err))
		}
		if seen[a] {
			errs = append(errs, fmt.Errorf("backend %q listed twice", a))
		}
		seen[a] = true
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("health config: %w", err)
	}
	return c, nil
}

// sameLogin reports whether connections made with a are valid for b.
func sameLogin(a, b *Config) bool {
	return a.User == b.User && a.Password == b.Password && a.Database == b.Database && a.TLS == b.TLS
}

// limits are the parts of Config the state machine needs.
type limits struct {
	interval    time.Duration
	maxLag      time.Duration
	maxLagBytes int64
}

func (c *Config) limits() limits {
	return limits{interval: c.Interval, maxLag: c.MaxLag, maxLagBytes: c.MaxLagBytes}
}

// historyWindow is how long primary samples are kept.
func (l limits) historyWindow() time.Duration {
	w := 60 * time.Second
	if 4*l.maxLag > w {
		w = 4 * l.maxLag
	}
	if 8*l.interval > w {
		w = 8 * l.interval
	}
	return w
}
