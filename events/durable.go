package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kvrouter/router/indexer"
)

// Durable consumption settings.
const (
	// fetchBatch is the most messages one pull asks for; the fetcher waits
	// for them to be applied, then acknowledges the last (AckAll).
	fetchBatch = 1024
	// fetchWait is how long the server holds a pull open waiting for
	// messages before the fetcher looks at the stream size again. The server
	// ends the pull (not the client), so no message is in flight when it
	// ends.
	fetchWait = 500 * time.Millisecond
	// consumerInactive is Dynamo's inactive threshold of a router's durable
	// consumer: a consumer left behind by a crashed router goes after it.
	consumerInactive = time.Hour
	// retryWait is the pause after a failed pull.
	retryWait = 200 * time.Millisecond
	// setupTimeout bounds each JetStream call at start and at shutdown.
	setupTimeout = 30 * time.Second
)

// durableStream consumes one component's stream with the router's durable
// consumer. Its fields after the mutex-free block belong to the fetcher
// goroutine (and to openDurable before it starts).
type durableStream struct {
	s         *Subscriber
	component string
	js        jetstream.JetStream
	stream    jetstream.Stream
	cons      jetstream.Consumer
	name      string
	bucket    string
	// lockBucket holds the snapshot lock; lock is it, opened by the first
	// upload (upload goroutine only).
	lockBucket string
	lock       jetstream.KeyValue

	// applied is the last stream sequence whose message and every one
	// before it were applied; target is the stream's last sequence at
	// start: Ready waits for applied to reach it, or for a pull that finds
	// nothing left (caughtUp), should the last message have been deleted.
	applied  atomic.Uint64
	target   uint64
	caughtUp atomic.Bool

	uploads   sync.WaitGroup
	uploading atomic.Bool

	// Fetcher goroutine only.
	workers    map[indexer.WorkerID]struct{} // workers seen on this stream, for its snapshots
	dispatched uint64                        // last stream sequence handed to the shards
	consSeq    uint64                        // consumer sequence of the last delivery
	lastCheck  time.Time

	// lastSnap is the stream sequence of the last snapshot written (or
	// restored); set by the upload goroutine.
	lastSnap atomic.Uint64
}

// openDurable prepares the stream, restores the component's snapshot into
// the index (unless --router-reset-states) and creates the durable consumer
// right after the snapshot's sequence. It runs before the shards start.
func (s *Subscriber) openDurable(ctx context.Context, comp string) (*durableStream, error) {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, fmt.Errorf("kv events: jetstream: %w", err)
	}
	ds := &durableStream{
		s:          s,
		component:  comp,
		js:         js,
		name:       StreamName(s.cfg.Namespace, comp),
		bucket:     BucketName(s.cfg.Namespace, comp),
		lockBucket: LockBucketName(s.cfg.Namespace, comp),
		workers:    make(map[indexer.WorkerID]struct{}),
	}
	if err := ds.openStream(ctx); err != nil {
		return nil, err
	}
	var snapSeq uint64
	if s.cfg.ResetStates {
		if err := ds.reset(ctx); err != nil {
			return nil, err
		}
	} else {
		snapSeq, err = ds.restore(ctx)
		if err != nil {
			return nil, err
		}
	}
	info, err := ds.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("kv events: stream %s: info: %w", ds.name, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	start := snapSeq + 1
	switch {
	case snapSeq > last:
		s.log.Warn("kv events: the snapshot is ahead of its stream, which must have been recreated; replaying the whole stream",
			slog.String("stream", ds.name), slog.Uint64("snapshot_sequence", snapSeq), slog.Uint64("last_sequence", last))
		start = 1
	case info.State.Msgs > 0 && first > start:
		s.log.Warn("kv events: the stream lost messages the snapshot does not cover (expired or purged); the index misses them until their workers clear or their event_ids reveal the gap",
			slog.String("stream", ds.name), slog.Uint64("snapshot_sequence", snapSeq), slog.Uint64("first_sequence", first))
	}
	if err := ds.createConsumer(ctx, start); err != nil {
		return nil, err
	}
	ds.dispatched = start - 1
	ds.applied.Store(start - 1)
	ds.lastSnap.Store(snapSeq)
	ds.target = last
	if info.State.Msgs == 0 {
		ds.target = 0 // nothing to replay
	}
	ds.lastCheck = time.Now()
	s.log.Info("kv events: durable stream ready to replay", slog.String("stream", ds.name),
		slog.String("consumer", s.cfg.RouterID), slog.Uint64("from_sequence", start), slog.Uint64("to_sequence", last))
	return ds, nil
}

