package replay

import (
	"fmt"

	"github.com/kvrouter/router/blockhash"
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
	pooled := newLRU(capacity)
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
		hitLRU += pooled.leading(seqs[:maxHits])
		n := 0
		for _, h := range seqs[:maxHits] {
			if _, ok := seen[h]; !ok {
				break
			}
			n++
		}
		hitInfty += n
		for _, h := range seqs {
			seen[h] = struct{}{}
		}
		pooled.touchAll(seqs)
	}
	if total > 0 {
		b.PooledLRU = float64(hitLRU) / float64(total)
		b.Infinite = float64(hitInfty) / float64(total)
	}
	return b, nil
}

// lru is an LRU set of block hashes with a fixed capacity: a map into a
// doubly linked list kept in slices.
type lru struct {
	capacity   int
	at         map[uint64]int32
	key        []uint64
	prev, next []int32 // -1 ends the list
	head, tail int32   // most and least recently used
	free       []int32
}

func newLRU(capacity int) *lru {
	return &lru{capacity: capacity, at: make(map[uint64]int32, capacity), head: -1, tail: -1}
}

// leading counts the hashes at the start of hs that the cache holds.
func (c *lru) leading(hs []uint64) int {
	for i, h := range hs {
		if _, ok := c.at[h]; !ok {
			return i
		}
	}
	return len(hs)
}

// touchAll makes every hash of hs present, the first the most recently
// used, evicting the least recently used past the capacity. The prompt's
// head is the part other prompts share, so it stays longest.
func (c *lru) touchAll(hs []uint64) {
	for i := len(hs) - 1; i >= 0; i-- {
		c.touch(hs[i])
	}
	for len(c.at) > c.capacity {
		c.remove(c.tail)
	}
}

func (c *lru) touch(h uint64) {
	if i, ok := c.at[h]; ok {
		c.unlink(i)
		c.pushFront(i)
		return
	}
	var i int32
	if n := len(c.free); n > 0 {
		i = c.free[n-1]
		c.free = c.free[:n-1]
		c.key[i] = h
	} else {
		i = int32(len(c.key))
		c.key = append(c.key, h)
		c.prev = append(c.prev, -1)
		c.next = append(c.next, -1)
	}
	c.at[h] = i
	c.pushFront(i)
}

func (c *lru) remove(i int32) {
	c.unlink(i)
	delete(c.at, c.key[i])
	c.free = append(c.free, i)
}

func (c *lru) unlink(i int32) {
	p, n := c.prev[i], c.next[i]
	if p >= 0 {
		c.next[p] = n
	} else {
		c.head = n
	}
	if n >= 0 {
		c.prev[n] = p
	} else {
		c.tail = p
	}
	c.prev[i], c.next[i] = -1, -1
}

func (c *lru) pushFront(i int32) {
	c.prev[i], c.next[i] = -1, c.head
	if c.head >= 0 {
		c.prev[c.head] = i
	}
	c.head = i
	if c.tail < 0 {
		c.tail = i
	}
}
