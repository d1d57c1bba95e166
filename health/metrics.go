package health

import "github.com/prometheus/client_golang/prometheus"

// collector exports the latest snapshot on every scrape, so a removed
// backend leaves no stale series.
type collector struct {
	m                           *Monitor
	up, role, state, lagS, lagB *prometheus.Desc
	probes                      *prometheus.Desc
}

func newCollector(m *Monitor) *collector {
	return &collector{
		m: m,
		up: prometheus.NewDesc("pgproxy_backend_up",
			"1 when the last health probe of the backend succeeded (state up, lagging or fenced), 0 when down.",
			[]string{"backend"}, nil),
		role: prometheus.NewDesc("pgproxy_backend_role",
			"1 for the role the backend reported at its last successful probe (primary, replica, unknown).",
			[]string{"backend", "role"}, nil),
		state: prometheus.NewDesc("pgproxy_backend_state",
			"1 for the backend's current routing state (up, lagging, down, fenced).",
			[]string{"backend", "state"}, nil),
		lagS: prometheus.NewDesc("pgproxy_replica_lag_seconds",
			"Replica staleness measured on the proxy's clock against the primary's WAL position history.",
			[]string{"backend"}, nil),
		lagB: prometheus.NewDesc("pgproxy_replica_lag_bytes",
			"Primary WAL position minus the replica's replay position.",
			[]string{"backend"}, nil),
		probes: prometheus.NewDesc("pgproxy_health_probes_total",
			"Health probes of the backend by result (ok, error).",
			[]string{"backend", "result"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.role, c.state, c.lagS, c.lagB, c.probes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.m.Snapshot()
	for i := range s.Backends {
		b := &s.Backends[i]
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, boolValue(b.State != StateDown), b.Addr)
		for r := RoleUnknown; r <= RoleReplica; r++ {
			ch <- prometheus.MustNewConstMetric(c.role, prometheus.GaugeValue, boolValue(b.Role == r), b.Addr, r.String())
		}
		for st := StateDown; st <= StateFenced; st++ {
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, boolValue(b.State == st), b.Addr, st.String())
		}
		if b.Role == RoleReplica {
			ch <- prometheus.MustNewConstMetric(c.lagS, prometheus.GaugeValue, b.LagSeconds, b.Addr)
			ch <- prometheus.MustNewConstMetric(c.lagB, prometheus.GaugeValue, float64(b.LagBytes), b.Addr)
		}
		ch <- prometheus.MustNewConstMetric(c.probes, prometheus.CounterValue, float64(b.Probes-b.ProbeFailures), b.Addr, "ok")
		ch <- prometheus.MustNewConstMetric(c.probes, prometheus.CounterValue, float64(b.ProbeFailures), b.Addr, "error")
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
