package tokencache

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the reason label of todo_token_cache_evictions_total.
const (
	reasonCapacity   = "capacity"    // the shard was full
	reasonExpired    = "expired"     // the token's exp has passed
	reasonKeyChanged = "key_changed" // the kid no longer resolves to the recorded key
)

// metrics are the Prometheus collectors of one Cache.
type metrics struct {
	hits      prometheus.Counter
	misses    prometheus.Counter
	evictions *prometheus.CounterVec
	entries   prometheus.GaugeFunc
}

func newMetrics(c *Cache) *metrics {
	m := &metrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "todo_token_cache_hits_total",
			Help: "Token verifications served from the verified-token cache.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "todo_token_cache_misses_total",
			Help: "Token verifications passed to the full verifier, whatever their result.",
		}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "todo_token_cache_evictions_total",
			Help: "Entries dropped from the verified-token cache, by reason: capacity, expired, key_changed.",
		}, []string{"reason"}),
		entries: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "todo_token_cache_entries",
			Help: "Tokens held in the verified-token cache.",
		}, func() float64 {
			return float64(c.Len())
		}),
	}

	// Create every labelled series up front so that rate() and alerts see
	// zeros instead of missing series.
	for _, reason := range []string{reasonCapacity, reasonExpired, reasonKeyChanged} {
		m.evictions.WithLabelValues(reason)
	}
	return m
}

// register registers every collector with reg, or none of them.
func (m *metrics) register(reg prometheus.Registerer) error {
	collectors := []prometheus.Collector{m.hits, m.misses, m.evictions, m.entries}
	for i, collector := range collectors {
		if err := reg.Register(collector); err != nil {
			for _, registered := range collectors[:i] {
				reg.Unregister(registered)
			}
			return fmt.Errorf("tokencache: register metrics: %w", err)
		}
	}
	return nil
}
