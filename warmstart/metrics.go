package warmstart

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/metrics"
)

// Metrics are the warm start's families (ours; unscoped, constant label
// router_id; names in metrics/names.go, docs/metrics.md).
type Metrics struct {
	// Total counts warm starts by result (one per start).
	Total *prometheus.CounterVec
	// Events is the number of events the last warm start loaded.
	Events prometheus.Gauge
	// Seconds is how long the last warm start took.
	Seconds prometheus.Gauge
}

// NewMetrics creates the families in m's unscoped scope, or returns those
// created before on the same registry.
func NewMetrics(m *metrics.Router) (*Metrics, error) {
	var b metrics.Builder
	raw := m.Unscoped()
	wm := &Metrics{
		Total: b.CounterVec(raw, metrics.Opts{Name: metrics.NameWarmStartTotal, ConstLabels: m.RouterID(), Labels: []string{metrics.LabelResult},
			Help: "Total number of warm starts of the router's index from a peer's snapshot, by result"}),
		Events: b.Gauge(raw, metrics.Opts{Name: metrics.NameWarmStartEvents, ConstLabels: m.RouterID(),
			Help: "Number of events the last warm start loaded from a peer's index snapshot"}),
		Seconds: b.Gauge(raw, metrics.Opts{Name: metrics.NameWarmStartSeconds, ConstLabels: m.RouterID(),
			Help: "Duration of the last warm start in seconds, from the request for a snapshot to the release of the events held meanwhile"}),
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("warm start metrics: %w", err)
	}
	return wm, nil
}
