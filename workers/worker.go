package workers

import (
	"fmt"
	"time"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// Type is the kind of a worker, given by the component it registers under.
type Type uint8

// The kinds of worker.
const (
	// TypeDecode is a worker of Config.Component: an aggregated worker, or
	// the decode half of disaggregated serving. Metrics call both "decode",
	// as Dynamo does.
	TypeDecode Type = iota + 1
	// TypePrefill is a worker of Config.PrefillComponent.
	TypePrefill
)

// numTypes sizes arrays indexed by Type.
const numTypes = 3

// String returns the worker_type label value: "decode" or "prefill".
func (t Type) String() string {
	switch t {
	case TypeDecode:
		return metrics.WorkerTypeDecode
	case TypePrefill:
		return metrics.WorkerTypePrefill
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// MarshalText renders the type as String does, for JSON (/health).
func (t Type) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// valid reports whether t is one of the kinds above.
func (t Type) valid() bool { return t == TypeDecode || t == TypePrefill }

// Source is where a worker's registration comes from.
type Source uint8

// The sources of workers.
const (
	// SourceEtcd is Dynamo's discovery entries in etcd (Discovery). It is
	// the zero value.
	SourceEtcd Source = iota
	// SourceFile is the workers file (FileSource).
	SourceFile
)

// String returns "etcd" or "file", as logs give the source.
func (s Source) String() string {
	switch s {
	case SourceEtcd:
		return "etcd"
	case SourceFile:
		return "file"
	}
	return fmt.Sprintf("source(%d)", uint8(s))
}

// MarshalText renders the source as String does.
func (s Source) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Worker is one registered worker instance, as its etcd entries, or its
// entry in the workers file, describe it. It is a value: the registry never
// changes a Worker it has handed out.
type Worker struct {
	// ID is the instance id, the worker's etcd lease id.
	ID indexer.WorkerID
	// Type follows the component the instance registered under.
	Type Type
	// Namespace and Component are where the instance registered.
	Namespace, Component string
	// DPStart and DPSize give the worker's data-parallel ranks,
	// [DPStart, DPStart+DPSize); each rank is one scheduling candidate.
	DPStart, DPSize uint32
	// BlockSize is the card's kv_cache_block_size, or the router's block
	// size when the card does not state one.
	BlockSize int
	// TotalKVBlocks, MaxNumSeqs and MaxNumBatchedTokens come from the card's
	// runtime_config, or from Config.Defaults; 0 means unknown.
	TotalKVBlocks, MaxNumSeqs, MaxNumBatchedTokens int
	// BlockSizeMismatch says the card's block size differs from the
	// router's: the worker's KV events hash other blocks than the router's
	// queries, so its overlaps are not to be trusted.
	BlockSizeMismatch bool
	// HasCard says a model card was found, or the worker comes from the
	// workers file, whose entry is its card; without one, the numbers above
	// are defaults.
	HasCard bool
	// Model is the card's display_name.
	Model string
	// Source says where the worker registered: etcd or the workers file.
	// A worker id that both name is etcd's.
	Source Source
	// URL is where the worker serves, from the workers file's url; "" when
	// unknown (always, for etcd workers). Route replies echo it as
	// worker_url.
	URL string
}

// Ranks returns the worker's ranks, one scheduling unit each.
func (w Worker) Ranks() []indexer.Worker {
	r := make([]indexer.Worker, w.DPSize)
	for i := range r {
		r[i] = indexer.Worker{ID: w.ID, DPRank: indexer.DPRank(w.DPStart + uint32(i))}
	}
	return r
}

// HasRank reports whether rank is one of the worker's data-parallel ranks.
func (w Worker) HasRank(rank indexer.DPRank) bool {
	return uint32(rank) >= w.DPStart && uint64(rank) < uint64(w.DPStart)+uint64(w.DPSize)
}

// metricsWorker names the worker rank's series.
func (w Worker) metricsWorker(rank indexer.DPRank) metrics.Worker {
	return metrics.Worker{ID: uint64(w.ID), DPRank: uint32(rank), Type: w.Type.String()}
}

// Candidate is one (worker, dp_rank) the scheduler may choose, with what
// the scheduler needs of its worker.
type Candidate struct {
	// Worker is the rank, as the index names it.
	Worker indexer.Worker
	// Type is the worker's type.
	Type Type
	// BlockSize and the limits are the worker's (see Worker).
	BlockSize                                      int
	TotalKVBlocks, MaxNumSeqs, MaxNumBatchedTokens int
	// BlockSizeMismatch says the worker's overlaps are not to be trusted:
	// score it as if it held nothing.
	BlockSizeMismatch bool
}

// Load is what the workers' load messages (namespace.{ns}.kv_metrics) last
// said about one rank. Fields never reported are 0. Messages of the newer
// ActiveLoad shape state only some fields; the others keep their last value.
type Load struct {
	// ActiveDecodeBlocks and ActivePrefillTokens are a scheduler's view of
	// the rank's load (ActiveLoad, published by Dynamo routers).
	ActiveDecodeBlocks, ActivePrefillTokens int
	// KVUsedBlocks is the engine's count of KV blocks in use (ActiveLoad
	// kv_used_blocks, or classic kv_stats.kv_active_blocks).
	KVUsedBlocks int
	// KVTotalBlocks is the engine's KV cache size (classic
	// kv_stats.kv_total_blocks).
	KVTotalBlocks int
	// RequestActiveSlots, RequestTotalSlots and NumRequestsWaiting are the
	// classic worker_stats.
	RequestActiveSlots, RequestTotalSlots, NumRequestsWaiting int
	// GPUCacheUsage and GPUPrefixCacheHitRate are fractions, 0 to 1
	// (classic kv_stats).
	GPUCacheUsage, GPUPrefixCacheHitRate float64
	// Updated is when the last message about the rank arrived.
	Updated time.Time
}
