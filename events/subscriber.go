package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// Applier is the index the subscriber feeds. *indexer.Index implements it.
//
// ApplyBatch is called concurrently from the shard goroutines (each with
// events of different worker ranks) and must apply the events in order and
// fill results; Dump and Stats are called concurrently with it, Dump by a
// durable subscriber's snapshot and Stats after every applied batch, for
// the index gauges.
type Applier interface {
	ApplyBatch(events []indexer.Event, results []indexer.Result)
	Dump() []indexer.Event
	Stats() indexer.Stats
}

// WorkerObserver learns which workers publish KV events, so that a worker
// registry can notice workers it does not know (router-api.md §2).
//
// WorkerSeen is called when an event of worker id reaches the index, and
// reports whether the worker is registered. Once it says so, it is not
// called for that worker again until Forget(id); until then it is called
// for every event (and once for a worker restored from a snapshot), so
// that an observer can count the events of a worker that never registers.
// It is called from the subscriber's shard goroutines, possibly several at
// once, and must return quickly without calling back into the Subscriber.
type WorkerObserver interface {
	WorkerSeen(id indexer.WorkerID) (registered bool)
}

// Option configures a Subscriber beyond its Config.
type Option func(*Subscriber)

// WithObserver sets the observer of new workers.
func WithObserver(o WorkerObserver) Option { return func(s *Subscriber) { s.obs = o } }

// NATS pending limits of each plain subscription: how much the client buffers
// while the callback decodes. Past them NATS drops messages and reports a slow
// consumer; the subscriber counts those drops (reason slow_consumer) and the
// event_id gaps they leave clear the affected ranks.
const (
	pendingMsgs  = 1 << 20
	pendingBytes = 256 << 20
)

// Stats are the subscriber's counts since it was made, for tests and health
// pages; the same counts go to Prometheus through the metrics package.
type Stats struct {
	// Received counts messages received (plain) or delivered (durable).
	Received uint64
	// Applied counts events applied to the index, whatever their status.
	Applied uint64
	// DecodeErrors counts messages rejected by the decoders.
	DecodeErrors uint64
	// Dropped counts well-formed events not applied: full queue, slow
	// consumer, non-device tier, duplicate delivery.
	Dropped uint64
	// Missed counts events lost before they reached the router (event_id
	// gaps).
	Missed uint64
	// Resets counts event_id going backwards for a rank.
	Resets uint64
	// Clears counts ranks the subscriber cleared itself after a loss.
	Clears uint64
	// Snapshots counts index snapshots written (durable mode).
	Snapshots uint64
}

type statCounters struct {
	received, applied, decodeErrors, dropped, missed, resets, clears, snapshots atomic.Uint64
}

// lazyCounter resolves a label set of a vector on first use, so that a
// labelled series appears with its first event, as docs/metrics.md promises.
type lazyCounter struct {
	once   sync.Once
	c      prometheus.Counter
	vec    *prometheus.CounterVec
	labels []string
}

func (l *lazyCounter) get() prometheus.Counter {
	l.once.Do(func() { l.c = l.vec.WithLabelValues(l.labels...) })
	return l.c
}

func lazy(vec *prometheus.CounterVec, labels ...string) *lazyCounter {
	return &lazyCounter{vec: vec, labels: labels}
}

// Subscriber receives the KV events of every configured worker component and
// applies them to the index. Make one with NewSubscriber and call Run once.
type Subscriber struct {
	cfg Config
	nc  *nats.Conn
	idx Applier
	m   *metrics.Router
	log *slog.Logger
	obs WorkerObserver

	epoch  time.Time
	shards []*shard

	applied       [3][4]*lazyCounter // by kind − 1 and status
	evictCapacity *lazyCounter
	decodeErrs    map[string]*lazyCounter
	dropQueueFull *lazyCounter
	dropSlow      *lazyCounter
	dropTier      *lazyCounter
	dropDuplicate *lazyCounter
	resets        prometheus.Counter

	stats statCounters

	started  atomic.Bool
	live     atomic.Bool
	durables []*durableStream

	// seen holds the worker ids reported to the observer; forgetGen counts
	// Forget calls so shards know to drop the state of forgotten workers.
	seenMu    sync.Mutex
	seen      map[indexer.WorkerID]bool // told of; true once registered
	forgetGen atomic.Uint64

	// lastWarn and suppressed rate-limit warnings about rejected and dropped
	// messages (subscriber clock, ns).
	lastWarn   atomic.Int64
	suppressed atomic.Int64
}

