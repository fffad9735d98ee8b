package sim

import (
	"errors"
	"fmt"
	"slices"
)

// ErrCacheFull means a sequence asked for more blocks than the cache can
// give without evicting blocks that are in use.
var ErrCacheFull = errors.New("kv cache full")

// EventKind is the kind of a KV event, as Dynamo names it.
type EventKind uint8

// The kinds of KV event the cache emits. The cache never clears itself, so
// it never emits Dynamo's "cleared".
const (
	EventStored EventKind = iota + 1
	EventRemoved
)

// String returns Dynamo's name of the kind.
func (k EventKind) String() string {
	switch k {
	case EventStored:
		return "stored"
	case EventRemoved:
		return "removed"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Block is one full block of a prompt: its sequence hash, which is the
// engine's block_hash on the wire and names the whole prefix ending with the
// block, and its LocalBlockHash (tokens_hash), the hash of its own tokens.
type Block struct {
	Hash       uint64
	TokensHash uint64
}

// Event is a change of the cache's contents, in Dynamo's terms. A stored
// event lists blocks that form a chain: the first hangs under Parent (or from
// the root when HasParent is false), each next one under the one before it.
type Event struct {
	Kind      EventKind
	HasParent bool
	Parent    uint64
	Blocks    []Block  // stored only, parent first
	Removed   []uint64 // removed only
}

// CachedBlock describes one block the cache holds, for tests and debugging.
type CachedBlock struct {
	Block
	HasParent bool
	Parent    uint64
	Refs      int
}

// CacheStats are the cache's sizes, in blocks.
type CacheStats struct {
	Capacity int
	// Cached blocks hold a hashed prompt block, referenced or not.
	Cached int
	// Referenced of them are in use by a running sequence.
	Referenced int
	// Reserved blocks belong to running sequences but hold nothing
	// reusable yet: prompt blocks not computed yet, the partial last prompt
	// block and the output.
	Reserved int
	// Evictable blocks are cached and unreferenced: the LRU list.
	Evictable int
}

// Active is what a load report calls active blocks: referenced plus
// reserved.
func (s CacheStats) Active() int { return s.Referenced + s.Reserved }

// Cache is a simulated paged KV cache with prefix caching, as vLLM keeps it:
// Capacity blocks, each either free, reserved by a running sequence, or
// cached under the sequence hash of the prompt prefix it holds. Cached
// blocks are reference-counted by the sequences using them; unreferenced
// ones stay cached for reuse in a least-recently-used list and are evicted
// from its old end when a sequence needs room.
//
// Every change of the cached set is recorded as a KV event with Dynamo's
// semantics (block_hash = sequence hash, tokens_hash = LocalBlockHash,
// parent_hash = the sequence hash of the block before), so that an index
// fed only the events holds exactly what the cache holds. Evictions are
// batched into one removed event, emitted before the next stored event.
//
// Eviction takes leaves before their parents without having to look: a
// sequence holds a prefix of its blocks, so a block has no more references
// than its parent, and Release hands a sequence's blocks back last block
// first; hence an unreferenced block is always older in the LRU list than its
// unreferenced parent.
//
// A Cache is a plain data structure: not safe for concurrent use.
type Cache struct {
	capacity int
	reserved int
	blocks   map[uint64]*cblock
	// lru is a sentinel of a circular list of unreferenced blocks: lru.next
	// is the least recently used.
	lru    cblock
	lruLen int
	refd   int // cached blocks with refs > 0

	events  []Event
	removed []uint64 // evictions not yet emitted
}

type cblock struct {
	Block
	hasParent  bool
	parent     uint64
	refs       int
	prev, next *cblock
}

// NewCache returns an empty cache of capacity blocks.
func NewCache(capacity int) *Cache {
	c := &Cache{capacity: capacity, blocks: make(map[uint64]*cblock)}
	c.lru.prev, c.lru.next = &c.lru, &c.lru
	return c
}

// Capacity returns the number of blocks.
func (c *Cache) Capacity() int { return c.capacity }

// Stats returns the cache's sizes.
func (c *Cache) Stats() CacheStats {
	return CacheStats{
		Capacity:   c.capacity,
		Cached:     len(c.blocks),
		Referenced: c.refd,
		Reserved:   c.reserved,
		Evictable:  c.lruLen,
	}
}

// free returns the blocks neither cached nor reserved.
func (c *Cache) free() int { return c.capacity - c.reserved - len(c.blocks) }

// Match returns how many leading hashes of a prompt's sequence hashes are
// cached: the prefix a new sequence would reuse.
func (c *Cache) Match(hashes []uint64) int {
	for i, h := range hashes {
		if _, ok := c.blocks[h]; !ok {
			return i
		}
	}
	return len(hashes)
}

// Admit makes room for a new sequence: it takes a reference on the cached
// blocks hits (a prefix found by Match) and reserves n more blocks,
// evicting unreferenced blocks as needed. It fails with ErrCacheFull and
// changes nothing when that is impossible.
func (c *Cache) Admit(hits []uint64, n int) error {
	// The hits leave the LRU list when referenced, so they cannot be
	// evicted to make room for the rest.
	inLRU := 0
	for _, h := range hits {
		b, ok := c.blocks[h]
		if !ok {
			return fmt.Errorf("admit: block %d is not cached", h)
		}
		if b.refs == 0 {
			inLRU++
		}
	}
	if n > c.free()+c.lruLen-inLRU {
		return ErrCacheFull
	}
	for _, h := range hits {
		c.ref(c.blocks[h])
	}
	for c.free() < n {
		c.evict()
	}
	c.reserved += n
	return nil
}

// Commit turns reserved blocks of a sequence into cached blocks once it has
// computed them, one per block, and keeps a reference on each for the
// sequence. parent is the sequence hash of the block before the first (none
// when hasParent is false). A block that another sequence cached meanwhile is
// shared instead, and its reserved block goes back to the free pool. It
// returns how many reserved blocks it used.
func (c *Cache) Commit(hasParent bool, parent uint64, blocks []Block) int {
	used := 0
	run := -1 // start of the current run of new blocks
	flush := func(end int) {
		if run < 0 {
			return
		}
		c.flushRemoved()
		ev := Event{Kind: EventStored, Blocks: slices.Clone(blocks[run:end])}
		if run > 0 {
			ev.HasParent, ev.Parent = true, blocks[run-1].Hash
		} else {
			ev.HasParent, ev.Parent = hasParent, parent
		}
		c.events = append(c.events, ev)
		run = -1
	}
	for i, blk := range blocks {
		if b, ok := c.blocks[blk.Hash]; ok {
			flush(i)
			c.ref(b)
			c.reserved--
			continue
		}
		b := &cblock{Block: blk, refs: 1}
		if i > 0 {
			b.hasParent, b.parent = true, blocks[i-1].Hash
		} else {
			b.hasParent, b.parent = hasParent, parent
		}
		c.blocks[blk.Hash] = b
		c.refd++
		c.reserved--
		used++
		if run < 0 {
			run = i
		}
	}
	flush(len(blocks))
	return used
}

// Release drops a finished sequence's references on its cached blocks
// (hashes, first block first) and frees its reserved blocks. Blocks left
// unreferenced join the LRU list, last block first, so that the leaves of a
// prefix are evicted before the blocks they hang from.
func (c *Cache) Release(hashes []uint64, reserved int) {
	for i := len(hashes) - 1; i >= 0; i-- {
		b, ok := c.blocks[hashes[i]]
		if !ok || b.refs == 0 {
			continue // not held: a caller bug, but not worth corrupting the counts
		}
		b.refs--
		if b.refs == 0 {
			c.refd--
			c.pushLRU(b)
		}
	}
	c.reserved -= reserved
}

// TakeEvents appends the events recorded since the last call to dst, oldest
// first, and forgets them.
func (c *Cache) TakeEvents(dst []Event) []Event {
	c.flushRemoved()
	dst = append(dst, c.events...)
	clear(c.events)
	c.events = c.events[:0]
	return dst
}

// Contents returns every cached block, sorted by hash.
func (c *Cache) Contents() []CachedBlock {
	out := make([]CachedBlock, 0, len(c.blocks))
	for _, b := range c.blocks {
		out = append(out, CachedBlock{Block: b.Block, HasParent: b.hasParent, Parent: b.parent, Refs: b.refs})
	}
	slices.SortFunc(out, func(a, b CachedBlock) int {
		switch {
		case a.Hash < b.Hash:
			return -1
		case a.Hash > b.Hash:
			return 1
		}
		return 0
	})
	return out
}

// EvictionOrder returns the hashes of the unreferenced blocks, next to be
// evicted first.
func (c *Cache) EvictionOrder() []uint64 {
	out := make([]uint64, 0, c.lruLen)
	for b := c.lru.next; b != &c.lru; b = b.next {
		out = append(out, b.Hash)
	}
	return out
}

// ref takes a reference on b, taking it off the LRU list if it was there.
func (c *Cache) ref(b *cblock) {
	if b.refs == 0 {
		b.prev.next, b.next.prev = b.next, b.prev
		b.prev, b.next = nil, nil
		c.lruLen--
		c.refd++
	}
	b.refs++
}

// pushLRU appends b to the recent end of the LRU list.
func (c *Cache) pushLRU(b *cblock) {
	b.prev, b.next = c.lru.prev, &c.lru
	c.lru.prev.next = b
	c.lru.prev = b
	c.lruLen++
}

// evict drops the least recently used unreferenced block. The caller has
// checked that there is one.
func (c *Cache) evict() {
	b := c.lru.next
	b.prev.next, b.next.prev = b.next, b.prev
	c.lruLen--
	delete(c.blocks, b.Hash)
	c.removed = append(c.removed, b.Hash)
}

// flushRemoved emits the pending evictions as one removed event.
func (c *Cache) flushRemoved() {
	if len(c.removed) == 0 {
		return
	}
	c.events = append(c.events, Event{Kind: EventRemoved, Removed: c.removed})
	c.removed = nil
}
