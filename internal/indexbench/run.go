package indexbench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/traces"
)

// ErrNoRequests: the trace has no requests to replay.
var ErrNoRequests = errors.New("trace has no requests")

// claimBatch is how many queries a goroutine claims at a time in the
// query-only passes: enough to keep the shared counter cold.
const claimBatch = 16

// Run replays reqs as the package comment describes and returns the
// figures. It blocks for the whole replay; cancelling ctx stops it early
// with ctx's error.
//
// Each timed phase runs under the pprof label phase=load, query, latency or
// mixed, so that a CPU profile of the whole Run can show one phase
// (go tool pprof -tagfocus=phase=mixed) without the untimed stream build.
// The runtime's background garbage collection carries no label.
func Run(ctx context.Context, reqs []traces.Request, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, fmt.Errorf("index bench config: %w", err)
	}
	if len(reqs) == 0 {
		return Result{}, ErrNoRequests
	}
	start := time.Now()
	s, err := buildStream(ctx, reqs, cfg)
	if err != nil {
		return Result{}, err
	}
	res := Result{
		Config:        cfg,
		TraceRequests: len(reqs),
		Requests:      len(s.queries),
		Events:        len(s.events),
		QueryBlocks:   s.queryBlocks,
		StoredBlocks:  s.storedBlocks,
		RemovedBlocks: s.removedBlocks,
		Goroutines:    cfg.Goroutines,
		BuildSeconds:  time.Since(start).Seconds(),
	}
	if s.queryBlocks > 0 {
		res.CacheHitRatio = float64(s.hitBlocks) / float64(s.queryBlocks)
	}

	if err := finalState(ctx, s, cfg, &res); err != nil {
		return Result{}, err
	}
	// The final state's index is garbage now; collect it so that the mixed
	// replay's index does not have to share memory with it.
	runtime.GC()
	var elapsed time.Duration
	pprof.Do(ctx, pprof.Labels("phase", "mixed"), func(ctx context.Context) {
		_, elapsed, err = mixedPass(ctx, s, cfg)
	})
	if err != nil {
		return Result{}, err
	}
	res.MixedSeconds = elapsed.Seconds()
	res.MixedBlockOpsPerSec = rate(s.ops(), elapsed)
	res.DurationSeconds = time.Since(start).Seconds()
	return res, nil
}

// finalState loads the stream into a fresh index and measures the load,
// the index's memory, and queries against the final state.
func finalState(ctx context.Context, s *stream, cfg Config, res *Result) error {
	// The load's label also covers the heap readings around it: two
	// runtime.GC calls, whose sweeping runs on this goroutine.
	var idx *indexer.Index
	var ld loaded
	pprof.Do(ctx, pprof.Labels("phase", "load"), func(context.Context) {
		idx, ld = load(s, cfg)
	})
	st := idx.Stats()
	res.EventsNotOK = ld.notOK
	res.Entries, res.Nodes, res.Workers, res.IndexEvicted = st.Entries, st.Nodes, st.Workers, st.Evicted
	res.LoadSeconds = ld.elapsed.Seconds()
	res.LoadBlockOpsPerSec = rate(s.storedBlocks+s.removedBlocks, ld.elapsed)
	if st.Entries > 0 {
		res.BytesPerEntry = float64(ld.heapBytes) / float64(st.Entries)
	}

	var elapsed time.Duration
	var err error
	pprof.Do(ctx, pprof.Labels("phase", "query"), func(ctx context.Context) {
		for res.QueryPasses == 0 || elapsed < cfg.MinQueryTime {
			var d time.Duration
			if d, err = queryPass(ctx, idx, s.queries, cfg); err != nil {
				return
			}
			elapsed += d
			res.QueryPasses++
		}
	})
	if err != nil {
		return err
	}
	res.QuerySeconds = elapsed.Seconds()
	res.QueryBlockOpsPerSec = rate(s.queryBlocks*int64(res.QueryPasses), elapsed)

	var lp latencies
	pprof.Do(ctx, pprof.Labels("phase", "latency"), func(ctx context.Context) {
		lp, err = latencyPass(ctx, idx, s.queries, cfg)
	})
	if err != nil {
		return err
	}
	lat := lp.latencies
	res.LatencySeconds = lp.elapsed.Seconds()
	res.LatencySamples = len(lat)
	if lp.blocks > 0 {
		res.QueryMatchedRatio = float64(lp.matched) / float64(lp.blocks)
	}
	res.FindMatchesP50Ns = percentile(lat, 0.50).Nanoseconds()
	res.FindMatchesP99Ns = percentile(lat, 0.99).Nanoseconds()
	return nil
}

