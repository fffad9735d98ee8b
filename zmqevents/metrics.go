package zmqevents

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/metrics"
)

// Metrics are the families of the ZMQ transport (names in metrics/names.go;
// docs/metrics.md), and the KV-event families it shares with the NATS
// transport: rejected messages count in
// dynamo_component_kv_event_decode_errors_total like theirs.
type Metrics struct {
	Publishers *prometheus.GaugeVec   // state
	Messages   *prometheus.CounterVec // engine
	Skipped    *prometheus.CounterVec // reason
	Gaps       *prometheus.CounterVec // result
	Replayed   prometheus.Counter
	Restarts   prometheus.Counter
	Reconnects prometheus.Counter

	Events *events.Metrics
}

// NewMetrics creates the families in m's registry, or returns those created
// before on the same registry.
func NewMetrics(m *metrics.Router) (*Metrics, error) {
	var b metrics.Builder
	un := m.Unscoped()
	opts := func(name, help string, labels ...string) metrics.Opts {
		return metrics.Opts{Name: name, Help: help, Labels: labels, ConstLabels: m.RouterID()}
	}
	em, err := events.NewMetrics(m)
	if err != nil {
		return nil, err
	}
	z := &Metrics{
		Publishers: b.GaugeVec(un, opts(metrics.NameZMQPublishers, "Number of ZMQ publishers of KV events, by state", metrics.LabelState)),
		Messages:   b.CounterVec(un, opts(metrics.NameZMQMessagesTotal, "Total number of ZMQ messages of KV events received, live or replayed", metrics.LabelEngine)),
		Skipped:    b.CounterVec(un, opts(metrics.NameZMQEventsSkippedTotal, "Total number of well-formed engine KV events, or parts of them, not indexed", metrics.LabelReason)),
		Gaps:       b.CounterVec(un, opts(metrics.NameZMQGapsTotal, "Total number of sequence gaps of engine publishers, by how they ended", metrics.LabelResult)),
		Replayed:   b.Counter(un, opts(metrics.NameZMQReplayedTotal, "Total number of batches received from engine replay sockets")),
		Restarts:   b.Counter(un, opts(metrics.NameZMQRestartsTotal, "Total number of engine restarts seen as a sequence that went back")),
		Reconnects: b.Counter(un, opts(metrics.NameZMQReconnectsTotal, "Total number of connections to ZMQ publishers lost and dialled again")),
		Events:     em,
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("zmq events metrics: %w", err)
	}
	return z, nil
}
