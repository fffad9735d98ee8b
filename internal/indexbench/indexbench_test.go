package indexbench

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/traces"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const excerpt = "../../testdata/mooncake_excerpt.jsonl"

func readExcerpt(tb testing.TB) []traces.Request {
	tb.Helper()
	f, err := os.Open(excerpt)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	reqs, err := traces.Read(f)
	if err != nil {
		tb.Fatalf("read %s: %v", excerpt, err)
	}
	return reqs
}

// small is a configuration that replays the excerpt in well under a second
// yet evicts a lot.
func small() Config {
	return Config{Workers: 8, CacheBlocks: 512, KeysPerBlock: 4, Duplicate: 2, Goroutines: 2, LatencyEvery: 4}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		flag   string // "" when valid
	}{
		{name: "defaults", change: func(*Config) {}},
		{name: "small", change: func(c *Config) { *c = small() }},
		{name: "no workers", change: func(c *Config) { c.Workers = 0 }, flag: "--workers"},
		{name: "too many workers", change: func(c *Config) { c.Workers = MaxWorkers + 1 }, flag: "--workers"},
		{name: "no cache", change: func(c *Config) { c.CacheBlocks = 0 }, flag: "--cache-blocks"},
		{name: "too many keys", change: func(c *Config) { c.KeysPerBlock = MaxKeysPerBlock + 1 }, flag: "--keys-per-block"},
		{name: "no copies", change: func(c *Config) { c.Duplicate = 0 }, flag: "--duplicate"},
		{name: "no goroutines", change: func(c *Config) { c.Goroutines = 0 }, flag: "--goroutines"},
		{name: "negative cap", change: func(c *Config) { c.MaxEntries = -1 }, flag: "--max-entries"},
		{name: "no latency sampling", change: func(c *Config) { c.LatencyEvery = 0 }, flag: "--latency-every"},
		{name: "negative query time", change: func(c *Config) { c.MinQueryTime = -time.Second }, flag: "--min-query-time"},
		{name: "endless query time", change: func(c *Config) { c.MinQueryTime = MaxQueryTime + 1 }, flag: "--min-query-time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.change(&cfg)
			err := cfg.Validate()
			switch {
			case tt.flag == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tt.flag != "" && (err == nil || !strings.Contains(err.Error(), tt.flag)):
				t.Fatalf("Validate = %v, want an error naming %s", err, tt.flag)
			}
		})
	}
}

// checkModel replays the stream against a brute-force model of each
// worker's cache and fails unless every store hangs under a held parent and
// adds only new blocks, every removal takes a held leaf (no held block
// below it), and the model ends the size of the stream's LRUs.
func checkModel(t *testing.T, s *stream, cfg Config) {
	t.Helper()
	type entry struct {
		parent    indexer.BlockHash
		hasParent bool
		children  int
	}
	held := make(map[indexer.Worker]map[indexer.BlockHash]*entry)
	for i, ev := range s.events {
		m := held[ev.Worker]
		if m == nil {
			m = make(map[indexer.BlockHash]*entry)
			held[ev.Worker] = m
		}
		switch ev.Kind {
		case indexer.KindStored:
			parent, hasParent := ev.Parent, ev.HasParent
			if hasParent && m[parent] == nil {
				t.Fatalf("event %d: stored under parent %x that %v does not hold", i, parent, ev.Worker)
			}
			for _, b := range ev.Blocks {
				if m[b.Hash] != nil {
					t.Fatalf("event %d: block %x stored twice", i, b.Hash)
				}
				if hasParent {
					m[parent].children++
				}
				m[b.Hash] = &entry{parent: parent, hasParent: hasParent}
				parent, hasParent = b.Hash, true
			}
		case indexer.KindRemoved:
			for _, h := range ev.Removed {
				e := m[h]
				switch {
				case e == nil:
					t.Fatalf("event %d: removes block %x that %v does not hold", i, h, ev.Worker)
				case e.children > 0:
					t.Fatalf("event %d: removes block %x before its %d children", i, h, e.children)
				}
				if e.hasParent {
					m[e.parent].children--
				}
				delete(m, h)
			}
		default:
			t.Fatalf("event %d: unexpected kind %v", i, ev.Kind)
		}
	}
	for w := range cfg.Workers {
		if got, want := len(held[workerOf(w)]), s.cached[w]; got != want {
			t.Errorf("worker %d: model holds %d blocks, LRU %d", w, got, want)
		}
	}
}

