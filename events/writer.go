package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/overhead"
)

// Applier is the index the Writer changes. *indexer.Index implements it.
//
// ApplyBatch and RemoveWorker are called from the Writer's shard goroutines,
// several at once (each about different workers), and must apply in order;
// Dump (a durable subscriber's snapshot) and Stats (the gauges, after every
// batch) are called concurrently with them.
type Applier interface {
	ApplyBatch(events []indexer.Event, results []indexer.Result)
	RemoveWorker(id indexer.WorkerID) int
	Dump() []indexer.Event
	Stats() indexer.Stats
}

var _ Applier = (*indexer.Index)(nil)

// Writer is the one writer of the KV index. Every change of the index is a
// command submitted to it, and nothing else writes the index:
//
//   - KV events, from the transports (Subscriber: plain NATS or JetStream),
//     with their event_id checked per worker rank;
//   - lifecycle commands, from the worker registry: a worker joined, left,
//     lost a data-parallel rank, or never registered within its grace period;
//   - approximate mode's stores and removals, from the scheduler.
//
// Commands are sharded by worker id onto a fixed set of goroutines (the
// shards), so everything about one worker is applied in the order it was
// submitted: a worker that leaves loses exactly the blocks its events stored
// before it left, and an event still on its way when it left is applied after
// the removal, to a worker that is not registered, whose blocks go like any
// unregistered worker's (see Notices). No sweep timer or lock shared with
// other packages is needed to keep the index and the fleet consistent.
//
// Make one with NewWriter and call Run once. Submitting is safe for concurrent
// use and never blocks, except push's backpressure for durable mode.
type Writer struct {
	cfg Config
	idx Applier
	m   *Metrics
	log *slog.Logger
	// apply times each batch applied to the index
	// (dynamo_router_event_apply_seconds).
	apply overhead.Span

	epoch   time.Time
	shards  []*shard
	notices *Notices
	started atomic.Bool

	applied       [3][4]*lazyCounter // by kind − 1 and status
	evictCapacity *lazyCounter
	dropQueueFull *lazyCounter
	dropUnknown   *lazyCounter
	dropDuplicate *lazyCounter // held events a warm start's snapshot holds
	dropOverflow  *lazyCounter // events past HoldCapacity

	stats writerCounters

	// hold buffers the transports' events during a warm start (hold.go).
	hold hold
	// div is the window of stored events that decides whether the index
	// is diverging (divergence.go).
	div divergence

	// lastWarn and suppressed rate-limit warnings about dropped events
	// (writer clock, ns).
	lastWarn   atomic.Int64
	suppressed atomic.Int64
}

type writerCounters struct {
	applied, missed, resets, clears, dropped, unknown atomic.Uint64
}

// NewWriter checks cfg and prepares a writer of idx that builds its
// families (Metrics, and the apply timing of package overhead) from m. It
// starts nothing; Run does.
func NewWriter(cfg Config, idx Applier, m *metrics.Router, log *slog.Logger) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kv events: %w", err)
	}
	if idx == nil || m == nil {
		return nil, errors.New("kv events: nil index or metrics")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	em, err := NewMetrics(m)
	if err != nil {
		return nil, fmt.Errorf("kv events: %w", err)
	}
	apply, err := overhead.NewApply(m)
	if err != nil {
		return nil, fmt.Errorf("kv events: %w", err)
	}
	w := &Writer{
		cfg: cfg, idx: idx, m: em, log: log, apply: apply,
		epoch:         time.Now(),
		notices:       newNotices(),
		evictCapacity: lazy(em.IndexEvictions, metrics.EvictCapacity),
		dropQueueFull: lazy(em.Dropped, metrics.DropQueueFull),
		dropUnknown:   lazy(em.Dropped, metrics.DropUnknownWorker),
		dropDuplicate: lazy(em.Dropped, metrics.DropDuplicate),
		dropOverflow:  lazy(em.Dropped, metrics.DropWarmStartOverflow),
	}
	w.div.gauge = em.IndexDiverging
	for k := range w.applied {
		for st := range w.applied[k] {
			w.applied[k][st] = lazy(em.Applied, indexer.Kind(k+1).String(), indexer.Status(st).String())
		}
	}
	w.shards = make([]*shard, cfg.EventThreads)
	for i := range w.shards {
		w.shards[i] = newShard(w, cfg.QueueCapacity)
	}
	return w, nil
}

// Run applies commands until ctx ends, then applies what is queued and
// returns once every shard goroutine has exited. Submissions after that are
// dropped. Stop the transports first: what they submit while the writer
// stops may be lost. It may be called once.
//
// Beside the shards it re-evaluates every second whether the index is
// diverging (Divergence), so that an episode ends when the stored events
// that made it stop coming.
func (w *Writer) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("kv events: writer: Run called twice")
	}
	var wg sync.WaitGroup
	for _, sh := range w.shards {
		wg.Go(sh.run)
	}
	wg.Go(func() { everySecond(ctx, func() { w.Divergence() }) })
	<-ctx.Done()
	for _, sh := range w.shards {
		sh.q.close()
	}
	wg.Wait()
	w.publishGauges()
	return nil
}

