package events

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// The Writer times every batch it applies (dynamo_router_event_apply_seconds)
// and, as the index's one writer, keeps the index gauges current: a Sync
// sees them.
func TestWriterTimesBatchesAndOwnsIndexGauges(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	root, err := metrics.New(reg, metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	h := &writerHarness{t: t, idx: indexer.NewIndex(indexer.Config{}), m: root, ids: map[indexer.Worker]uint64{}}
	if h.em, err = NewMetrics(root); err != nil {
		t.Fatal(err)
	}
	if h.w, err = NewWriter(testConfig(), h.idx, root, nil); err != nil {
		t.Fatal(err)
	}
	runWriter(t, h.w)
	if got := applyCount(t, reg); got != 0 {
		t.Fatalf("%s before any batch: %d observations", metrics.NameEventApply, got)
	}
	rank := indexer.Worker{ID: 3}
	h.w.WorkerJoined(rank.ID)
	h.store(rank, 0, 1)
	h.store(rank, 1, 2)
	h.sync()
	if got := applyCount(t, reg); got == 0 {
		t.Errorf("%s: no batch timed after two events", metrics.NameEventApply)
	}
	for name, tt := range map[string]struct {
		g    prometheus.Gauge
		want float64
	}{
		metrics.NameKVIndexEntries: {h.em.IndexEntries, 2},
		metrics.NameKVIndexWorkers: {h.em.IndexWorkers, 1},
	} {
		if got := promtest.ToFloat64(tt.g); got != tt.want {
			t.Errorf("%s = %v after Sync, want %v", name, got, tt.want)
		}
	}
	h.w.WorkerLeft(rank.ID)
	h.sync()
	if got := promtest.ToFloat64(h.em.IndexEntries); got != 0 {
		t.Errorf("%s = %v after the worker left, want 0", metrics.NameKVIndexEntries, got)
	}
}

func applyCount(t *testing.T, reg prometheus.Gatherer) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == metrics.NameEventApply {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("%s not exposed", metrics.NameEventApply)
	return 0
}
