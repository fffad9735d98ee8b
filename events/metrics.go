package events

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/metrics"
)

// Metrics are the families this package owns, in the router's component
// scope (names in metrics/names.go; docs/metrics.md): the KV events applied,
// rejected, dropped and missed, their queue and lag, the event_id resets,
// and the index's size gauges and evictions, which the Writer, the index's
// one writer, alone sets; and, unscoped, whether the index is diverging. The Writer and the Subscriber each build them
// with NewMetrics and share the collectors.
type Metrics struct {
	Applied      *prometheus.CounterVec // event_type, status (Dynamo)
	DecodeErrors *prometheus.CounterVec // reason
	QueueDepth   prometheus.Gauge
	Dropped      *prometheus.CounterVec // reason
	Missed       prometheus.Counter
	ApplyLag     prometheus.Histogram // seconds
	IDResets     prometheus.Counter

	IndexEntries   prometheus.Gauge
	IndexNodes     prometheus.Gauge
	IndexWorkers   prometheus.Gauge
	IndexEvictions *prometheus.CounterVec // reason
	// IndexDiverging is dynamo_router_index_diverging (unscoped, constant
	// label router_id): 1 while the Writer finds the index diverging.
	IndexDiverging prometheus.Gauge
}

// NewMetrics creates the package's families in m's component scope, or
// returns those created before on the same registry.
func NewMetrics(m *metrics.Router) (*Metrics, error) {
	var b metrics.Builder
	comp := m.Component()
	opts := func(name, help string, labels ...string) metrics.Opts {
		return metrics.Opts{Name: metrics.Suffix(name), Help: help, Labels: labels}
	}
	lag := opts(metrics.NameKVEventApplyLagSeconds, "Time from receiving a KV event to applying it to the index in seconds")
	lag.Buckets = metrics.BucketsApplyLag()
	e := &Metrics{
		Applied:      b.CounterVec(comp, opts(metrics.NameKVCacheEventsApplied, "Total number of KV cache events applied to index", metrics.LabelEventType, metrics.LabelStatus)),
		DecodeErrors: b.CounterVec(comp, opts(metrics.NameKVEventDecodeErrorsTotal, "Total number of KV event messages that could not be decoded", metrics.LabelReason)),
		QueueDepth:   b.Gauge(comp, opts(metrics.NameKVEventQueueDepth, "Number of decoded KV events waiting to be applied to the index")),
		Dropped:      b.CounterVec(comp, opts(metrics.NameKVEventsDroppedTotal, "Total number of KV events received but not applied to the index", metrics.LabelReason)),
		Missed:       b.Counter(comp, opts(metrics.NameKVEventsMissedTotal, "Total number of KV events lost before reaching the router, from jumps in event_id")),
		ApplyLag:     b.Histogram(comp, lag),
		IDResets:     b.Counter(comp, opts(metrics.NameKVEventIDResetsTotal, "Total number of times the event_id of a worker rank went backwards (publisher restarted)")),

		IndexEntries:   b.Gauge(comp, opts(metrics.NameKVIndexEntries, "Number of (block, worker rank) entries in the KV index")),
		IndexNodes:     b.Gauge(comp, opts(metrics.NameKVIndexNodes, "Number of nodes in the KV index radix tree")),
		IndexWorkers:   b.Gauge(comp, opts(metrics.NameKVIndexWorkers, "Number of worker ranks holding blocks in the KV index")),
		IndexEvictions: b.CounterVec(comp, opts(metrics.NameKVIndexEvictionsTotal, "Total number of KV index entries evicted by the router itself", metrics.LabelReason)),
		IndexDiverging: b.Gauge(m.Unscoped(), metrics.Opts{Name: metrics.NameIndexDiverging, ConstLabels: m.RouterID(),
			Help: "1 while at least 10% of the stored KV events of the last 10 s named a parent block the index does not hold, else 0"}),
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("kv events metrics: %w", err)
	}
	return e, nil
}