// Notices returns the stream of workers whose KV events reach the index
// while they are not registered.
func (w *Writer) Notices() *Notices { return w.notices }

// WorkerJoined records that worker id is registered: its events are no
// longer those of an unknown worker. The worker registry calls it.
func (w *Writer) WorkerJoined(id indexer.WorkerID) {
	w.command(item{kind: cmdJoin, ev: indexer.Event{Worker: indexer.Worker{ID: id}}})
}

// WorkerLeft drops every block of worker id, in order after the events of
// the worker submitted before, and frees what the writer tracked of it. The
// worker registry calls it when the worker leaves discovery.
func (w *Writer) WorkerLeft(id indexer.WorkerID) {
	w.command(item{kind: cmdLeave, ev: indexer.Event{Worker: indexer.Worker{ID: id}}})
}

// ClearRank drops every block of one rank and forgets its event_id. The
// worker registry calls it when a worker's card drops the rank.
func (w *Writer) ClearRank(rank indexer.Worker) {
	w.command(item{kind: cmdClearRank, ev: indexer.Event{Worker: rank, Kind: indexer.KindCleared}})
}

// DropUnregistered drops every block of worker id unless it registered
// meanwhile, and counts the events it sent while unregistered in
// dynamo_component_kv_events_dropped_total{reason="unknown_worker"}. The
// worker registry calls it when the grace period of a worker it was told of
// (Notices) ends.
func (w *Writer) DropUnregistered(id indexer.WorkerID) {
	w.command(item{kind: cmdDropUnregistered, ev: indexer.Event{Worker: indexer.Worker{ID: id}}})
}

// Submit queues one decoded KV event of a transport, with its publisher's
// event_id, as the NATS subscriber does for each message: its event_id is
// checked against its rank's, and a full queue drops it, counted, and clears
// its rank. It never blocks.
func (w *Writer) Submit(ev indexer.Event, eventID uint64) {
	w.offer(item{kind: itemEvent, ev: ev, id: eventID, recv: w.now()})
}

// Numbering says which of a rank's events share one event_id sequence.
type Numbering uint8

// The numberings of KV events.
const (
	// NumberedByTier: each storage tier numbers its own events, as Dynamo's
	// publishers do (docs/compat.md §3.7); only the device's are checked.
	NumberedByTier Numbering = iota
	// NumberedTogether: one sequence numbers the events of every tier, as
	// an engine's batch sequence does; all of them are checked.
	NumberedTogether
)

// SubmitWait is Submit with backpressure instead of loss: when the shard
// queue is full it waits for room, or for ctx to end (its error). A
// transport that can slow its publisher down uses it: the ZMQ sources stop
// reading, TCP pushes back, and an engine past its send high-water mark
// drops batches the sequence then shows as a gap. During a warm start the
// event is held like any other. n says how the publisher numbers its
// events.
func (w *Writer) SubmitWait(ctx context.Context, ev indexer.Event, eventID uint64, n Numbering) error {
	it := item{kind: itemEvent, ev: ev, id: eventID, recv: w.now(), together: n == NumberedTogether}
	if w.hold.on.Load() && w.hold.add(w, it) {
		return nil
	}
	return w.push(ctx, it)
}

// Write applies one change of approximate mode (a routed prompt stored, or
// expired entries removed), in order with the worker's other changes. It
// never blocks: a full queue drops it and clears the rank, as for a lost KV
// event, so the index never claims what approximate mode removed.
func (w *Writer) Write(ev indexer.Event) {
	it := item{kind: itemWrite, ev: ev}
	if err := w.shardOf(ev.Worker.ID).q.tryPush(it); errors.Is(err, ErrQueueFull) {
		w.lostOne(ev.Worker)
	}
}