// NameKVEventIDResetsTotal is the counter of event_id going backwards for a
// worker rank (ours; created through the metrics registry at the component
// scope of Config.RouterComponent, as metrics.New has no such family).
const NameKVEventIDResetsTotal = "dynamo_component_kv_event_id_resets_total"

// NewSubscriber checks cfg and prepares a subscriber of nc that applies events
// to idx and counts them in m. It starts nothing; Run does.
func NewSubscriber(cfg Config, nc *nats.Conn, idx Applier, m *metrics.Router, log *slog.Logger, opts ...Option) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kv events: %w", err)
	}
	switch {
	case nc == nil:
		return nil, errors.New("kv events: no nats connection")
	case idx == nil:
		return nil, errors.New("kv events: no index")
	case m == nil:
		return nil, errors.New("kv events: no metrics")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	resets, err := m.Registry().Namespace(cfg.Namespace).Component(cfg.RouterComponent).Counter(metrics.Opts{
		Name: strings.TrimPrefix(NameKVEventIDResetsTotal, metrics.PrefixComponent+"_"),
		Help: "Total number of times the event_id of a worker rank went backwards (publisher restarted)",
	})
	if err != nil {
		return nil, fmt.Errorf("kv events: %w", err)
	}
	s := &Subscriber{
		cfg:           cfg,
		nc:            nc,
		idx:           idx,
		m:             m,
		log:           log,
		epoch:         time.Now(),
		evictCapacity: lazy(m.IndexEvictions, metrics.EvictCapacity),
		dropQueueFull: lazy(m.KVEventsDropped, metrics.DropQueueFull),
		dropSlow:      lazy(m.KVEventsDropped, metrics.DropSlowConsumer),
		dropTier:      lazy(m.KVEventsDropped, DropStorageTier),
		dropDuplicate: lazy(m.KVEventsDropped, DropDuplicate),
		resets:        resets,
		seen:          make(map[indexer.WorkerID]bool),
		decodeErrs:    make(map[string]*lazyCounter),
	}
	for _, r := range []string{metrics.DecodeJSON, metrics.DecodeMsgpack, metrics.DecodeSchema, ReasonTooLarge} {
		s.decodeErrs[r] = lazy(m.KVEventDecodeErrors, r)
	}
	for k := range s.applied {
		for st := range s.applied[k] {
			s.applied[k][st] = lazy(m.KVEventsApplied, indexer.Kind(k+1).String(), indexer.Status(st).String())
		}
	}
	for _, o := range opts {
		o(s)
	}
	s.shards = make([]*shard, cfg.EventThreads)
	for i := range s.shards {
		s.shards[i] = newShard(s, cfg.QueueCapacity)
	}
	return s, nil
}

