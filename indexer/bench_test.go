package indexer

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// loadPrompts stores n prompts of depth blocks, each under a shared prefix of
// shared blocks, spread over workers.
func loadPrompts(x interface{ Apply(Event) Result }, workers, n, shared, depth int) {
	for p := range n {
		w := Worker{ID: WorkerID(1 + p%workers)}
		ev := Event{Worker: w, Kind: KindStored}
		for i := range depth {
			tok := LocalHash(i + 1)
			if i >= shared {
				tok = LocalHash(p*100_000 + i + 1)
			}
			ev.Blocks = append(ev.Blocks, Block{Hash: BlockHash(p*100_000 + i + 1), Tokens: tok})
		}
		x.Apply(ev)
	}
}

func BenchmarkFindMatches(b *testing.B) { benchFindMatches(b, loadPrompts) }

// benchFindMatches queries 256 blocks of fleets of 1, 16 and 128 ranks
// that load filled: prompt 1's shared head, then its own tail.
func benchFindMatches(b *testing.B, load func(x interface{ Apply(Event) Result }, workers, n, shared, depth int)) {
	for _, workers := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("workers=%d/blocks=256", workers), func(b *testing.B) {
			tr := New(Config{})
			load(tr, workers, 4*workers, 64, 256)
			query := make([]LocalHash, 256)
			for i := range query {
				query[i] = LocalHash(i + 1)
				if i >= 64 {
					query[i] = LocalHash(100_000 + i + 1) // prompt 1's tail
				}
			}
			dst := make([]Match, 0, workers)
			b.ReportAllocs()
			for b.Loop() {
				dst = tr.FindMatches(query, false, dst)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/256, "ns/block")
		})
	}
}

func BenchmarkIndexFindMatchesParallel(b *testing.B) {
	x := NewIndex(Config{})
	loadPrompts(x, 64, 1024, 32, 256)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		query := make([]LocalHash, 256)
		for i := range query {
			query[i] = LocalHash(i + 1)
			if i >= 32 {
				query[i] = LocalHash(5*100_000 + i + 1)
			}
		}
		dst := make([]Match, 0, 64)
		for pb.Next() {
			dst = x.FindMatches(query, false, dst)
		}
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/256, "ns/block")
}

func BenchmarkApplyStoreRemove(b *testing.B) {
	tr := New(Config{})
	loadPrompts(tr, 16, 256, 32, 128)
	w := Worker{ID: 99}
	store := Event{Worker: w, Kind: KindStored}
	for i := range 32 {
		store.Blocks = append(store.Blocks, Block{Hash: BlockHash(9_000_000 + i), Tokens: LocalHash(i + 1)})
	}
	remove := Event{Worker: w, Kind: KindRemoved, Removed: []BlockHash{9_000_000}}
	b.ReportAllocs()
	for b.Loop() {
		tr.Apply(store)
		tr.Apply(remove)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/64, "ns/block-op")
}

// BenchmarkIndexWriters applies events of different workers from 1, 2 and 4
// goroutines at once, each owning its share of 64 workers, as the router's
// event shards do. Every worker holds a head of 8 blocks (the same tokens
// for all) and 256 prompts of 56 blocks below it: nearly a million entries,
// in tables far larger than the caches. Each step stores a worker's next
// prompt under its head and removes its oldest prompt, leaves first, as an
// engine's LRU evicts. The figure is block-ops/s over all goroutines.
func BenchmarkIndexWriters(b *testing.B) {
	const workers, prompts, head, depth = 64, 256, 8, 56
	hash := func(w, p, i int) BlockHash { return BlockHash(uint64(w)<<40 | uint64(p)<<8 | uint64(i)) }
	// prompt fills ev with prompt p of worker w, below the head.
	prompt := func(ev *Event, w, p int) {
		ev.Worker = Worker{ID: WorkerID(w + 1)}
		ev.HasParent, ev.Parent = true, hash(w, 0, head-1)
		ev.Blocks = ev.Blocks[:0]
		for i := range depth {
			ev.Blocks = append(ev.Blocks, Block{Hash: hash(w, p+1, i), Tokens: LocalHash(hash(w, p+1, i))})
		}
	}
	for _, writers := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			x := NewIndex(Config{})
			for w := range workers {
				ev := Event{Worker: Worker{ID: WorkerID(w + 1)}, Kind: KindStored}
				for i := range head {
					ev.Blocks = append(ev.Blocks, Block{Hash: hash(w, 0, i), Tokens: LocalHash(i + 1)})
				}
				x.Apply(ev)
				for p := range prompts {
					prompt(&ev, w, p)
					x.Apply(ev)
				}
			}
			per := b.N/writers + 1
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for k := range writers {
				wg.Go(func() {
					next := make([]int, workers)
					for w := range next {
						next[w] = prompts
					}
					store := Event{Kind: KindStored}
					remove := Event{Kind: KindRemoved, Removed: make([]BlockHash, depth)}
					for i := range per {
						w := k + writers*(i%(workers/writers))
						p := next[w]
						next[w]++
						prompt(&store, w, p)
						x.Apply(store)
						remove.Worker = store.Worker
						for j := range depth {
							remove.Removed[j] = hash(w, p-prompts+1, depth-1-j)
						}
						x.Apply(remove)
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(2*depth*per*writers)/elapsed.Seconds(), "block-ops/s")
		})
	}
}

