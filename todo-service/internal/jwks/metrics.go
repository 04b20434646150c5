package jwks

import (
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Prometheus collectors of one Cache.
type metrics struct {
	fetches             *prometheus.CounterVec
	keysRejected        *prometheus.CounterVec
	unknownKIDLookups   prometheus.Counter
	refetchesSuppressed prometheus.Counter
	persistErrors       *prometheus.CounterVec
	keySetAge           prometheus.GaugeFunc
	keySetReady         prometheus.GaugeFunc
	keys                prometheus.GaugeFunc

	registerer prometheus.Registerer // nil until register succeeds
}

func newMetrics(c *Cache) *metrics {
	m := &metrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "todo_jwks_fetches_total",
			Help: "JWKS fetches by outcome: ok, network_error, timeout, redirect_rejected, status, too_large, invalid_body, empty_set, no_usable_key, too_many_keys, canceled.",
		}, []string{"outcome"}),
		keysRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "todo_jwks_keys_rejected_total",
			Help: "Keys ignored in fetched or persisted key sets, by reason.",
		}, []string{"reason"}),
		unknownKIDLookups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "todo_jwks_unknown_kid_lookups_total",
			Help: "Key lookups for a kid that was not in the key set.",
		}),
		refetchesSuppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "todo_jwks_unknown_kid_refetches_suppressed_total",
			Help: "Unknown-kid lookups that started no fetch because of the cooldown.",
		}),
		persistErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "todo_jwks_persist_errors_total",
			Help: "Failed loads and saves of the persisted key set, by operation.",
		}, []string{"operation"}),
		keySetAge: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "todo_jwks_key_set_age_seconds",
			Help: "Seconds since the key set in use was fetched; NaN before any key set is loaded.",
		}, func() float64 {
			set := c.set.Load()
			if set == nil {
				return math.NaN()
			}
			return c.now().Sub(set.fetchedAt).Seconds()
		}),
		keySetReady: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "todo_jwks_key_set_ready",
			Help: "1 when a key set is loaded and not older than the max stale age, else 0.",
		}, func() float64 {
			if c.Ready() {
				return 1
			}
			return 0
		}),
		keys: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "todo_jwks_keys",
			Help: "Number of keys in the key set in use.",
		}, func() float64 {
			set := c.set.Load()
			if set == nil {
				return 0
			}
			return float64(len(set.keys))
		}),
	}

	// Create every labelled series up front so that rate() and alerts see
	// zeros instead of missing series.
	for _, outcome := range fetchOutcomes {
		m.fetches.WithLabelValues(outcome)
	}
	for _, reason := range rejectReasons {
		m.keysRejected.WithLabelValues(reason)
	}
	for _, operation := range []string{"load", "save"} {
		m.persistErrors.WithLabelValues(operation)
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.fetches, m.keysRejected, m.unknownKIDLookups, m.refetchesSuppressed,
		m.persistErrors, m.keySetAge, m.keySetReady, m.keys,
	}
}

// register registers every collector with reg, or none of them.
func (m *metrics) register(reg prometheus.Registerer) error {
	var done []prometheus.Collector
	for _, collector := range m.collectors() {
		if err := reg.Register(collector); err != nil {
			for _, registered := range done {
				reg.Unregister(registered)
			}
			return fmt.Errorf("failed to register jwks metrics: %w", err)
		}
		done = append(done, collector)
	}
	m.registerer = reg
	return nil
}

func (m *metrics) unregister() {
	if m.registerer == nil {
		return
	}
	for _, collector := range m.collectors() {
		m.registerer.Unregister(collector)
	}
	m.registerer = nil
}