// Run subscribes and applies events until ctx ends, then stops taking new
// messages, applies what it has taken and returns once every goroutine it
// started has exited: nil after ctx ended, an error if it could not start
// (no JetStream in durable mode, a subscription refused). It may be called
// once.
//
// In durable mode it first restores the index of each component from its
// snapshot and replays the stream; Ready turns true once the replay has
// reached what the stream held at start.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("kv events: Run called twice")
	}
	if s.cfg.Durable {
		for _, comp := range s.cfg.components() {
			ds, err := s.openDurable(ctx, comp)
			if err != nil {
				s.closeDurables()
				if ctx.Err() != nil {
					return nil // stopped while starting
				}
				return err
			}
			s.durables = append(s.durables, ds)
		}
	}

	var shardsWG sync.WaitGroup
	for _, sh := range s.shards {
		shardsWG.Go(sh.run)
	}
	stopShards := func() {
		for _, sh := range s.shards {
			sh.q.close()
		}
		shardsWG.Wait()
		s.publishGauges()
	}

	g, gctx := errgroup.WithContext(ctx)
	if s.cfg.Durable {
		for _, ds := range s.durables {
			g.Go(func() error { return ds.run(gctx) })
		}
	} else {
		subs, err := s.subscribe()
		if err != nil {
			stopShards()
			return err
		}
		g.Go(func() error { s.watchSlow(gctx, subs); return nil })
		g.Go(func() error {
			<-gctx.Done()
			s.live.Store(false)
			s.drain(subs)
			return nil
		})
	}
	s.live.Store(true)
	s.log.Info("kv events: subscribed", slog.Bool("durable", s.cfg.Durable), slog.Any("components", s.cfg.components()),
		slog.Int("event_threads", len(s.shards)))

	err := g.Wait()
	s.live.Store(false)
	stopShards()
	if s.cfg.Durable {
		s.closeDurables()
	}
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// Ready reports whether the subscriber is live: its subscriptions are
// registered with the server and, in durable mode, every component's
// snapshot is loaded and its stream replayed up to where it stood at start.
func (s *Subscriber) Ready() bool {
	if !s.live.Load() {
		return false
	}
	for _, ds := range s.durables {
		if !ds.ready() {
			return false
		}
	}
	return true
}

// Forget makes the next event of worker id be reported to the observer
// again, and drops what the shards track of its ranks. The worker registry
// calls it after removing the worker. Safe for concurrent use.
func (s *Subscriber) Forget(id indexer.WorkerID) {
	s.seenMu.Lock()
	delete(s.seen, id)
	s.seenMu.Unlock()
	s.forgetGen.Add(1)
}

// Stats returns the counts so far. Safe for concurrent use.
func (s *Subscriber) Stats() Stats {
	return Stats{
		Received:     s.stats.received.Load(),
		Applied:      s.stats.applied.Load(),
		DecodeErrors: s.stats.decodeErrors.Load(),
		Dropped:      s.stats.dropped.Load(),
		Missed:       s.stats.missed.Load(),
		Resets:       s.stats.resets.Load(),
		Clears:       s.stats.clears.Load(),
		Snapshots:    s.stats.snapshots.Load(),
	}
}

// subscribe makes the plain subscriptions and waits until the server has
// them.
func (s *Subscriber) subscribe() ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	for _, comp := range s.cfg.components() {
		for _, subj := range Subjects(s.cfg.Namespace, comp) {
			sub, err := s.nc.Subscribe(subj, s.onMsg)
			if err == nil {
				err = sub.SetPendingLimits(pendingMsgs, pendingBytes)
			}
			if err != nil {
				for _, sub := range subs {
					_ = sub.Unsubscribe()
				}
				return nil, fmt.Errorf("kv events: subscribe %s: %w", subj, err)
			}
			subs = append(subs, sub)
		}
	}
	if err := s.nc.FlushTimeout(10 * time.Second); err != nil {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		return nil, fmt.Errorf("kv events: flush subscriptions: %w", err)
	}
	return subs, nil
}

// drain stops the subscriptions after NATS has handed over every message it
// buffered, and waits (at most drainTimeout) until the last callback returned.
func (s *Subscriber) drain(subs []*nats.Subscription) {
	const drainTimeout = 10 * time.Second
	var closed []<-chan nats.SubStatus
	for _, sub := range subs {
		ch := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			_ = sub.Unsubscribe()
			continue
		}
		closed = append(closed, ch)
	}
	timer := time.NewTimer(drainTimeout)
	defer timer.Stop()
	for _, ch := range closed {
		select {
		case <-ch:
		case <-timer.C:
			s.log.Warn("kv events: subscriptions did not drain in time", slog.Duration("timeout", drainTimeout))
			return
		}
	}
}

