package overhead

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/metrics"
)

// Span is a one-phase timing: a histogram in seconds that a path feeds with
// the time since it started. Safe for concurrent use.
type Span struct {
	h prometheus.Histogram
}

// Since records the time from start to now.
func (s Span) Since(start time.Time) { s.h.Observe(time.Since(start).Seconds()) }

// Observe records a duration.
func (s Span) Observe(d time.Duration) { s.h.Observe(max(d, 0).Seconds()) }

// NewApply returns the timing of the index writer's batches,
// dynamo_router_event_apply_seconds (ours; unscoped; router_id): one
// observation per batch of KV events and lifecycle commands applied to the
// index, the index's lock included.
func NewApply(m *metrics.Router) (Span, error) {
	h, err := m.Unscoped().Histogram(metrics.Opts{
		Name: metrics.NameEventApply, Help: "Time spent applying one batch of KV events to the index in seconds",
		ConstLabels: m.RouterID(), Buckets: metrics.BucketsPathTiming(),
	})
	if err != nil {
		return Span{}, fmt.Errorf("event apply metrics: %w", err)
	}
	return Span{h: h}, nil
}

// Marks are the timings of the scheduler's marks, dynamo_router_mark_seconds
// (ours; unscoped; router_id; mark): one observation per mark_prefill or
// mark_free handled, known id or not, from the call to its return.
type Marks struct {
	Prefill Span
	Free    Span
}

// NewMarks creates the mark timings of m, both series at once so that they
// are in the exposition from the first scrape.
func NewMarks(m *metrics.Router) (Marks, error) {
	vec, err := m.Unscoped().HistogramVec(metrics.Opts{
		Name: metrics.NameMark, Help: "Time spent handling one mark_prefill or mark_free in the scheduler in seconds",
		ConstLabels: m.RouterID(), Labels: []string{metrics.LabelMark}, Buckets: metrics.BucketsPathTiming(),
	})
	if err != nil {
		return Marks{}, fmt.Errorf("mark metrics: %w", err)
	}
	return Marks{
		Prefill: Span{h: vec.WithLabelValues(metrics.MarkPrefill).(prometheus.Histogram)},
		Free:    Span{h: vec.WithLabelValues(metrics.MarkFree).(prometheus.Histogram)},
	}, nil
}