func TestStreamInvariants(t *testing.T) {
	excerptReqs := readExcerpt(t)
	long := []traces.Request{
		{HashIDs: []uint64{0, 1, 2, 3, 4}},
		{HashIDs: []uint64{0, 1, 2, 3, 4, 5, 6}},
		{HashIDs: []uint64{0, 1, 9}},
		{HashIDs: []uint64{7, 8}},
		{HashIDs: []uint64{}},
		{HashIDs: []uint64{7}},
		{HashIDs: []uint64{0, 1, 2}},
	}
	tests := []struct {
		name string
		reqs []traces.Request
		cfg  Config
	}{
		{name: "excerpt", reqs: excerptReqs, cfg: small()},
		{name: "excerpt tiny caches", reqs: excerptReqs, cfg: Config{Workers: 3, CacheBlocks: 40, KeysPerBlock: 2, Duplicate: 1, Goroutines: 1, LatencyEvery: 1}},
		{name: "excerpt one worker", reqs: excerptReqs[:200], cfg: Config{Workers: 1, CacheBlocks: 1000, KeysPerBlock: 8, Duplicate: 3, Goroutines: 1, LatencyEvery: 1}},
		{name: "requests longer than the cache", reqs: long, cfg: Config{Workers: 1, CacheBlocks: 8, KeysPerBlock: 4, Duplicate: 1, Goroutines: 1, LatencyEvery: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			s, err := buildStream(ctx, tt.reqs, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if s.removedBlocks == 0 {
				t.Errorf("nothing was evicted; the test does not exercise removals")
			}
			checkModel(t, s, tt.cfg)

			// The index agrees with the LRUs, event by event and worker by
			// worker.
			idx, ld := load(s, tt.cfg)
			if ld.notOK != 0 {
				t.Errorf("%d events not applied cleanly", ld.notOK)
			}
			st := idx.Stats()
			total := 0
			for w, want := range s.cached {
				total += want
				if got := idx.Size(workerOf(w)); got != want {
					t.Errorf("worker %d: index Size %d, LRU %d", w, got, want)
				}
			}
			if st.Entries != total || st.Entries <= 0 || st.Entries > tt.cfg.Workers*tt.cfg.CacheBlocks {
				t.Errorf("Entries = %d, want the LRUs' total %d, in 1..%d", st.Entries, total, tt.cfg.Workers*tt.cfg.CacheBlocks)
			}

			// Replayed in order, each query scores its worker exactly as
			// many blocks as the worker's LRU held.
			fresh := indexer.NewIndex(indexer.Config{})
			err = interleave(ctx, fresh, s, func(i int, ms []indexer.Match) {
				q := s.queries[i]
				var got uint32
				for _, m := range ms {
					if m.Worker == workerOf(int(q.worker)) {
						got = m.Blocks
					}
				}
				if got != uint32(q.hit) {
					t.Fatalf("query %d: worker %d scores %d, its LRU held %d", i, q.worker, got, q.hit)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(st, fresh.Stats()); diff != "" {
				t.Errorf("interleaved replay ends elsewhere than the load (-load +replay):\n%s", diff)
			}
		})
	}
}

func TestStreamDeterministic(t *testing.T) {
	reqs := readExcerpt(t)
	a, err := buildStream(t.Context(), reqs, small())
	if err != nil {
		t.Fatal(err)
	}
	b, err := buildStream(t.Context(), reqs, small())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, b, cmp.AllowUnexported(stream{}, query{})); diff != "" {
		t.Errorf("two builds differ (-first +second):\n%s", diff)
	}
}

func TestStreamCopiesAreDisjoint(t *testing.T) {
	reqs := readExcerpt(t)[:50]
	cfg := small()
	s, err := buildStream(t.Context(), reqs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[indexer.LocalHash]int) // key -> copy
	for i, q := range s.queries {
		d := i % cfg.Duplicate
		for _, k := range q.keys {
			if other, ok := seen[k]; ok && other != d {
				t.Fatalf("key %x appears in copies %d and %d", k, other, d)
			}
			seen[k] = d
		}
	}
}

func TestRun(t *testing.T) {
	reqs := readExcerpt(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "two goroutines", cfg: small()},
		{name: "one goroutine", cfg: func() Config { c := small(); c.Goroutines = 1; return c }()},
		{name: "more goroutines than processors", cfg: func() Config { c := small(); c.Goroutines = 5; return c }()},
		{name: "repeated query passes", cfg: func() Config { c := small(); c.MinQueryTime = 30 * time.Millisecond; return c }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Run(t.Context(), reqs, tt.cfg)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			cfg := tt.cfg
			switch {
			case res.Requests != len(reqs)*cfg.Duplicate || res.TraceRequests != len(reqs):
				t.Errorf("Requests = %d of %d, want %d of %d", res.Requests, res.TraceRequests, len(reqs)*cfg.Duplicate, len(reqs))
			case res.Entries <= 0 || res.Entries > cfg.Workers*cfg.CacheBlocks:
				t.Errorf("Entries = %d, want 1..%d", res.Entries, cfg.Workers*cfg.CacheBlocks)
			case res.Nodes < res.Entries/cfg.Workers || res.Workers != cfg.Workers:
				t.Errorf("Nodes = %d, Workers = %d for %d entries", res.Nodes, res.Workers, res.Entries)
			case res.EventsNotOK != 0:
				t.Errorf("EventsNotOK = %d, want 0", res.EventsNotOK)
			case res.QueryBlockOpsPerSec <= 0 || res.MixedBlockOpsPerSec <= 0 || res.LoadBlockOpsPerSec <= 0:
				t.Errorf("rates %v, %v, %v: want all positive", res.QueryBlockOpsPerSec, res.MixedBlockOpsPerSec, res.LoadBlockOpsPerSec)
			case res.FindMatchesP50Ns <= 0 || res.FindMatchesP99Ns < res.FindMatchesP50Ns:
				t.Errorf("p50 %d ns, p99 %d ns", res.FindMatchesP50Ns, res.FindMatchesP99Ns)
			case res.LatencySamples != (res.Requests+cfg.LatencyEvery-1)/cfg.LatencyEvery:
				t.Errorf("LatencySamples = %d of %d queries", res.LatencySamples, res.Requests)
			case res.QueryPasses < 1 || res.QuerySeconds < cfg.MinQueryTime.Seconds():
				t.Errorf("%d query passes in %vs, want at least 1 and %v", res.QueryPasses, res.QuerySeconds, cfg.MinQueryTime)
			case res.BytesPerEntry <= 0:
				t.Errorf("BytesPerEntry = %v, want > 0", res.BytesPerEntry)
			case res.CacheHitRatio <= 0 || res.CacheHitRatio >= 1:
				t.Errorf("CacheHitRatio = %v, want in (0, 1)", res.CacheHitRatio)
			case res.StoredBlocks-res.RemovedBlocks != int64(res.Entries):
				t.Errorf("stored %d - removed %d != entries %d", res.StoredBlocks, res.RemovedBlocks, res.Entries)
			}
		})
	}
}

func TestRunDeterministic(t *testing.T) {
	reqs := readExcerpt(t)
	a, err := Run(t.Context(), reqs, small())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(t.Context(), reqs, small())
	if err != nil {
		t.Fatal(err)
	}
	// Everything but the timings and the heap must repeat.
	clear := func(r *Result) {
		r.LoadBlockOpsPerSec, r.QueryBlockOpsPerSec, r.MixedBlockOpsPerSec = 0, 0, 0
		r.FindMatchesP50Ns, r.FindMatchesP99Ns, r.BytesPerEntry = 0, 0, 0
		r.BuildSeconds, r.LoadSeconds, r.QuerySeconds, r.LatencySeconds, r.MixedSeconds, r.DurationSeconds = 0, 0, 0, 0, 0, 0
	}
	clear(&a)
	clear(&b)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("two runs differ (-first +second):\n%s", diff)
	}
}