// loaded describes a load of the stream into a fresh index.
type loaded struct {
	elapsed   time.Duration
	heapBytes int64
	notOK     int
}

// load applies every event to a fresh index from one goroutine, timing the
// applies and measuring the live heap the index adds.
func load(s *stream, cfg Config) (*indexer.Index, loaded) {
	var ld loaded
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc

	idx := indexer.NewIndex(indexer.Config{MaxEntries: cfg.MaxEntries})
	start := time.Now()
	for i := range s.events {
		if r := idx.Apply(s.events[i]); r.Status != indexer.StatusOK || r.Missing > 0 {
			ld.notOK++
		}
	}
	ld.elapsed = time.Since(start)

	runtime.GC()
	runtime.ReadMemStats(&ms)
	ld.heapBytes = int64(ms.HeapAlloc) - int64(before)
	return idx, ld
}

// queryPass runs every query once with cfg.Goroutines goroutines.
func queryPass(ctx context.Context, idx *indexer.Index, qs []query, cfg Config) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.Goroutines {
		wg.Go(func() {
			dst := make([]indexer.Match, 0, cfg.Workers)
			for ctx.Err() == nil {
				i := int(next.Add(claimBatch)) - claimBatch
				if i >= len(qs) {
					return
				}
				for _, q := range qs[i:min(i+claimBatch, len(qs))] {
					dst = idx.FindMatches(q.keys, false, dst)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("query pass: %w", err)
	}
	return elapsed, nil
}

// latencies is the outcome of the latency pass.
type latencies struct {
	latencies []time.Duration // sorted
	elapsed   time.Duration
	// blocks counts the sampled queries' blocks, matched their deepest
	// match.
	blocks, matched int64
}

// latencyPass times every cfg.LatencyEvery-th query, run by cfg.Goroutines
// goroutines.
func latencyPass(ctx context.Context, idx *indexer.Index, qs []query, cfg Config) (latencies, error) {
	sample := (len(qs) + cfg.LatencyEvery - 1) / cfg.LatencyEvery
	lp := latencies{latencies: make([]time.Duration, sample)}
	deepest := make([]uint32, sample)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.Goroutines {
		wg.Go(func() {
			dst := make([]indexer.Match, 0, cfg.Workers)
			for ctx.Err() == nil {
				k := int(next.Add(1)) - 1
				if k >= sample {
					return
				}
				q := qs[k*cfg.LatencyEvery].keys
				t := time.Now()
				dst = idx.FindMatches(q, false, dst)
				lp.latencies[k] = time.Since(t)
				for _, m := range dst {
					deepest[k] = max(deepest[k], m.Blocks)
				}
			}
		})
	}
	wg.Wait()
	lp.elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return latencies{}, fmt.Errorf("latency pass: %w", err)
	}
	slices.Sort(lp.latencies)
	for k, d := range deepest {
		lp.blocks += int64(len(qs[k*cfg.LatencyEvery].keys))
		lp.matched += int64(d)
	}
	return lp, nil
}

// mixedPass replays events and queries in trace order into a fresh index
// (see the package comment) and returns the index in its final state.
func mixedPass(ctx context.Context, s *stream, cfg Config) (*indexer.Index, time.Duration, error) {
	idx := indexer.NewIndex(indexer.Config{MaxEntries: cfg.MaxEntries})
	start := time.Now()
	if cfg.Goroutines == 1 {
		if err := interleave(ctx, idx, s, nil); err != nil {
			return nil, 0, fmt.Errorf("mixed replay: %w", err)
		}
		return idx, time.Since(start), nil
	}

	// Goroutine k applies the events of the workers whose id is k modulo
	// Goroutines, in trace order; done[k] is the position in the event
	// stream before which all of k's events are applied. The queries are
	// taken in order from next by whichever goroutine finds the next one's
	// events all applied.
	g := cfg.Goroutines
	r := &shardReplay{s: s, idx: idx, done: make([]paddedPos, g)}
	var wg sync.WaitGroup
	for k := range g {
		wg.Go(func() { r.run(ctx, k) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("mixed replay: %w", err)
	}
	return idx, elapsed, nil
}

// paddedPos is a shard's progress, on a cache line of its own.
type paddedPos struct {
	atomic.Int64
	_ [56]byte
}

// shardReplay is the mixed replay with several goroutines.
type shardReplay struct {
	s    *stream
	idx  *indexer.Index
	done []paddedPos
	next atomic.Int64
}

// lookahead is how far past the events of the next query to run a goroutine
// may apply events: a query sees at most this many later events, as when
// one of the router's event shards applies a batch of 16 while a query
// waits for the lock.
const lookahead = 16

// run is goroutine k of the replay: it applies its workers' events in
// trace order, at most lookahead past the next query's, and runs the next
// query whenever every goroutine has applied the events before it.
func (r *shardReplay) run(ctx context.Context, k int) {
	s, g := r.s, len(r.done)
	var dst []indexer.Match
	pos := 0
	for n := 0; ; n++ {
		if n%256 == 0 && ctx.Err() != nil {
			return
		}
		dst = r.query(dst)
		i := int(r.next.Load())
		if pos == len(s.events) && i == len(s.queries) {
			return
		}
		// The bound: the end, or lookahead past the next query's events.
		to := len(s.events)
		if i < len(s.queries) {
			to = min(to, s.queries[i].after+lookahead)
		}
		if pos >= to {
			// Too far ahead of the queries, or done while another
			// goroutine is behind.
			runtime.Gosched()
			continue
		}
		// Apply k's next event before the bound, if any.
		for ; pos < to; pos++ {
			if int(s.events[pos].Worker.ID%indexer.WorkerID(g)) == k {
				r.idx.Apply(s.events[pos])
				pos++
				break
			}
		}
		r.done[k].Store(int64(pos))
	}
}

// query runs queries in order for as long as the next one's events are all
// applied.
func (r *shardReplay) query(dst []indexer.Match) []indexer.Match {
	for {
		i := r.next.Load()
		if int(i) >= len(r.s.queries) {
			return dst
		}
		q := &r.s.queries[i]
		for j := range r.done {
			if r.done[j].Load() < int64(q.after) {
				return dst
			}
		}
		if r.next.CompareAndSwap(i, i+1) {
			dst = r.idx.FindMatches(q.keys, false, dst)
		}
	}
}

// interleave replays the stream in trace order on the calling goroutine.
// If scores is not nil, it gets each query's matches.
func interleave(ctx context.Context, idx *indexer.Index, s *stream, scores func(i int, m []indexer.Match)) error {
	var dst []indexer.Match
	ev := 0
	for i := range s.queries {
		if i%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		q := &s.queries[i]
		for ; ev < q.after; ev++ {
			idx.Apply(s.events[ev])
		}
		dst = idx.FindMatches(q.keys, false, dst)
		if scores != nil {
			scores(i, dst)
		}
	}
	for ; ev < len(s.events); ev++ {
		idx.Apply(s.events[ev])
	}
	return nil
}

// rate is ops per second over d; 0 when d is 0.
func rate(ops int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(ops) / d.Seconds()
}

// percentile returns the nearest-rank p-quantile of sorted, 0 if empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(k, 0), len(sorted)-1)]
}
