package indexer

import (
	"sync"
	"sync/atomic"
)

// Index is a Tree behind a read-write lock: FindMatches takes the read lock,
// so queries run in parallel with each other and wait only while an event is
// applied. Size accessors read atomics and never wait. All methods are safe
// for concurrent use.
type Index struct {
	// mu: the innermost lock of the router (docs/locks.md).
	mu   sync.RWMutex
	tree *Tree

	entries atomic.Int64
	nodes   atomic.Int64
	workers atomic.Int64
	evicted atomic.Uint64
}

// NewIndex returns an empty index.
func NewIndex(cfg Config) *Index {
	return &Index{tree: New(cfg)}
}

// Apply applies one event (see Tree.Apply).
func (x *Index) Apply(ev Event) Result {
	x.mu.Lock()
	r := x.tree.Apply(ev)
	x.publish()
	x.mu.Unlock()
	return r
}

// ApplyBatch applies events in order under one lock hold and stores each
// outcome in results, which must be at least as long as events.
func (x *Index) ApplyBatch(events []Event, results []Result) {
	x.mu.Lock()
	for i, ev := range events {
		results[i] = x.tree.Apply(ev)
	}
	x.publish()
	x.mu.Unlock()
}

// RemoveWorker drops every rank of worker id (see Tree.RemoveWorker).
func (x *Index) RemoveWorker(id WorkerID) int {
	x.mu.Lock()
	n := x.tree.RemoveWorker(id)
	x.publish()
	x.mu.Unlock()
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
