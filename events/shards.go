package events

import (
	"context"
	"log/slog"
	"time"

	"github.com/kvrouter/router/indexer"
)

// maxApplyBatch caps the events applied under one hold of the index's write
// lock, so that queries never wait behind a whole backlog.
const maxApplyBatch = 256

// warnEvery is the least time between two warnings about one worker rank
// (or, for decode errors and drops, about anything).
const warnEvery = time.Second

// control is a request a shard answers between two events, in queue order.
type control struct {
	// baselines asks for the last event_id of every rank the shard tracks.
	baselines chan<- map[indexer.Worker]uint64
}

// rankState is what a shard knows of one worker rank's event stream.
type rankState struct {
	// last is the event_id of the rank's last event.
	last uint64
	// lastWarn is when a loss of this rank was last logged (subscriber
	// clock, ns); suppressed counts the losses not logged since.
	lastWarn   int64
	suppressed int
	// resync says events of the rank were dropped (full queue) and already
	// accounted for: the next event_id sets a new baseline.
	resync bool
	// unregistered says the observer has not reported the rank's worker
	// registered: each event is reported to it (see WorkerObserver).
	unregistered bool
}

// shard applies the events of the worker ranks hashed to it, in order, on
// one goroutine. Its fields are that goroutine's alone, except q.
type shard struct {
	s *Subscriber
	q *queue

	ranks map[indexer.Worker]*rankState
	// gen is the Subscriber's forget generation the ranks reflect.
	gen uint64

	// Per-batch scratch, reused.
	evs     []indexer.Event
	results []indexer.Result
	from    []*item // the item of each event; nil for a clear the shard made
	spare   []item
}

func newShard(s *Subscriber, capacity int) *shard {
	return &shard{
		s:       s,
		q:       newQueue(capacity),
		ranks:   make(map[indexer.Worker]*rankState),
		evs:     make([]indexer.Event, 0, maxApplyBatch),
		results: make([]indexer.Result, maxApplyBatch),
		from:    make([]*item, 0, maxApplyBatch),
	}
}

// run applies queued events until the queue is closed and drained.
func (sh *shard) run() {
	for range sh.q.ready {
		batch, lost, closed := sh.q.pop(sh.spare)
		sh.process(batch)
		if len(lost) > 0 {
			sh.lost(lost)
		}
		clear(batch) // drop references to the events' slices
		sh.spare = batch
		sh.s.publishGauges()
		if closed {
			return
		}
	}
}

// process applies a batch in order, checking each rank's event_id.
func (sh *shard) process(batch []item) {
	if g := sh.s.forgetGen.Load(); g != sh.gen {
		sh.gen = g
		sh.forget()
	}
	for i := range batch {
		it := &batch[i]
		if it.ctl != nil {
			sh.flush()
			sh.answer(it.ctl)
			continue
		}
		if sh.track(it) {
			sh.add(indexer.Event{Worker: it.ev.Worker, Kind: indexer.KindCleared}, nil)
		}
		sh.add(it.ev, it)
	}
	sh.flush()
}

// track checks the item's event_id against its rank's last one and reports whether
// the rank must be cleared first because events were lost.
func (sh *shard) track(it *item) (clearFirst bool) {
	w := it.ev.Worker
	rs, known := sh.ranks[w]
	if !known {
		rs = &rankState{}
		sh.ranks[w] = rs
	}
	if !known || rs.unregistered {
		rs.unregistered = !sh.s.noteWorker(w.ID)
	}
	last := rs.last
	rs.last = it.id
	s := sh.s
	switch {
	case !known:
		return false
	case rs.resync:
		// The dropped events were counted when they were dropped and the
		// rank cleared after them: no gap to count, nothing to clear.
		rs.resync = false
		return false
	case it.id == last || it.id == last+1:
		// Equal ids are normal: Dynamo's ZMQ bridge gives every event of
		// one engine batch the batch's sequence number.
		return false
	case it.id > last:
		missed := it.id - last - 1
		s.m.KVEventsMissed.Add(float64(missed))
		s.stats.missed.Add(missed)
		sh.warn(rs, "kv events lost: event_id jumped", w, slog.Uint64("last_event_id", last),
			slog.Uint64("event_id", it.id), slog.Uint64("missed", missed), slog.Bool("cleared", s.cfg.ClearOnLoss))
	default:
		s.resets.Inc()
		s.stats.resets.Add(1)
		sh.warn(rs, "kv event_id went backwards: publisher restarted", w, slog.Uint64("last_event_id", last),
			slog.Uint64("event_id", it.id), slog.Bool("cleared", s.cfg.ClearOnLoss))
	}
	return s.cfg.ClearOnLoss
}

