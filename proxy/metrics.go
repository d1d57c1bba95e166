package proxy

import (
	"time"

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
	consWait        prometheus.Histogram
	consFallback    prometheus.Counter
	routedTx        *prometheus.CounterVec
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
		consWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pgproxy_consistency_waits_seconds", Help: "Time a read routed per transaction waited for a replica to reach its LSN floor (reads no replica was known to have reached), until it did or routing.consistency_wait passed.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}),
		consFallback: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgproxy_consistency_fallbacks_total", Help: "Reads routed per transaction that ran on the primary because no replica reached their LSN floor within routing.consistency_wait (or the floor could not be known).",
		}),
		routedTx: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgproxy_transactions_routed_total", Help: "Transactions routed per transaction (routing.unit: transaction), by target: replica, primary (writes), primary_fallback (a read no replica could serve at its LSN floor), primary_no_replica (a read with no replica fit, routing.fallback: primary), rejected (the same with routing.fallback: reject: 57P03).",
		}, []string{"target"}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.sessionsTotal, m.bytes, m.duration, m.connectTime, m.rejected, m.cancels, m.poolWait, m.poolPins,
			m.maskedValues, m.maskingRefusals, m.consWait, m.consFallback, m.routedTx)
	}
	return m
}

func (m *Metrics) routed(target string) {
	if m != nil {
		m.routedTx.WithLabelValues(target).Inc()
	}
}

func (m *Metrics) consistencyWait(d time.Duration) {
	if m != nil {
		m.consWait.Observe(d.Seconds())
	}
}

func (m *Metrics) consistencyFallback() {
	if m != nil {
		m.consFallback.Inc()
	}
}
