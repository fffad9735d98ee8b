package workers

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/metrics"
)

// Metrics are the families this package owns, in the router's component
// scope (names in metrics/names.go; docs/metrics.md): which worker ranks
// are registered, the KV stats they report, what discovery could not use
// (malformed values, block size mismatches, rejected load messages), and
// whether it reaches etcd. The Registry writes the per-worker series under
// its lock and deletes a worker's when it goes (DeleteWorker), so the
// series stay bounded by the workers present.
//
// Safe for concurrent use. Build it once per metrics.Router: a second
// NewMetrics shares the collectors, but the staleness gauge reads the
// first one's SetEtcdReachable.
type Metrics struct {
	// Registered is dynamo_component_router_worker_registered
	// (router_worker_id, dp_rank, worker_type); use SetRegistered.
	Registered *prometheus.GaugeVec

	// KV stats re-exported from load messages (dynamo_component_kvstats_*;
	// worker_id, dp_rank); use SetKVStats.
	KVStatsActiveBlocks          *prometheus.GaugeVec
	KVStatsTotalBlocks           *prometheus.GaugeVec
	KVStatsGPUCacheUsagePercent  *prometheus.GaugeVec
	KVStatsGPUPrefixCacheHitRate *prometheus.GaugeVec

	BlockSizeMismatches prometheus.Counter
	DiscoveryMalformed  *prometheus.CounterVec // kind
	// FileConflicts counts workers file entries refused because etcd
	// registers the same id, once per conflict.
	FileConflicts prometheus.Counter
	LoadRejected  *prometheus.CounterVec // reason

	// EtcdReachable (1 or 0) and WorkersStaleness (seconds, computed at
	// every scrape) say whether discovery reaches etcd and how old the
	// last known workers are; use SetEtcdReachable.
	EtcdReachable    prometheus.Gauge
	WorkersStaleness prometheus.GaugeFunc
	// etcdDownSince is when discovery found etcd unreachable, in Unix
	// nanoseconds; 0 while it reaches etcd.
	etcdDownSince atomic.Int64

	stats []*prometheus.GaugeVec // the kvstats vectors, for DeleteWorker
}

// NewMetrics creates the package's families in m's component scope, or
// returns those created before on the same registry.
func NewMetrics(m *metrics.Router) (*Metrics, error) {
	var b metrics.Builder
	comp := m.Component()
	opts := func(name, help string, labels ...string) metrics.Opts {
		return metrics.Opts{Name: metrics.Suffix(name), Help: help, Labels: labels}
	}
	stats := func(name, help string) *prometheus.GaugeVec {
		return b.GaugeVec(comp, opts(name, help, metrics.LabelWorkerID, metrics.LabelDPRank))
	}
	w := &Metrics{
		Registered: b.GaugeVec(comp, opts(metrics.NameRouterWorkerRegistered, "Whether the router currently has this worker/dp_rank registered (1 = registered)",
			metrics.LabelRouterWorkerID, metrics.LabelDPRank, metrics.LabelWorkerType)),
		KVStatsActiveBlocks:          stats(metrics.NameKVStatsActiveBlocks, "Number of active KV cache blocks reported by the worker"),
		KVStatsTotalBlocks:           stats(metrics.NameKVStatsTotalBlocks, "Total number of KV cache blocks available on the worker"),
		KVStatsGPUCacheUsagePercent:  stats(metrics.NameKVStatsGPUCacheUsagePercent, "GPU cache usage as a percentage (0.0-1.0) reported by the worker"),
		KVStatsGPUPrefixCacheHitRate: stats(metrics.NameKVStatsGPUPrefixCacheHitRate, "GPU prefix cache hit rate as a percentage (0.0-1.0) reported by the worker"),
		BlockSizeMismatches:          b.Counter(comp, opts(metrics.NameBlockSizeMismatchesTotal, "Total number of workers found with a KV block size other than the router's")),
		DiscoveryMalformed:           b.CounterVec(comp, opts(metrics.NameDiscoveryMalformedTotal, "Total number of discovery values that could not be parsed", metrics.LabelKind)),
		FileConflicts:                b.Counter(comp, opts(metrics.NameWorkersFileConflictsTotal, "Total number of workers file entries refused because etcd registers the same worker id")),
		LoadRejected:                 b.CounterVec(comp, opts(metrics.NameWorkerLoadRejectedTotal, "Total number of worker load messages the router could not use", metrics.LabelReason)),
		EtcdReachable:                b.Gauge(comp, opts(metrics.NameEtcdReachable, "Whether worker discovery reaches etcd (1) or not (0)")),
	}
	w.WorkersStaleness = b.GaugeFunc(comp, opts(metrics.NameWorkersStalenessSeconds, "Age of the last known workers in seconds: 0 while etcd is reachable, else the time since it was found unreachable"),
		func() float64 {
			since := w.etcdDownSince.Load()
			if since == 0 {
				return 0
			}
			return max(0, m.Now().Sub(time.Unix(0, since)).Seconds())
		})
	if err := b.Err(); err != nil {
		return nil, fmt.Errorf("worker metrics: %w", err)
	}
	w.stats = []*prometheus.GaugeVec{w.KVStatsActiveBlocks, w.KVStatsTotalBlocks, w.KVStatsGPUCacheUsagePercent, w.KVStatsGPUPrefixCacheHitRate}
	return w, nil
}

