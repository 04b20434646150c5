package keys

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rotations       *prometheus.CounterVec
	keys            *prometheus.GaugeVec
	refreshFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, signingKeyAge func() time.Duration) (*metrics, error) {
	m := &metrics{
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "auth_signing_key_rotations_total",
			Help: "Signing keys that this replica made current, by reason: scheduled, manual or drop_current.",
		}, []string{"reason"}),
		keys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "auth_signing_keys",
			Help: "Stored signing keys by state (next, current, retired), as of this replica's last load.",
		}, []string{"state"}),
		refreshFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "auth_signing_key_refresh_failures_total",
			Help: "Polls that failed to load the signing keys or perform a due transition.",
		}),
	}
	currentAge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "auth_signing_key_current_age_seconds",
		Help: "Seconds since the key that signs new tokens started signing.",
	}, func() float64 { return signingKeyAge().Seconds() })

	for _, state := range []State{StateNext, StateCurrent, StateRetired} {
		m.keys.WithLabelValues(string(state)).Set(0)
	}
	for _, reason := range []string{"scheduled", "manual", "drop_current"} {
		m.rotations.WithLabelValues(reason)
	}

	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.rotations, m.keys, m.refreshFailures, currentAge} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register signing-key metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) setKeyCounts(records []keyRecord) {
	counts := map[State]int{StateNext: 0, StateCurrent: 0, StateRetired: 0}
	for _, r := range records {
		counts[r.State]++
	}
	for state, n := range counts {
		m.keys.WithLabelValues(string(state)).Set(float64(n))
	}
}
