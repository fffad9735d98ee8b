package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/internal/shutdown"
	"github.com/kvrouter/router/metrics"
)

// NATS pending limits of each plain subscription: how much the client buffers
// while the callback decodes. Past them NATS drops messages and reports a slow
// consumer; the subscriber counts those drops (reason slow_consumer) and the
// event_id gaps they leave clear the affected ranks.
const (
	pendingMsgs  = 1 << 20
	pendingBytes = 256 << 20
)

// Stats are the counts of a Subscriber and its Writer since they were made,
// for tests and health pages; the same counts go to Prometheus through the
// metrics package.
type Stats struct {
	// Received counts messages received (plain) or delivered (durable).
	Received uint64
	// Applied counts events applied to the index, whatever their status.
	Applied uint64
	// DecodeErrors counts messages rejected by the decoders.
	DecodeErrors uint64
	// Dropped counts well-formed events not applied: full queue, slow
	// consumer, cache_owner residency domain, duplicate delivery.
	Dropped uint64
	// Missed counts events lost before they reached the router (event_id
	// gaps).
	Missed uint64
	// Resets counts event_id going backwards for a rank.
	Resets uint64
	// Clears counts ranks cleared after a loss (gap, reset, full queue).
	Clears uint64
	// Unregistered counts events of workers that never registered within
	// their grace period, dropped with their blocks.
	Unregistered uint64
	// Snapshots counts index snapshots written (durable mode).
	Snapshots uint64
}