// SetEtcdReachable records whether worker discovery reaches etcd and, when
// it does not, since when: the workers-staleness gauge counts from there.
func (w *Metrics) SetEtcdReachable(reachable bool, downSince time.Time) {
	if reachable {
		w.etcdDownSince.Store(0)
		w.EtcdReachable.Set(1)
		return
	}
	w.etcdDownSince.Store(downSince.UnixNano())
	w.EtcdReachable.Set(0)
}

// SetRegistered marks a worker rank registered (value 1).
func (w *Metrics) SetRegistered(rank metrics.Worker) {
	w.Registered.WithLabelValues(rank.Values()...).Set(1)
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
func (w *Metrics) SetKVStats(workerID uint64, dpRank uint32, s KVStats) {
	id, rank := strconv.FormatUint(workerID, 10), strconv.FormatUint(uint64(dpRank), 10)
	w.KVStatsActiveBlocks.WithLabelValues(id, rank).Set(float64(s.ActiveBlocks))
	w.KVStatsTotalBlocks.WithLabelValues(id, rank).Set(float64(s.TotalBlocks))
	w.KVStatsGPUCacheUsagePercent.WithLabelValues(id, rank).Set(s.GPUCacheUsage)
	w.KVStatsGPUPrefixCacheHitRate.WithLabelValues(id, rank).Set(s.GPUPrefixCacheHitRate)
}

// DeleteWorker removes every series of the worker id, all its ranks and
// types, from this package's per-worker families (registered and kvstats),
// and returns how many it removed. The scheduler deletes the worker's
// dynamo_frontend_worker_* series itself, when the worker stops being a
// candidate.
func (w *Metrics) DeleteWorker(id uint64) int {
	n := w.Registered.DeletePartialMatch(prometheus.Labels{metrics.LabelRouterWorkerID: strconv.FormatUint(id, 10)})
	return n + w.DeleteKVStats(id)
}

// DeleteRegistered removes the registered series of one worker rank of one
// type, and reports whether it existed.
func (w *Metrics) DeleteRegistered(rank metrics.Worker) bool {
	return w.Registered.DeleteLabelValues(rank.Values()...)
}

// DeleteKVStats removes the dynamo_component_kvstats_* series of every rank
// of the worker id, and returns how many it removed.
func (w *Metrics) DeleteKVStats(id uint64) int {
	n := 0
	for _, g := range w.stats {
		n += g.DeletePartialMatch(prometheus.Labels{metrics.LabelWorkerID: strconv.FormatUint(id, 10)})
	}
	return n
}
