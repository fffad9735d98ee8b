package indexer

import (
	"sync"
	"sync/atomic"
)

// Index is a Tree made safe for concurrent use. FindMatches takes the tree's
// read lock, so queries run in parallel with each other and wait only while
// an event changes the tree. Events of different worker ranks are applied
// in parallel: each holds its rank's lock for the work in the rank's own
// table of engine hashes, most of a write's cost, and the tree's write lock
// only for the change of the tree (phases.go). Size accessors read atomics
// and never wait.
type Index struct {
	// mu: the tree's, the innermost lock of the router (docs/locks.md).
	mu   sync.RWMutex
	tree *Tree
	// gate is read-locked by every event in flight, and write-locked by
	// what needs every rank's table to itself: eviction, RemoveWorker and
	// Dump. Lock order: gate, a rank's lock, mu.
	gate sync.RWMutex

	entries atomic.Int64
	nodes   atomic.Int64
	workers atomic.Int64
	evicted atomic.Uint64

	// work hands each goroutine applying events a scratch of its own.
	work sync.Pool
}

// NewIndex returns an empty index.
func NewIndex(cfg Config) *Index {
	return &Index{tree: New(cfg)}
}

// Apply applies one event (see Tree.Apply).
func (x *Index) Apply(ev Event) Result {
	events, results := [1]Event{ev}, [1]Result{}
	x.ApplyBatch(events[:], results[:])
	return results[0]
}

// ApplyBatch applies events in order and stores each outcome in results,
// which must be at least as long as events. Several goroutines may apply
// batches at once; events of one rank must come from one of them at a
// time, or their order is whatever the locks make it.
func (x *Index) ApplyBatch(events []Event, results []Result) {
	w, ok := x.work.Get().(*scratch)
	if !ok {
		w = new(scratch)
	}
	x.gate.RLock()
	for i, ev := range events {
		r, evict := x.apply(ev, w, i == len(events)-1)
		if evict {
			x.gate.RUnlock()
			r.Evicted = x.evict()
			x.gate.RLock()
		}
		results[i] = r
	}
	x.gate.RUnlock()
	x.work.Put(w)
}

// apply applies one event in its phases, and publishes the sizes if last,
// and reports whether the memory cap is to be enforced after it; the
// caller holds the gate's read lock.
func (x *Index) apply(ev Event, w *scratch, last bool) (Result, bool) {
	t := x.tree
	var o op
	for {
		t.begin(&o, ev, w)
		x.mu.Lock()
		r, ok := t.commit(&o)
		if ok && last {
			x.publish()
		}
		x.mu.Unlock()
		if ok {
			t.end(&o)
			return r, o.evict
		}
		// Another goroutine added the rank's slot since begin: begin
		// again, with it.
	}
}

// evict enforces the memory cap (see Tree.evict) with every rank's table
// to itself, and returns the entries evicted.
func (x *Index) evict() int {
	x.gate.Lock()
	x.mu.Lock()
	n := x.tree.evict()
	x.publish()
	x.mu.Unlock()
	x.gate.Unlock()
	return n
}

// RemoveWorker drops every rank of worker id (see Tree.RemoveWorker).
func (x *Index) RemoveWorker(id WorkerID) int {
	x.gate.Lock()
	x.mu.Lock()
	n := x.tree.RemoveWorker(id)
	x.publish()
	x.mu.Unlock()
	x.gate.Unlock()
	return n
}

// FindMatches scores a query (see Tree.FindMatches).
func (x *Index) FindMatches(query []LocalHash, earlyExit bool, dst []Match) []Match {
	x.mu.RLock()
	dst = x.tree.FindMatches(query, earlyExit, dst)
	x.mu.RUnlock()
	return dst
}

// Size returns how many blocks w holds.
func (x *Index) Size(w Worker) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.tree.Size(w)
}

// Workers returns the worker ranks the index knows.
func (x *Index) Workers() []Worker {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.tree.Workers()
}

// Dump returns events that rebuild the index (see Tree.Dump).
func (x *Index) Dump() []Event {
	x.gate.Lock()
	defer x.gate.Unlock()
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.tree.Dump()
}

// Stats returns the index's sizes as of the last change, without locking.
func (x *Index) Stats() Stats {
	return Stats{
		Entries: int(x.entries.Load()),
		Nodes:   int(x.nodes.Load()),
		Workers: int(x.workers.Load()),
		Evicted: x.evicted.Load(),
	}
}

// publish copies the tree's sizes to the atomics; the write lock is held.
func (x *Index) publish() {
	s := x.tree.Stats()
	x.entries.Store(int64(s.Entries))
	x.nodes.Store(int64(s.Nodes))
	x.workers.Store(int64(s.Workers))
	x.evicted.Store(s.Evicted)
}
