package metrics

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	// DefaultNamespace is Dynamo's default namespace.
	DefaultNamespace = "dynamo"
	// DefaultComponent is the router's component in Dynamo.
	DefaultComponent = "router"
)

// Config says where the router's metrics sit in the hierarchy.
type Config struct {
	// Namespace is the dynamo_namespace label (flag --namespace).
	Namespace string
	// Component is the router's own component, the dynamo_component label
	// (flag --router-component).
	Component string
	// RouterID is the router's instance id, the router_id label.
	RouterID uint64
	// Now is the clock of the uptime gauge; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns Dynamo's defaults. RouterID is left 0: the daemon
// sets it once it has its instance id.
func DefaultConfig() Config {
	return Config{Namespace: DefaultNamespace, Component: DefaultComponent}
}

// Validate reports the first field that cannot become a label value.
func (c Config) Validate() error {
	if _, err := SanitizeLabelName(c.Namespace); err != nil {
		return fmt.Errorf("namespace %q: must contain a letter, digit or underscore: %w", c.Namespace, err)
	}
	if _, err := SanitizeLabelName(c.Component); err != nil {
		return fmt.Errorf("router component %q: must contain a letter, digit or underscore: %w", c.Component, err)
	}
	return nil
}

// Router holds every family the router fills, created and registered by New
// so that a scrape finds each of them from the start (vectors show a series
// once a label set is first used, as in Dynamo). Other packages use the
// fields directly; the methods below cover the calls whose label order or
// units are easy to get wrong.
//
// Every field is safe for concurrent use. Label values must come from the
// constants of names.go or from bounded sets (worker ids, dp ranks, model
// names); never request ids or hashes.
type Router struct {
	reg        *Registry
	workerVecs []*prometheus.GaugeVec // the vectors labelled worker_id, for DeleteWorker

	// Routing overhead, milliseconds (dynamo_router_overhead_*; router_id).
	// ObserveOverhead fills all five from one set of timestamps.
	OverheadBlockHashing prometheus.Histogram
	OverheadSeqHashing   prometheus.Histogram
	OverheadFindMatches  prometheus.Histogram
	OverheadScheduling   prometheus.Histogram
	OverheadTotal        prometheus.Histogram

	// Per-worker load (dynamo_frontend_worker_*; worker_id, dp_rank,
	// worker_type). Use SetWorkerLoad, ObserveWorkerFirstToken and
	// ObserveWorkerInterToken; DeleteWorker removes a worker's series from
	// these and the two groups below.
	WorkerActiveDecodeBlocks      *prometheus.GaugeVec
	WorkerActivePrefillTokens     *prometheus.GaugeVec
	WorkerLastTimeToFirstToken    *prometheus.GaugeVec
	WorkerLastInputSequenceTokens *prometheus.GaugeVec
	WorkerLastInterTokenLatency   *prometheus.GaugeVec

	// WorkerRegistered is dynamo_component_router_worker_registered
	// (router_worker_id, dp_rank, worker_type); use SetWorkerRegistered.
	WorkerRegistered *prometheus.GaugeVec

	// Worker KV stats re-exported from load messages
	// (dynamo_component_kvstats_*; worker_id, dp_rank); use SetKVStats.
	KVStatsActiveBlocks          *prometheus.GaugeVec
	KVStatsTotalBlocks           *prometheus.GaugeVec
	KVStatsGPUCacheUsagePercent  *prometheus.GaugeVec
	KVStatsGPUPrefixCacheHitRate *prometheus.GaugeVec

	// Router requests (dynamo_component_router_*; router_id).
	RequestsTotal        prometheus.Counter
	TimeToFirstToken     prometheus.Histogram // seconds
	InterTokenLatency    prometheus.Histogram // seconds, mean of one request
	InputSequenceTokens  prometheus.Histogram
	OutputSequenceTokens prometheus.Histogram
	KVHitRate            prometheus.Histogram // overlap blocks / request blocks of the chosen worker

	// Scheduler queue (dynamo_frontend_router_queue_*; model, worker_type).
	QueuePendingRequests  *prometheus.GaugeVec
	QueuePendingISLTokens *prometheus.GaugeVec
	QueueBackpressure     *prometheus.CounterVec // model, worker_type, reason

	// KV events and the index.
	KVEventsApplied     *prometheus.CounterVec // event_type, status (Dynamo)
	KVEventDecodeErrors *prometheus.CounterVec // reason
	KVEventQueueDepth   prometheus.Gauge
	KVEventsDropped     *prometheus.CounterVec // reason
	KVEventsMissed      prometheus.Counter
	KVEventApplyLag     prometheus.Histogram // seconds
	IndexEntries        prometheus.Gauge
	IndexNodes          prometheus.Gauge
	IndexWorkers        prometheus.Gauge
	IndexEvictions      *prometheus.CounterVec // reason

	// Discovery.
	BlockSizeMismatches prometheus.Counter
	DiscoveryMalformed  *prometheus.CounterVec // kind

	// Endpoints of router-api.md §3, each with Dynamo's work-handler
	// families and our bad-request counter.
	Route          *Endpoint
	MarkPrefill    *Endpoint
	MarkFree       *Endpoint
	OverlapScores  *Endpoint
	PotentialLoads *Endpoint

	// Uptime is dynamo_component_uptime_seconds, computed at every scrape
	// from Config.Now.
	Uptime prometheus.GaugeFunc
}

// Endpoint holds the families of one endpoint (dynamo_endpoint label).
type Endpoint struct {
	// Name is the endpoint's name, the value of dynamo_endpoint.
	Name          string
	Requests      prometheus.Counter
	Inflight      prometheus.Gauge
	RequestBytes  prometheus.Counter
	ResponseBytes prometheus.Counter
	Errors        *prometheus.CounterVec // error_type
	Duration      prometheus.Histogram   // seconds
	BadRequests   *prometheus.CounterVec // reason (ours)
}

// New creates and registers every family of the router on reg. It fails if
// cfg is invalid or if reg already holds a metric of the same name and
// labels with another shape; called twice on one reg with the same cfg, it
// returns a Router sharing the first one's collectors.
func New(reg prometheus.Registerer, cfg Config) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("router metrics: %w", err)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	b := builder{r: NewRegistry(reg)}
	m := &Router{reg: b.r}
	routerID := prometheus.Labels{LabelRouterID: strconv.FormatUint(cfg.RouterID, 10)}
	raw := b.r.Unscoped()
	comp := b.r.Namespace(cfg.Namespace).Component(cfg.Component)
	worker := []string{LabelWorkerID, LabelDPRank, LabelWorkerType}
	workerRank := []string{LabelWorkerID, LabelDPRank}
	queue := []string{LabelModel, LabelWorkerType}

	overhead := func(name, help string, buckets []float64) prometheus.Histogram {
		return b.histogram(raw, Opts{Name: name, Help: help, ConstLabels: routerID, Buckets: buckets})
	}
	m.OverheadBlockHashing = overhead(NameOverheadBlockHashing, "Time spent computing block hashes in milliseconds", bucketsComputeOverhead())
	m.OverheadSeqHashing = overhead(NameOverheadSeqHashing, "Time spent computing sequence hashes in milliseconds", bucketsComputeOverhead())
	m.OverheadFindMatches = overhead(NameOverheadFindMatches, "Time spent in indexer find_matches in milliseconds", bucketsAsyncOverhead())
	m.OverheadScheduling = overhead(NameOverheadScheduling, "Time spent in scheduler worker selection in milliseconds", bucketsAsyncOverhead())
	m.OverheadTotal = overhead(NameOverheadTotal, "Total routing overhead per request in milliseconds", bucketsAsyncOverhead())

	m.WorkerActiveDecodeBlocks = b.gaugeVec(raw, Opts{Name: NameWorkerActiveDecodeBlocks, Help: "Active KV cache decode blocks per worker", Labels: worker})
	m.WorkerActivePrefillTokens = b.gaugeVec(raw, Opts{Name: NameWorkerActivePrefillTokens, Help: "Active prefill tokens queued per worker", Labels: worker})
	m.WorkerLastTimeToFirstToken = b.gaugeVec(raw, Opts{Name: NameWorkerLastTimeToFirstToken, Help: "Last observed time to first token per worker in seconds", Labels: worker})
	m.WorkerLastInputSequenceTokens = b.gaugeVec(raw, Opts{Name: NameWorkerLastInputSequenceTokens, Help: "Input sequence tokens of the request of the last observed time to first token per worker", Labels: worker})
	m.WorkerLastInterTokenLatency = b.gaugeVec(raw, Opts{Name: NameWorkerLastInterTokenLatency, Help: "Last observed inter-token latency per worker in seconds", Labels: worker})

	ctr := func(name, help string, labels prometheus.Labels) prometheus.Counter {
		return b.counter(comp, Opts{Name: suffix(name), Help: help, ConstLabels: labels})
	}
	hist := func(name, help string, labels prometheus.Labels, buckets []float64) prometheus.Histogram {
		return b.histogram(comp, Opts{Name: suffix(name), Help: help, ConstLabels: labels, Buckets: buckets})
	}
	m.RequestsTotal = ctr(NameRouterRequestsTotal, "Total number of requests processed by the router", routerID)
	m.TimeToFirstToken = hist(NameRouterTimeToFirstToken, "Time to first token observed at the router", routerID, bucketsTimeToFirstToken())
	m.InterTokenLatency = hist(NameRouterInterTokenLatency, "Average inter-token latency observed at the router", routerID, bucketsInterTokenLatency())
	m.InputSequenceTokens = hist(NameRouterInputSequenceTokens, "Input sequence length in tokens observed at the router", routerID, bucketsInputSequenceTokens())
	m.OutputSequenceTokens = hist(NameRouterOutputSequenceTokens, "Output sequence length in tokens observed at the router", routerID, bucketsOutputSequenceTokens())
	m.KVHitRate = hist(NameRouterKVHitRate, "Predicted KV cache hit rate at routing time (0.0-1.0)", routerID, bucketsHitRate())
	m.WorkerRegistered = b.gaugeVec(comp, Opts{Name: suffix(NameRouterWorkerRegistered), Help: "Whether the router currently has this worker/dp_rank registered (1 = registered)", Labels: []string{LabelRouterWorkerID, LabelDPRank, LabelWorkerType}})

	m.QueuePendingRequests = b.gaugeVec(raw, Opts{Name: NameQueuePendingRequests, Help: "Number of requests pending in the router scheduler queue", Labels: queue})
	m.QueuePendingISLTokens = b.gaugeVec(raw, Opts{Name: NameQueuePendingISLTokens, Help: "Sum of isl_tokens for requests pending in the router scheduler queue", Labels: queue})
	m.QueueBackpressure = b.counterVec(raw, Opts{Name: NameQueueBackpressureTotal, Help: "Total number of router scheduler queue backpressure rejections", Labels: append(queue[:len(queue):len(queue)], LabelReason)})

	m.KVEventsApplied = b.counterVec(comp, Opts{Name: suffix(NameKVCacheEventsApplied), Help: "Total number of KV cache events applied to index", Labels: []string{LabelEventType, LabelStatus}})
	stats := func(name, help string) *prometheus.GaugeVec {
		return b.gaugeVec(comp, Opts{Name: suffix(name), Help: help, Labels: workerRank})
	}
	m.KVStatsActiveBlocks = stats(NameKVStatsActiveBlocks, "Number of active KV cache blocks reported by the worker")
	m.KVStatsTotalBlocks = stats(NameKVStatsTotalBlocks, "Total number of KV cache blocks available on the worker")
	m.KVStatsGPUCacheUsagePercent = stats(NameKVStatsGPUCacheUsagePercent, "GPU cache usage as a percentage (0.0-1.0) reported by the worker")
	m.KVStatsGPUPrefixCacheHitRate = stats(NameKVStatsGPUPrefixCacheHitRate, "GPU prefix cache hit rate as a percentage (0.0-1.0) reported by the worker")

	m.KVEventDecodeErrors = b.counterVec(comp, Opts{Name: suffix(NameKVEventDecodeErrorsTotal), Help: "Total number of KV event messages that could not be decoded", Labels: []string{LabelReason}})
	m.KVEventQueueDepth = b.gauge(comp, Opts{Name: suffix(NameKVEventQueueDepth), Help: "Number of decoded KV events waiting to be applied to the index"})
	m.KVEventsDropped = b.counterVec(comp, Opts{Name: suffix(NameKVEventsDroppedTotal), Help: "Total number of KV events received but not applied to the index", Labels: []string{LabelReason}})
	m.KVEventsMissed = ctr(NameKVEventsMissedTotal, "Total number of KV events lost before reaching the router, from jumps in event_id", nil)
	m.KVEventApplyLag = hist(NameKVEventApplyLagSeconds, "Time from receiving a KV event to applying it to the index in seconds", nil, bucketsApplyLag())
	m.IndexEntries = b.gauge(comp, Opts{Name: suffix(NameKVIndexEntries), Help: "Number of (block, worker rank) entries in the KV index"})
	m.IndexNodes = b.gauge(comp, Opts{Name: suffix(NameKVIndexNodes), Help: "Number of nodes in the KV index radix tree"})
	m.IndexWorkers = b.gauge(comp, Opts{Name: suffix(NameKVIndexWorkers), Help: "Number of worker ranks holding blocks in the KV index"})
	m.IndexEvictions = b.counterVec(comp, Opts{Name: suffix(NameKVIndexEvictionsTotal), Help: "Total number of KV index entries evicted by the router itself", Labels: []string{LabelReason}})

	m.BlockSizeMismatches = ctr(NameBlockSizeMismatchesTotal, "Total number of workers found with a KV block size other than the router's", nil)
	m.DiscoveryMalformed = b.counterVec(comp, Opts{Name: suffix(NameDiscoveryMalformedTotal), Help: "Total number of discovery values that could not be parsed", Labels: []string{LabelKind}})

	m.Route = b.endpoint(comp, EndpointRoute)
	m.MarkPrefill = b.endpoint(comp, EndpointMarkPrefill)
	m.MarkFree = b.endpoint(comp, EndpointMarkFree)
	m.OverlapScores = b.endpoint(comp, EndpointOverlapScores)
	m.PotentialLoads = b.endpoint(comp, EndpointPotentialLoads)

	start := now()
	m.Uptime = b.gaugeFunc(b.r.Runtime(), Opts{Name: suffix(NameUptimeSeconds), Help: "Total uptime of the DistributedRuntime in seconds"},
		func() float64 { return now().Sub(start).Seconds() })

	if b.err != nil {
		return nil, fmt.Errorf("router metrics: %w", b.err)
	}
	m.workerVecs = []*prometheus.GaugeVec{
		m.WorkerActiveDecodeBlocks, m.WorkerActivePrefillTokens, m.WorkerLastTimeToFirstToken,
		m.WorkerLastInputSequenceTokens, m.WorkerLastInterTokenLatency,
		m.KVStatsActiveBlocks, m.KVStatsTotalBlocks, m.KVStatsGPUCacheUsagePercent, m.KVStatsGPUPrefixCacheHitRate,
	}
	return m, nil
}