// BenchmarkBytesPerEntry reports resident heap bytes per (worker, block)
// entry for prompts of 256 blocks over 128 workers, half of them sharing a
// 16-block prefix.
func BenchmarkBytesPerEntry(b *testing.B) {
	benchBytesPerEntry(b, func(tr *Tree) { loadPrompts(tr, 128, 2048, 16, 256) })
}

// benchBytesPerEntry reports the resident heap bytes per entry of a tree
// that load fills.
func benchBytesPerEntry(b *testing.B, load func(*Tree)) {
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tr := New(Config{})
		load(tr)
		runtime.GC()
		runtime.ReadMemStats(&after)
		st := tr.Stats()
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(st.Entries), "bytes/entry")
		runtime.KeepAlive(tr)
	}
}

// loadTieredPrompts is loadPrompts on ranks that offload: every block of a
// prompt is copied to the host by hash, and the blocks past the shared
// prefix then leave the device, so they are held on the host alone.
func loadTieredPrompts(x interface{ Apply(Event) Result }, workers, n, shared, depth int) {
	for p := range n {
		w := Worker{ID: WorkerID(1 + p%workers)}
		ev := Event{Worker: w, Kind: KindStored}
		copied := Event{Worker: w, Kind: KindStored, ByHash: true, Tier: TierHost}
		evicted := Event{Worker: w, Kind: KindRemoved}
		for i := range depth {
			tok := LocalHash(i + 1)
			if i >= shared {
				tok = LocalHash(p*100_000 + i + 1)
			}
			h := BlockHash(p*100_000 + i + 1)
			ev.Blocks = append(ev.Blocks, Block{Hash: h, Tokens: tok})
			copied.Blocks = append(copied.Blocks, Block{Hash: h})
			if i >= shared {
				evicted.Removed = append(evicted.Removed, h)
			}
		}
		x.Apply(ev)
		x.Apply(copied)
		x.Apply(evicted)
	}
}

// BenchmarkFindMatchesTiered is BenchmarkFindMatches on ranks that hold
// their prompts' tails on the host alone: the cost of the per-tier counts,
// one lookup per matched block of such a rank.
func BenchmarkFindMatchesTiered(b *testing.B) { benchFindMatches(b, loadTieredPrompts) }

// BenchmarkApplyTiered is the life of an offloaded prompt of 32 blocks: a
// device store, a host copy by hash, the device eviction (the blocks stay
// on the host) and the host eviction of the first block (the rest goes
// with it).
func BenchmarkApplyTiered(b *testing.B) {
	tr := New(Config{})
	loadTieredPrompts(tr, 16, 256, 32, 128)
	w := Worker{ID: 99}
	store := Event{Worker: w, Kind: KindStored}
	copied := Event{Worker: w, Kind: KindStored, ByHash: true, Tier: TierHost}
	evict := Event{Worker: w, Kind: KindRemoved}
	for i := range 32 {
		h := BlockHash(9_000_000 + i)
		store.Blocks = append(store.Blocks, Block{Hash: h, Tokens: LocalHash(i + 1)})
		copied.Blocks = append(copied.Blocks, Block{Hash: h})
		evict.Removed = append(evict.Removed, h)
	}
	drop := Event{Worker: w, Kind: KindRemoved, Tier: TierHost, Removed: []BlockHash{9_000_000}}
	b.ReportAllocs()
	for b.Loop() {
		tr.Apply(store)
		tr.Apply(copied)
		tr.Apply(evict)
		tr.Apply(drop)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/128, "ns/block-op")
}

// BenchmarkBytesPerEntryTiered is BenchmarkBytesPerEntry on ranks that hold
// every block on the host too, and the blocks past the shared prefix on the
// host alone.
func BenchmarkBytesPerEntryTiered(b *testing.B) {
	benchBytesPerEntry(b, func(tr *Tree) { loadTieredPrompts(tr, 128, 2048, 16, 256) })
}
