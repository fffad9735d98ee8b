package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/workers"
)

// WorkerConfig is one simulated worker: its engine and how it presents
// itself.
type WorkerConfig struct {
	// Namespace and Component place the worker in Dynamo's layout: its
	// etcd keys, KV event subject and generate subject.
	Namespace, Component string
	// Model is the display_name of its model card.
	Model string
	// Engine sizes the engine; its BlockSize is the card's
	// kv_cache_block_size and the block size of its hashes.
	Engine EngineConfig
	// LeaseTTL is the TTL of its etcd lease.
	LeaseTTL time.Duration
	// LeaseID, when not 0, is the lease (and so instance) id to ask etcd
	// for instead of letting etcd choose: with fixed ids, two runs route
	// identically. Granting fails if the lease exists.
	LeaseID int64
	// LoadInterval is how often, in simulated time, the worker publishes
	// its load.
	LoadInterval time.Duration
}

// WorkerInfo describes a registered worker.
type WorkerInfo struct {
	// Index is the worker's position in its fleet.
	Index int
	// ID is the instance id: its etcd lease id.
	ID uint64
	// Subject is where it takes generate requests.
	Subject string
}

// Published counts what workers have published so far.
type Published struct {
	// Events is the number of KV events.
	Events uint64
	// Notices is the number of first_token and done replies.
	Notices uint64
}

// Worker is one simulated engine with its NATS and etcd presence: it
// registers an instance and a model card in etcd on its own lease, takes
// generate requests on its subject, publishes its cache's KV events and its
// load on NATS, and streams first_token and done replies.
//
// Two ways to drive it: on a WallClock its Run starts a step loop that
// sleeps until each step ends; on a ManualClock (lockstep) nothing moves
// until Fleet.AdvanceTo says so. Either way the engine is reached under one
// mutex, which the NATS handler (Submit), the step loop or AdvanceTo
// (Advance) and the load publisher take in turn; replies and events are
// published under it, so they leave in the order of the state changes.
type Worker struct {
	cfg    WorkerConfig
	index  int
	nc     *nats.Conn
	pub    publisher
	etcd   *clientv3.Client
	clock  Clock
	hasher *blockhash.Hasher
	log    *slog.Logger

	ready chan struct{}
	id    atomic.Uint64
	wake  chan struct{}

	events  atomic.Uint64
	notices atomic.Uint64

	mu       sync.Mutex
	engine   *Engine
	replies  map[string]pending
	eventID  uint64
	evBuf    []Event
	noteBuf  []Notice
	buf      []byte
	nextLoad time.Duration
}

// publisher is where a worker publishes: its NATS connection, or a
// recorder in tests. Publish is called under the worker's mutex and must
// not block for long.
type publisher interface {
	Publish(subject string, data []byte) error
}

var _ publisher = (*nats.Conn)(nil)

// pending is a request whose replies are not all sent.
type pending struct {
	reply    string
	received time.Duration
}

// newWorker builds a worker; it starts nothing.
func newWorker(cfg WorkerConfig, index int, nc *nats.Conn, etcd *clientv3.Client, clock Clock, log *slog.Logger) (*Worker, error) {
	e, err := NewEngine(cfg.Engine)
	if err != nil {
		return nil, err
	}
	h, err := blockhash.NewHasher(cfg.Engine.BlockSize, blockhash.Options{})
	if err != nil {
		return nil, err
	}
	w := &Worker{
		cfg: cfg, index: index, nc: nc, etcd: etcd, clock: clock, hasher: h, log: log,
		ready: make(chan struct{}), wake: make(chan struct{}, 1),
		engine: e, replies: make(map[string]pending),
	}
	if nc != nil {
		w.pub = nc
	}
	return w, nil
}

// Info returns the worker's identity; its ID is 0 until it has registered.
func (w *Worker) Info() WorkerInfo {
	id := w.id.Load()
	return WorkerInfo{Index: w.index, ID: id, Subject: GenerateSubject(w.cfg.Namespace, w.cfg.Component, id)}
}

// Stats returns the worker's engine counts and load.
func (w *Worker) Stats() EngineStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.engine.Stats()
}

// Engine runs f with the worker's engine locked, for tests that inspect the
// cache.
func (w *Worker) Engine(f func(*Engine)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(w.engine)
}

// published returns what the worker has published so far.
func (w *Worker) published() Published {
	return Published{Events: w.events.Load(), Notices: w.notices.Load()}
}

