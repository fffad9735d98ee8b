package scheduler

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fleet holds the candidates a test pushes to its Router, as the worker
// registry does; set pushes new ones. The scheduler is pure (no etcd), so
// its tests push candidates themselves; the service tests use the real
// worker registry on an embedded etcd.
type fleet struct {
	decode, prefill []Candidate
	routers         []*Router
}

func newFleet(decode, prefill []Candidate) *fleet {
	return &fleet{decode: decode, prefill: prefill}
}

// set pushes new candidates.
func (f *fleet) set(decode, prefill []Candidate) {
	f.decode, f.prefill = decode, prefill
	for _, r := range f.routers {
		r.SetCandidates(decode, prefill)
	}
}

// writer is an IndexWriter applying each event at once to a real index
// (in process the order of the writes is the order of the calls), and
// counting the blocks it stored and removed.
type writer struct {
	idx             *indexer.Index
	stored, removed atomic.Int64
}

func (w *writer) Write(ev indexer.Event) {
	w.stored.Add(int64(len(ev.Blocks)))
	w.removed.Add(int64(len(ev.Removed)))
	w.idx.Apply(ev)
}

var _ IndexWriter = (*writer)(nil)

// cands returns trusted candidates for worker ids (rank 0), each with the
// given limits.
func cands(totalKVBlocks, maxBatched int, ids ...uint64) []Candidate {
	out := make([]Candidate, len(ids))
	for i, id := range ids {
		out[i] = Candidate{Worker: indexer.Worker{ID: indexer.WorkerID(id)}, TotalKVBlocks: totalKVBlocks, MaxNumBatchedTokens: maxBatched, OverlapTrusted: true}
	}
	return out
}

// env is a Router on a real index and real metrics.
type env struct {
	r     *Router
	idx   *indexer.Index
	w     *writer
	fleet *fleet
	m     *metrics.Router
	prom  *prometheus.Registry
}

// envSeed seeds each env's randomness differently (two replicas must not
// generate the same request ids) and reproducibly.
var envSeed atomic.Uint64

// newEnv builds a Router with cfg over fleet, its randomness seeded.
func newEnv(t testing.TB, cfg Config, f *fleet) *env {
	t.Helper()
	return newEnvPublishing(t, cfg, f, nil)
}

// newEnvPublishing is newEnv with a replica-sync publisher.
func newEnvPublishing(t testing.TB, cfg Config, f *fleet, pub Publisher) *env {
	t.Helper()
	e := &env{idx: indexer.NewIndex(indexer.Config{}), fleet: f, prom: prometheus.NewRegistry()}
	e.w = &writer{idx: e.idx}
	var err error
	if e.m, err = metrics.New(e.prom, metrics.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if e.r, err = New(cfg, e.idx, e.w, e.m, Options{Rand: rand.New(rand.NewPCG(1, envSeed.Add(1))), Publisher: pub}); err != nil {
		t.Fatal(err)
	}
	f.routers = append(f.routers, e.r)
	e.r.SetCandidates(f.decode, f.prefill)
	return e
}

// testConfig is DefaultConfig with block size 4, so prompts stay short.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.BlockSize = 4
	return cfg
}

// prompt returns n blocks of bs tokens, block i made of tokens
// base+i*bs ... base+i*bs+bs-1.
func tokens(base, n, bs int) []uint32 {
	t := make([]uint32, n*bs)
	for i := range t {
		t[i] = uint32(base + i)
	}
	return t
}

// store indexes tokens' full blocks for w, as a worker's KV events would.
func (e *env) store(t testing.TB, w indexer.Worker, toks []uint32) {
	t.Helper()
	h, err := blockhash.NewHasher(e.r.cfg.BlockSize, blockhash.Options{})
	if err != nil {
		t.Fatal(err)
	}
	locals := h.LocalHashes(nil, toks)
	seq := h.SequenceHashes(nil, locals)
	blocks := make([]indexer.Block, len(locals))
	for i := range locals {
		blocks[i] = indexer.Block{Hash: indexer.BlockHash(seq[i]), Tokens: indexer.LocalHash(locals[i])}
	}
	if res := e.idx.Apply(indexer.Event{Worker: w, Kind: indexer.KindStored, Blocks: blocks}); res.Status != indexer.StatusOK {
		t.Fatalf("store for %v: %v", w, res.Status)
	}
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func w(id uint64) indexer.Worker { return indexer.Worker{ID: indexer.WorkerID(id)} }

func ptr[T any](v T) *T { return &v }
