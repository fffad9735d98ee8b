package stack

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/httpapi"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/overhead"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/warmstart"
	"github.com/kvrouter/router/workers"
	"github.com/kvrouter/router/zmqevents"
)

// Each package builds its own families (metrics/doc.go); the stack is where
// they all meet, so the router's whole exposition is tested here: the
// families Dynamo's dashboards expect, ours, the golden expositions of
// testdata/metrics, promlint and docs/metrics.md.

var update = flag.Bool("update", false, "rewrite the golden files in testdata/metrics")

// family is one row of the list of families the router exposes. The names
// and buckets are written out here, not taken from names.go, so a typo there
// fails this test.
type family struct {
	name    string
	typ     dto.MetricType
	labels  []string  // every label name of a series, sorted
	buckets []float64 // histograms only
	dynamo  bool      // listed in Dynamo's metrics (docs/compat.md); false: ours
	owner   string    // the package that builds it
}

var (
	computeBuckets = []float64{0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384}
	asyncBuckets   = []float64{0.01, 0.03, 0.09, 0.27, 0.81, 2.43, 7.29, 21.87, 65.61, 196.83, 590.49, 1771.47, 5314.41, 15943.23, 47829.69, 143489.07, 430467.21}
	pathBuckets    = []float64{1e-06, 2e-06, 4e-06, 8e-06, 1.6e-05, 3.2e-05, 6.4e-05, 0.000128, 0.000256, 0.000512, 0.001024, 0.002048, 0.004096, 0.008192, 0.016384, 0.032768, 0.065536, 0.131072, 0.262144, 0.524288}
	hitRateBuckets = []float64{0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1}

	routerLabels   = []string{"dynamo_component", "dynamo_namespace", "router_id"}
	workerLabels   = []string{"dp_rank", "worker_id", "worker_type"}
	statsLabels    = []string{"dp_rank", "dynamo_component", "dynamo_namespace", "worker_id"}
	compLabels     = []string{"dynamo_component", "dynamo_namespace"}
	endpointLabels = []string{"dynamo_component", "dynamo_endpoint", "dynamo_namespace"}
)

func with(labels []string, more ...string) []string {
	l := append(slices.Clone(labels), more...)
	slices.Sort(l)
	return l
}

