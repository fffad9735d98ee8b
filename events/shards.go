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

// itemKind says what a queued item asks of its shard.
type itemKind uint8

const (
	// itemEvent is a KV event from a transport: its event_id is checked
	// (device events only) and it is counted as applied.
	itemEvent itemKind = iota
	// itemRestore is an event of a durable snapshot: applied and counted;
	// seed, when set, is its rank's event_id baseline.
	itemRestore
	// itemWrite is a change of approximate mode: applied, not counted as a
	// KV event.
	itemWrite
	// The lifecycle commands of the worker registry (see Writer).
	cmdJoin
	cmdLeave
	cmdClearRank
	cmdDropUnregistered
	// cmdLost marks where a rank lost events to the full buffer of a warm
	// start (hold.go); id is the last event_id lost.
	cmdLost
	// itemControl is a request answered between two items (ctl).
	itemControl
)

// control is a request a shard answers between two items, in queue order.
type control struct {
	// baselines asks for the last event_id of every rank the shard tracks.
	baselines chan<- map[indexer.Worker]uint64
	// synced receives a value once everything queued before is applied.
	synced chan<- struct{}
}

// rankState is what a shard knows of one worker rank's event stream.
type rankState struct {
	// last is the event_id of the rank's last event.
	last uint64
	// lastWarn is when a loss of this rank was last logged (writer clock,
	// ns); suppressed counts the losses not logged since.
	lastWarn   int64
	suppressed int
	// resync says events of the rank were dropped (full queue) and already
	// accounted for: the next event_id sets a new baseline.
	resync bool
	// warm says last is a warm start's baseline and no event at or above
	// it has arrived yet: events below it are in the index already.
	// skipped is the event_id of the last event skipped so.
	warm    bool
	skipped uint64
}

// workerState is what a shard knows of a worker: whether the registry said
// it is registered, and if not, how many of its events were applied since it
// was noticed.
type workerState struct {
	registered bool
	// noticed says the worker is in Notices, or was taken from it, since
	// its state began: it is noticed once per unregistered stretch.
	noticed bool
	// unregistered counts the KV events applied while it was not
	// registered, dropped if it never registers.
	unregistered uint64
}

// shard applies the commands of the workers hashed to it, in order, on one
// goroutine. Its fields are that goroutine's alone, except q.
type shard struct {
	w *Writer
	q *queue

	ranks   map[indexer.Worker]*rankState
	workers map[indexer.WorkerID]*workerState

	// Per-batch scratch, reused.
	evs     []indexer.Event
	results []indexer.Result
	from    []*item // the item of each event; nil for a clear the shard made
	spare   []item
}

func newShard(w *Writer, capacity int) *shard {
	return &shard{
		w:       w,
		q:       newQueue(capacity),
		ranks:   make(map[indexer.Worker]*rankState),
		workers: make(map[indexer.WorkerID]*workerState),
		evs:     make([]indexer.Event, 0, maxApplyBatch),
		results: make([]indexer.Result, maxApplyBatch),
		from:    make([]*item, 0, maxApplyBatch),
	}
}

// run applies queued items until the queue is closed and drained.
func (sh *shard) run() {
	for range sh.q.ready {
		batch, lost, closed := sh.q.pop(sh.spare)
		sh.process(batch)
		if len(lost) > 0 {
			sh.lost(lost)
		}
		clear(batch) // drop references to the events' slices
		sh.spare = batch
		sh.w.publishGauges()
		if closed {
			return
		}
	}
}

// process applies a batch in order.
func (sh *shard) process(batch []item) {
	for i := range batch {
		it := &batch[i]
		switch it.kind {
		case itemEvent:
			// Dynamo's publishers number only the device's events in
			// the rank's event_id sequence: each other tier numbers its
			// own (docs/compat.md §3.7), so they are applied unchecked.
			// An engine numbers them all together.
			if it.ev.Tier == indexer.TierDevice || it.together {
				skip, clearFirst := sh.track(it)
				if skip {
					continue
				}
				if clearFirst {
					sh.add(indexer.Event{Worker: it.ev.Worker, Kind: indexer.KindCleared}, nil)
				}
			}
			sh.seen(it.ev.Worker.ID, true)
			sh.add(it.ev, it)
		case itemRestore:
			if it.seed {
				rs := sh.rank(it.ev.Worker)
				rs.last, rs.warm, rs.skipped = it.id, it.warm, 0
			}
			sh.seen(it.ev.Worker.ID, false)
			sh.add(it.ev, it)
		case itemWrite:
			sh.seen(it.ev.Worker.ID, false)
			sh.add(it.ev, it)
		case cmdJoin:
			ws := sh.worker(it.ev.Worker.ID)
			*ws = workerState{registered: true}
		case cmdLeave:
			sh.flush()
			sh.w.idx.RemoveWorker(it.ev.Worker.ID)
			sh.forget(it.ev.Worker.ID)
		case cmdClearRank:
			sh.add(it.ev, it)
			delete(sh.ranks, it.ev.Worker)
		case cmdDropUnregistered:
			sh.dropUnregistered(it.ev.Worker.ID)
		case cmdLost:
			sh.lostHeld(it)
		case itemControl:
			sh.flush()
			if it.ctl.synced != nil {
				sh.w.publishGauges() // a Sync sees the gauges of what it waited for
			}
			sh.answer(it.ctl)
		}
	}
	sh.flush()
}

