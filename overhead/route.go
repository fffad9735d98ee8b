package overhead

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/metrics"
)

// Route holds Dynamo's five routing-overhead histograms
// (dynamo_router_overhead_*_ms; unscoped; router_id), in milliseconds.
// Observe fills all five from one decision's Phases. Safe for concurrent
// use.
type Route struct {
	BlockHashing prometheus.Histogram
	SeqHashing   prometheus.Histogram
	FindMatches  prometheus.Histogram
	Scheduling   prometheus.Histogram
	Total        prometheus.Histogram
}

// NewRoute creates the routing-overhead histograms of m, or returns those
// created before on the same registry.
func NewRoute(m *metrics.Router) (*Route, error) {
	var b metrics.Builder
	raw := m.Unscoped()
	h := func(name, help string, buckets []float64) prometheus.Histogram {
		return b.Histogram(raw, metrics.Opts{Name: name, Help: help, ConstLabels: m.RouterID(), Buckets: buckets})
	}
	r := &Route{
		BlockHashing: h(metrics.NameOverheadBlockHashing, "Time spent computing block hashes in milliseconds", metrics.BucketsComputeOverhead()),
		SeqHashing:   h(metrics.NameOverheadSeqHashing, "Time spent computing sequence hashes in milliseconds", metrics.BucketsComputeOverhead()),
		FindMatches:  h(metrics.NameOverheadFindMatches, "Time spent in indexer find_matches in milliseconds", metrics.BucketsAsyncOverhead()),
		Scheduling:   h(metrics.NameOverheadScheduling, "Time spent in scheduler worker selection in milliseconds", metrics.BucketsAsyncOverhead()),
		Total:        h(metrics.NameOverheadTotal, "Total routing overhead per request in milliseconds", metrics.BucketsAsyncOverhead()),
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("routing overhead metrics: %w", err)
	}
	return r, nil
}

// Observe records one routing decision in the five histograms, as Dynamo
// derives them: seq_hashing = SeqHashed − BlockHashed, scheduling = Total −
// Matched, both floored at 0.
func (r *Route) Observe(p Phases) {
	r.BlockHashing.Observe(ms(p.BlockHashed))
	r.SeqHashing.Observe(ms(max(p.SeqHashed-p.BlockHashed, 0)))
	r.FindMatches.Observe(ms(p.FindMatches))
	r.Scheduling.Observe(ms(max(p.Total-p.Matched, 0)))
	r.Total.Observe(ms(p.Total))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
