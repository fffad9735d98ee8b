package scheduler

import (
	"context"
	"time"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/scheduler/active"
)

// This file is the rest of a request's life after routing: its first token
// (MarkPrefill), its end (Free), the same events from replicas
// (ApplyRemote), and the periodic maintenance (Run).

// MarkPrefill records that request id produced its first token, and
// reports whether the router knew the request. The time since routing is
// the request's time to first token. Capacity freed by it releases waiting
// requests, which are told before MarkPrefill returns.
func (r *Router) MarkPrefill(id string) bool {
	now := time.Now()
	defer r.m.Marks.Prefill.Since(now)
	r.mu.Lock()
	m, ok := r.seqs.MarkPrefill(id, now)
	r.shareMarkLocked(SyncPrefill, id, m.Worker, ok, now)
	observe := ok && m.Local && m.First
	ttft := now.Sub(m.Added)
	if observe {
		if g := r.markedGaugesLocked(m); g != nil {
			g.lastGauge(&g.ttft, r.m.WorkerLastTimeToFirstToken).Set(ttft.Seconds())
			g.lastGauge(&g.isl, r.m.WorkerLastInputSequenceTokens).Set(float64(m.ISL))
		}
	}
	r.syncLocked()
	rel := r.releaseLocked(now)
	r.mu.Unlock()
	if observe {
		r.m.TimeToFirstToken.Observe(ttft.Seconds())
	}
	r.finishAll(rel)
	return ok
}

// Free ends request id and reports whether the router knew it.
// outputTokens is the number of tokens it generated, or negative when
// unknown; with two or more, and a MarkPrefill before, the request's mean
// inter-token latency is (now − first token) / (outputTokens − 1).
func (r *Router) Free(id string, outputTokens int) bool {
	now := time.Now()
	defer r.m.Marks.Free.Since(now)
	r.mu.Lock()
	m, ok := r.seqs.Free(id)
	r.shareMarkLocked(SyncFree, id, m.Worker, ok, now)
	observe := ok && m.Local && outputTokens >= 0
	withITL := observe && outputTokens >= 2 && !m.PrefilledAt.IsZero()
	var itl time.Duration
	if withITL {
		itl = now.Sub(m.PrefilledAt) / time.Duration(outputTokens-1)
		if g := r.markedGaugesLocked(m); g != nil {
			g.lastGauge(&g.itl, r.m.WorkerLastInterTokenLatency).Set(itl.Seconds())
		}
	}
	r.syncLocked()
	rel := r.releaseLocked(now)
	r.mu.Unlock()
	if observe {
		r.m.OutputSequenceTokens.Observe(float64(outputTokens))
	}
	if withITL {
		r.m.InterTokenLatency.Observe(itl.Seconds())
	}
	r.finishAll(rel)
	return ok
}

// markedGaugesLocked returns the per-worker gauges of a marked request's
// first placement, or nil if its rank is not a candidate (it cannot be
// one: SetCandidates forgets the requests of the ranks it removes). mu is
// held, as for every write of a per-worker series.
func (r *Router) markedGaugesLocked(m active.Marked) *rankGauges {
	ri, ok := r.seqs.Rank(m.Worker)
	if !ok {
		return nil
	}
	return r.gaugesLocked(ri)
}

// shareMarkLocked publishes a mark or free to the replicas. With replica
// sync a request may have been routed by a peer whose add has not arrived
// yet: an unknown id is published all the same, for the peer that knows
// it, and remembered for a while, so that its add, if it comes, is marked
// at once. mu is held.
func (r *Router) shareMarkLocked(k SyncKind, id string, w indexer.Worker, known bool, now time.Time) {
	if r.pub == nil {
		return
	}
	if !known {
		r.marks.add(id, k, now)
	}
	r.publishLocked(SyncEvent{Kind: k, RequestID: id, Worker: w})
}

// ApplyRemote applies a replica's bookkeeping change. An add naming a rank
// that is not a candidate here (departed, or not yet pushed) is ignored
// and logged at debug level: no metric counts it, the replica-sync
// families being Dynamo's and having none for it. Marks of requests this
// router does not know are remembered briefly, in case their add is late.
func (r *Router) ApplyRemote(ev SyncEvent) {
	now := time.Now()
	r.mu.Lock()
	switch ev.Kind {
	case SyncAdd:
		r.addRemoteLocked(ev, now)
	case SyncPrefill:
		if _, ok := r.seqs.MarkPrefill(ev.RequestID, now); !ok {
			r.marks.add(ev.RequestID, SyncPrefill, now)
		}
	case SyncFree:
		if _, ok := r.seqs.Free(ev.RequestID); !ok {
			r.marks.add(ev.RequestID, SyncFree, now)
		}
	}
	r.syncLocked()
	var rel []released
	if ev.Kind != SyncAdd {
		rel = r.releaseLocked(now)
	}
	r.mu.Unlock()
	r.finishAll(rel)
}