// warn logs a loss of rank w at most once per warnEvery.
func (sh *shard) warn(rs *rankState, msg string, w indexer.Worker, attrs ...slog.Attr) {
	now := sh.s.now()
	if now-rs.lastWarn < int64(warnEvery) && rs.lastWarn != 0 {
		rs.suppressed++
		return
	}
	attrs = append(attrs, slog.Uint64("worker_id", uint64(w.ID)), slog.Uint64("dp_rank", uint64(w.DPRank)),
		slog.Int("suppressed", rs.suppressed))
	sh.s.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
	rs.lastWarn, rs.suppressed = now, 0
}

// lost handles the ranks that lost events to a full queue: everything queued
// before the loss has just been applied, nothing after it is queued, so the
// rank is cleared now and its next event starts a new baseline.
func (sh *shard) lost(ws []indexer.Worker) {
	clearOnLoss := sh.s.cfg.ClearOnLoss
	for _, w := range ws {
		if clearOnLoss {
			sh.add(indexer.Event{Worker: w, Kind: indexer.KindCleared}, nil)
		}
		if rs, ok := sh.ranks[w]; ok {
			rs.resync = true
			sh.warn(rs, "kv events dropped: shard queue full", w, slog.Bool("cleared", clearOnLoss))
		}
	}
	sh.flush()
}

func (sh *shard) add(ev indexer.Event, from *item) {
	sh.evs = append(sh.evs, ev)
	sh.from = append(sh.from, from)
	if len(sh.evs) == maxApplyBatch {
		sh.flush()
	}
}

// flush applies the pending events under one lock hold and counts them.
func (sh *shard) flush() {
	n := len(sh.evs)
	if n == 0 {
		return
	}
	s := sh.s
	s.idx.ApplyBatch(sh.evs, sh.results[:n])
	now := s.now()
	var (
		counts  [3][4]int
		evicted int
		clears  uint64
	)
	for i := range n {
		r := sh.results[i]
		evicted += r.Evicted
		it := sh.from[i]
		if it == nil {
			clears++
			continue
		}
		if k, st := int(sh.evs[i].Kind)-1, int(r.Status); k >= 0 && k < 3 && st < 4 {
			counts[k][st]++
		}
		s.m.KVEventApplyLag.Observe(float64(now-it.recv) / float64(time.Second))
		if it.done != nil {
			it.done.Done()
		}
	}
	var applied uint64
	for k := range counts {
		for st, c := range counts[k] {
			if c > 0 {
				s.applied[k][st].get().Add(float64(c))
				applied += uint64(c)
			}
		}
	}
	s.stats.applied.Add(applied)
	s.stats.clears.Add(clears)
	if evicted > 0 {
		s.evictCapacity.get().Add(float64(evicted))
	}
	clear(sh.evs)
	sh.evs = sh.evs[:0]
	clear(sh.from)
	sh.from = sh.from[:0]
}

// answer serves a control request.
func (sh *shard) answer(c *control) {
	if c.baselines != nil {
		m := make(map[indexer.Worker]uint64, len(sh.ranks))
		for w, rs := range sh.ranks {
			m[w] = rs.last
		}
		c.baselines <- m
	}
}

// forget drops the state of ranks whose worker was forgotten.
func (sh *shard) forget() {
	s := sh.s
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	for w := range sh.ranks {
		if _, ok := s.seen[w.ID]; !ok {
			delete(sh.ranks, w)
		}
	}
}