type subCounters struct {
	received, decodeErrors, dropped, snapshots atomic.Uint64
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

// Subscriber is the NATS transport of KV events: it receives the events of
// every configured worker component (plain subscriptions, or a JetStream
// durable consumer with snapshots), decodes them and submits them to the
// Writer, which alone changes the index. Make one with NewSubscriber and
// call Run once.
type Subscriber struct {
	cfg Config
	nc  *nats.Conn
	w   *Writer
	m   *Metrics
	log *slog.Logger

	decodeErrs    map[string]*lazyCounter
	dropSlow      *lazyCounter
	dropTier      *lazyCounter
	dropDuplicate *lazyCounter

	stats subCounters

	started  atomic.Bool
	live     atomic.Bool
	durables []*durableStream
	// subscribed is closed once the subscriptions are live (Subscribed).
	subscribed chan struct{}

	// lastWarn and suppressed rate-limit warnings about rejected and dropped
	// messages (writer clock, ns).
	lastWarn   atomic.Int64
	suppressed atomic.Int64
}

// NewSubscriber checks cfg and prepares a subscriber of nc that submits
// events to w and counts them in its families (Metrics), built from m. It starts nothing; Run does. w must run
// (Writer.Run) while the subscriber does.
func NewSubscriber(cfg Config, nc *nats.Conn, w *Writer, m *metrics.Router, log *slog.Logger) (*Subscriber, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("kv events: %w", err)
	}
	switch {
	case nc == nil:
		return nil, errors.New("kv events: no nats connection")
	case w == nil:
		return nil, errors.New("kv events: no writer")
	case m == nil:
		return nil, errors.New("kv events: no metrics")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	em, err := NewMetrics(m)
	if err != nil {
		return nil, fmt.Errorf("kv events: %w", err)
	}
	s := &Subscriber{
		cfg:           cfg,
		nc:            nc,
		w:             w,
		m:             em,
		log:           log,
		dropSlow:      lazy(em.Dropped, metrics.DropSlowConsumer),
		dropTier:      lazy(em.Dropped, metrics.DropStorageTier),
		dropDuplicate: lazy(em.Dropped, metrics.DropDuplicate),
		decodeErrs:    make(map[string]*lazyCounter),
		subscribed:    make(chan struct{}),
	}
	for _, r := range []string{metrics.DecodeJSON, metrics.DecodeMsgpack, metrics.DecodeSchema, metrics.DecodeTooLarge} {
		s.decodeErrs[r] = lazy(em.DecodeErrors, r)
	}
	return s, nil
}

// Run subscribes and submits events until ctx ends, then stops taking new
// messages, submits what it has taken and returns once every goroutine it
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

	g, gctx := errgroup.WithContext(ctx)
	if s.cfg.Durable {
		for _, ds := range s.durables {
			g.Go(func() error { return ds.run(gctx) })
		}
	} else {
		subs, err := s.subscribe()
		if err != nil {
			return err
		}
		g.Go(func() error { s.watchSlow(gctx, subs); return nil })
		g.Go(func() error {
			<-gctx.Done()
			s.live.Store(false)
			s.drain(gctx, subs)
			return nil
		})
	}
	s.live.Store(true)
	close(s.subscribed)
	s.log.Info("kv events: subscribed", slog.Bool("durable", s.cfg.Durable), slog.Any("components", s.cfg.components()),
		slog.Int("event_threads", len(s.w.shards)))

	err := g.Wait()
	s.live.Store(false)
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

// Subscribed is closed once Run's subscriptions are registered with the
// server (in durable mode, once the consumers are created): from then on
// every event published reaches the Writer, held or queued. A warm start
// asks a peer for its snapshot only then, so that every event missing from
// the snapshot reaches this router live.
func (s *Subscriber) Subscribed() <-chan struct{} { return s.subscribed }

// Stats returns the counts so far. Safe for concurrent use.
func (s *Subscriber) Stats() Stats {
	return Stats{
		Received:     s.stats.received.Load(),
		Applied:      s.w.stats.applied.Load(),
		DecodeErrors: s.stats.decodeErrors.Load(),
		Dropped:      s.stats.dropped.Load() + s.w.stats.dropped.Load(),
		Missed:       s.w.stats.missed.Load(),
		Resets:       s.w.stats.resets.Load(),
		Clears:       s.w.stats.clears.Load(),
		Unregistered: s.w.stats.unknown.Load(),
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
// buffered, and waits until the last callback returned: at most
// drainTimeout after ctx ended, and never past the shutdown deadline ctx
// ended with (internal/shutdown). Cut short, it unsubscribes and says so.
func (s *Subscriber) drain(ctx context.Context, subs []*nats.Subscription) {
	const drainTimeout = 10 * time.Second
	dctx, cancel := shutdown.DrainContext(ctx, drainTimeout)
	defer cancel()
	var closed []<-chan nats.SubStatus
	for _, sub := range subs {
		ch := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			_ = sub.Unsubscribe()
			continue
		}
		closed = append(closed, ch)
	}
	for _, ch := range closed {
		select {
		case <-ch:
		case <-dctx.Done():
			d, _ := dctx.Deadline()
			s.log.Warn("kv events: drain cut short; events still in NATS's buffers are not applied",
				slog.Duration("timeout", drainTimeout), slog.Time("deadline", d), slog.Bool("nats_connected", s.nc.IsConnected()))
			for _, sub := range subs {
				_ = sub.Unsubscribe()
			}
			return
		}
	}
}

// watchSlow counts the messages NATS dropped on slow subscriptions.
func (s *Subscriber) watchSlow(ctx context.Context, subs []*nats.Subscription) {
	prev := make([]int, len(subs))
	everySecond(ctx, func() {
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
	})
}

// onMsg handles one message of a plain subscription, on that subscription's
// delivery goroutine. It never blocks: a full shard queue drops the event,
// counted, and marks its rank for clearing.
func (s *Subscriber) onMsg(msg *nats.Msg) {
	if it, ok := s.accept(msg.Data); ok {
		s.w.offer(it)
	}
}

// accept decodes a message and says whether it is an event for the index,
// counting it otherwise.
func (s *Subscriber) accept(data []byte) (item, bool) {
	recv := s.w.now()
	s.stats.received.Add(1)
	ev, meta, err := codec.Decode(data)
	if err != nil {
		reason := Reason(err)
		s.decodeErrs[reason].get().Inc()
		s.stats.decodeErrors.Add(1)
		s.warnf("kv events: message rejected", slog.String("reason", reason), slog.Any("error", err))
		return item{}, false
	}
	if meta.CacheOwner {
		// A shared cache's blocks, not the worker's own (codec.Meta.Device).
		s.dropTier.get().Inc()
		s.stats.dropped.Add(1)
		return item{}, false
	}
	// ev.Tier is the event's storage_tier: every tier of the worker's own
	// caches is indexed.
	return item{kind: itemEvent, ev: ev, id: meta.EventID, recv: recv}, true
}

// warnf logs at most one warning per warnEvery about rejected or dropped
// messages, with the number it kept quiet about.
func (s *Subscriber) warnf(msg string, attrs ...slog.Attr) {
	WarnLimited(s.log, &s.lastWarn, &s.suppressed, s.w.now(), msg, attrs...)
}
