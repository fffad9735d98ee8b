package replay

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
)

// testRouter stands in for the router service (docs/api.md §3) while the
// real one is not wired into `router serve`: a small KV-aware router on
// the real index and the real event decoder, with Dynamo's cost, answering
// route, mark_prefill, mark_free and potential_loads. Like the real one, it
// applies events on a goroutine of its own, apart from the one that routes,
// so the replay's barrier is what makes its decisions deterministic.
type testRouter struct {
	t         *testing.T
	workers   []uint64
	hasher    *blockhash.Hasher
	blockSize int
	roundRob  bool

	idx     *indexer.Index
	applied atomic.Uint64

	mu      sync.Mutex
	rng     *rand.Rand
	rr      int
	active  map[string]*booking
	prefill map[uint64]int
}

type booking struct {
	worker  uint64
	prefill int
}

func startTestRouter(t *testing.T, nc *nats.Conn, ns string, workers []uint64, blockSize int, roundRobin bool, seed uint64) *testRouter {
	h, err := blockhash.NewHasher(blockSize, blockhash.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := &testRouter{
		t: t, workers: workers, hasher: h, blockSize: blockSize, roundRob: roundRobin,
		idx: indexer.NewIndex(indexer.Config{}), rng: rand.New(rand.NewPCG(seed, 1)),
		active: make(map[string]*booking), prefill: make(map[uint64]int),
	}
	evSub, err := nc.Subscribe("namespace."+ns+".component.backend.kv-events", func(m *nats.Msg) {
		ev, _, err := codec.DecodeJSON(m.Data)
		if err != nil {
			t.Errorf("test router: %v", err)
			return
		}
		if res := r.idx.Apply(ev); res.Status != indexer.StatusOK {
			t.Errorf("test router: event %s: %v", m.Data, res.Status)
		}
		r.applied.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	apiSub, err := nc.Subscribe("namespace."+ns+".component.router.*", r.serve)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = evSub.Unsubscribe()
		_ = apiSub.Unsubscribe()
	})
	return r
}

// Wait implements Barrier on the router's own count.
func (r *testRouter) barrier() Barrier { return CountBarrier(r.applied.Load) }

func (r *testRouter) serve(m *nats.Msg) {
	var req struct {
		RequestID string   `json:"request_id"`
		TokenIDs  []uint32 `json:"token_ids"`
	}
	if err := json.Unmarshal(m.Data, &req); err != nil {
		r.t.Errorf("test router: %v", err)
		return
	}
	var out any
	switch m.Subject[strings.LastIndexByte(m.Subject, '.')+1:] {
	case "route":
		out = r.route(req.RequestID, req.TokenIDs)
	case "mark_prefill":
		r.mu.Lock()
		b, ok := r.active[req.RequestID]
		if ok {
			r.prefill[b.worker] -= b.prefill
			b.prefill = 0
		}
		r.mu.Unlock()
		out = map[string]bool{"success": ok}
	case "mark_free":
		r.mu.Lock()
		b, ok := r.active[req.RequestID]
		if ok {
			r.prefill[b.worker] -= b.prefill
			delete(r.active, req.RequestID)
		}
		r.mu.Unlock()
		out = map[string]bool{"success": ok}
	case "potential_loads":
		var loads []map[string]uint64
		for _, w := range r.workers {
			loads = append(loads, map[string]uint64{"worker_id": w})
		}
		out = map[string]any{"loads": loads}
	}
	b, _ := json.Marshal(out)
	_ = m.Respond(b)
}

// route chooses the least (prefill blocks − overlap), ties at random, or
// round-robin.
func (r *testRouter) route(id string, tokens []uint32) Choice {
	locals := r.hasher.LocalHashes(nil, tokens)
	q := make([]indexer.LocalHash, len(locals))
	for i, l := range locals {
		q[i] = indexer.LocalHash(l)
	}
	overlap := map[uint64]int{}
	for _, m := range r.idx.FindMatches(q, false, nil) {
		overlap[uint64(m.Worker.ID)] = int(m.Blocks)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var best []uint64
	bestCost := 0.0
	for _, w := range r.workers {
		cost := float64(r.prefill[w]+len(tokens))/float64(r.blockSize) - float64(overlap[w])
		switch {
		case len(best) == 0 || cost < bestCost:
			best, bestCost = []uint64{w}, cost
		case cost == bestCost:
			best = append(best, w)
		}
	}
	w := best[r.rng.IntN(len(best))]
	if r.roundRob {
		w = r.workers[r.rr%len(r.workers)]
		r.rr++
	}
	pf := max(0, len(tokens)-overlap[w]*r.blockSize)
	r.active[id] = &booking{worker: w, prefill: pf}
	r.prefill[w] += pf
	return Choice{RequestID: id, WorkerID: w, OverlapBlocks: overlap[w], NumBlocks: len(locals)}
}
