package workers

import (
	"context"
	"time"

	"github.com/kvrouter/router/indexer"
)

// This file handles KV events of workers that are not registered
// (docs/api.md §2): their events are indexed, the worker is never chosen
// (it is no candidate), and if it has not registered within
// Config.UnknownWorkerGrace its blocks are dropped and its events counted in
// dynamo_component_kv_events_dropped_total{reason="unknown_worker"}.
//
// The index writer notices such a worker (NoticeSource) when its first event
// reaches the index, and again after each drop if its events go on; the
// registry starts a grace period for each notice and, when it ends with the
// worker still unregistered, commands the drop. A worker that leaves
// discovery needs nothing more: events of it still on their way reach the
// writer after its removal, from a worker that is no longer registered, and
// are noticed like any other.

// pending is an unregistered worker in its grace period.
type pending struct {
	timer *time.Timer
}

// Run starts a grace period for each worker the index writer notices, until
// ctx ends; then it stops the grace timers. Every other change reaches the
// registry from Discovery. It returns nil once ctx ended.
func (r *Registry) Run(ctx context.Context, notices NoticeSource) error {
	defer r.close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-notices.Ready():
			r.notice(notices.Take())
		}
	}
}

// notice starts a grace period for each unregistered worker among ids.
func (r *Registry) notice(ids []indexer.WorkerID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if _, ok := r.snap.Load().Get(id); ok || r.closed || r.pending[id] != nil {
			// Registered since its events were noticed (the writer knows
			// by now), or already waiting.
			continue
		}
		p := &pending{}
		p.timer = time.AfterFunc(r.cfg.UnknownWorkerGrace, func() { r.expire(id, p) })
		r.pending[id] = p
		r.log.Info("KV events from an unregistered worker; waiting for it to register", "worker_id", id, "grace", r.cfg.UnknownWorkerGrace)
	}
}

// expire ends a grace period of worker id.
func (r *Registry) expire(id indexer.WorkerID, p *pending) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.pending[id] != p {
		return // registered, or closed, meanwhile
	}
	if !r.loadedLocked() || r.etcd == etcdDown {
		// Discovery is not up to date: the worker may well be registered.
		// The period starts again rather than drop blocks on a guess.
		p.timer.Reset(r.cfg.UnknownWorkerGrace)
		return
	}
	delete(r.pending, id)
	r.idx.DropUnregistered(id)
	// No series should exist for an unregistered worker; delete any that a
	// racing writer made, so nothing outlives the worker.
	r.m.DeleteWorker(uint64(id))
}

// close stops the grace timers; notices are ignored afterwards. The
// snapshot stays readable.
func (r *Registry) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for id, p := range r.pending {
		p.timer.Stop()
		delete(r.pending, id)
	}
}
