package metrics

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// family is one row of the list of families the router exposes. The names
// and buckets are written out here, not taken from names.go, so a typo there
// fails this test.
type family struct {
	name    string
	typ     dto.MetricType
	labels  []string  // every label name of a series, sorted
	buckets []float64 // histograms only
	dynamo  bool      // listed in dynamo-compat.md §7; false: ours
}

var (
	computeBuckets = []float64{0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384}
	asyncBuckets   = []float64{0.01, 0.03, 0.09, 0.27, 0.81, 2.43, 7.29, 21.87, 65.61, 196.83, 590.49, 1771.47, 5314.41, 15943.23, 47829.69, 143489.07, 430467.21}
	hitRateBuckets = []float64{0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1}

	routerLabels   = []string{"dynamo_component", "dynamo_namespace", "router_id"}
	workerLabels   = []string{"dp_rank", "worker_id", "worker_type"}
	statsLabels    = []string{"dp_rank", "dynamo_component", "dynamo_namespace", "worker_id"}
	compLabels     = []string{"dynamo_component", "dynamo_namespace"}
	endpointLabels = []string{"dynamo_component", "dynamo_endpoint", "dynamo_namespace"}
)

// families walks dynamo-compat.md §7 in order, then lists ours.
var families = []family{
	// Overhead.
	{name: "dynamo_router_overhead_block_hashing_ms", typ: dto.MetricType_HISTOGRAM, labels: []string{"router_id"}, buckets: computeBuckets, dynamo: true},
	{name: "dynamo_router_overhead_seq_hashing_ms", typ: dto.MetricType_HISTOGRAM, labels: []string{"router_id"}, buckets: computeBuckets, dynamo: true},
	{name: "dynamo_router_overhead_indexer_find_matches_ms", typ: dto.MetricType_HISTOGRAM, labels: []string{"router_id"}, buckets: asyncBuckets, dynamo: true},
	{name: "dynamo_router_overhead_scheduling_ms", typ: dto.MetricType_HISTOGRAM, labels: []string{"router_id"}, buckets: asyncBuckets, dynamo: true},
	{name: "dynamo_router_overhead_total_ms", typ: dto.MetricType_HISTOGRAM, labels: []string{"router_id"}, buckets: asyncBuckets, dynamo: true},
	// Per-worker gauges.
	{name: "dynamo_frontend_worker_active_decode_blocks", typ: dto.MetricType_GAUGE, labels: workerLabels, dynamo: true},
	{name: "dynamo_frontend_worker_active_prefill_tokens", typ: dto.MetricType_GAUGE, labels: workerLabels, dynamo: true},
	{name: "dynamo_frontend_worker_last_time_to_first_token_seconds", typ: dto.MetricType_GAUGE, labels: workerLabels, dynamo: true},
	{name: "dynamo_frontend_worker_last_input_sequence_tokens", typ: dto.MetricType_GAUGE, labels: workerLabels, dynamo: true},
	{name: "dynamo_frontend_worker_last_inter_token_latency_seconds", typ: dto.MetricType_GAUGE, labels: workerLabels, dynamo: true},
	// Router request metrics.
	{name: "dynamo_component_router_requests_total", typ: dto.MetricType_COUNTER, labels: routerLabels, dynamo: true},
	{name: "dynamo_component_router_time_to_first_token_seconds", typ: dto.MetricType_HISTOGRAM, labels: routerLabels, dynamo: true,
		buckets: []float64{0, 0.0022, 0.0047, 0.01, 0.022, 0.047, 0.1, 0.22, 0.47, 1, 2.2, 4.7, 10, 22, 48, 100, 220, 480}},
	{name: "dynamo_component_router_inter_token_latency_seconds", typ: dto.MetricType_HISTOGRAM, labels: routerLabels, dynamo: true,
		buckets: []float64{0, 0.0019, 0.0035, 0.0067, 0.013, 0.024, 0.045, 0.084, 0.16, 0.3, 0.56, 1.1, 2}},
	{name: "dynamo_component_router_input_sequence_tokens", typ: dto.MetricType_HISTOGRAM, labels: routerLabels, dynamo: true,
		buckets: []float64{0, 100, 210, 430, 870, 1800, 3600, 7400, 15000, 31000, 63000, 130000}},
	{name: "dynamo_component_router_output_sequence_tokens", typ: dto.MetricType_HISTOGRAM, labels: routerLabels, dynamo: true,
		buckets: []float64{0, 100, 210, 430, 880, 1800, 3700, 7600, 16000, 32000}},
	{name: "dynamo_component_router_kv_hit_rate", typ: dto.MetricType_HISTOGRAM, labels: routerLabels, buckets: hitRateBuckets, dynamo: true},
	{name: "dynamo_component_router_worker_registered", typ: dto.MetricType_GAUGE, dynamo: true,
		labels: []string{"dp_rank", "dynamo_component", "dynamo_namespace", "router_worker_id", "worker_type"}},
	// Queue.
	{name: "dynamo_frontend_router_queue_pending_requests", typ: dto.MetricType_GAUGE, labels: []string{"model", "worker_type"}, dynamo: true},
	{name: "dynamo_frontend_router_queue_pending_isl_tokens", typ: dto.MetricType_GAUGE, labels: []string{"model", "worker_type"}, dynamo: true},
	{name: "dynamo_frontend_router_queue_backpressure_total", typ: dto.MetricType_COUNTER, labels: []string{"model", "reason", "worker_type"}, dynamo: true},
	// Index.
	{name: "dynamo_component_kv_cache_events_applied", typ: dto.MetricType_COUNTER, dynamo: true,
		labels: []string{"dynamo_component", "dynamo_namespace", "event_type", "status"}},
	// Worker KV stats.
	{name: "dynamo_component_kvstats_active_blocks", typ: dto.MetricType_GAUGE, labels: statsLabels, dynamo: true},
	{name: "dynamo_component_kvstats_total_blocks", typ: dto.MetricType_GAUGE, labels: statsLabels, dynamo: true},
	{name: "dynamo_component_kvstats_gpu_cache_usage_percent", typ: dto.MetricType_GAUGE, labels: statsLabels, dynamo: true},
	{name: "dynamo_component_kvstats_gpu_prefix_cache_hit_rate", typ: dto.MetricType_GAUGE, labels: statsLabels, dynamo: true},
	// Endpoint work handler.
	{name: "dynamo_component_requests_total", typ: dto.MetricType_COUNTER, labels: endpointLabels, dynamo: true},
	{name: "dynamo_component_inflight_requests", typ: dto.MetricType_GAUGE, labels: endpointLabels, dynamo: true},
	{name: "dynamo_component_request_bytes_total", typ: dto.MetricType_COUNTER, labels: endpointLabels, dynamo: true},
	{name: "dynamo_component_response_bytes_total", typ: dto.MetricType_COUNTER, labels: endpointLabels, dynamo: true},
	{name: "dynamo_component_errors_total", typ: dto.MetricType_COUNTER, dynamo: true,
		labels: []string{"dynamo_component", "dynamo_endpoint", "dynamo_namespace", "error_type"}},
	{name: "dynamo_component_request_duration_seconds", typ: dto.MetricType_HISTOGRAM, labels: endpointLabels, dynamo: true,
		buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}},
	{name: "dynamo_component_uptime_seconds", typ: dto.MetricType_GAUGE, labels: []string{}, dynamo: true},

	// Ours.
	{name: "dynamo_component_kv_event_decode_errors_total", typ: dto.MetricType_COUNTER, labels: append(slices.Clone(compLabels), "reason")},
	{name: "dynamo_component_kv_event_queue_depth", typ: dto.MetricType_GAUGE, labels: compLabels},
	{name: "dynamo_component_kv_events_dropped_total", typ: dto.MetricType_COUNTER, labels: append(slices.Clone(compLabels), "reason")},
	{name: "dynamo_component_kv_events_missed_total", typ: dto.MetricType_COUNTER, labels: compLabels},
	{name: "dynamo_component_kv_event_apply_lag_seconds", typ: dto.MetricType_HISTOGRAM, labels: compLabels,
		buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}},
	{name: "dynamo_component_kv_index_entries", typ: dto.MetricType_GAUGE, labels: compLabels},
	{name: "dynamo_component_kv_index_nodes", typ: dto.MetricType_GAUGE, labels: compLabels},
	{name: "dynamo_component_kv_index_workers", typ: dto.MetricType_GAUGE, labels: compLabels},
	{name: "dynamo_component_kv_index_evictions_total", typ: dto.MetricType_COUNTER, labels: append(slices.Clone(compLabels), "reason")},
	{name: "dynamo_component_router_block_size_mismatches_total", typ: dto.MetricType_COUNTER, labels: compLabels},
	{name: "dynamo_component_router_discovery_malformed_total", typ: dto.MetricType_COUNTER, labels: append(slices.Clone(compLabels), "kind")},
	{name: "dynamo_component_router_bad_requests_total", typ: dto.MetricType_COUNTER,
		labels: []string{"dynamo_component", "dynamo_endpoint", "dynamo_namespace", "reason"}},
}