// openStream gets the stream, or creates it as Dynamo's routers would,
// capturing also the core kv-events subjects so that workers publishing
// without JetStream are recorded too. An existing stream is used as it is.
func (ds *durableStream) openStream(ctx context.Context) error {
	stream, err := ds.js.Stream(ctx, ds.name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		subjects := append([]string{ds.name + ".*"}, Subjects(ds.s.cfg.Namespace, ds.component)...)
		stream, err = ds.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:      ds.name,
			Subjects:  subjects,
			Storage:   jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy,
			// No MaxAge: snapshots bound the stream; expiry would lose
			// events that no snapshot covers.
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			stream, err = ds.js.Stream(ctx, ds.name)
		}
	}
	if err != nil {
		return fmt.Errorf("kv events: stream %s: %w", ds.name, err)
	}
	ds.stream = stream
	core := Subjects(ds.s.cfg.Namespace, ds.component)[0]
	if subj := stream.CachedInfo().Config.Subjects; !slices.Contains(subj, core) && !slices.Contains(subj, ds.name+".*") {
		ds.s.log.Warn("kv events: the existing stream does not capture the kv-events subjects; events published there are not seen in durable mode",
			slog.String("stream", ds.name), slog.Any("subjects", subj))
	}
	return nil
}

// reset purges the stream and deletes the snapshot bucket, as Dynamo's
// --router-reset-states does.
func (ds *durableStream) reset(ctx context.Context) error {
	if err := ds.stream.Purge(ctx); err != nil {
		return fmt.Errorf("kv events: reset: purge stream %s: %w", ds.name, err)
	}
	err := ds.js.DeleteObjectStore(ctx, ds.bucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("kv events: reset: delete bucket %s: %w", ds.bucket, err)
	}
	ds.s.log.Info("kv events: reset states", slog.String("stream", ds.name), slog.String("bucket", ds.bucket))
	return nil
}

// createConsumer (re)creates the router's durable consumer so that it
// delivers from stream sequence start on: whatever position a consumer of
// that name had, the index now reflects the snapshot, not it.
func (ds *durableStream) createConsumer(ctx context.Context, start uint64) error {
	name := ds.s.cfg.RouterID
	if err := ds.stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("kv events: stream %s: delete consumer %s: %w", ds.name, name, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:           name,
		AckPolicy:         jetstream.AckAllPolicy,
		AckWait:           30 * time.Second,
		MaxAckPending:     4 * fetchBatch,
		InactiveThreshold: consumerInactive,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
	}
	if start > 1 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = start
	}
	cons, err := ds.stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("kv events: stream %s: create consumer %s: %w", ds.name, name, err)
	}
	ds.cons, ds.consSeq = cons, 0
	return nil
}

// ready reports whether the replay reached the stream's end at start.
func (ds *durableStream) ready() bool { return ds.caughtUp.Load() || ds.applied.Load() >= ds.target }

// run pulls, applies and acknowledges until ctx ends, snapshotting the index
// when the stream grows past the threshold.
func (ds *durableStream) run(ctx context.Context) error {
	defer ds.uploads.Wait()
	for ctx.Err() == nil {
		if err := ds.fetch(ctx); err != nil && ctx.Err() == nil {
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
				ds.s.log.Warn("kv events: durable consumer vanished; recreating it", slog.String("stream", ds.name),
					slog.Uint64("from_sequence", ds.dispatched+1))
				cctx, cancel := context.WithTimeout(ctx, setupTimeout)
				err = ds.createConsumer(cctx, ds.dispatched+1)
				cancel()
			}
			if err != nil {
				ds.s.log.Warn("kv events: pull failed", slog.String("stream", ds.name), slog.Any("error", err))
				select {
				case <-ctx.Done():
				case <-time.After(retryWait):
				}
			}
			continue
		}
		ds.maybeSnapshot(ctx)
	}
	return nil
}