// families walks Dynamo's families in the order of docs/metrics.md, then
// lists ours.
var families = []family{
	// Overhead.
	{name: "dynamo_router_overhead_block_hashing_ms", typ: dto.MetricType_HISTOGRAM, labels: []string{"router_id"}, buckets: computeBuckets, dynamo: true, owner: "overhead"},
	{name: "dynamo_router_overhead_seq_hashing_ms", typ: dto.MetricType_HISTOGRAM, labels: []string{"router_id"}, buckets: computeBuckets, dynamo: true, owner: "overhead"},
	{name: "dynamo_router_overhead_indexer_find_matches_ms", typ: dto.MetricType_HISTOGRAM, labels: []string{"router_id"}, buckets: asyncBuckets, dynamo: true, owner: "overhead"},
	{name: "dynamo_router_overhead_scheduling_ms", typ: dto.MetricType_HISTOGRAM, labels: []string{"router_id"}, buckets: asyncBuckets, dynamo: true, owner: "overhead"},
	{name: "dynamo_router_overhead_total_ms", typ: dto.MetricType_HISTOGRAM, labels: []string{"router_id"}, buckets: asyncBuckets, dynamo: true, owner: "overhead"},
	// Per-worker gauges.
	{name: "dynamo_frontend_worker_active_decode_blocks", typ: dto.MetricType_GAUGE, labels: workerLabels, dynamo: true, owner: "scheduler"},
	{name: "dynamo_frontend_worker_active_prefill_tokens", typ: dto.MetricType_GAUGE, labels: workerLabels, dynamo: true, owner: "scheduler"},
	{name: "dynamo_frontend_worker_last_time_to_first_token_seconds", typ: dto.MetricType_GAUGE, labels: workerLabels, dynamo: true, owner: "scheduler"},
	{name: "dynamo_frontend_worker_last_input_sequence_tokens", typ: dto.MetricType_GAUGE, labels: workerLabels, dynamo: true, owner: "scheduler"},
	{name: "dynamo_frontend_worker_last_inter_token_latency_seconds", typ: dto.MetricType_GAUGE, labels: workerLabels, dynamo: true, owner: "scheduler"},
	// Router request metrics.
	{name: "dynamo_component_router_requests_total", typ: dto.MetricType_COUNTER, labels: routerLabels, dynamo: true, owner: "scheduler"},
	{name: "dynamo_component_router_time_to_first_token_seconds", typ: dto.MetricType_HISTOGRAM, labels: routerLabels, dynamo: true, owner: "scheduler",
		buckets: []float64{0, 0.0022, 0.0047, 0.01, 0.022, 0.047, 0.1, 0.22, 0.47, 1, 2.2, 4.7, 10, 22, 48, 100, 220, 480}},
	{name: "dynamo_component_router_inter_token_latency_seconds", typ: dto.MetricType_HISTOGRAM, labels: routerLabels, dynamo: true, owner: "scheduler",
		buckets: []float64{0, 0.0019, 0.0035, 0.0067, 0.013, 0.024, 0.045, 0.084, 0.16, 0.3, 0.56, 1.1, 2}},
	{name: "dynamo_component_router_input_sequence_tokens", typ: dto.MetricType_HISTOGRAM, labels: routerLabels, dynamo: true, owner: "scheduler",
		buckets: []float64{0, 100, 210, 430, 870, 1800, 3600, 7400, 15000, 31000, 63000, 130000}},
	{name: "dynamo_component_router_output_sequence_tokens", typ: dto.MetricType_HISTOGRAM, labels: routerLabels, dynamo: true, owner: "scheduler",
		buckets: []float64{0, 100, 210, 430, 880, 1800, 3700, 7600, 16000, 32000}},
	{name: "dynamo_component_router_kv_hit_rate", typ: dto.MetricType_HISTOGRAM, labels: routerLabels, buckets: hitRateBuckets, dynamo: true, owner: "scheduler"},
	{name: "dynamo_component_router_worker_registered", typ: dto.MetricType_GAUGE, dynamo: true, owner: "workers",
		labels: []string{"dp_rank", "dynamo_component", "dynamo_namespace", "router_worker_id", "worker_type"}},
	// Queue.
	{name: "dynamo_frontend_router_queue_pending_requests", typ: dto.MetricType_GAUGE, labels: []string{"model", "worker_type"}, dynamo: true, owner: "scheduler"},
	{name: "dynamo_frontend_router_queue_pending_isl_tokens", typ: dto.MetricType_GAUGE, labels: []string{"model", "worker_type"}, dynamo: true, owner: "scheduler"},
	{name: "dynamo_frontend_router_queue_backpressure_total", typ: dto.MetricType_COUNTER, labels: []string{"model", "reason", "worker_type"}, dynamo: true, owner: "scheduler"},
	// Index.
	{name: "dynamo_component_kv_cache_events_applied", typ: dto.MetricType_COUNTER, dynamo: true, owner: "events",
		labels: []string{"dynamo_component", "dynamo_namespace", "event_type", "status"}},
	// Worker KV stats.
	{name: "dynamo_component_kvstats_active_blocks", typ: dto.MetricType_GAUGE, labels: statsLabels, dynamo: true, owner: "workers"},
	{name: "dynamo_component_kvstats_total_blocks", typ: dto.MetricType_GAUGE, labels: statsLabels, dynamo: true, owner: "workers"},
	{name: "dynamo_component_kvstats_gpu_cache_usage_percent", typ: dto.MetricType_GAUGE, labels: statsLabels, dynamo: true, owner: "workers"},
	{name: "dynamo_component_kvstats_gpu_prefix_cache_hit_rate", typ: dto.MetricType_GAUGE, labels: statsLabels, dynamo: true, owner: "workers"},
	// Endpoint work handler.
	{name: "dynamo_component_requests_total", typ: dto.MetricType_COUNTER, labels: endpointLabels, dynamo: true, owner: "service"},
	{name: "dynamo_component_inflight_requests", typ: dto.MetricType_GAUGE, labels: endpointLabels, dynamo: true, owner: "service"},
	{name: "dynamo_component_request_bytes_total", typ: dto.MetricType_COUNTER, labels: endpointLabels, dynamo: true, owner: "service"},
	{name: "dynamo_component_response_bytes_total", typ: dto.MetricType_COUNTER, labels: endpointLabels, dynamo: true, owner: "service"},
	{name: "dynamo_component_errors_total", typ: dto.MetricType_COUNTER, dynamo: true, owner: "service",
		labels: []string{"dynamo_component", "dynamo_endpoint", "dynamo_namespace", "error_type"}},
	{name: "dynamo_component_request_duration_seconds", typ: dto.MetricType_HISTOGRAM, labels: endpointLabels, dynamo: true, owner: "service",
		buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}},
	{name: "dynamo_component_uptime_seconds", typ: dto.MetricType_GAUGE, labels: []string{}, dynamo: true, owner: "metrics"},

	// Ours.
	{name: "dynamo_router_event_apply_seconds", typ: dto.MetricType_HISTOGRAM, labels: []string{"router_id"}, buckets: pathBuckets, owner: "overhead"},
	{name: "dynamo_router_mark_seconds", typ: dto.MetricType_HISTOGRAM, labels: []string{"mark", "router_id"}, buckets: pathBuckets, owner: "overhead"},
	{name: "dynamo_component_kv_event_decode_errors_total", typ: dto.MetricType_COUNTER, labels: with(compLabels, "reason"), owner: "events"},
	{name: "dynamo_component_kv_event_queue_depth", typ: dto.MetricType_GAUGE, labels: compLabels, owner: "events"},
	{name: "dynamo_component_kv_events_dropped_total", typ: dto.MetricType_COUNTER, labels: with(compLabels, "reason"), owner: "events"},
	{name: "dynamo_component_kv_events_missed_total", typ: dto.MetricType_COUNTER, labels: compLabels, owner: "events"},
	{name: "dynamo_component_kv_event_id_resets_total", typ: dto.MetricType_COUNTER, labels: compLabels, owner: "events"},
	{name: "dynamo_component_kv_event_apply_lag_seconds", typ: dto.MetricType_HISTOGRAM, labels: compLabels, owner: "events",
		buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}},
	{name: "dynamo_component_kv_index_entries", typ: dto.MetricType_GAUGE, labels: compLabels, owner: "events"},
	{name: "dynamo_component_kv_index_nodes", typ: dto.MetricType_GAUGE, labels: compLabels, owner: "events"},
	{name: "dynamo_component_kv_index_workers", typ: dto.MetricType_GAUGE, labels: compLabels, owner: "events"},
	{name: "dynamo_component_kv_index_evictions_total", typ: dto.MetricType_COUNTER, labels: with(compLabels, "reason"), owner: "events"},
	{name: "dynamo_component_router_block_size_mismatches_total", typ: dto.MetricType_COUNTER, labels: compLabels, owner: "workers"},
	{name: "dynamo_component_router_discovery_malformed_total", typ: dto.MetricType_COUNTER, labels: with(compLabels, "kind"), owner: "workers"},
	{name: "dynamo_component_router_workers_file_conflicts_total", typ: dto.MetricType_COUNTER, labels: compLabels, owner: "workers"},
	{name: "dynamo_component_router_worker_load_rejected_total", typ: dto.MetricType_COUNTER, labels: with(compLabels, "reason"), owner: "workers"},
	{name: "dynamo_component_router_etcd_reachable", typ: dto.MetricType_GAUGE, labels: compLabels, owner: "workers"},
	{name: "dynamo_component_router_workers_staleness_seconds", typ: dto.MetricType_GAUGE, labels: compLabels, owner: "workers"},
	{name: "dynamo_router_bookings_expired_total", typ: dto.MetricType_COUNTER, labels: []string{"reason", "router_id"}, owner: "scheduler"},
	// The index's health and the warm start from a peer.
	{name: "dynamo_router_index_diverging", typ: dto.MetricType_GAUGE, labels: []string{"router_id"}, owner: "events"},
	{name: "dynamo_router_warm_start_total", typ: dto.MetricType_COUNTER, labels: []string{"result", "router_id"}, owner: "warmstart"},
	{name: "dynamo_router_warm_start_events", typ: dto.MetricType_GAUGE, labels: []string{"router_id"}, owner: "warmstart"},
	{name: "dynamo_router_warm_start_seconds", typ: dto.MetricType_GAUGE, labels: []string{"router_id"}, owner: "warmstart"},
	// KV events over ZMQ: engines and Dynamo's event plane.
	{name: "dynamo_router_zmq_publishers", typ: dto.MetricType_GAUGE, labels: []string{"router_id", "state"}, owner: "zmqevents"},
	{name: "dynamo_router_zmq_messages_total", typ: dto.MetricType_COUNTER, labels: []string{"engine", "router_id"}, owner: "zmqevents"},
	{name: "dynamo_router_zmq_events_skipped_total", typ: dto.MetricType_COUNTER, labels: []string{"reason", "router_id"}, owner: "zmqevents"},
	{name: "dynamo_router_zmq_gaps_total", typ: dto.MetricType_COUNTER, labels: []string{"result", "router_id"}, owner: "zmqevents"},
	{name: "dynamo_router_zmq_replayed_batches_total", typ: dto.MetricType_COUNTER, labels: []string{"router_id"}, owner: "zmqevents"},
	{name: "dynamo_router_zmq_restarts_total", typ: dto.MetricType_COUNTER, labels: []string{"router_id"}, owner: "zmqevents"},
	{name: "dynamo_router_zmq_reconnects_total", typ: dto.MetricType_COUNTER, labels: []string{"router_id"}, owner: "zmqevents"},
	{name: "dynamo_component_router_bad_requests_total", typ: dto.MetricType_COUNTER, owner: "service",
		labels: []string{"dynamo_component", "dynamo_endpoint", "dynamo_namespace", "reason"}},
	{name: "dynamo_router_marks_unknown_total", typ: dto.MetricType_COUNTER, labels: []string{"endpoint", "router_id"}, owner: "service"},
	// The HTTP API's share of the endpoints' requests: separate families,
	// not a transport label on Dynamo's endpoint families, whose label set
	// Dynamo fixes.
	{name: "dynamo_router_http_requests_total", typ: dto.MetricType_COUNTER, labels: []string{"code", "endpoint", "router_id"}, owner: "httpapi"},
	{name: "dynamo_router_http_request_duration_seconds", typ: dto.MetricType_HISTOGRAM, labels: []string{"endpoint", "router_id"}, owner: "httpapi",
		buckets: []float64{5e-05, 0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048, 0.4096, 0.8192, 1.6384, 3.2768, 6.5536, 13.1072}},
}