// worker returns the state of worker id, creating it.
func (sh *shard) worker(id indexer.WorkerID) *workerState {
	ws := sh.workers[id]
	if ws == nil {
		ws = &workerState{}
		sh.workers[id] = ws
	}
	return ws
}

// rank returns the state of a rank, creating it.
func (sh *shard) rank(w indexer.Worker) *rankState {
	rs := sh.ranks[w]
	if rs == nil {
		rs = &rankState{}
		sh.ranks[w] = rs
	}
	return rs
}

// seen accounts for a change of worker id about to be applied: a worker
// not registered is noticed once, and its KV events (event) counted.
func (sh *shard) seen(id indexer.WorkerID, event bool) {
	ws := sh.worker(id)
	if ws.registered {
		return
	}
	if event {
		ws.unregistered++
	}
	if !ws.noticed {
		ws.noticed = true
		sh.w.notices.add(id)
	}
}

// forget frees what the shard tracks of worker id.
func (sh *shard) forget(id indexer.WorkerID) {
	delete(sh.workers, id)
	for rank := range sh.ranks {
		if rank.ID == id {
			delete(sh.ranks, rank)
		}
	}
}

// dropUnregistered drops the blocks of a worker whose grace period ended,
// unless it registered meanwhile.
func (sh *shard) dropUnregistered(id indexer.WorkerID) {
	ws := sh.workers[id]
	if ws != nil && ws.registered {
		return
	}
	sh.flush()
	n := sh.w.idx.RemoveWorker(id)
	var events uint64
	if ws != nil {
		events = ws.unregistered
	}
	sh.forget(id)
	w := sh.w
	if events > 0 {
		w.dropUnknown.get().Add(float64(events))
		w.stats.unknown.Add(events)
	}
	if events > 0 || n > 0 {
		w.log.Warn("worker did not register within the grace period; dropped its blocks",
			slog.Uint64("worker_id", uint64(id)), slog.Uint64("events_dropped", events), slog.Int("blocks_dropped", n))
	}
}

// track checks an event's event_id against its rank's last one and reports
// whether the event is skipped because a warm start's snapshot holds it
// (covered), or else whether the rank must be cleared first because events
// were lost. It looks the rank up once: it runs for every event.
func (sh *shard) track(it *item) (skip, clearFirst bool) {
	rank := it.ev.Worker
	rs, known := sh.ranks[rank]
	if !known {
		rs = &rankState{}
		sh.ranks[rank] = rs
	} else if rs.warm && sh.covered(rs, it) {
		return true, false
	}
	last := rs.last
	rs.last = it.id
	w := sh.w
	switch {
	case !known:
		return false, false
	case rs.resync:
		// The dropped events were counted when they were dropped and the
		// rank cleared after them: no gap to count, nothing to clear.
		rs.resync = false
		return false, false
	case it.id == last || it.id == last+1:
		// Equal ids are normal: Dynamo's ZMQ bridge gives every event of
		// one engine batch the batch's sequence number.
		return false, false
	case it.id > last:
		missed := it.id - last - 1
		w.m.Missed.Add(float64(missed))
		w.stats.missed.Add(missed)
		sh.warn(rs, "kv events lost: event_id jumped", rank, slog.Uint64("last_event_id", last),
			slog.Uint64("event_id", it.id), slog.Uint64("missed", missed), slog.Bool("cleared", w.cfg.ClearOnLoss))
	default:
		w.m.IDResets.Inc()
		w.stats.resets.Add(1)
		sh.warn(rs, "kv event_id went backwards: publisher restarted", rank, slog.Uint64("last_event_id", last),
			slog.Uint64("event_id", it.id), slog.Bool("cleared", w.cfg.ClearOnLoss))
	}
	return false, w.cfg.ClearOnLoss
}