// watchSlow counts the messages NATS dropped on slow subscriptions.
func (s *Subscriber) watchSlow(ctx context.Context, subs []*nats.Subscription) {
	prev := make([]int, len(subs))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, sub := range subs {
			n, err := sub.Dropped()
			if err != nil || n <= prev[i] {
				continue
			}
			d := n - prev[i]
			prev[i] = n
			s.dropSlow.get().Add(float64(d))
			s.stats.dropped.Add(uint64(d))
			s.log.Warn("kv events: nats dropped messages of a slow subscription", slog.String("subject", sub.Subject),
				slog.Int("dropped", d))
		}
	}
}

// onMsg handles one message of a plain subscription, on that subscription's
// delivery goroutine. It never blocks: a full shard queue drops the event,
// counted, and marks its rank for clearing.
func (s *Subscriber) onMsg(msg *nats.Msg) {
	it, ok := s.accept(msg.Data)
	if !ok {
		return
	}
	if err := s.shardOf(it.ev.Worker).q.tryPush(it); errors.Is(err, ErrQueueFull) {
		s.dropQueueFull.get().Inc()
		s.stats.dropped.Add(1)
		s.warnf("kv events: event dropped, shard queue full; its worker rank will be cleared",
			slog.Uint64("worker_id", uint64(it.ev.Worker.ID)), slog.Uint64("dp_rank", uint64(it.ev.Worker.DPRank)))
	}
}

// accept decodes a message and says whether it is an event for the index,
// counting it otherwise.
func (s *Subscriber) accept(data []byte) (item, bool) {
	recv := s.now()
	s.stats.received.Add(1)
	ev, meta, err := Decode(data)
	if err != nil {
		reason := reasonOf(err)
		s.decodeErrs[reason].get().Inc()
		s.stats.decodeErrors.Add(1)
		s.warnf("kv events: message rejected", slog.String("reason", reason), slog.Any("error", err))
		return item{}, false
	}
	if !meta.Device() {
		s.dropTier.get().Inc()
		s.stats.dropped.Add(1)
		return item{}, false
	}
	return item{ev: ev, id: meta.EventID, recv: recv}, true
}

// shardOf hashes a worker rank onto a shard (splitmix64 finaliser).
func (s *Subscriber) shardOf(w indexer.Worker) *shard {
	h := uint64(w.ID) ^ uint64(w.DPRank)*0x9e3779b97f4a7c15
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return s.shards[h%uint64(len(s.shards))]
}

// noteWorker tells the observer about an event of worker id, unless it
// already said the worker is registered, and reports whether it is.
func (s *Subscriber) noteWorker(id indexer.WorkerID) (registered bool) {
	s.seenMu.Lock()
	registered = s.seen[id]
	s.seenMu.Unlock()
	if registered {
		return true
	}
	registered = s.obs == nil || s.obs.WorkerSeen(id)
	s.seenMu.Lock()
	s.seen[id] = registered
	s.seenMu.Unlock()
	return registered
}

// publishGauges sets the queue-depth and index gauges.
func (s *Subscriber) publishGauges() {
	var depth int64
	for _, sh := range s.shards {
		depth += sh.q.depth.Load()
	}
	s.m.KVEventQueueDepth.Set(float64(depth))
	st := s.idx.Stats()
	s.m.IndexEntries.Set(float64(st.Entries))
	s.m.IndexNodes.Set(float64(st.Nodes))
	s.m.IndexWorkers.Set(float64(st.Workers))
}

// now is the subscriber's monotonic clock in nanoseconds.
func (s *Subscriber) now() int64 { return int64(time.Since(s.epoch)) }

// warnf logs at most one warning per warnEvery about rejected or dropped
// messages, with the number it kept quiet about.
func (s *Subscriber) warnf(msg string, attrs ...slog.Attr) {
	now := s.now()
	last := s.lastWarn.Load()
	if (last != 0 && now-last < int64(warnEvery)) || !s.lastWarn.CompareAndSwap(last, now) {
		s.suppressed.Add(1)
		return
	}
	attrs = append(attrs, slog.Int64("suppressed", s.suppressed.Swap(0)))
	s.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
}