// Run registers the worker and serves until ctx ends, then withdraws it:
// unsubscribes and revokes its lease, so that routers drop it at once. It
// returns after every goroutine it started has exited.
func (w *Worker) Run(ctx context.Context) error {
	lease, err := w.grant(ctx)
	if err != nil {
		return err
	}
	id := uint64(lease)
	w.id.Store(id)
	log := w.log.With("worker_id", id)
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if _, err := w.etcd.Revoke(rctx, lease); err != nil {
			log.Warn("revoke lease", "err", err)
		}
	}()

	subject := GenerateSubject(w.cfg.Namespace, w.cfg.Component, id)
	sub, err := w.nc.Subscribe(subject, w.onGenerate)
	if err != nil {
		return fmt.Errorf("worker %x: subscribe %s: %w", id, subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.SetPendingLimits(-1, 1<<30); err != nil {
		return fmt.Errorf("worker %x: pending limits: %w", id, err)
	}
	if err := flush(ctx, w.nc); err != nil {
		return fmt.Errorf("worker %x: flush subscription: %w", id, err)
	}
	if err := w.register(ctx, lease, subject); err != nil {
		return err
	}
	keep, err := w.etcd.KeepAlive(ctx, lease)
	if err != nil {
		return fmt.Errorf("worker %x: keep lease alive: %w", id, err)
	}
	close(w.ready)
	log.Debug("simulated worker registered", "subject", subject)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		for range keep { //nolint:revive // draining the keep-alive responses
		}
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("worker %x: etcd lease lost", id)
	})
	if wc, ok := w.clock.(*WallClock); ok {
		g.Go(func() error { return w.loop(gctx, wc) })
		g.Go(func() error { return w.publishLoad(gctx, wc) })
	}
	return g.Wait()
}

// grant obtains the worker's lease, with the configured id if any.
func (w *Worker) grant(ctx context.Context) (clientv3.LeaseID, error) {
	ttl := int64(max(w.cfg.LeaseTTL, time.Second) / time.Second)
	if w.cfg.LeaseID == 0 {
		resp, err := w.etcd.Grant(ctx, ttl)
		if err != nil {
			return 0, fmt.Errorf("worker %d: grant lease: %w", w.index, err)
		}
		return resp.ID, nil
	}
	resp, err := clientv3.RetryLeaseClient(w.etcd).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: ttl, ID: w.cfg.LeaseID})
	if err != nil {
		return 0, fmt.Errorf("worker %d: grant lease %x: %w", w.index, w.cfg.LeaseID, err)
	}
	return clientv3.LeaseID(resp.ID), nil
}

// register writes the instance and its model card on the lease.
func (w *Worker) register(ctx context.Context, lease clientv3.LeaseID, subject string) error {
	id := uint64(lease)
	hex := strconv.FormatUint(id, 16)
	path := w.cfg.Namespace + "/" + w.cfg.Component + "/generate/" + hex
	inst := workers.InstanceValue(w.cfg.Namespace, w.cfg.Component, "generate", id, subject)
	e := w.cfg.Engine
	card, err := json.Marshal(cardRecord{
		Type: "Model", Namespace: w.cfg.Namespace, Component: w.cfg.Component, Endpoint: "generate", InstanceID: id,
		CardJSON: cardJSON{
			DisplayName: w.cfg.Model, KVCacheBlockSize: e.BlockSize, ContextLength: e.NumGPUBlocks * e.BlockSize,
			RuntimeConfig: runtimeConfig{
				TotalKVBlocks: e.NumGPUBlocks, MaxNumSeqs: e.MaxNumSeqs, MaxNumBatchedTokens: e.MaxNumBatchedTokens,
				DataParallelStartRank: 0, DataParallelSize: 1,
			},
		},
	})
	if err != nil {
		return err
	}
	_, err = w.etcd.Txn(ctx).Then(
		clientv3.OpPut("v1/mdc/"+path, string(card), clientv3.WithLease(lease)),
		clientv3.OpPut("v1/instances/"+path, string(inst), clientv3.WithLease(lease)),
	).Commit()
	if err != nil {
		return fmt.Errorf("worker %x: register in etcd: %w", id, err)
	}
	return nil
}

// loop drives the engine in real time: it sleeps until the step in flight
// ends, completes it, and goes on; idle, it waits for a request.
func (w *Worker) loop(ctx context.Context, clock *WallClock) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		w.mu.Lock()
		end, busy := w.engine.Next()
		w.mu.Unlock()
		if !busy {
			select {
			case <-ctx.Done():
				return nil
			case <-w.wake:
			}
			continue
		}
		if d := clock.WallUntil(end); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
		}
		w.mu.Lock()
		w.advanceLocked(end)
		w.mu.Unlock()
	}
}