func TestMixedEndsInTheFinalState(t *testing.T) {
	reqs := readExcerpt(t)
	for _, g := range []int{1, 2, 4} {
		cfg := small()
		cfg.Goroutines = g
		s, err := buildStream(t.Context(), reqs, cfg)
		if err != nil {
			t.Fatal(err)
		}
		idx, _, err := mixedPass(t.Context(), s, cfg)
		if err != nil {
			t.Fatalf("goroutines %d: %v", g, err)
		}
		for w, want := range s.cached {
			if got := idx.Size(workerOf(w)); got != want {
				t.Fatalf("goroutines %d: worker %d: Size %d, LRU %d", g, w, got, want)
			}
		}
	}
}

func TestRunMaxEntries(t *testing.T) {
	cfg := small()
	cfg.MaxEntries = 1000
	res, err := Run(t.Context(), readExcerpt(t), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Entries > cfg.MaxEntries || res.IndexEvicted == 0 {
		t.Errorf("Entries = %d with cap %d, IndexEvicted = %d; want within the cap and evictions", res.Entries, cfg.MaxEntries, res.IndexEvicted)
	}
}

func TestRunErrors(t *testing.T) {
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		reqs []traces.Request
		cfg  Config
		want error
	}{
		{name: "no requests", ctx: t.Context(), cfg: small(), want: ErrNoRequests},
		{name: "cancelled", ctx: cancelled, reqs: readExcerpt(t), cfg: small(), want: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Run(tt.ctx, tt.reqs, tt.cfg); !errors.Is(err, tt.want) {
				t.Errorf("Run = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("bad config", func(t *testing.T) {
		cfg := small()
		cfg.Workers = 0
		if _, err := Run(t.Context(), readExcerpt(t), cfg); err == nil || !strings.Contains(err.Error(), "--workers") {
			t.Errorf("Run = %v, want an error naming --workers", err)
		}
	})
}

func TestPercentile(t *testing.T) {
	sorted := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		name string
		p    float64
		want int64
	}{
		{name: "p50", p: 0.5, want: 5},
		{name: "p99", p: 0.99, want: 10},
		{name: "p0", p: 0, want: 1},
		{name: "p100", p: 1, want: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := make([]time.Duration, len(sorted))
			for i, v := range sorted {
				ds[i] = time.Duration(v)
			}
			if got := percentile(ds, tt.p); got != time.Duration(tt.want) {
				t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing = %v, want 0", got)
	}
}
