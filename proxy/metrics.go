package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the proxy's session and traffic metrics. Counters are updated
// once per session (at start and end), never per message.
type Metrics struct {
	sessions      *prometheus.GaugeVec
	sessionsTotal *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	connectTime   *prometheus.HistogramVec
	rejected      *prometheus.CounterVec
	cancels       *prometheus.CounterVec
	poolWait      prometheus.Histogram
	poolPins      *prometheus.CounterVec
	// masking (policy_masking.go): per masked value and per refusal
	maskedValues    *prometheus.CounterVec
	maskingRefusals *prometheus.CounterVec
}

// NewMetrics registers the proxy's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgproxy_client_sessions", Help: "Open client sessions by listener and route.",
		}, []string{"listener", "route"}),
		sessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgproxy_sessions_total", Help: "Client sessions ended, by listener, route and end reason.",
		}, []string{"listener", "route", "reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgproxy_bytes_total", Help: "Bytes relayed, by direction (client_to_server, server_to_client).",
		}, []string{"direction"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pgproxy_session_duration_seconds", Help: "Duration of client sessions.",
			Buckets: []float64{0.01, 0.1, 1, 10, 60, 600, 3600, 6 * 3600},
		}, []string{"route"}),
		connectTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pgproxy_backend_connect_seconds", Help: "Time to connect and authenticate a session at a backend.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"backend"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgproxy_rejected_sessions_total", Help: "Client connections refused before reaching a backend, by SQLSTATE.",
		}, []string{"sqlstate"}),
		cancels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgproxy_cancel_requests_total", Help: "CancelRequests received, by result (forwarded, broadcast, failed).",
		}, []string{"result"}),
		poolWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pgproxy_pool_wait_seconds", Help: "Time a pooled client waited for a server connection.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		poolPins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgproxy_pool_pins_total", Help: "Transaction-mode clients pinned to their server for the rest of their session, by reason.",
		}, []string{"reason"}),
		maskedValues: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgproxy_masked_values_total", Help: "Values rewritten by masking.rules, by column (schema.table.column).",
		}, []string{"column"}),
		maskingRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgproxy_masking_refusals_total", Help: "Statements of masked sessions refused with 42501, by reason (where, expression, function, copy, ...).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.sessionsTotal, m.bytes, m.duration, m.connectTime, m.rejected, m.cancels, m.poolWait, m.poolPins,
			m.maskedValues, m.maskingRefusals)
	}
	return m
}
