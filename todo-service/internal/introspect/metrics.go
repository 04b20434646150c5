package introspect

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the result label of todo_introspect_requests_total.
const (
	resultActive   = "active"   // the auth service reported the token active and every local check passed
	resultInactive = "inactive" // the auth service reported the token inactive
	resultRejected = "rejected" // rejected by a local check, with or without a call
	resultError    = "error"    // the call failed or the response was malformed
)

// metrics are the Prometheus collectors of one Verifier.
type metrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "todo_introspect_requests_total",
			Help: "Token checks in introspect mode, by result: active, inactive, rejected, error.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "todo_introspect_call_duration_seconds",
			Help:    "Duration of IntrospectToken calls to the auth service, failed calls included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms to about 4 s
		}),
	}

	// Create every labelled series up front so that rate() and alerts see
	// zeros instead of missing series.
	for _, result := range []string{resultActive, resultInactive, resultRejected, resultError} {
		m.requests.WithLabelValues(result)
	}
	return m
}

// register registers every collector with reg, or none of them.
func (m *metrics) register(reg prometheus.Registerer) error {
	if err := reg.Register(m.requests); err != nil {
		return fmt.Errorf("introspect: register metrics: %w", err)
	}
	if err := reg.Register(m.duration); err != nil {
		reg.Unregister(m.requests)
		return fmt.Errorf("introspect: register metrics: %w", err)
	}
	return nil
}