// publishLoad publishes the worker's load every LoadInterval of simulated
// time, in real-time mode.
func (w *Worker) publishLoad(ctx context.Context, clock *WallClock) error {
	if w.cfg.LoadInterval <= 0 {
		return nil
	}
	t := time.NewTicker(max(time.Duration(float64(w.cfg.LoadInterval)/clock.Speedup()), time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		w.mu.Lock()
		w.publishLoadLocked()
		w.mu.Unlock()
	}
}

func (w *Worker) publishLoadLocked() {
	msg := marshalLoad(w.id.Load(), w.engine.Stats(), w.cfg.Engine.MaxNumSeqs)
	if err := w.pub.Publish(LoadSubject(w.cfg.Namespace), msg); err != nil {
		w.log.Debug("publish load", "err", err)
	}
}

// advanceLocked completes the engine's steps up to t and publishes what
// they did. w.mu is held.
func (w *Worker) advanceLocked(t time.Duration) {
	w.noteBuf = w.engine.Advance(t, w.noteBuf[:0])
	w.publishEventsLocked()
	for _, n := range w.noteBuf {
		p, ok := w.replies[n.RequestID]
		if !ok {
			continue
		}
		r := GenerateReply{
			RequestID: n.RequestID, WorkerID: w.id.Load(),
			ReceivedAt: p.received.Seconds(), ScheduledAt: n.Scheduled.Seconds(), FirstTokenAt: n.FirstToken.Seconds(),
			PromptBlocks: n.PromptBlocks, CachedBlocks: n.CachedBlocks, OutputTokens: n.OutputTokens,
		}
		switch n.Kind {
		case NoticeFirstToken:
			r.Event = ReplyFirstToken
		case NoticeDone:
			r.Event = ReplyDone
			r.DoneAt = n.Done.Seconds()
			delete(w.replies, n.RequestID)
		}
		w.reply(p.reply, &r)
		w.notices.Add(1)
	}
	clear(w.noteBuf)
	if _, lockstep := w.clock.(*ManualClock); lockstep && w.cfg.LoadInterval > 0 && t >= w.nextLoad {
		w.publishLoadLocked()
		w.nextLoad = (t/w.cfg.LoadInterval + 1) * w.cfg.LoadInterval
	}
}

// publishEventsLocked publishes the cache's new KV events, numbered on.
func (w *Worker) publishEventsLocked() {
	w.evBuf = w.engine.TakeEvents(w.evBuf[:0])
	subject := EventsSubject(w.cfg.Namespace, w.cfg.Component)
	for _, ev := range w.evBuf {
		w.buf = AppendRouterEvent(w.buf[:0], w.id.Load(), w.eventID, ev)
		w.eventID++
		if err := w.pub.Publish(subject, w.buf); err != nil {
			w.log.Warn("publish kv event", "err", err)
		}
		w.events.Add(1)
	}
	clear(w.evBuf)
}

// onGenerate takes a generate request (NATS callback).
func (w *Worker) onGenerate(msg *nats.Msg) {
	if msg.Reply == "" {
		return // nobody to answer: a generate request needs a reply subject
	}
	req, err := DecodeGenerateRequest(msg.Data)
	if err != nil {
		w.reply(msg.Reply, &GenerateReply{Event: ReplyError, WorkerID: w.id.Load(),
			Error: &ReplyErrorBody{Code: CodeBadRequest, Message: err.Error()}})
		return
	}
	locals := w.hasher.LocalHashes(make([]uint64, 0, len(req.TokenIDs)/w.cfg.Engine.BlockSize), req.TokenIDs)
	seqs := w.hasher.SequenceHashes(make([]uint64, 0, len(locals)), locals)
	blocks := make([]Block, len(locals))
	for i := range locals {
		blocks[i] = Block{Hash: seqs[i], TokensHash: locals[i]}
	}
	w.mu.Lock()
	now := w.clock.Now()
	err = w.engine.Submit(now, Request{ID: req.RequestID, PromptTokens: len(req.TokenIDs), Blocks: blocks, MaxTokens: req.MaxTokens})
	r := GenerateReply{RequestID: req.RequestID, WorkerID: w.id.Load(), ReceivedAt: now.Seconds()}
	if err != nil {
		r.Event = ReplyError
		r.Error = &ReplyErrorBody{Code: errorCode(err), Message: err.Error()}
	} else {
		r.Event = ReplyAccepted
		w.replies[req.RequestID] = pending{reply: msg.Reply, received: now}
		// Admission into an idle engine may have evicted blocks: say so
		// before anyone routes on the old contents.
		w.publishEventsLocked()
	}
	w.reply(msg.Reply, &r)
	w.mu.Unlock()
	if err == nil {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// errorCode maps an engine error to a reply code.
func errorCode(err error) string {
	switch {
	case errors.Is(err, ErrQueueFull):
		return CodeQueueFull
	case errors.Is(err, ErrTooLong):
		return CodeTooLong
	case errors.Is(err, ErrBadRequest):
		return CodeBadRequest
	}
	return CodeInternal
}

func (w *Worker) reply(subject string, r *GenerateReply) {
	b, err := json.Marshal(r)
	if err == nil {
		err = w.pub.Publish(subject, b)
	}
	if err != nil {
		w.log.Warn("publish generate reply", "request_id", r.RequestID, "err", err)
	}
}