// addRemoteLocked books a replica's placement. A request whose free
// arrived first is not booked at all; one whose first-token mark arrived
// first is booked already marked. The early mark is kept until it expires,
// for the second add of a disaggregated request. mu is held.
func (r *Router) addRemoteLocked(ev SyncEvent, now time.Time) {
	early := r.marks.peek(ev.RequestID)
	if early == SyncFree {
		return
	}
	kind, ok := r.kindOfLocked(ev.Worker)
	if !ok {
		r.log.Debug("replica add of a rank that is not a candidate ignored", "request_id", ev.RequestID, "worker_id", ev.Worker.ID, "dp_rank", ev.Worker.DPRank)
		return
	}
	pc := active.Placement{
		Worker: ev.Worker, Prefill: kind == KindPrefill,
		SeqHashes: ev.SeqHashes, NumBlocks: len(ev.SeqHashes), Overlap: ev.Overlap,
	}
	if ev.TrackPrefill {
		pc.PrefillTokens = prefillTokens(ev.ISL, ev.Overlap, r.cfg.BlockSize)
	}
	var err error
	if r.seqs.Has(ev.RequestID) {
		err = r.seqs.AddPlacement(ev.RequestID, pc)
	} else {
		err = r.seqs.Add(ev.RequestID, now, ev.ISL, false, pc)
	}
	if err != nil {
		r.log.Debug("replica add not applied", "request_id", ev.RequestID, "worker_id", ev.Worker.ID, "error", err)
		return
	}
	if early == SyncPrefill {
		r.seqs.MarkPrefill(ev.RequestID, now)
	}
}

// maintainEvery is how often Run expires requests and approximate entries
// and retries the queue.
const maintainEvery = time.Second

// Run expires requests past the prefill or stale timeout, approximate-mode
// entries and forgotten replica marks every second, and retries waiting requests (workers may
// have joined), until ctx ends; then it closes the router (see Close) and
// returns nil. Routing works without Run, but nothing expires while
// traffic stops.
func (r *Router) Run(ctx context.Context) error {
	t := time.NewTicker(maintainEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.Close()
			return nil
		case <-t.C:
			r.maintain(time.Now())
		}
	}
}

// maintain is one pass of Run.
func (r *Router) maintain(now time.Time) {
	r.mu.Lock()
	if e := r.expireLocked(now); e.NoPrefill > 0 || e.Stale > 0 {
		r.log.Warn("freed requests their callers never marked or freed", "no_prefill", e.NoPrefill, "stale", e.Stale,
			"prefill_timeout", r.cfg.PrefillTimeout, "stale_timeout", r.cfg.StaleTimeout)
	}
	r.syncLocked()
	r.marks.expire(now)
	rel := r.releaseLocked(now)
	r.mu.Unlock()
	r.finishAll(rel)
	if r.approx != nil {
		r.approx.expire(now)
	}
}

// pendingMarkTTL is how long a mark of an unknown request waits for its
// add; pendingMarkCap bounds how many wait.
const (
	pendingMarkTTL = 30 * time.Second
	pendingMarkCap = 1 << 16
)

// pendingMarks remembers marks and frees of requests not known yet.
type pendingMarks struct {
	kinds map[string]SyncKind
	fifo  []pendingMark
	head  int
}

type pendingMark struct {
	id string
	at time.Time
}

func newPendingMarks() pendingMarks { return pendingMarks{kinds: map[string]SyncKind{}} }

// add remembers a mark; a free supersedes a prefill mark.
func (p *pendingMarks) add(id string, k SyncKind, now time.Time) {
	if old, ok := p.kinds[id]; ok {
		if k == SyncFree || old != SyncFree {
			p.kinds[id] = max(old, k)
		}
		return
	}
	if len(p.kinds) >= pendingMarkCap {
		p.pop()
	}
	p.kinds[id] = k
	p.fifo = append(p.fifo, pendingMark{id: id, at: now})
}

// peek returns the mark of id, or 0.
func (p *pendingMarks) peek(id string) SyncKind { return p.kinds[id] }

// expire forgets marks older than pendingMarkTTL.
func (p *pendingMarks) expire(now time.Time) {
	for p.head < len(p.fifo) && now.Sub(p.fifo[p.head].at) >= pendingMarkTTL {
		p.pop()
	}
}

func (p *pendingMarks) pop() {
	if p.head >= len(p.fifo) {
		return
	}
	delete(p.kinds, p.fifo[p.head].id)
	p.fifo[p.head] = pendingMark{}
	p.head++
	if p.head > 1024 && p.head*2 > len(p.fifo) {
		p.fifo = append(p.fifo[:0], p.fifo[p.head:]...)
		p.head = 0
	}
}
