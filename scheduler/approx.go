package scheduler

import (
	"sync"
	"time"

	"github.com/kvrouter/router/indexer"
)

// approx is approximate mode (--no-router-kv-events, docs/compat.md §4.9):
// with no KV events from workers, the router indexes its own decisions. A
// routed prompt's blocks are stored in the index for the chosen rank, as a
// Stored event whose engine hashes are the blocks' sequence hashes, written
// through the IndexWriter like every other change of the index; each
// (rank, block) expires TTL after it was last routed (routing it again
// refreshes it), and past ApproxMaxEntries entries the soonest to expire go
// until DefaultApproxPruneTo of the cap is left.
//
// Every store carries the prompt's whole chain from its first block, so a
// block never expires before a block below it: expiring removes leaves
// before their parents, as the index's own model wants.
//
// approx has its own lock, taken with the Router's released; it is held
// while calling the writer.
type approx struct {
	w       IndexWriter
	ttl     time.Duration
	max     int
	pruneTo int

	// mu is taken with the Router's lock released and held while calling
	// the IndexWriter (docs/locks.md).
	mu sync.Mutex
	// expiry holds each live entry's expiry; fifo holds entries in expiry
	// order (the TTL is one constant), including superseded ones, which
	// are skipped when popped because their expiry no longer matches.
	expiry map[approxKey]time.Time
	fifo   []approxEntry
	head   int
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

func newApprox(w IndexWriter, ttl time.Duration, maxEntries int) *approx {
	return &approx{
		w: w, ttl: ttl, max: maxEntries,
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
	// A fresh slice: the writer owns it and applies it later.
	blocks := make([]indexer.Block, len(locals))
	for i, l := range locals {
		blocks[i] = indexer.Block{Hash: indexer.BlockHash(seqHashes[i]), Tokens: indexer.LocalHash(l)}
	}
	a.w.Write(indexer.Event{Worker: w, Kind: indexer.KindStored, Blocks: blocks})
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
	a.expireLocked(now)
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
	}
	return n
}

// pruneLocked drops the entries soonest to expire until pruneTo are left.
func (a *approx) pruneLocked() {
	for len(a.expiry) > a.pruneTo && a.head < len(a.fifo) {
		a.popLocked()
	}
	a.removeLocked()
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

// removeLocked writes the removals popLocked queued, handing each
// worker's list to the writer.
func (a *approx) removeLocked() {
	for w, hashes := range a.gone {
		a.w.Write(indexer.Event{Worker: w, Kind: indexer.KindRemoved, Removed: hashes})
		delete(a.gone, w)
	}
}

// len returns the live entries.
func (a *approx) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.expiry)
}