func allFamilyNames() []string {
	names := make([]string, len(families))
	for i, f := range families {
		names[i] = f.name
	}
	return names
}

// freshRouter is a router built by New and not yet run, on embedded NATS
// and etcd, with the metrics of a fixed router id and clock.
type freshRouter struct {
	m     *metrics.Router
	reg   *prometheus.Registry
	clock *testutil.Clock
}

// servers are the embedded NATS and etcd the fresh routers are built on.
type servers struct {
	natsURL, etcdURL string
}

func startServers(t *testing.T) servers {
	t.Helper()
	return servers{natsURL: testutil.NATS(t).URL(), etcdURL: testutil.Etcd(t).Endpoint()}
}

func (s servers) newRouter(t *testing.T) *freshRouter {
	t.Helper()
	f := &freshRouter{reg: prometheus.NewPedanticRegistry(), clock: testutil.NewClock()}
	const routerID = 7587888160958628000
	var err error
	if f.m, err = metrics.New(f.reg, metrics.Config{Namespace: "dynamo", Component: "router", RouterID: routerID, Now: f.clock.Now}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{RouterID: routerID, KVEvents: true, Events: events.DefaultConfig(), Workers: workers.DefaultConfig(),
		Scheduler: scheduler.DefaultConfig(), Service: service.DefaultConfig()}
	if _, err := New(cfg, testutil.NATSConn(t, s.natsURL), testutil.EtcdClient(t, s.etcdURL), f.m, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

// owned are the families of every package, as the stack's parts built
// them: building them again returns the same collectors.
type owned struct {
	route   *overhead.Route
	apply   overhead.Span
	marks   overhead.Marks
	sched   *scheduler.Metrics
	workers *workers.Metrics
	events  *events.Metrics
	service *service.Metrics
	http    *httpapi.Metrics
	warm    *warmstart.Metrics
	zmq     *zmqevents.Metrics
}

func (f *freshRouter) owned(t *testing.T) owned {
	t.Helper()
	var o owned
	var err error
	check := func(e error) {
		t.Helper()
		if e != nil {
			t.Fatal(e)
		}
	}
	o.route, err = overhead.NewRoute(f.m)
	check(err)
	o.apply, err = overhead.NewApply(f.m)
	check(err)
	o.marks, err = overhead.NewMarks(f.m)
	check(err)
	o.sched, err = scheduler.NewMetrics(f.m)
	check(err)
	o.workers, err = workers.NewMetrics(f.m)
	check(err)
	o.events, err = events.NewMetrics(f.m)
	check(err)
	o.service, err = service.NewMetrics(f.m)
	check(err)
	o.http, err = httpapi.NewMetrics(f.m)
	check(err)
	o.warm, err = warmstart.NewMetrics(f.m)
	check(err)
	o.zmq, err = zmqevents.NewMetrics(f.m)
	check(err)
	return o
}

var (
	decode7  = metrics.Worker{ID: 7, DPRank: 0, Type: metrics.WorkerTypeDecode}
	decode7b = metrics.Worker{ID: 7, DPRank: 1, Type: metrics.WorkerTypeDecode}
	prefill9 = metrics.Worker{ID: 9, DPRank: 0, Type: metrics.WorkerTypePrefill}
)

// touchAll observes one series of every family, with fixed values, so the
// exposition holds every family and every label name.
func (o owned) touchAll() {
	o.route.Observe(overhead.Phases{
		BlockHashed: 20 * time.Microsecond, SeqHashed: 30 * time.Microsecond,
		FindMatches: 150 * time.Microsecond, Matched: 200 * time.Microsecond, Total: 500 * time.Microsecond,
	})
	o.apply.Observe(40 * time.Microsecond)
	o.marks.Prefill.Observe(10 * time.Microsecond)
	o.marks.Free.Observe(12 * time.Microsecond)
	s := o.sched
	for _, w := range []metrics.Worker{decode7, decode7b, prefill9} {
		v := w.Values()
		s.WorkerActiveDecodeBlocks.WithLabelValues(v...).Set(42)
		s.WorkerActivePrefillTokens.WithLabelValues(v...).Set(1000)
		s.WorkerLastTimeToFirstToken.WithLabelValues(v...).Set(0.25)
		s.WorkerLastInputSequenceTokens.WithLabelValues(v...).Set(3000)
		s.WorkerLastInterTokenLatency.WithLabelValues(v...).Set(0.02)
		o.workers.SetRegistered(w)
		o.workers.SetKVStats(w.ID, w.DPRank, workers.KVStats{ActiveBlocks: 100, TotalBlocks: 1000, GPUCacheUsage: 0.1, GPUPrefixCacheHitRate: 0.5})
	}
	s.RequestsTotal.Inc()
	s.TimeToFirstToken.Observe(0.25)
	s.InterTokenLatency.Observe(0.02)
	s.InputSequenceTokens.Observe(3000)
	s.OutputSequenceTokens.Observe(120)
	s.KVHitRate.Observe(0.75)
	s.QueuePendingRequests.WithLabelValues("llama", metrics.WorkerTypeDecode).Set(3)
	s.QueuePendingISLTokens.WithLabelValues("llama", metrics.WorkerTypeDecode).Set(9000)
	s.QueueBackpressure.WithLabelValues("llama", metrics.WorkerTypeDecode, metrics.BackpressureDoNotQueue).Inc()
	s.BookingsExpired.WithLabelValues(metrics.ExpiredNoPrefill).Inc()

	e := o.events
	e.Applied.WithLabelValues(metrics.EventStored, metrics.StatusOK).Add(10)
	e.Applied.WithLabelValues(metrics.EventRemoved, metrics.StatusBlockNotFound).Inc()
	e.DecodeErrors.WithLabelValues(metrics.DecodeJSON).Inc()
	e.QueueDepth.Set(5)
	e.Dropped.WithLabelValues(metrics.DropQueueFull).Inc()
	e.Missed.Add(2)
	e.IDResets.Inc()
	e.ApplyLag.Observe(0.0003)
	e.IndexEntries.Set(1200)
	e.IndexNodes.Set(1000)
	e.IndexWorkers.Set(3)
	e.IndexEvictions.WithLabelValues(metrics.EvictCapacity).Add(4)
	e.IndexDiverging.Set(1)

	o.warm.Total.WithLabelValues(metrics.WarmStartLoaded).Inc()
	o.warm.Events.Set(31820)
	o.warm.Seconds.Set(0.75)

	o.zmq.Publishers.WithLabelValues(metrics.ZMQConnected).Set(2)
	o.zmq.Messages.WithLabelValues("vllm").Add(40)
	o.zmq.Skipped.WithLabelValues("block_size_mismatch").Inc()
	o.zmq.Gaps.WithLabelValues(metrics.GapReplayed).Inc()
	o.zmq.Replayed.Add(3)
	o.zmq.Restarts.Inc()
	o.zmq.Reconnects.Inc()

	o.workers.BlockSizeMismatches.Inc()
	o.workers.DiscoveryMalformed.WithLabelValues(metrics.DiscoveryModelCard).Inc()
	o.workers.FileConflicts.Inc()
	o.workers.LoadRejected.WithLabelValues(metrics.LoadRejectJSON).Inc()

	r := o.service
	r.Route.Inflight.Inc()
	r.Route.Observe(3*time.Millisecond, 512, 128, "")
	r.Route.Observe(time.Millisecond, 20, 90, metrics.ErrorTypeBadRequest)
	r.Route.BadRequests.WithLabelValues(metrics.BadRequestNoTokens).Inc()
	r.MarkFree.Observe(time.Millisecond, 30, 16, metrics.ErrorTypeInternal)
	r.MarkFree.UnknownMarks.Add(2)
}

// touchHTTP observes one series of each HTTP family. touchAll leaves them
// alone, so that router_observed.prom stays the exposition of a router that
// serves no HTTP; router_http_observed.prom holds these.
func (o owned) touchHTTP() {
	o.http.Observe(metrics.EndpointRoute, 200, 3*time.Millisecond)
	o.http.Observe(metrics.EndpointRoute, 429, time.Millisecond)
	o.http.Observe(metrics.EndpointMarkFree, 200, time.Millisecond)
	o.http.Observe(metrics.HTTPEndpointUnknown, 404, 100*time.Microsecond)
}

// TestMetrics builds fresh routers on one pair of servers.
func TestMetrics(t *testing.T) {
	srv := startServers(t)

	// Right after New, before anything is observed: every scalar family is
	// there with zeros, so dashboards find them from the first scrape.
	t.Run("fresh exposition", func(t *testing.T) {
		f := srv.newRouter(t)
		checkGolden(t, f.reg, "router_fresh.prom")
	})

	t.Run("observed exposition", func(t *testing.T) {
		f := srv.newRouter(t)
		f.owned(t).touchAll()
		f.clock.Advance(90 * time.Second)
		checkGolden(t, f.reg, "router_observed.prom")
	})

	// Every family, vectors included, is created by New, before any
	// observation.
	t.Run("every family at once", func(t *testing.T) {
		f := srv.newRouter(t)
		want := allFamilyNames()
		slices.Sort(want)
		if diff := cmp.Diff(want, f.m.Registry().Names()); diff != "" {
			t.Errorf("families created by New (-want +got):\n%s", diff)
		}
	})

	t.Run("http exposition", func(t *testing.T) {
		f := srv.newRouter(t)
		f.owned(t).touchHTTP()
		checkGolden(t, f.reg, "router_http_observed.prom", metrics.NameHTTPRequestsTotal, metrics.NameHTTPRequestDurationSeconds)
	})

	t.Run("families", func(t *testing.T) {
		f := srv.newRouter(t)
		o := f.owned(t)
		o.touchAll()
		o.touchHTTP()
		checkFamilies(t, f.reg)
	})

	t.Run("promlint", func(t *testing.T) {
		f := srv.newRouter(t)
		o := f.owned(t)
		o.touchAll()
		o.touchHTTP()
		checkLint(t, f.reg)
	})

	// Each owner deletes a departed worker's series from its own families:
	// the registry the registered and kvstats series, the scheduler the
	// dynamo_frontend_worker_* series of each rank.
	t.Run("worker deleted", func(t *testing.T) {
		f := srv.newRouter(t)
		o := f.owned(t)
		o.touchAll()
		// Worker 7 has two ranks, each with a series in the 4 kvstats
		// gauges and worker_registered, and in the 5 frontend gauges.
		if got, want := o.workers.DeleteWorker(7), 2*5; got != want {
			t.Errorf("workers: DeleteWorker(7) removed %d series, want %d", got, want)
		}
		if got := o.workers.DeleteWorker(7); got != 0 {
			t.Errorf("workers: second DeleteWorker(7) removed %d series, want 0", got)
		}
		for _, w := range []metrics.Worker{decode7, decode7b} {
			if got := o.sched.DeleteRank(w); got != 5 {
				t.Errorf("scheduler: DeleteRank(%v) removed %d series, want 5", w, got)
			}
		}
		if got := o.sched.DeleteRank(metrics.Worker{ID: 12345, Type: metrics.WorkerTypeDecode}); got != 0 {
			t.Errorf("scheduler: DeleteRank of an unknown worker removed %d series", got)
		}
		mfs, err := f.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if (lp.GetName() == metrics.LabelWorkerID || lp.GetName() == metrics.LabelRouterWorkerID) && lp.GetValue() == "7" {
						t.Errorf("%s still has a series of worker 7", mf.GetName())
					}
				}
			}
		}
		checkGolden(t, f.reg, "router_worker_deleted.prom",
			metrics.NameWorkerActiveDecodeBlocks, metrics.NameWorkerActivePrefillTokens, metrics.NameWorkerLastTimeToFirstToken,
			metrics.NameWorkerLastInputSequenceTokens, metrics.NameWorkerLastInterTokenLatency, metrics.NameRouterWorkerRegistered,
			metrics.NameKVStatsActiveBlocks, metrics.NameKVStatsTotalBlocks, metrics.NameKVStatsGPUCacheUsagePercent,
			metrics.NameKVStatsGPUPrefixCacheHitRate)
	})
}