func allFamilyNames() []string {
	names := make([]string, len(families))
	for i, f := range families {
		names[i] = f.name
	}
	return names
}

func testConfig(clock *fakeClock) Config {
	cfg := DefaultConfig()
	cfg.RouterID = 7587888160958628000
	cfg.Now = clock.Now
	return cfg
}

func newTestRouter(t *testing.T) (*Router, *prometheus.Registry, *fakeClock) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	clock := newFakeClock()
	m, err := New(reg, testConfig(clock))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m, reg, clock
}

var (
	decode7  = Worker{ID: 7, DPRank: 0, Type: WorkerTypeDecode}
	decode7b = Worker{ID: 7, DPRank: 1, Type: WorkerTypeDecode}
	prefill9 = Worker{ID: 9, DPRank: 0, Type: WorkerTypePrefill}
)

// touchAll observes one series of every family, with fixed values, so the
// exposition holds every family and every label name.
func touchAll(m *Router) {
	m.ObserveOverhead(Overhead{
		BlockHashed: 20 * time.Microsecond, SeqHashed: 30 * time.Microsecond,
		FindMatches: 150 * time.Microsecond, Matched: 200 * time.Microsecond, Total: 500 * time.Microsecond,
	})
	for _, w := range []Worker{decode7, decode7b, prefill9} {
		m.SetWorkerLoad(w, 42, 1000)
		m.ObserveWorkerFirstToken(w, 250*time.Millisecond, 3000)
		m.ObserveWorkerInterToken(w, 20*time.Millisecond)
		m.SetWorkerRegistered(w)
		m.SetKVStats(w.ID, w.DPRank, KVStats{ActiveBlocks: 100, TotalBlocks: 1000, GPUCacheUsage: 0.1, GPUPrefixCacheHitRate: 0.5})
	}
	m.RequestsTotal.Inc()
	m.TimeToFirstToken.Observe(0.25)
	m.InterTokenLatency.Observe(0.02)
	m.InputSequenceTokens.Observe(3000)
	m.OutputSequenceTokens.Observe(120)
	m.KVHitRate.Observe(0.75)

	m.QueuePendingRequests.WithLabelValues("llama", WorkerTypeDecode).Set(3)
	m.QueuePendingISLTokens.WithLabelValues("llama", WorkerTypeDecode).Set(9000)
	m.QueueBackpressure.WithLabelValues("llama", WorkerTypeDecode, BackpressureDoNotQueue).Inc()

	m.KVEventsApplied.WithLabelValues(EventStored, StatusOK).Add(10)
	m.KVEventsApplied.WithLabelValues(EventRemoved, StatusBlockNotFound).Inc()
	m.KVEventDecodeErrors.WithLabelValues(DecodeJSON).Inc()
	m.KVEventQueueDepth.Set(5)
	m.KVEventsDropped.WithLabelValues(DropQueueFull).Inc()
	m.KVEventsMissed.Add(2)
	m.KVEventApplyLag.Observe(0.0003)
	m.IndexEntries.Set(1200)
	m.IndexNodes.Set(1000)
	m.IndexWorkers.Set(3)
	m.IndexEvictions.WithLabelValues(EvictCapacity).Add(4)
	m.BlockSizeMismatches.Inc()
	m.DiscoveryMalformed.WithLabelValues(DiscoveryModelCard).Inc()

	m.Route.Inflight.Inc()
	m.Route.Observe(3*time.Millisecond, 512, 128, "")
	m.Route.Observe(time.Millisecond, 20, 90, ErrorTypeBadRequest)
	m.Route.BadRequests.WithLabelValues(BadRequestNoTokens).Inc()
	m.MarkFree.Observe(time.Millisecond, 30, 16, ErrorTypeInternal)
}

