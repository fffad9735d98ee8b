package replay

import (
	"fmt"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/internal/lru"
)

// Bounds are reference hit rates for a workload on a fleet, found by
// simulating caches alone: no timing, no routing, no running requests
// holding blocks. They answer "how good is this routing, really":
//
//   - Infinite is the prefix hit rate of a cache that never evicts. No
//     routing, on any fleet, can hit more: a block can only hit if an
//     earlier request had it.
//   - PooledLRU is the prefix hit rate of one LRU cache holding the whole
//     fleet's capacity: what the fleet would hit if it were one worker
//     with all the memory. It is a reference, not a strict bound: LRU is
//     not the best eviction order, and a real worker also keeps decode
//     blocks and the blocks of running requests, so routing rarely comes
//     close to it and cannot be expected to pass it.
//
// Both count hits as the simulated workers do: the leading full blocks of
// a prompt found in the cache, never the block of the prompt's last token
// (which an engine always computes), over the prompt's full blocks.
type Bounds struct {
	// BlockSize is the cache block in tokens; Capacity is the fleet's
	// total capacity in blocks.
	BlockSize int     `json:"block_size"`
	Capacity  int     `json:"capacity_blocks"`
	PooledLRU float64 `json:"pooled_lru_hit_rate"`
	Infinite  float64 `json:"infinite_cache_hit_rate"`
}

// ComputeBounds simulates wl's requests, in arrival order, on a pooled LRU
// cache of capacity blocks and on an unbounded cache, with blocks of
// blockSize tokens.
func ComputeBounds(wl *Workload, blockSize, capacity int) (Bounds, error) {
	if blockSize <= 0 || capacity <= 0 {
		return Bounds{}, fmt.Errorf("bounds: block size %d and capacity %d must be positive", blockSize, capacity)
	}
	b := Bounds{BlockSize: blockSize, Capacity: capacity}
	pooled := lru.New[uint64](capacity)
	seen := make(map[uint64]struct{})
	var (
		tokens                  []uint32
		locals, seqs            []uint64
		total, hitLRU, hitInfty int
	)
	for i := range wl.Requests {
		q := &wl.Requests[i]
		tokens = wl.Tokens(q, tokens[:0])
		locals = blockhash.LocalHashesSeed(locals[:0], tokens, blockSize, 0)
		seqs = blockhash.ChainHashes(seqs[:0], locals, 0)
		if len(tokens) == 0 {
			continue
		}
		total += len(seqs)
		maxHits := min((len(tokens)-1)/blockSize, len(seqs))
		hitLRU += leading(seqs[:maxHits], pooled.Contains)
		hitInfty += leading(seqs[:maxHits], func(h uint64) bool { _, ok := seen[h]; return ok })
		// The prompt's head is the part other prompts share: it is used
		// last, so it stays longest.
		for i := len(seqs) - 1; i >= 0; i-- {
			pooled.Use(seqs[i])
			seen[seqs[i]] = struct{}{}
		}
		for pooled.Len() > capacity {
			pooled.Evict()
		}
	}
	if total > 0 {
		b.PooledLRU = float64(hitLRU) / float64(total)
		b.Infinite = float64(hitInfty) / float64(total)
	}
	return b, nil
}

// leading counts the hashes at the start of hs that held reports.
func leading(hs []uint64, held func(uint64) bool) int {
	for i, h := range hs {
		if !held(h) {
			return i
		}
	}
	return len(hs)
}