// checkFamilies finds each family of the list with its type, label names
// and buckets, and no family that is not listed.
func checkFamilies(t *testing.T, reg prometheus.Gatherer) {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	for _, f := range families {
		origin := "ours"
		if f.dynamo {
			origin = "dynamo"
		}
		t.Run(origin+"/"+f.name, func(t *testing.T) {
			mf, ok := byName[f.name]
			if !ok {
				t.Fatalf("family not exposed")
			}
			if mf.GetType() != f.typ {
				t.Errorf("type %v, want %v", mf.GetType(), f.typ)
			}
			if mf.GetHelp() == "" {
				t.Errorf("no help text")
			}
			for _, m := range mf.GetMetric() {
				var got []string
				for _, lp := range m.GetLabel() {
					got = append(got, lp.GetName())
				}
				slices.Sort(got)
				if diff := cmp.Diff(f.labels, got, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("label names (-want +got):\n%s", diff)
				}
				if f.typ != dto.MetricType_HISTOGRAM {
					continue
				}
				var bounds []float64
				for _, b := range m.GetHistogram().GetBucket() {
					bounds = append(bounds, b.GetUpperBound())
				}
				if diff := cmp.Diff(f.buckets, bounds, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
					t.Errorf("buckets (-want +got):\n%s", diff)
				}
			}
		})
	}
	for name := range byName {
		if !slices.Contains(allFamilyNames(), name) {
			t.Errorf("exposed family %s is not in the list (document it)", name)
		}
	}
}