// Right after New, before anything is observed: every scalar family is
// there with zeros, so dashboards find them from the first scrape.
func TestRouterFreshExposition(t *testing.T) {
	_, reg, _ := newTestRouter(t)
	checkGolden(t, reg, "router_fresh.prom")
}

func TestRouterObservedExposition(t *testing.T) {
	m, reg, clock := newTestRouter(t)
	touchAll(m)
	clock.Advance(90 * time.Second)
	checkGolden(t, reg, "router_observed.prom")
}

// TestDynamoFamilies walks dynamo-compat.md §7 (then our families) and finds
// each family with its type, label names and buckets.
func TestDynamoFamilies(t *testing.T) {
	m, reg, _ := newTestRouter(t)
	touchAll(m)
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
			for _, metric := range mf.GetMetric() {
				var got []string
				for _, lp := range metric.GetLabel() {
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
				for _, b := range metric.GetHistogram().GetBucket() {
					bounds = append(bounds, b.GetUpperBound())
				}
				if diff := cmp.Diff(f.buckets, bounds, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
					t.Errorf("buckets (-want +got):\n%s", diff)
				}
			}
		})
	}
	if len(byName) != len(families) {
		var extra []string
		for name := range byName {
			if !slices.Contains(allFamilyNames(), name) {
				extra = append(extra, name)
			}
		}
		t.Errorf("exposed families not in the list (document them): %v", extra)
	}
}