// Registry returns the hierarchy the router's metrics were created in, for
// packages that add families of their own.
func (m *Router) Registry() *Registry { return m.reg }

// Endpoint returns the metrics of the endpoint named name (an Endpoint*
// constant), or false for a name the router does not serve.
func (m *Router) Endpoint(name string) (*Endpoint, bool) {
	for _, e := range []*Endpoint{m.Route, m.MarkPrefill, m.MarkFree, m.OverlapScores, m.PotentialLoads} {
		if e.Name == name {
			return e, true
		}
	}
	return nil, false
}

// Observe records one handled request: its duration, the bytes in and out,
// and, when errorType is not empty, an error of that type (an ErrorType*
// constant). Inflight is the caller's: Inc on arrival, Dec when done.
func (e *Endpoint) Observe(d time.Duration, requestBytes, responseBytes int, errorType string) {
	e.Requests.Inc()
	e.RequestBytes.Add(float64(max(requestBytes, 0)))
	e.ResponseBytes.Add(float64(max(responseBytes, 0)))
	e.Duration.Observe(d.Seconds())
	if errorType != "" {
		e.Errors.WithLabelValues(errorType).Inc()
	}
}

// Overhead holds the timestamps of one routing decision, each measured from
// its start, the way Dynamo measures them.
type Overhead struct {
	// BlockHashed is when block hashing ended.
	BlockHashed time.Duration
	// SeqHashed is when sequence hashing ended (after block hashing).
	SeqHashed time.Duration
	// FindMatches is how long the index lookup itself took.
	FindMatches time.Duration
	// Matched is when the lookup ended.
	Matched time.Duration
	// Total is when the decision was made.
	Total time.Duration
}