// covered reports whether an event of a rank with a warm baseline (rs.warm)
// is already in the index because a warm start's snapshot holds it (its
// event_id is below the rank's baseline from the snapshot), counting it as a
// duplicate. The first event at or above the
// baseline ends the skipping, and so does one whose event_id goes back
// below the last one skipped (its publisher restarted after the cut); from
// then on event_ids are checked as usual, so that restart is a reset. A
// publisher that restarted with the same worker id after the cut but before
// the joiner held any of its older events cannot be told from those older
// events: its first events are skipped until its ids pass the baseline (or
// the rank is cleared) — Dynamo's workers take a new instance id when they
// restart, so this needs a fixed id and a restart within the warm start.
func (sh *shard) covered(rs *rankState, it *item) bool {
	if it.id < rs.last && it.id >= rs.skipped {
		rs.skipped = it.id
		sh.w.dropDuplicate.get().Inc()
		sh.w.stats.dropped.Add(1)
		return true
	}
	rs.warm = false
	return false
}

// lostHeld handles a rank that lost events to the full buffer of a warm
// start, in order after the events it held before the loss. When the
// rank's warm baseline is above every event_id lost, the snapshot loaded
// holds them all and nothing is cleared; otherwise it is a loss like a full
// queue's.
func (sh *shard) lostHeld(it *item) {
	if rs := sh.ranks[it.ev.Worker]; rs != nil && rs.warm {
		if it.id < rs.last {
			return
		}
		rs.warm = false
	}
	sh.lost([]indexer.Worker{it.ev.Worker})
}

// warn logs a loss of a rank at most once per warnEvery.
func (sh *shard) warn(rs *rankState, msg string, rank indexer.Worker, attrs ...slog.Attr) {
	now := sh.w.now()
	if now-rs.lastWarn < int64(warnEvery) && rs.lastWarn != 0 {
		rs.suppressed++
		return
	}
	attrs = append(attrs, slog.Uint64("worker_id", uint64(rank.ID)), slog.Uint64("dp_rank", uint64(rank.DPRank)),
		slog.Int("suppressed", rs.suppressed))
	sh.w.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
	rs.lastWarn, rs.suppressed = now, 0
}

// lost handles the ranks that lost events to a full queue: everything queued
// before the loss has just been applied, nothing after it is queued, so the
// rank is cleared now and its next event starts a new baseline.
func (sh *shard) lost(ranks []indexer.Worker) {
	clearOnLoss := sh.w.cfg.ClearOnLoss
	for _, rank := range ranks {
		if clearOnLoss {
			sh.add(indexer.Event{Worker: rank, Kind: indexer.KindCleared}, nil)
		}
		if rs, ok := sh.ranks[rank]; ok {
			rs.resync = true
			sh.warn(rs, "kv events dropped: shard queue full", rank, slog.Bool("cleared", clearOnLoss))
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
	w := sh.w
	start := time.Now()
	w.idx.ApplyBatch(sh.evs, sh.results[:n])
	w.apply.Since(start)
	now := w.now()
	var (
		counts         [3][4]int
		evicted        int
		clears         uint64
		stored, orphan uint64 // live stored events, and those with an unknown parent
	)
	for i := range n {
		r := sh.results[i]
		evicted += r.Evicted
		it := sh.from[i]
		switch {
		case it == nil: // a clear after lost events
			clears++
			continue
		case it.kind == itemWrite || it.kind == cmdClearRank:
			continue
		}
		if k, st := int(sh.evs[i].Kind)-1, int(r.Status); k >= 0 && k < 3 && st < 4 {
			counts[k][st]++
		}
		if it.kind == itemEvent {
			w.m.ApplyLag.Observe(float64(now-it.recv) / float64(time.Second))
			if sh.evs[i].Kind == indexer.KindStored {
				stored++
				if r.Status == indexer.StatusParentNotFound {
					orphan++
				}
			}
		}
		if it.done != nil {
			it.done.Done()
		}
	}
	var applied uint64
	for k := range counts {
		for st, c := range counts[k] {
			if c > 0 {
				w.applied[k][st].get().Add(float64(c))
				applied += uint64(c)
			}
		}
	}
	w.stats.applied.Add(applied)
	w.stats.clears.Add(clears)
	w.countStored(now, stored, orphan)
	if evicted > 0 {
		w.evictCapacity.get().Add(float64(evicted))
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
		for rank, rs := range sh.ranks {
			m[rank] = rs.last
		}
		c.baselines <- m
	}
	if c.synced != nil {
		c.synced <- struct{}{}
	}
}
