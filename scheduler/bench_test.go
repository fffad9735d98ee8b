package scheduler

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/kvrouter/router/indexer"
)

// benchEnv is a fleet of 1,000 workers at Dynamo's block size (128), each
// holding 4 cached 30-block conversations and serving 2 active requests,
// and a 30-block prompt. shared makes every worker also hold the prompt's
// first 2 blocks (a common system prompt), so the index lookup returns all
// 1,000 workers: the worst case for matching and scoring.
func benchEnv(b *testing.B, shared bool) (*env, []uint32) {
	return benchEnvWith(b, shared, DefaultConfig())
}

// benchEnvWith is benchEnv with the router configured by cfg, whose block
// size must be 128.
func benchEnvWith(b *testing.B, shared bool, cfg Config) (*env, []uint32) {
	const (
		workers   = 1000
		blocks    = 30
		blockSize = 128
	)
	ids := make([]uint64, workers)
	for i := range ids {
		ids[i] = uint64(1_000_000 + i*7919)
	}
	e := newEnv(b, cfg, newFleet(cands(16384, 8192, ids...), nil))
	rng := rand.New(rand.NewPCG(1, 1))
	prompt := make([]uint32, blocks*blockSize)
	for i := range prompt {
		prompt[i] = rng.Uint32N(150000)
	}
	conv := func() []uint32 {
		c := make([]uint32, blocks*blockSize)
		for i := range c {
			c[i] = rng.Uint32N(150000)
		}
		return c
	}
	for i, id := range ids {
		for range 4 {
			c := conv()
			if shared {
				copy(c, prompt[:2*blockSize])
			}
			e.store(b, w(id), c)
		}
		// Three workers hold 20, 10 and 5 blocks of the prompt itself.
		switch i {
		case 100:
			e.store(b, w(id), prompt[:20*blockSize])
		case 500:
			e.store(b, w(id), prompt[:10*blockSize])
		case 900:
			e.store(b, w(id), prompt[:5*blockSize])
		}
		for j := range 2 {
			if _, err := e.r.Route(context.Background(), &Request{ID: strconv.Itoa(i) + "/" + strconv.Itoa(j), Tokens: conv(), AllowedWorkerIDs: []indexer.WorkerID{indexer.WorkerID(id)}}); err != nil {
				b.Fatal(err)
			}
		}
	}
	return e, prompt
}

// BenchmarkRouteDecision times one routing decision in process: hashing a
// 30-block prompt, the index lookup, and scoring 1,000 workers (book:
// false, so every iteration sees the same state). It reports the median
// and the 99th percentile of the per-decision times.
//
// The adaptive cases turn the adaptive weight of prefill work on (scale
// 8, 1 when saturated) with a threshold of 8,192 tokens, which the
// fleet's 7,680 prefill tokens a worker are under, and of 4,096, which
// they are over: the decision at scale 8, then at the saturated scale.
// The affinity cases turn the cache affinity on (16 blocks a held block),
// which costs a multiply and a subtraction per candidate holding blocks of
// the prompt: a thousand of them with the shared prefix.
func BenchmarkRouteDecision(b *testing.B) {
	adaptive := func(threshold int) Config {
		cfg := DefaultConfig()
		cfg.PrefillLoadScale, cfg.PrefillLoadScaleSaturated, cfg.SaturationPrefillTokens = 8, 1, threshold
		return cfg
	}
	affinity := DefaultConfig()
	affinity.CacheAffinity = 16
	for _, bc := range []struct {
		name   string
		shared bool
		cfg    Config
	}{
		{"typical", false, DefaultConfig()},
		{"shared-prefix-1000-matches", true, DefaultConfig()},
		{"typical-adaptive", false, adaptive(8192)},
		{"typical-adaptive-saturated", false, adaptive(4096)},
		{"typical-affinity", false, affinity},
		{"shared-prefix-1000-matches-affinity", true, affinity},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e, prompt := benchEnvWith(b, bc.shared, bc.cfg)
			req := &Request{Tokens: prompt, QueryOnly: true}
			ctx := context.Background()
			if d, err := e.r.Route(ctx, req); err != nil || d.OverlapBlocks != 20 {
				b.Fatalf("decision %+v, %v; want the worker holding 20 blocks", d, err)
			}
			samples := make([]time.Duration, 0, 1<<20)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				if _, err := e.r.Route(ctx, req); err != nil {
					b.Fatal(err)
				}
				if len(samples) < cap(samples) {
					samples = append(samples, time.Since(start))
				}
			}
			reportQuantiles(b, samples)
		})
	}
}

// BenchmarkRouteAndFree times a booked decision and its free: what the
// router does per request in steady state.
func BenchmarkRouteAndFree(b *testing.B) {
	e, prompt := benchEnv(b, false)
	ctx := context.Background()
	req := &Request{ID: "r", Tokens: prompt}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.r.Route(ctx, req); err != nil {
			b.Fatal(err)
		}
		e.r.MarkPrefill("r")
		e.r.Free("r", 100)
	}
}

// reportQuantiles reports the median and the 99th percentile of samples.
func reportQuantiles(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	q := func(p float64) float64 { return float64(samples[int(p*float64(len(samples)-1))].Nanoseconds()) }
	b.ReportMetric(q(0.5), "p50-ns")
	b.ReportMetric(q(0.99), "p99-ns")
}

