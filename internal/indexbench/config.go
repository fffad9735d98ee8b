package indexbench

import (
	"fmt"
	"runtime"
	"time"
)

// Limits of Config's fields.
const (
	MaxWorkers      = 1 << 16
	MaxCacheBlocks  = 1 << 24
	MaxKeysPerBlock = 512 // one key per token of a 512-token trace block
	MaxDuplicate    = 1024
	MaxGoroutines   = 1024
	MaxLatencyEvery = 1 << 20
	MaxQueryTime    = 10 * time.Minute
)

// Config sets up a replay. The JSON names echo the command-line flags.
type Config struct {
	// Workers is the number of simulated workers (each one rank).
	Workers int `json:"workers"`
	// CacheBlocks is each worker's LRU capacity in router blocks.
	CacheBlocks int `json:"cache_blocks"`
	// KeysPerBlock is the number of router blocks per trace block.
	KeysPerBlock int `json:"keys_per_block"`
	// Duplicate is the number of copies of the trace, in disjoint hash
	// spaces.
	Duplicate int `json:"duplicate"`
	// Goroutines is the number of goroutines that query (and, in the mixed
	// replay, that query or write).
	Goroutines int `json:"goroutines"`
	// MaxEntries caps the index's entries (indexer.Config.MaxEntries); 0
	// means no cap.
	MaxEntries int `json:"max_entries"`
	// LatencyEvery: every LatencyEvery-th query is timed in the latency
	// pass.
	LatencyEvery int `json:"latency_every"`
	// MinQueryTime makes the query-only pass repeat whole passes over the
	// queries until this much time has passed; 0 means one pass. A single
	// pass over a short trace ends too soon to time well.
	MinQueryTime time.Duration `json:"min_query_time_ns"`
}

// DefaultConfig returns the settings of Dynamo's mooncake_bench runs: 128
// workers of 16,384 blocks, 16 keys per trace block, the trace four times,
// and one goroutine per processor.
func DefaultConfig() Config {
	return Config{
		Workers:      128,
		CacheBlocks:  16384,
		KeysPerBlock: 16,
		Duplicate:    4,
		Goroutines:   runtime.GOMAXPROCS(0),
		LatencyEvery: 16,
		MinQueryTime: time.Second,
	}
}

// Validate reports the first field out of range, naming its flag.
func (c Config) Validate() error {
	for _, f := range []struct {
		flag      string
		v, lo, hi int
	}{
		{"--workers", c.Workers, 1, MaxWorkers},
		{"--cache-blocks", c.CacheBlocks, 1, MaxCacheBlocks},
		{"--keys-per-block", c.KeysPerBlock, 1, MaxKeysPerBlock},
		{"--duplicate", c.Duplicate, 1, MaxDuplicate},
		{"--goroutines", c.Goroutines, 1, MaxGoroutines},
		{"--latency-every", c.LatencyEvery, 1, MaxLatencyEvery},
	} {
		if f.v < f.lo || f.v > f.hi {
			return fmt.Errorf("%s must be in %d..%d, got %d", f.flag, f.lo, f.hi, f.v)
		}
	}
	if c.MaxEntries < 0 {
		return fmt.Errorf("--max-entries must be 0 (no cap) or more, got %d", c.MaxEntries)
	}
	if c.MinQueryTime < 0 || c.MinQueryTime > MaxQueryTime {
		return fmt.Errorf("--min-query-time must be in 0..%v, got %v", MaxQueryTime, c.MinQueryTime)
	}
	return nil
}

// Result holds a replay's figures. Rates are per second of wall time.
type Result struct {
	// Config echoes the settings.
	Config Config `json:"config"`
	// TraceRequests counts the trace's requests; Requests counts them times
	// Config.Duplicate, which is also the number of queries.
	TraceRequests int `json:"trace_requests"`
	Requests      int `json:"requests"`
	// Events counts Stored and Removed events in the stream.
	Events int `json:"events"`
	// QueryBlocks, StoredBlocks and RemovedBlocks count block operations
	// in the stream: query keys, stored blocks and removed hashes.
	QueryBlocks   int64 `json:"query_blocks"`
	StoredBlocks  int64 `json:"stored_blocks"`
	RemovedBlocks int64 `json:"removed_blocks"`
	// CacheHitRatio is the fraction of query keys that the assigned
	// worker's LRU held when the request arrived.
	CacheHitRatio float64 `json:"cache_hit_ratio"`
	// EventsNotOK counts events the loaded index did not apply cleanly
	// (status other than ok, or removals of blocks it lacked). Zero unless
	// MaxEntries makes the index evict on its own.
	EventsNotOK int `json:"events_not_ok"`
	// Entries, Nodes and Workers are the loaded index's Stats: (worker,
	// block) entries, tree nodes and worker ranks.
	Entries int `json:"entries"`
	Nodes   int `json:"nodes"`
	Workers int `json:"workers"`
	// IndexEvicted counts entries the index's cap evicted during the load.
	IndexEvicted uint64 `json:"index_evicted"`
	// BytesPerEntry is the index's live heap divided by Entries.
	BytesPerEntry float64 `json:"bytes_per_entry"`
	// LoadBlockOpsPerSec is the single-writer event apply rate of the load.
	LoadBlockOpsPerSec float64 `json:"load_block_ops_per_sec"`
	// QueryBlockOpsPerSec is the query-only rate against the final state.
	// A query counts its whole length, as peers count it, although the
	// walk stops where the deepest match ends.
	QueryBlockOpsPerSec float64 `json:"query_block_ops_per_sec"`
	// QueryPasses counts the query-only passes over all queries.
	QueryPasses int `json:"query_passes"`
	// QueryMatchedRatio is the deepest match over the query length,
	// summed over the latency sample: the part of the counted query blocks
	// the walk actually visited against the final state.
	QueryMatchedRatio float64 `json:"query_matched_ratio"`
	// MixedBlockOpsPerSec is the rate of the mixed replay.
	MixedBlockOpsPerSec float64 `json:"mixed_block_ops_per_sec"`
	// FindMatchesP50Ns and FindMatchesP99Ns are find_matches latencies in
	// the latency pass, over LatencySamples timed queries.
	FindMatchesP50Ns int64 `json:"find_matches_p50_ns"`
	FindMatchesP99Ns int64 `json:"find_matches_p99_ns"`
	LatencySamples   int   `json:"latency_samples"`
	// Goroutines is Config.Goroutines, repeated for readers of the figures.
	Goroutines int `json:"goroutines"`
	// Phase wall times, and the whole Run's.
	BuildSeconds    float64 `json:"build_seconds"`
	LoadSeconds     float64 `json:"load_seconds"`
	QuerySeconds    float64 `json:"query_seconds"`
	LatencySeconds  float64 `json:"latency_seconds"`
	MixedSeconds    float64 `json:"mixed_seconds"`
	DurationSeconds float64 `json:"duration_seconds"`
}