// fetch pulls one batch, hands its events to the shards (waiting for room:
// durable mode never drops), waits until they are applied and acknowledges
// the batch.
//
// Deliveries must arrive gap-free for the acknowledgement of the last one
// (AckAll) to be right: a pull that ends on the client while the server is
// still sending loses messages the server counts as delivered. The consumer
// sequence reveals that; the fetcher then recreates the consumer right after
// the last message it applied.
func (ds *durableStream) fetch(ctx context.Context) error {
	s := ds.s
	batch, err := ds.cons.Fetch(fetchBatch, jetstream.FetchMaxWait(fetchWait))
	if err != nil {
		return err
	}
	var (
		wg      sync.WaitGroup
		last    jetstream.Msg
		resync  bool
		stopped bool
	)
	msgs := batch.Messages()
loop:
	for {
		var msg jetstream.Msg
		select {
		case m, ok := <-msgs:
			if !ok {
				break loop
			}
			msg = m
		case <-ctx.Done():
			stopped = true
			break loop
		}
		md, err := msg.Metadata()
		if err != nil {
			continue // not a JetStream message; cannot happen on a pull
		}
		if ds.consSeq != 0 && md.Sequence.Consumer != ds.consSeq+1 {
			resync = true
			break
		}
		ds.consSeq = md.Sequence.Consumer
		seq := md.Sequence.Stream
		if seq <= ds.dispatched {
			// Delivered again (an acknowledgement was late): applied already.
			s.stats.received.Add(1)
			s.dropDuplicate.get().Inc()
			s.stats.dropped.Add(1)
			last = msg
			continue
		}
		if seq > ds.dispatched+1 && ds.dispatched > 0 {
			s.log.Warn("kv events: stream messages vanished before they were read (expired or purged)",
				slog.String("stream", ds.name), slog.Uint64("after_sequence", ds.dispatched), slog.Uint64("sequence", seq))
		}
		if it, ok := s.accept(msg.Data()); ok {
			ds.workers[it.ev.Worker.ID] = struct{}{}
			it.done = &wg
			wg.Add(1)
			if err := s.w.push(ctx, it); err != nil {
				wg.Done()
				stopped = true
				break
			}
		}
		ds.dispatched = seq
		last = msg
	}
	wg.Wait()
	var berr error
	if !stopped && !resync {
		berr = batch.Error()
	}
	if last != nil {
		ds.applied.Store(ds.dispatched)
		if err := last.Ack(); err != nil && ctx.Err() == nil {
			s.log.Warn("kv events: acknowledgement failed; the messages will be delivered again and skipped",
				slog.String("stream", ds.name), slog.Any("error", err))
		}
	} else if berr == nil && !stopped && !resync {
		ds.caughtUp.Store(true) // a whole pull found nothing pending
	}
	if resync {
		s.log.Warn("kv events: deliveries lost between client and server; repositioning the consumer",
			slog.String("stream", ds.name), slog.Uint64("from_sequence", ds.dispatched+1))
		cctx, cancel := context.WithTimeout(ctx, setupTimeout)
		defer cancel()
		return ds.createConsumer(cctx, ds.dispatched+1)
	}
	return berr
}

// maybeSnapshot snapshots the index when the stream holds more than the
// threshold and enough is new since the last snapshot, at most once per
// SnapshotInterval. It runs between batches, when everything dispatched
// from this stream has been applied.
func (ds *durableStream) maybeSnapshot(ctx context.Context) {
	cfg := ds.s.cfg
	if time.Since(ds.lastCheck) < cfg.SnapshotInterval || ds.uploading.Load() {
		return
	}
	ds.lastCheck = time.Now()
	ictx, cancel := context.WithTimeout(ctx, setupTimeout)
	info, err := ds.stream.Info(ictx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			ds.s.log.Warn("kv events: stream info failed", slog.String("stream", ds.name), slog.Any("error", err))
		}
		return
	}
	applied := ds.applied.Load()
	// A purge can be held back by a lagging consumer; asking for half a
	// threshold of news keeps the router from re-uploading every interval.
	if info.State.Msgs <= cfg.SnapshotThreshold || applied < ds.lastSnap.Load()+max(1, cfg.SnapshotThreshold/2) {
		return
	}
	data, n, err := ds.s.w.snapshot(ctx, ds.workers)
	if err != nil {
		return // shutting down
	}
	ds.uploading.Store(true)
	ds.uploads.Go(func() {
		defer ds.uploading.Store(false)
		ds.upload(ctx, data, n, applied)
	})
}

// closeDurables deletes the router's durable consumers: a stopped router
// holds back no purge, and a restarted one positions a new consumer from its
// snapshot anyway.
func (s *Subscriber) closeDurables() {
	for _, ds := range s.durables {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := ds.stream.DeleteConsumer(ctx, s.cfg.RouterID)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			s.log.Warn("kv events: delete durable consumer", slog.String("stream", ds.name), slog.Any("error", err))
		}
	}
}
