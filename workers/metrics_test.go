package workers

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/metrics"
)

// testClock is a clock the test moves by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestMetrics(t *testing.T) (*Metrics, *testClock) {
	t.Helper()
	clock := &testClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	cfg := metrics.DefaultConfig()
	cfg.Now = clock.Now
	root, err := metrics.New(prometheus.NewPedanticRegistry(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMetrics(root)
	if err != nil {
		t.Fatal(err)
	}
	return m, clock
}

// The etcd gauges follow SetEtcdReachable; the staleness counts from the
// moment etcd was found unreachable, at scrape time.
func TestSetEtcdReachable(t *testing.T) {
	m, clock := newTestMetrics(t)
	check := func(wantReachable, wantStaleness float64) {
		t.Helper()
		if got := promtest.ToFloat64(m.EtcdReachable); got != wantReachable {
			t.Errorf("etcd reachable = %v, want %v", got, wantReachable)
		}
		if got := promtest.ToFloat64(m.WorkersStaleness); got != wantStaleness {
			t.Errorf("workers staleness = %v, want %v", got, wantStaleness)
		}
	}
	check(0, 0) // before the first listing
	m.SetEtcdReachable(true, time.Time{})
	check(1, 0)
	m.SetEtcdReachable(false, clock.Now().Add(-2*time.Second))
	check(0, 2)
	clock.advance(30 * time.Second)
	check(0, 32)
	m.SetEtcdReachable(true, time.Time{})
	check(1, 0)
}

// DeleteWorker removes every series of a worker, all ranks and types, from
// the families of this package, and nothing else.
func TestMetricsDeleteWorker(t *testing.T) {
	m, _ := newTestMetrics(t)
	for _, w := range []metrics.Worker{
		{ID: 7, DPRank: 0, Type: metrics.WorkerTypeDecode},
		{ID: 7, DPRank: 1, Type: metrics.WorkerTypePrefill},
		{ID: 9, DPRank: 0, Type: metrics.WorkerTypeDecode},
	} {
		m.SetRegistered(w)
		m.SetKVStats(w.ID, w.DPRank, KVStats{ActiveBlocks: 1, TotalBlocks: 2, GPUCacheUsage: 0.5, GPUPrefixCacheHitRate: 0.25})
	}
	// Two ranks of worker 7, each in registered and the 4 kvstats gauges.
	if got, want := m.DeleteWorker(7), 2*5; got != want {
		t.Errorf("DeleteWorker(7) removed %d series, want %d", got, want)
	}
	if got := m.DeleteWorker(7); got != 0 {
		t.Errorf("second DeleteWorker(7) removed %d series, want 0", got)
	}
	for name, c := range map[string]prometheus.Collector{
		metrics.NameRouterWorkerRegistered: m.Registered, metrics.NameKVStatsActiveBlocks: m.KVStatsActiveBlocks,
		metrics.NameKVStatsGPUPrefixCacheHitRate: m.KVStatsGPUPrefixCacheHitRate,
	} {
		if got := promtest.CollectAndCount(c); got != 1 {
			t.Errorf("%s has %d series after deleting worker 7, want 1 (worker 9)", name, got)
		}
	}
}
