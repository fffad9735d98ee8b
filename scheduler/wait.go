package scheduler

import (
	"fmt"
	"time"

	"github.com/kvrouter/router/metrics"
)

// This file is the Router's side of the threshold queue: parking a request,
// releasing waiting requests when capacity frees, timeouts, cancellation
// and shutdown.

// released is a waiting request decided by a release pass, to be told
// once mu is released.
type released struct {
	w   *waiter
	d   Decision
	err error
}

// enqueueLocked parks req, which found every eligible rank busy, unless it
// asked not to wait or the queue is full. mu is held.
func (r *Router) enqueueLocked(req *Request, p *prompt, now time.Time, done func(Decision, error)) (*waiter, error) {
	pl := r.resolve(req.Type)
	if req.DoNotQueue {
		r.backpressure(pl.kind, metrics.BackpressureDoNotQueue)
		return nil, fmt.Errorf("%w: every eligible %s worker is busy and the request asked not to wait", ErrQueueRejected, pl.kind)
	}
	w := &waiter{
		req: req, kind: pl.kind, isl: p.isl, arrival: now, done: done,
		locals:    append([]uint64(nil), p.locals...),
		seqHashes: append([]uint64(nil), p.seqHashes...),
		numBlocks: p.numBlocks,
	}
	if done == nil {
		w.ch = make(chan result, 1)
	}
	// The prompt's new tokens at best: less the largest overlap, its
	// lower tiers credited at their weights as the booking would.
	best := 0.0
	for _, m := range p.matches {
		best = max(best, r.tiers.cached(m))
	}
	if err := r.queue.Push(w, creditedPrefillTokens(p.isl, best, r.cfg.BlockSize)); err != nil {
		r.backpressure(pl.kind, metrics.BackpressureRequestLimit)
		return nil, err
	}
	w.timer = time.AfterFunc(r.cfg.QueueTimeout, func() { r.timeout(w) })
	r.queueGaugesLocked(pl.kind)
	return w, nil
}

// releaseLocked serves waiting requests in queue order while capacity
// allows, each decided afresh (a new index lookup, new loads). It stops at
// the first request without a worker filter that still finds every rank
// of its kind busy: every later request without a filter would too, and
// one with a filter only sees a subset of those ranks. Once the router is
// closed, every waiting request is decided, on the best rank as if none
// were busy. mu is held; the caller tells the results with finishAll once
// mu is released.
func (r *Router) releaseLocked(now time.Time) []released {
	if r.queue == nil || r.queue.Len() == 0 {
		return nil
	}
	s := r.pool.Get().(*scratch)
	defer r.pool.Put(s)
	// out is returned past mu, so it is never a shared buffer.
	var out []released
	var stopped [numKinds]bool
	var changed [numKinds]bool
	for _, w := range r.queue.Order(now) {
		// A retry whose id was booked meanwhile (by the route it retries)
		// needs no capacity: it is answered from the booking at once. Only
		// retries are looked up, so that a long queue costs no lookups.
		if stopped[w.kind] && !(w.req.Retry && r.activeLocked(w.req)) {
			continue
		}
		// A closed router waits no more: each is decided at once.
		d, wait, err := r.attemptWaiterLocked(s, w, now, !r.closed)
		if wait {
			if w.req.AllowedWorkerIDs == nil {
				stopped[w.kind] = true
			}
			continue
		}
		r.queue.Remove(w)
		w.timer.Stop()
		changed[w.kind] = true
		d.Waited = true
		out = append(out, released{w: w, d: d, err: err})
	}
	for k, c := range changed {
		if c {
			r.queueGaugesLocked(Kind(k))
		}
	}
	return out
}

// attemptWaiterLocked decides a waiting request afresh: a new index
// lookup, the loads of now. mu is held.
func (r *Router) attemptWaiterLocked(s *scratch, w *waiter, now time.Time, canWait bool) (Decision, bool, error) {
	p := prompt{locals: w.locals, seqHashes: w.seqHashes, numBlocks: w.numBlocks, isl: w.isl}
	if r.cfg.Mode.usesIndex() {
		r.match(s, w.locals)
		p.matches = s.matches
	}
	s.allowed = sortedIDs(s.allowed, w.req.AllowedWorkerIDs)
	return r.attemptLocked(w.req, s, &p, now, canWait)
}

// activeLocked reports whether req would book an id that is active
// already. mu is held.
func (r *Router) activeLocked(req *Request) bool {
	return !req.QueryOnly && req.ID != "" && r.seqs.Has(req.ID)
}

// finishAll tells released requests their decisions; mu is not held.
func (r *Router) finishAll(rel []released) {
	for _, x := range rel {
		if x.err == nil && r.approx != nil && !x.w.req.QueryOnly {
			r.approx.store(x.d.Worker, x.w.locals, x.w.seqHashes, time.Now())
		}
		x.w.finish(x.d, x.err)
	}
}

// finish delivers a waiter's decision.
func (w *waiter) finish(d Decision, err error) {
	if w.done != nil {
		w.done(d, err)
		return
	}
	w.ch <- result{d: d, err: err}
}

// timeout fails a request that waited QueueTimeout.
func (r *Router) timeout(w *waiter) {
	r.mu.Lock()
	ok := r.queue.Remove(w)
	if ok {
		r.queueGaugesLocked(w.kind)
	}
	r.mu.Unlock()
	if ok {
		w.finish(Decision{}, fmt.Errorf("%w: waited %v for a %s worker (--router-queue-timeout)", ErrTimeout, r.cfg.QueueTimeout, w.kind))
	}
}

// cancel takes a waiting request out of the queue and reports whether it
// was still waiting.
func (r *Router) cancel(w *waiter) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.queue.Remove(w) {
		return false
	}
	w.timer.Stop()
	r.queueGaugesLocked(w.kind)
	return true
}

// Close empties the queue for a router that is shutting down: every
// waiting request is decided at once, on the best rank as if none were
// busy, and from then on a request that finds every rank busy goes to the
// best one instead of waiting. A replica that leaves thus answers what it
// holds rather than failing it, and a request that reaches it while it
// drains is not refused either. Bookkeeping calls (MarkPrefill, Free) work
// as before. Close is idempotent.
func (r *Router) Close() {
	r.mu.Lock()
	r.closed = true
	out := r.releaseLocked(time.Now())
	r.mu.Unlock()
	r.finishAll(out)
}

// Pending returns what waits in the queue.
func (r *Router) Pending() Pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.queue == nil {
		return Pending{}
	}
	return r.queue.Pending(0)
}

// queueGaugesLocked exports the queue's size for one kind of rank. The
// families are only touched with the queue on, so that without it they
// stay absent, as in Dynamo. mu is held.
func (r *Router) queueGaugesLocked(k Kind) {
	if k != KindDecode && k != KindPrefill {
		return
	}
	p := r.queue.Pending(k)
	r.m.QueuePendingRequests.WithLabelValues(r.cfg.Model, k.String()).Set(float64(p.Requests))
	r.m.QueuePendingISLTokens.WithLabelValues(r.cfg.Model, k.String()).Set(float64(p.ISLTokens))
}

// backpressure counts a request the queue turned away.
func (r *Router) backpressure(k Kind, reason string) {
	r.m.QueueBackpressure.WithLabelValues(r.cfg.Model, k.String(), reason).Inc()
}
