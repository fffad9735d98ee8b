package scheduler

import (
	"sync"
	"time"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// approx is approximate mode (--no-router-kv-events, dynamo-compat.md §4):
// with no KV events from workers, the router indexes its own decisions. A
// routed prompt's blocks are stored in the index for the chosen rank, as a
// Stored event whose engine hashes are the blocks' sequence hashes; each
// (rank, block) expires TTL after it was last routed (routing it again
// refreshes it), and past ApproxMaxEntries entries the soonest to expire go
// until DefaultApproxPruneTo of the cap is left.
//
// Every store carries the prompt's whole chain from its first block, so a
// block never expires before a block below it: expiring removes leaves
// before their parents, as the index's own model wants.
//
// approx has its own lock, taken after the Router's is released (lock
// order: approx.mu, then the index's).
type approx struct {
	idx     Index
	m       *metrics.Router
	ttl     time.Duration
	max     int
	pruneTo int

	mu sync.Mutex
	// expiry holds each live entry's expiry; fifo holds entries in expiry
	// order (the TTL is one constant), including superseded ones, which
	// are skipped when popped because their expiry no longer matches.
	expiry map[approxKey]time.Time
	fifo   []approxEntry
	head   int
	blocks []indexer.Block
	gone   map[indexer.Worker][]indexer.BlockHash
}

type approxKey struct {
	worker indexer.Worker
	hash   uint64 // sequence hash, the block's engine hash here
}

type approxEntry struct {
	key approxKey
	exp time.Time
}

func newApprox(idx Index, m *metrics.Router, ttl time.Duration, maxEntries int) *approx {
	return &approx{
		idx: idx, m: m, ttl: ttl, max: maxEntries,
		pruneTo: max(1, int(float64(maxEntries)*DefaultApproxPruneTo)),
		expiry:  map[approxKey]time.Time{},
		gone:    map[indexer.Worker][]indexer.BlockHash{},
	}
}

// store indexes a routed prompt for w at now: locals are its
// LocalBlockHashes, seqHashes their sequence hashes.
func (a *approx) store(w indexer.Worker, locals, seqHashes []uint64, now time.Time) {
	if len(locals) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	a.blocks = a.blocks[:0]
	for i, l := range locals {
		a.blocks = append(a.blocks, indexer.Block{Hash: indexer.BlockHash(seqHashes[i]), Tokens: indexer.LocalHash(l)})
	}
	res := a.idx.Apply(indexer.Event{Worker: w, Kind: indexer.KindStored, Blocks: a.blocks})
	if res.Evicted > 0 {
		a.m.IndexEvictions.WithLabelValues(metrics.EvictCapacity).Add(float64(res.Evicted))
	}
	exp := now.Add(a.ttl)
	for _, h := range seqHashes {
		k := approxKey{worker: w, hash: h}
		a.expiry[k] = exp
		a.fifo = append(a.fifo, approxEntry{key: k, exp: exp})
	}
	if len(a.expiry) > a.max {
		a.pruneLocked()
	}
	if queued := len(a.fifo) - a.head; queued > 4096 && queued > 2*len(a.expiry) {
		a.compactLocked()
	}
	a.publishLocked()
}

// compactLocked drops superseded entries from fifo, so that it stays
// within twice the live entries however often prompts are re-routed.
func (a *approx) compactLocked() {
	kept := a.fifo[:0]
	for _, e := range a.fifo[a.head:] {
		if exp, ok := a.expiry[e.key]; ok && exp.Equal(e.exp) {
			kept = append(kept, e)
		}
	}
	clear(a.fifo[len(kept):])
	a.fifo, a.head = kept, 0
}

// expire drops the entries expired at now.
func (a *approx) expire(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.expireLocked(now) > 0 {
		a.publishLocked()
	}
}

// expireLocked pops expired entries and removes them from the index.
func (a *approx) expireLocked(now time.Time) int {
	n := 0
	for a.head < len(a.fifo) && !a.fifo[a.head].exp.After(now) {
		if a.popLocked() {
			n++
		}
	}
	if n > 0 {
		a.removeLocked()
		a.m.IndexEvictions.WithLabelValues(metrics.EvictTTL).Add(float64(n))
	}
	return n
}

// pruneLocked drops the entries soonest to expire until pruneTo are left.
func (a *approx) pruneLocked() {
	n := 0
	for len(a.expiry) > a.pruneTo && a.head < len(a.fifo) {
		if a.popLocked() {
			n++
		}
	}
	a.removeLocked()
	a.m.IndexEvictions.WithLabelValues(metrics.EvictCapacity).Add(float64(n))
}

// popLocked pops the head of fifo and reports whether it was live (and is
// now queued for removal).
func (a *approx) popLocked() bool {
	e := a.fifo[a.head]
	a.fifo[a.head] = approxEntry{}
	a.head++
	if a.head > 4096 && a.head*2 > len(a.fifo) {
		a.fifo = append(a.fifo[:0], a.fifo[a.head:]...)
		a.head = 0
	}
	if exp, ok := a.expiry[e.key]; !ok || !exp.Equal(e.exp) {
		return false // superseded by a later store, or removed
	}
	delete(a.expiry, e.key)
	a.gone[e.key.worker] = append(a.gone[e.key.worker], indexer.BlockHash(e.key.hash))
	return true
}

// removeLocked applies the removals popLocked queued.
func (a *approx) removeLocked() {
	for w, hashes := range a.gone {
		a.idx.Apply(indexer.Event{Worker: w, Kind: indexer.KindRemoved, Removed: hashes})
		delete(a.gone, w)
	}
}

// removeWorker forgets every entry of worker id (the index dropped its
// blocks itself).
func (a *approx) removeWorker(id indexer.WorkerID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range a.expiry {
		if k.worker.ID == id {
			delete(a.expiry, k)
		}
	}
	a.publishLocked()
}

// publishLocked sets the index gauges: in approximate mode no event
// subscriber does.
func (a *approx) publishLocked() {
	s := a.idx.Stats()
	a.m.IndexEntries.Set(float64(s.Entries))
	a.m.IndexNodes.Set(float64(s.Nodes))
	a.m.IndexWorkers.Set(float64(s.Workers))
}

// len returns the live entries.
func (a *approx) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.expiry)
}
