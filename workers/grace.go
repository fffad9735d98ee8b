package workers

import (
	"time"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// This file handles KV events of workers that are not registered
// (router-api.md §2): their events are indexed, the worker is never chosen
// (it is no candidate), and if it has not registered within
// Config.UnknownWorkerGrace its blocks are dropped and counted in
// dynamo_component_kv_events_dropped_total{reason="unknown_worker"}.
//
// Each drop is followed by a sweep one period later: an event that was on
// its way to the index when the blocks were dropped (decoded, not yet
// applied) is applied afterwards, and the sweep removes what it stored.
// The same sweep follows a worker that leaves discovery.

// pending is an unregistered worker that sent events, or a worker whose
// blocks were just dropped and are to be swept once more.
type pending struct {
	// seen counts WorkerSeen calls since the period started.
	seen  int
	timer *time.Timer
}

// WorkerSeen tells the registry that a KV event of worker id reached the
// index, and reports whether the worker is registered. The KV events
// subscriber calls it from its shard goroutines, for every event of a
// worker until it reports the worker registered, and again after each
// Forget. For a registered worker it reads the snapshot and returns,
// without locking or allocating; for another it takes the registry's lock,
// which discovery may hold for a moment.
//
// For an unregistered worker it starts a grace period. When the period
// ends with the worker still unregistered, its blocks are removed from the
// index, the forgetter is told, and the WorkerSeen calls of the period
// (its events) are counted as dropped; a sweep period follows.
// Registration cancels the period. While discovery has not listed etcd, or
// cannot reach it, a period that ends starts again instead: the worker may
// have registered unseen. After Close it reports every worker registered:
// there is nothing left to count.
func (r *Registry) WorkerSeen(id indexer.WorkerID) (registered bool) {
	if _, ok := r.snap.Load().Get(id); ok {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return true
	}
	if _, ok := r.snap.Load().Get(id); ok {
		return true
	}
	p := r.pending[id]
	if p == nil {
		p = r.startLocked(id)
		r.log.Info("KV events from an unregistered worker; waiting for it to register", "worker_id", id, "grace", r.cfg.UnknownWorkerGrace)
	}
	p.seen++
	return false
}

// sweepLocked schedules a sweep of worker id's blocks one grace period from
// now, unless a period is running already.
func (r *Registry) sweepLocked(id indexer.WorkerID) {
	if r.closed || r.pending[id] != nil {
		return
	}
	r.startLocked(id)
}

// startLocked starts a grace period of worker id.
func (r *Registry) startLocked(id indexer.WorkerID) *pending {
	p := &pending{}
	p.timer = time.AfterFunc(r.cfg.UnknownWorkerGrace, func() { r.expire(id, p) })
	r.pending[id] = p
	return p
}

// expire ends a grace period of worker id.
func (r *Registry) expire(id indexer.WorkerID, p *pending) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.pending[id] != p {
		return // registered, or closed, meanwhile
	}
	if !r.listed || r.etcd == etcdDown {
		// Discovery is not up to date: the worker may well be registered.
		// The period starts again rather than drop blocks on a guess.
		p.timer.Reset(r.cfg.UnknownWorkerGrace)
		return
	}
	n := r.dropBlocksLocked(id)
	// No series should exist for an unregistered worker; delete any that a
	// racing writer made, so nothing outlives the worker.
	r.m.DeleteWorker(uint64(id))
	if p.seen == 0 {
		// A sweep: nothing arrived during the period.
		delete(r.pending, id)
		if n > 0 {
			r.log.Warn("dropped late blocks of a worker that is not registered", "worker_id", id, "blocks_dropped", n)
		}
		return
	}
	r.m.KVEventsDropped.WithLabelValues(metrics.DropUnknownWorker).Add(float64(p.seen))
	r.log.Warn("worker did not register within the grace period; dropped its blocks",
		"worker_id", id, "grace", r.cfg.UnknownWorkerGrace, "blocks_dropped", n)
	p.seen = 0
	p.timer.Reset(r.cfg.UnknownWorkerGrace)
}

// Close stops the grace timers; WorkerSeen does nothing afterwards. The
// snapshot stays readable. Call it once discovery and the KV events
// subscriber have stopped.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for id, p := range r.pending {
		p.timer.Stop()
		delete(r.pending, id)
	}
}
