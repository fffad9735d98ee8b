package indexbench

import (
	"context"
	"fmt"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/lru"
	"github.com/kvrouter/router/traces"
)

// query is one find_matches call of the stream.
type query struct {
	keys []indexer.LocalHash
	// after counts the events that precede the query in trace order.
	after int
	// worker is the simulated worker the request went to, and hit the
	// number of leading keys its cache held then.
	worker int32
	hit    int32
}

// stream is the replay, built ahead of the timed phases.
type stream struct {
	events  []indexer.Event
	queries []query
	// cached is each worker's final LRU size.
	cached []int

	queryBlocks, storedBlocks, removedBlocks, hitBlocks int64
}

// ops returns the block operations of the whole stream.
func (s *stream) ops() int64 { return s.queryBlocks + s.storedBlocks + s.removedBlocks }

// arenaChunk is the number of elements an arena allocates at a time.
const arenaChunk = 1 << 20

// arena hands out slices cut from large chunks, so that millions of small
// event and query slices cost a few hundred allocations, not millions.
type arena[T any] struct{ chunk []T }

// alloc returns a zeroed slice of n elements whose capacity is n.
func (a *arena[T]) alloc(n int) []T {
	if n > cap(a.chunk)-len(a.chunk) {
		a.chunk = make([]T, 0, max(n, arenaChunk))
	}
	l := len(a.chunk)
	a.chunk = a.chunk[:l+n]
	return a.chunk[l : l+n : l+n]
}

// buildStream turns the trace into the replay's events and queries (see the
// package comment). It is deterministic: equal inputs give equal streams.
func buildStream(ctx context.Context, reqs []traces.Request, cfg Config) (*stream, error) {
	s := &stream{cached: make([]int, cfg.Workers)}
	caches := make([]*lru.Set[indexer.BlockHash], cfg.Workers)
	var (
		keys    arena[indexer.LocalHash]
		blocks  arena[indexer.Block]
		removed arena[indexer.BlockHash]
		hashes  []indexer.BlockHash
	)
	for r, req := range reqs {
		if r%1024 == 0 && ctx.Err() != nil {
			return nil, fmt.Errorf("build replay stream: %w", ctx.Err())
		}
		for d := range cfg.Duplicate {
			w := assign(req.HashIDs, d, cfg.Workers)
			n := len(req.HashIDs) * cfg.KeysPerBlock
			q := keys.alloc(n)
			for i, b := range req.HashIDs {
				for j := range cfg.KeysPerBlock {
					q[i*cfg.KeysPerBlock+j] = localHash(b, j, d)
				}
			}
			hashes = hashes[:0]
			prev := engineSeed(w)
			for _, k := range q {
				prev = chain(prev, k)
				hashes = append(hashes, prev)
			}
			if caches[w] == nil {
				caches[w] = lru.New[indexer.BlockHash](cfg.CacheBlocks)
			}
			c := caches[w]

			// Only the head of a request longer than the cache fits. The
			// cache is prefix-closed, so the hits are a leading run.
			limit := min(n, cfg.CacheBlocks)
			hit := 0
			for hit < limit && c.Contains(hashes[hit]) {
				hit++
			}
			s.queries = append(s.queries, query{keys: q, after: len(s.events), worker: int32(w), hit: int32(hit)})
			s.queryBlocks += int64(n)
			s.hitBlocks += int64(hit)

			// Touch the hits tail first, so that eviction cannot take
			// them and the head ends up most recent.
			for i := hit - 1; i >= 0; i-- {
				c.Touch(hashes[i])
			}
			miss := limit - hit
			if miss == 0 {
				continue
			}
			if over := c.Len() + miss - cfg.CacheBlocks; over > 0 {
				rm := removed.alloc(over)
				for i := range rm {
					rm[i] = c.Evict()
				}
				s.events = append(s.events, indexer.Event{Worker: workerOf(w), Kind: indexer.KindRemoved, Removed: rm})
				s.removedBlocks += int64(over)
			}
			blk := blocks.alloc(miss)
			for i := range blk {
				blk[i] = indexer.Block{Hash: hashes[hit+i], Tokens: q[hit+i]}
			}
			ev := indexer.Event{Worker: workerOf(w), Kind: indexer.KindStored, Blocks: blk}
			if hit > 0 {
				ev.HasParent, ev.Parent = true, hashes[hit-1]
			}
			s.events = append(s.events, ev)
			s.storedBlocks += int64(miss)
			for i := limit - 1; i >= hit; i-- {
				c.Add(hashes[i])
			}
			for i := hit - 1; i >= 0; i-- {
				c.Touch(hashes[i])
			}
		}
	}
	for w, c := range caches {
		if c != nil {
			s.cached[w] = c.Len()
		}
	}
	return s, nil
}