// Sync returns once every command submitted before it was applied, or when
// ctx ends.
func (w *Writer) Sync(ctx context.Context) error {
	done := make(chan struct{}, len(w.shards))
	for _, sh := range w.shards {
		if err := sh.q.push(ctx, item{kind: itemControl, ctl: &control{synced: done}}); err != nil {
			return err
		}
	}
	for range w.shards {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// command queues a lifecycle command. Commands are few (one per lifecycle
// change) and never refused for room: the registry must not lose one, nor
// block while holding its lock.
func (w *Writer) command(it item) {
	_ = w.shardOf(it.ev.Worker.ID).q.force(it) // refused only after Run returned
}

// offer queues a transport's event without waiting, or holds it during a
// warm start; a full queue drops it, counted, and clears its rank.
func (w *Writer) offer(it item) {
	if w.hold.on.Load() && w.hold.add(w, it) {
		return
	}
	if err := w.shardOf(it.ev.Worker.ID).q.tryPush(it); errors.Is(err, ErrQueueFull) {
		w.lostOne(it.ev.Worker)
	}
}

// push queues a transport's event, waiting for room (durable mode:
// backpressure instead of loss).
func (w *Writer) push(ctx context.Context, it item) error {
	return w.shardOf(it.ev.Worker.ID).q.push(ctx, it)
}

// lostOne counts an event dropped for a full queue.
func (w *Writer) lostOne(rank indexer.Worker) {
	w.dropped(w.dropQueueFull, rank, "kv events: event dropped, shard queue full; its worker rank will be cleared")
}

// dropped counts a transport's event of rank dropped in reason's counter
// and warns (rate-limited) with msg, the rank and attrs.
func (w *Writer) dropped(reason *lazyCounter, rank indexer.Worker, msg string, attrs ...slog.Attr) {
	reason.get().Inc()
	w.stats.dropped.Add(1)
	attrs = append([]slog.Attr{slog.Uint64("worker_id", uint64(rank.ID)), slog.Uint64("dp_rank", uint64(rank.DPRank))}, attrs...)
	w.warnf(msg, attrs...)
}

// baselines asks every shard, in queue order, for the last event_id of each
// rank it tracks.
func (w *Writer) baselines(ctx context.Context) (map[indexer.Worker]uint64, error) {
	reply := make(chan map[indexer.Worker]uint64, len(w.shards))
	for _, sh := range w.shards {
		if err := sh.q.push(ctx, item{kind: itemControl, ctl: &control{baselines: reply}}); err != nil {
			return nil, err
		}
	}
	all := make(map[indexer.Worker]uint64)
	for range w.shards {
		select {
		case m := <-reply:
			for rank, id := range m {
				all[rank] = id
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return all, nil
}

// shardOf hashes a worker id onto a shard (splitmix64 finaliser). Every
// rank of a worker goes to the same shard, so that the worker's lifecycle
// commands are ordered with all of its events.
func (w *Writer) shardOf(id indexer.WorkerID) *shard {
	h := uint64(id)
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return w.shards[h%uint64(len(w.shards))]
}

// publishGauges sets the queue-depth and index gauges. The Writer is their
// one owner: as the index's one writer it sees every change, so the gauges
// are current after every batch.
func (w *Writer) publishGauges() {
	var depth int64
	for _, sh := range w.shards {
		depth += sh.q.depth.Load()
	}
	w.m.QueueDepth.Set(float64(depth))
	st := w.idx.Stats()
	w.m.IndexEntries.Set(float64(st.Entries))
	w.m.IndexNodes.Set(float64(st.Nodes))
	w.m.IndexWorkers.Set(float64(st.Workers))
}

// everySecond calls f once a second until ctx ends.
func everySecond(ctx context.Context, f func()) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			f()
		}
	}
}

// now is the writer's monotonic clock in nanoseconds.
func (w *Writer) now() int64 { return int64(time.Since(w.epoch)) }

// warnf logs at most one warning per warnEvery about dropped events, with
// the number it kept quiet about.
func (w *Writer) warnf(msg string, attrs ...slog.Attr) {
	WarnLimited(w.log, &w.lastWarn, &w.suppressed, w.now(), msg, attrs...)
}

// WarnLimited logs msg unless another warning went out less than a second
// (warnEvery) before now, a monotonic clock in nanoseconds, counting the
// ones it keeps quiet about in suppressed; last holds the time of the last
// warning. The KV-event transports rate-limit their warnings with it.
func WarnLimited(log *slog.Logger, last, suppressed *atomic.Int64, now int64, msg string, attrs ...slog.Attr) {
	prev := last.Load()
	if (prev != 0 && now-prev < int64(warnEvery)) || !last.CompareAndSwap(prev, now) {
		suppressed.Add(1)
		return
	}
	attrs = append(attrs, slog.Int64("suppressed", suppressed.Swap(0)))
	log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
}

// Notices is the Writer's stream of workers whose KV events reach the index
// while they are not registered: a worker that never registered, or one whose
// events were still on their way when it left. Each such worker is noticed
// once, and again after DropUnregistered or WorkerLeft if its events go on.
// The worker registry consumes it and starts a grace period for each.
//
// It is the registry's inbox, not a callback, so that the Writer is built
// before the registry with no reference to it. Safe for concurrent use; it
// holds at most one id per unregistered worker.
type Notices struct {
	// mu guards ids; a leaf lock (docs/locks.md).
	mu    sync.Mutex
	ids   []indexer.WorkerID
	ready chan struct{}
}

func newNotices() *Notices { return &Notices{ready: make(chan struct{}, 1)} }

// Ready receives a value when Take has ids to return.
func (n *Notices) Ready() <-chan struct{} { return n.ready }

// Take returns the workers noticed since the last call.
func (n *Notices) Take() []indexer.WorkerID {
	n.mu.Lock()
	defer n.mu.Unlock()
	ids := n.ids
	n.ids = nil
	return ids
}

func (n *Notices) add(id indexer.WorkerID) {
	n.mu.Lock()
	n.ids = append(n.ids, id)
	n.mu.Unlock()
	select {
	case n.ready <- struct{}{}:
	default:
	}
}