// Every family, vectors included, is registered by New, before any
// observation.
func TestRouterRegistersEveryFamilyAtOnce(t *testing.T) {
	m, _, _ := newTestRouter(t)
	want := allFamilyNames()
	slices.Sort(want)
	if diff := cmp.Diff(want, m.Registry().Names()); diff != "" {
		t.Errorf("families created by New (-want +got):\n%s", diff)
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
	// Dynamo's counter has no _total suffix.
	`dynamo_component_kv_cache_events_applied/counter metrics should have "_total" suffix`: "Dynamo name",
}

func TestPromlint(t *testing.T) {
	m, reg, _ := newTestRouter(t)
	touchAll(m)
	problems, err := testutil.GatherAndLint(reg)
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

func TestDeleteWorker(t *testing.T) {
	m, reg, _ := newTestRouter(t)
	touchAll(m)

	// Worker 7 has two ranks, each with a series in the 5 frontend
	// gauges, the 4 kvstats gauges and worker_registered.
	if got, want := m.DeleteWorker(7), 2*10; got != want {
		t.Errorf("DeleteWorker(7) removed %d series, want %d", got, want)
	}
	if got := m.DeleteWorker(7); got != 0 {
		t.Errorf("second DeleteWorker(7) removed %d series, want 0", got)
	}
	if got := m.DeleteWorker(12345); got != 0 {
		t.Errorf("DeleteWorker of an unknown worker removed %d series", got)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, metric := range mf.GetMetric() {
			for _, lp := range metric.GetLabel() {
				if (lp.GetName() == LabelWorkerID || lp.GetName() == LabelRouterWorkerID) && lp.GetValue() == "7" {
					t.Errorf("%s still has a series of worker 7", mf.GetName())
				}
			}
		}
	}
	checkGolden(t, reg, "router_worker_deleted.prom",
		NameWorkerActiveDecodeBlocks, NameWorkerActivePrefillTokens, NameWorkerLastTimeToFirstToken,
		NameWorkerLastInputSequenceTokens, NameWorkerLastInterTokenLatency, NameRouterWorkerRegistered,
		NameKVStatsActiveBlocks, NameKVStatsTotalBlocks, NameKVStatsGPUCacheUsagePercent, NameKVStatsGPUPrefixCacheHitRate)
}

// ObserveOverhead derives the phases as Dynamo does.
func TestObserveOverhead(t *testing.T) {
	tests := []struct {
		name string
		in   Overhead
		want map[string]float64 // histogram → sum of observations in ms
	}{
		{
			name: "phases",
			in:   Overhead{BlockHashed: 2 * time.Millisecond, SeqHashed: 3 * time.Millisecond, FindMatches: 4 * time.Millisecond, Matched: 7 * time.Millisecond, Total: 10 * time.Millisecond},
			want: map[string]float64{NameOverheadBlockHashing: 2, NameOverheadSeqHashing: 1, NameOverheadFindMatches: 4, NameOverheadScheduling: 3, NameOverheadTotal: 10},
		},
		{
			name: "clock going backwards floors at zero",
			in:   Overhead{BlockHashed: 2 * time.Millisecond, SeqHashed: time.Millisecond, FindMatches: time.Millisecond, Matched: 5 * time.Millisecond, Total: 4 * time.Millisecond},
			want: map[string]float64{NameOverheadBlockHashing: 2, NameOverheadSeqHashing: 0, NameOverheadFindMatches: 1, NameOverheadScheduling: 0, NameOverheadTotal: 4},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg, _ := newTestRouter(t)
			m.ObserveOverhead(tt.in)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, mf := range mfs {
				if strings.HasPrefix(mf.GetName(), PrefixRouter+"_overhead_") {
					h := mf.GetMetric()[0].GetHistogram()
					if h.GetSampleCount() != 1 {
						t.Errorf("%s has %d samples, want 1", mf.GetName(), h.GetSampleCount())
					}
					got[mf.GetName()] = h.GetSampleSum()
				}
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
				t.Errorf("sums in ms (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEndpointLookup(t *testing.T) {
	m, _, _ := newTestRouter(t)
	for _, name := range []string{EndpointRoute, EndpointMarkPrefill, EndpointMarkFree, EndpointOverlapScores, EndpointPotentialLoads} {
		e, ok := m.Endpoint(name)
		if !ok || e.Name != name {
			t.Errorf("Endpoint(%q) = %v, %v", name, e, ok)
		}
	}
	if _, ok := m.Endpoint("generate"); ok {
		t.Errorf("Endpoint(generate) found an endpoint the router does not serve")
	}
}

// Two Routers on one registry share collectors instead of failing; a
// registry already holding one of the names with another shape fails New
// with an error naming the metric.
func TestNewOnSharedRegistry(t *testing.T) {
	t.Run("twice", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		clock := newFakeClock()
		a, err := New(reg, testConfig(clock))
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(reg, testConfig(clock))
		if err != nil {
			t.Fatalf("second New: %v", err)
		}
		b.RequestsTotal.Inc()
		if got := testutil.ToFloat64(a.RequestsTotal); got != 1 {
			t.Errorf("first router's counter = %v, want 1 (shared)", got)
		}
	})
	t.Run("conflict", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: NameQueuePendingRequests, Help: "Wrong type."}))
		_, err := New(reg, testConfig(newFakeClock()))
		if err == nil || !strings.Contains(err.Error(), NameQueuePendingRequests) {
			t.Fatalf("got %v, want an error naming %s", err, NameQueuePendingRequests)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr error
	}{
		{name: "default", cfg: DefaultConfig()},
		{name: "dashed namespace is fine", cfg: Config{Namespace: "my-ns", Component: "router"}},
		{name: "empty namespace", cfg: Config{Component: "router"}, wantErr: ErrInvalidName},
		{name: "invalid component", cfg: Config{Namespace: "dynamo", Component: "%%"}, wantErr: ErrInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate() = %v, want %v", err, tt.wantErr)
			}
			if _, err := New(prometheus.NewRegistry(), tt.cfg); !errors.Is(err, tt.wantErr) {
				t.Fatalf("New() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// docs/metrics.md documents every family, and marks ours as ours.
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
}

// New registers nothing on client_golang's global registry.
func TestNoGlobalRegistration(t *testing.T) {
	newTestRouter(t)
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "dynamo_") {
			t.Errorf("%s is on the global registry", mf.GetName())
		}
	}
}
