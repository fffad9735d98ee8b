package scheduler

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/overhead"
)

// Metrics are the families this package owns (names in metrics/names.go;
// docs/metrics.md): the router's request metrics
// (dynamo_component_router_*; router_id), the per-worker load gauges
// (dynamo_frontend_worker_*), the queue's (dynamo_frontend_router_queue_*),
// the bookings it expired, and, through package overhead, the timing of
// route decisions and marks. The Router writes the per-worker series under
// its lock and deletes a rank's when the rank stops being a candidate
// (SetCandidates), so no series is re-created after its deletion.
//
// Safe for concurrent use; building it twice from one metrics.Router
// returns the same collectors.
type Metrics struct {
	// Router requests (component scope; router_id).
	RequestsTotal        prometheus.Counter
	TimeToFirstToken     prometheus.Histogram // seconds
	InterTokenLatency    prometheus.Histogram // seconds, mean of one request
	InputSequenceTokens  prometheus.Histogram
	OutputSequenceTokens prometheus.Histogram
	KVHitRate            prometheus.Histogram // overlap blocks / request blocks of the chosen worker

	// Per-worker load (unscoped; worker_id, dp_rank, worker_type).
	WorkerActiveDecodeBlocks      *prometheus.GaugeVec
	WorkerActivePrefillTokens     *prometheus.GaugeVec
	WorkerLastTimeToFirstToken    *prometheus.GaugeVec
	WorkerLastInputSequenceTokens *prometheus.GaugeVec
	WorkerLastInterTokenLatency   *prometheus.GaugeVec

	// Queue (unscoped; model, worker_type).
	QueuePendingRequests  *prometheus.GaugeVec
	QueuePendingISLTokens *prometheus.GaugeVec
	QueueBackpressure     *prometheus.CounterVec // model, worker_type, reason

	// BookingsExpired counts bookings freed by the router's timeouts
	// (unscoped; router_id; reason).
	BookingsExpired *prometheus.CounterVec

	// Route times every routing decision; Marks every mark.
	Route *overhead.Route
	Marks overhead.Marks
}

// NewMetrics creates the package's families from m, or returns those
// created before on the same registry.
func NewMetrics(m *metrics.Router) (*Metrics, error) {
	var b metrics.Builder
	raw, comp := m.Unscoped(), m.Component()
	worker := []string{metrics.LabelWorkerID, metrics.LabelDPRank, metrics.LabelWorkerType}
	queue := []string{metrics.LabelModel, metrics.LabelWorkerType}
	perWorker := func(name, help string) *prometheus.GaugeVec {
		return b.GaugeVec(raw, metrics.Opts{Name: name, Help: help, Labels: worker})
	}
	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		return b.Histogram(comp, metrics.Opts{Name: metrics.Suffix(name), Help: help, ConstLabels: m.RouterID(), Buckets: buckets})
	}
	s := &Metrics{
		RequestsTotal:        b.Counter(comp, metrics.Opts{Name: metrics.Suffix(metrics.NameRouterRequestsTotal), Help: "Total number of requests processed by the router", ConstLabels: m.RouterID()}),
		TimeToFirstToken:     hist(metrics.NameRouterTimeToFirstToken, "Time to first token observed at the router", metrics.BucketsTimeToFirstToken()),
		InterTokenLatency:    hist(metrics.NameRouterInterTokenLatency, "Average inter-token latency observed at the router", metrics.BucketsInterTokenLatency()),
		InputSequenceTokens:  hist(metrics.NameRouterInputSequenceTokens, "Input sequence length in tokens observed at the router", metrics.BucketsInputSequenceTokens()),
		OutputSequenceTokens: hist(metrics.NameRouterOutputSequenceTokens, "Output sequence length in tokens observed at the router", metrics.BucketsOutputSequenceTokens()),
		KVHitRate:            hist(metrics.NameRouterKVHitRate, "Predicted KV cache hit rate at routing time (0.0-1.0)", metrics.BucketsHitRate()),

		WorkerActiveDecodeBlocks:      perWorker(metrics.NameWorkerActiveDecodeBlocks, "Active KV cache decode blocks per worker"),
		WorkerActivePrefillTokens:     perWorker(metrics.NameWorkerActivePrefillTokens, "Active prefill tokens queued per worker"),
		WorkerLastTimeToFirstToken:    perWorker(metrics.NameWorkerLastTimeToFirstToken, "Last observed time to first token per worker in seconds"),
		WorkerLastInputSequenceTokens: perWorker(metrics.NameWorkerLastInputSequenceTokens, "Input sequence tokens of the request of the last observed time to first token per worker"),
		WorkerLastInterTokenLatency:   perWorker(metrics.NameWorkerLastInterTokenLatency, "Last observed inter-token latency per worker in seconds"),

		QueuePendingRequests:  b.GaugeVec(raw, metrics.Opts{Name: metrics.NameQueuePendingRequests, Help: "Number of requests pending in the router scheduler queue", Labels: queue}),
		QueuePendingISLTokens: b.GaugeVec(raw, metrics.Opts{Name: metrics.NameQueuePendingISLTokens, Help: "Sum of isl_tokens for requests pending in the router scheduler queue", Labels: queue}),
		QueueBackpressure: b.CounterVec(raw, metrics.Opts{Name: metrics.NameQueueBackpressureTotal, Help: "Total number of router scheduler queue backpressure rejections",
			Labels: []string{metrics.LabelModel, metrics.LabelWorkerType, metrics.LabelReason}}),
		BookingsExpired: b.CounterVec(raw, metrics.Opts{Name: metrics.NameBookingsExpiredTotal, Help: "Total number of bookings freed by the router because their caller never marked them prefilled or never freed them",
			ConstLabels: m.RouterID(), Labels: []string{metrics.LabelReason}}),
	}
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("scheduler metrics: %w", err)
	}
	var err error
	if s.Route, err = overhead.NewRoute(m); err != nil {
		return nil, fmt.Errorf("scheduler metrics: %w", err)
	}
	if s.Marks, err = overhead.NewMarks(m); err != nil {
		return nil, fmt.Errorf("scheduler metrics: %w", err)
	}
	return s, nil
}

// perWorker returns the five per-worker vectors.
func (s *Metrics) perWorker() [5]*prometheus.GaugeVec {
	return [5]*prometheus.GaugeVec{s.WorkerActiveDecodeBlocks, s.WorkerActivePrefillTokens,
		s.WorkerLastTimeToFirstToken, s.WorkerLastInputSequenceTokens, s.WorkerLastInterTokenLatency}
}

// DeleteRank removes the series of one rank of one worker type from the
// per-worker families and returns how many it removed. The Router calls it
// under its lock when the rank stops being a candidate or changes type.
func (s *Metrics) DeleteRank(w metrics.Worker) int {
	n := 0
	v := w.Values()
	for _, g := range s.perWorker() {
		if g.DeleteLabelValues(v...) {
			n++
		}
	}
	return n
}