// BenchmarkPickMin times the least-cost choice over 1,000 costs.
func BenchmarkPickMin(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, bc := range []struct {
		name string
		gen  func(i int) float64
	}{
		{"all-tied", func(int) float64 { return 5 }},
		{"distinct", func(int) float64 { return rng.Float64() }},
		{"few-levels", func(i int) float64 { return float64(rng.IntN(4)) }},
	} {
		costs := make([]float64, 1000)
		for i := range costs {
			costs[i] = bc.gen(i)
		}
		b.Run(bc.name, func(b *testing.B) {
			ties := make([]int32, 0, len(costs))
			for b.Loop() {
				_, ties = pickMin(costs, ties, rng)
			}
		})
	}
}

// BenchmarkRouteSteady times booked decisions in the steady state of
// BenchmarkRouteNATS (service package), in process: 1,000 workers, 64
// clients each with a 20-block conversation cached on one worker, every
// request that conversation plus 10 new blocks of its own, sent as block
// hashes, and never marked or freed: the prefill timeout (250 ms here,
// about the active set the NATS benchmark holds at its lower rate) frees
// them. So
// the bookkeeping holds tens of thousands of requests and hundreds of
// thousands of active blocks, and every decision pays for booking one
// request and expiring another.
func BenchmarkRouteSteady(b *testing.B) {
	const (
		workers   = 1000
		clients   = 64
		blockSize = 128
		cached    = 20
		turn      = 10
	)
	cfg := DefaultConfig()
	cfg.StaleTimeout = 250 * time.Millisecond
	// Never marked prefilled either: the prefill timeout's list is kept
	// and popped too, as in production.
	cfg.PrefillTimeout = cfg.StaleTimeout
	ids := make([]uint64, workers)
	for i := range ids {
		ids[i] = uint64(1 + i)
	}
	e := newEnv(b, cfg, newFleet(cands(16384, 8192, ids...), nil))
	rng := rand.New(rand.NewPCG(3, 3))
	toks := func(n int) []uint32 {
		t := make([]uint32, n)
		for i := range t {
			t[i] = rng.Uint32N(150000)
		}
		return t
	}
	for _, id := range ids {
		for range 4 {
			e.store(b, w(id), toks(30*blockSize))
		}
	}
	prefixes := make([][]indexer.LocalHash, clients)
	for c := range prefixes {
		conv := toks(cached * blockSize)
		e.store(b, w(uint64(1+c*7)), conv)
		for _, h := range localHashes(nil, conv, blockSize, "") {
			prefixes[c] = append(prefixes[c], indexer.LocalHash(h))
		}
	}
	ctx := context.Background()
	req := &Request{BlockHashes: make([]indexer.LocalHash, 0, cached+turn)}
	samples := make([]time.Duration, 0, 1<<20)
	var idBuf []byte
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := i % clients
		req.BlockHashes = append(req.BlockHashes[:0], prefixes[c]...)
		for range turn {
			req.BlockHashes = append(req.BlockHashes, indexer.LocalHash(rng.Uint64()))
		}
		idBuf = strconv.AppendInt(idBuf[:0], int64(i), 10)
		req.ID = string(idBuf)
		i++
		start := time.Now()
		if _, err := e.r.Route(ctx, req); err != nil {
			b.Fatal(err)
		}
		if len(samples) < cap(samples) {
			samples = append(samples, time.Since(start))
		}
	}
	b.ReportMetric(float64(e.r.Active()), "active-requests")
	reportQuantiles(b, samples)
}

// BenchmarkMinScan times the common-case least-cost choice over 1,000
// candidates by minScan and by fusedMin. The loads of "steady" are about
// those of BenchmarkRouteSteady, some thirty requests of ten new blocks on
// each rank, and so is its sparse set: 180 ranks with the prompt's prefix
// active, whose credit makes one of them the least cost most of the time
// ("marked-wins"), or not ("plain-wins"). fusedMin's times include the
// marks it needs and minScan mostly does not. Both see the same data at
// every iteration, which flatters their branch prediction:
// BenchmarkRouteSteady is the judge.
func BenchmarkMinScan(b *testing.B) {
	const n = 1000
	steady := func(rng *rand.Rand) (int, int) {
		reqs := 25 + rng.IntN(16)
		return reqs * 1280, reqs*30 - rng.IntN(40)
	}
	for _, bc := range []struct {
		name   string
		load   func(rng *rand.Rand) (prefill, blocks int)
		sparse int
		credit float64 // how much less a marked cost is than the plain one
	}{
		{"steady/marked-wins", steady, 180, 20},
		{"steady/plain-wins", steady, 180, -1},
		{"all-tied", func(*rand.Rand) (int, int) { return 0, 100 }, 4, -1},
		{"few-levels", func(rng *rand.Rand) (int, int) { return 128 * rng.IntN(2), rng.IntN(2) }, 4, -1},
	} {
		rng := rand.New(rand.NewPCG(1, 1))
		c := &scanCase{perToken: 1.0 / 128, isl: 3840, newBlocks: 30,
			prefill: make([]int, n), blocks: make([]int, n), costs: make([]float64, n)}
		for i := range n {
			c.prefill[i], c.blocks[i] = bc.load(rng)
		}
		pc := c.plainCost()
		for range bc.sparse {
			j := rng.Int32N(n)
			c.sparse = append(c.sparse, j)
			c.costs[j] = pc.of(float64(c.prefill[j]), float64(c.blocks[j])) - bc.credit
		}
		v := c.view()
		keys := v.keys(pc, c.isl, c.newBlocks)
		var s scratch
		b.Run(bc.name+"/minScan", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.minScan(keys, v.prefill, v.blocks, c.sparse, c.costs, pc, rng)
			}
		})
		b.Run(bc.name+"/fusedMin", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, s.ties = fusedMin(v.prefill, v.blocks, s.marks(n, c.sparse), c.costs, pc, s.ties, rng)
			}
		})
	}
}