// lintAllowed lists the promlint problems Dynamo compatibility requires,
// with the reason. Nothing else may be reported.
var lintAllowed = map[string]string{
	// Dynamo measures routing overhead in milliseconds and says so in the name.
	"dynamo_router_overhead_block_hashing_ms/metric names should not contain abbreviated units":        "Dynamo name",
	"dynamo_router_overhead_seq_hashing_ms/metric names should not contain abbreviated units":          "Dynamo name",
	"dynamo_router_overhead_indexer_find_matches_ms/metric names should not contain abbreviated units": "Dynamo name",
	"dynamo_router_overhead_scheduling_ms/metric names should not contain abbreviated units":           "Dynamo name",
	"dynamo_router_overhead_total_ms/metric names should not contain abbreviated units":                "Dynamo name",
	// Our path timings sit next to Dynamo's overhead histograms, in the same
	// unit, so that one panel compares them.
	// Dynamo's counter has no _total suffix.
	`dynamo_component_kv_cache_events_applied/counter metrics should have "_total" suffix`: "Dynamo name",
}

func checkLint(t *testing.T, reg prometheus.Gatherer) {
	problems, err := promtest.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	seen := map[string]bool{}
	for _, p := range problems {
		key := p.Metric + "/" + p.Text
		seen[key] = true
		if _, ok := lintAllowed[key]; !ok {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
	for key := range lintAllowed {
		if !seen[key] {
			t.Errorf("allowed problem %q no longer occurs: remove it from lintAllowed", key)
		}
	}
}

// docs/metrics.md documents every family, marks ours as ours, and names
// the package that owns it.
func TestDocsListEveryFamily(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(doc), "\n")
	for _, f := range families {
		quoted := "`" + f.name + "`"
		mentioned, markedOurs := false, false
		for _, line := range lines {
			if strings.Contains(line, quoted) {
				mentioned = true
				markedOurs = markedOurs || strings.Contains(line, "**ours**")
			}
		}
		switch {
		case !mentioned:
			t.Errorf("docs/metrics.md does not mention %s", quoted)
		case markedOurs != !f.dynamo:
			t.Errorf("docs/metrics.md marks %s as ours: %v, want %v", quoted, markedOurs, !f.dynamo)
		}
	}
	owners := map[string]bool{}
	for _, f := range families {
		owners[f.owner] = true
	}
	for owner := range owners {
		if !strings.Contains(string(doc), "`"+owner+"/`") {
			t.Errorf("docs/metrics.md names no family as owned by `%s/`", owner)
		}
	}
}

// checkGolden compares the exposition of the families names (all when none)
// with a golden file of testdata/metrics; with -update it rewrites the file
// first.
func checkGolden(t *testing.T, g prometheus.Gatherer, file string, names ...string) {
	t.Helper()
	testutil.CheckExposition(t, g, filepath.Join("..", "testdata", "metrics", file), *update, names...)
}