// ObserveOverhead records one routing decision in the five overhead
// histograms, as Dynamo derives them: seq_hashing = SeqHashed − BlockHashed,
// scheduling = Total − Matched, both floored at 0.
func (m *Router) ObserveOverhead(o Overhead) {
	m.OverheadBlockHashing.Observe(ms(o.BlockHashed))
	m.OverheadSeqHashing.Observe(ms(max(o.SeqHashed-o.BlockHashed, 0)))
	m.OverheadFindMatches.Observe(ms(o.FindMatches))
	m.OverheadScheduling.Observe(ms(max(o.Total-o.Matched, 0)))
	m.OverheadTotal.Observe(ms(o.Total))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Worker names the series of one worker rank.
type Worker struct {
	ID     uint64
	DPRank uint32
	// Type is WorkerTypePrefill or WorkerTypeDecode (aggregated workers are
	// decode, as in Dynamo).
	Type string
}

func (w Worker) values() []string {
	return []string{strconv.FormatUint(w.ID, 10), strconv.FormatUint(uint64(w.DPRank), 10), w.Type}
}

// SetWorkerLoad sets the router's prediction of a rank's load.
func (m *Router) SetWorkerLoad(w Worker, activeDecodeBlocks, activePrefillTokens int) {
	v := w.values()
	m.WorkerActiveDecodeBlocks.WithLabelValues(v...).Set(float64(activeDecodeBlocks))
	m.WorkerActivePrefillTokens.WithLabelValues(v...).Set(float64(activePrefillTokens))
}

// ObserveWorkerFirstToken records the time to first token of a request on w
// and its prompt length, in the per-worker gauges (the router-wide histogram
// is TimeToFirstToken).
func (m *Router) ObserveWorkerFirstToken(w Worker, ttft time.Duration, inputTokens int) {
	v := w.values()
	m.WorkerLastTimeToFirstToken.WithLabelValues(v...).Set(ttft.Seconds())
	m.WorkerLastInputSequenceTokens.WithLabelValues(v...).Set(float64(inputTokens))
}

// ObserveWorkerInterToken records the mean inter-token latency of a request
// on w in the per-worker gauge.
func (m *Router) ObserveWorkerInterToken(w Worker, itl time.Duration) {
	m.WorkerLastInterTokenLatency.WithLabelValues(w.values()...).Set(itl.Seconds())
}

// SetWorkerRegistered marks w registered (value 1).
func (m *Router) SetWorkerRegistered(w Worker) {
	m.WorkerRegistered.WithLabelValues(w.values()...).Set(1)
}

// KVStats is what a worker load message reports about a rank's KV cache.
type KVStats struct {
	ActiveBlocks uint64
	TotalBlocks  uint64
	// GPUCacheUsage and GPUPrefixCacheHitRate are fractions, 0.0 to 1.0.
	GPUCacheUsage         float64
	GPUPrefixCacheHitRate float64
}

// SetKVStats re-exports the KV stats a worker rank reported.
func (m *Router) SetKVStats(workerID uint64, dpRank uint32, s KVStats) {
	id, rank := strconv.FormatUint(workerID, 10), strconv.FormatUint(uint64(dpRank), 10)
	m.KVStatsActiveBlocks.WithLabelValues(id, rank).Set(float64(s.ActiveBlocks))
	m.KVStatsTotalBlocks.WithLabelValues(id, rank).Set(float64(s.TotalBlocks))
	m.KVStatsGPUCacheUsagePercent.WithLabelValues(id, rank).Set(s.GPUCacheUsage)
	m.KVStatsGPUPrefixCacheHitRate.WithLabelValues(id, rank).Set(s.GPUPrefixCacheHitRate)
}

// DeleteWorker removes every series of the worker id, all its ranks and
// types, from every per-worker family, and returns how many it removed. The
// worker registry calls it when a worker leaves (or never registers within
// its grace period), which keeps the number of series bounded by the workers
// present.
func (m *Router) DeleteWorker(id uint64) int {
	v := strconv.FormatUint(id, 10)
	n := m.WorkerRegistered.DeletePartialMatch(prometheus.Labels{LabelRouterWorkerID: v})
	for _, g := range m.workerVecs {
		n += g.DeletePartialMatch(prometheus.Labels{LabelWorkerID: v})
	}
	return n
}

// suffix strips the prefix the hierarchy adds, so names.go can hold full
// names only.
func suffix(name string) string {
	s, _ := strings.CutPrefix(name, PrefixComponent+"_")
	return s
}

// builder collects the errors of a run of constructor calls, so New reads as
// a list of families and reports every broken one at once.
type builder struct {
	r   *Registry
	err error
}

func keep[T any](b *builder, v T, err error) T {
	if err != nil {
		b.err = errors.Join(b.err, err)
	}
	return v
}

func (b *builder) counter(s *Scope, o Opts) prometheus.Counter {
	c, err := s.Counter(o)
	return keep(b, c, err)
}

func (b *builder) counterVec(s *Scope, o Opts) *prometheus.CounterVec {
	c, err := s.CounterVec(o)
	return keep(b, c, err)
}

func (b *builder) gauge(s *Scope, o Opts) prometheus.Gauge {
	g, err := s.Gauge(o)
	return keep(b, g, err)
}

func (b *builder) gaugeVec(s *Scope, o Opts) *prometheus.GaugeVec {
	g, err := s.GaugeVec(o)
	return keep(b, g, err)
}

func (b *builder) gaugeFunc(s *Scope, o Opts, f func() float64) prometheus.GaugeFunc {
	g, err := s.GaugeFunc(o, f)
	return keep(b, g, err)
}

func (b *builder) histogram(s *Scope, o Opts) prometheus.Histogram {
	h, err := s.Histogram(o)
	return keep(b, h, err)
}

func (b *builder) endpoint(comp *Scope, name string) *Endpoint {
	s := comp.Endpoint(name)
	return &Endpoint{
		Name:          name,
		Requests:      b.counter(s, Opts{Name: suffix(NameRequestsTotal), Help: "Total number of requests processed by work handler"}),
		Inflight:      b.gauge(s, Opts{Name: suffix(NameInflightRequests), Help: "Number of requests currently being processed by work handler"}),
		RequestBytes:  b.counter(s, Opts{Name: suffix(NameRequestBytesTotal), Help: "Total number of bytes received in requests by work handler"}),
		ResponseBytes: b.counter(s, Opts{Name: suffix(NameResponseBytesTotal), Help: "Total number of bytes sent in responses by work handler"}),
		Errors:        b.counterVec(s, Opts{Name: suffix(NameErrorsTotal), Help: "Total number of errors in work handler processing", Labels: []string{LabelErrorType}}),
		Duration:      b.histogram(s, Opts{Name: suffix(NameRequestDurationSeconds), Help: "Time spent processing requests by work handler", Buckets: bucketsRequestDuration()}),
		BadRequests:   b.counterVec(s, Opts{Name: suffix(NameBadRequestsTotal), Help: "Total number of malformed requests rejected by the router", Labels: []string{LabelReason}}),
	}
}
