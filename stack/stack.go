package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/httpapi"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/status"
	"github.com/kvrouter/router/warmstart"
	"github.com/kvrouter/router/workers"
	"github.com/kvrouter/router/zmqevents"
)

// Config is the router's configuration, as `serve` and `compare` both build
// it: each part's own configuration, and what ties them together.
type Config struct {
	// RouterID is the router's instance id: its durable consumer's name,
	// its replica-sync identity and its metrics' router_id.
	RouterID uint64
	// MaxIndexEntries caps the index's (worker, block) entries; 0 is no cap.
	MaxIndexEntries int
	// KVEvents subscribes to the workers' KV events; off is approximate
	// mode, where the router indexes its own decisions.
	KVEvents  bool
	Events    events.Config
	Workers   workers.Config
	Scheduler scheduler.Config
	Service   service.Config
	// HTTP configures the HTTP API (the endpoints of Service over HTTP);
	// nil runs none. Its QueueTimeout is taken from Scheduler.
	HTTP *httpapi.Config
	// Status configures the status server (/health, /live, /metrics); nil
	// runs none.
	Status *status.Config
	// Gatherer is what /metrics serves (with Status).
	Gatherer prometheus.Gatherer
	// Rand seeds the scheduler's choices; nil means from entropy.
	Rand *rand.Rand
	// WarmStartChunkSize is the most snapshot bytes this router sends a
	// joiner per message; 0 means the NATS maximum payload less a margin
	// (warmstart.Config.ChunkSize). Tests set it small.
	WarmStartChunkSize int
	// WorkersFileReload reads Workers.WorkersFile again at each value
	// (`router serve` has signal.Notify send SIGHUP); nil never does.
	WorkersFileReload <-chan os.Signal
	// EventPlane is how Dynamo's workers publish their KV events:
	// EventPlaneNATS (NATS subjects) or EventPlaneZMQ (Dynamo's ZMQ event
	// plane, its publishers discovered in etcd). Engines of the workers
	// file publish over ZMQ either way.
	EventPlane string
	// ZMQ configures the ZMQ subscriptions; a zero value takes
	// zmqevents.DefaultConfig of the router's block size.
	ZMQ zmqevents.Config
}

// The event planes of Config.EventPlane.
const (
	EventPlaneNATS = "nats"
	EventPlaneZMQ  = "zmq"
)

// CheckEventPlane checks an event plane (flag --event-plane) for a router
// with or without etcd: the ZMQ plane's publishers are discovered in etcd.
func CheckEventPlane(plane string, etcdOff bool) error {
	switch {
	case plane != EventPlaneNATS && plane != EventPlaneZMQ:
		return fmt.Errorf("--event-plane: %q is not nats or zmq", plane)
	case plane == EventPlaneZMQ && etcdOff:
		return errors.New("--event-plane: zmq discovers its publishers in etcd, but --etcd-endpoints is empty")
	}
	return nil
}

// Stack is the whole router, built and not yet running.
type Stack struct {
	idx    *indexer.Index
	writer *events.Writer
	router *scheduler.Router
	reg    *workers.Registry
	disc   *workers.Discovery  // nil with etcd off (Workers.NoEtcd)
	file   *workers.FileSource // nil without Workers.WorkersFile
	load   *workers.LoadSubscriber
	sub    *events.Subscriber // nil in approximate mode
	// zmq subscribes to ZMQ publishers: the workers file's engines and,
	// with EventPlaneZMQ, Dynamo's event plane (plane discovers those).
	// Both nil in approximate mode; plane nil on NATS.
	zmq    *zmqevents.Source
	plane  *zmqevents.Plane
	svc    *service.Service
	http   *httpapi.Server // nil without Config.HTTP
	status *status.Server  // nil without Config.Status

	// joiner runs the warm start; warm says whether Run tries one (KV
	// events on, not durable, a timeout set). snap serves this router's
	// snapshots to joiners once its own warm start is over (nil in
	// approximate and durable mode).
	joiner *warmstart.Joiner
	warm   bool
	snap   *warmstart.Server
	// warmDone is set once the warm start has finished (or was not
	// tried): the service answers and kv_events is ready only then.
	warmDone atomic.Bool
}

// Names of the servers of a ListenError.
const (
	ServerHTTP   = "http"
	ServerStatus = "status"
)

// ListenError is a port New could not bind: which server's (ServerHTTP or
// ServerStatus), so that the caller can name the setting that moves it.
type ListenError struct {
	Server string
	Err    error
}

// Error returns the server's own message, which names the address.
func (e *ListenError) Error() string { return e.Err.Error() }

// Unwrap returns the cause (syscall.EADDRINUSE for a port in use).
func (e *ListenError) Unwrap() error { return e.Err }

// New builds the router's parts on nc and etcd (nil, and unused, with
// cfg.Workers.NoEtcd); each builds its own metric
// families from m, so that a scrape right after New shows every scalar
// family. It starts nothing; Run does. With Config.HTTP and Config.Status
// it binds their ports now, so that a port in use fails here, at once, with
// a *ListenError.
func New(cfg Config, nc *nats.Conn, etcd *clientv3.Client, m *metrics.Router, log *slog.Logger) (_ *Stack, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Stack{idx: indexer.NewIndex(indexer.Config{MaxEntries: cfg.MaxIndexEntries})}
	if cfg.Events.RouterID == "" {
		cfg.Events.RouterID = fmt.Sprint(cfg.RouterID)
	}
	if s.writer, err = events.NewWriter(cfg.Events, s.idx, m, log); err != nil {
		return nil, fmt.Errorf("index writer: %w", err)
	}
	cfg.Scheduler.UseKVEvents = cfg.KVEvents
	cfg.Service.RouterID = cfg.RouterID
	opts := scheduler.Options{Rand: cfg.Rand, Log: log}
	var pub *service.SyncPublisher // replica sync: the Router publishes, the service carries
	if cfg.Scheduler.ReplicaSync {
		pub = service.NewSyncPublisher(nc, cfg.Service, log)
		opts.Publisher = pub
	}
	if s.router, err = scheduler.New(cfg.Scheduler, s.idx, s.writer, m, opts); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	sinks := workers.Sinks{Index: s.writer, Fleet: s.router}
	// The ZMQ families exist in every mode, as every family does.
	if _, err = zmqevents.NewMetrics(m); err != nil {
		return nil, err
	}
	if cfg.KVEvents {
		zc := cfg.ZMQ
		if zc == (zmqevents.Config{}) {
			zc = zmqevents.DefaultConfig(cfg.Workers.BlockSize)
		}
		if s.zmq, err = zmqevents.New(zc, s.writer, m, log); err != nil {
			return nil, err
		}
		sinks.Engines = engineSink{src: s.zmq, log: log}
	}
	if s.reg, err = workers.NewRegistry(cfg.Workers, sinks, m, log); err != nil {
		return nil, fmt.Errorf("worker registry: %w", err)
	}
	if !cfg.Workers.NoEtcd {
		if s.disc, err = workers.NewDiscovery(cfg.Workers, etcd, s.reg, log); err != nil {
			return nil, fmt.Errorf("worker discovery: %w", err)
		}
	}
	if cfg.Workers.WorkersFile != "" {
		if s.file, err = workers.NewFileSource(cfg.Workers, s.reg, cfg.WorkersFileReload); err != nil {
			return nil, err
		}
	}
	if s.load, err = workers.NewLoadSubscriber(cfg.Workers, nc, s.reg, m, log); err != nil {
		return nil, fmt.Errorf("worker load: %w", err)
	}
	if cfg.KVEvents {
		if s.sub, err = events.NewSubscriber(cfg.Events, nc, s.writer, m, log); err != nil {
			return nil, fmt.Errorf("kv events: %w", err)
		}
	}
	if cfg.EventPlane == "" {
		cfg.EventPlane = EventPlaneNATS
	}
	if err = CheckEventPlane(cfg.EventPlane, cfg.Workers.NoEtcd); err != nil {
		return nil, err
	}
	if cfg.EventPlane == EventPlaneZMQ && cfg.KVEvents {
		comps := []string{cfg.Workers.Component}
		if p := cfg.Workers.PrefillComponent; p != "" && p != cfg.Workers.Component {
			comps = append(comps, p)
		}
		if s.plane, err = zmqevents.NewPlane(etcd, s.zmq, cfg.Workers.Namespace, comps, m, log); err != nil {
			return nil, err
		}
	}
	// The warm start's families exist in every mode, as every family does.
	wcfg := warmstart.Config{Namespace: cfg.Service.Namespace, Component: cfg.Service.Component, RouterID: cfg.RouterID,
		Timeout: cfg.Events.WarmStartTimeout, ChunkSize: cfg.WarmStartChunkSize}
	if s.joiner, err = warmstart.NewJoiner(wcfg, nc, m, log); err != nil {
		return nil, err
	}
	// Durable mode rebuilds the index from JetStream (its snapshot and
	// stream) and its event_ids follow its consumer, not the live
	// subjects: it neither asks for nor serves peers' snapshots.
	if cfg.KVEvents && !cfg.Events.Durable {
		s.warm = cfg.Events.WarmStartTimeout > 0
		if s.snap, err = warmstart.NewServer(wcfg, nc, s.sub, log); err != nil {
			return nil, err
		}
	}
	if s.svc, err = service.New(cfg.Service, nc, s.router, s.reg, pub, m, log); err != nil {
		return nil, fmt.Errorf("routing service: %w", err)
	}
	// The HTTP families are registered whether or not the API is served,
	// as every family is from the start (docs/metrics.md).
	if _, err = httpapi.NewMetrics(m); err != nil {
		return nil, err
	}
	if cfg.HTTP != nil {
		hc := *cfg.HTTP
		hc.QueueTimeout = cfg.Scheduler.QueueTimeout
		if s.http, err = httpapi.New(hc, s.svc.Handler(), m, log); err != nil {
			return nil, err
		}
		if _, err = s.http.Listen(); err != nil {
			return nil, &ListenError{Server: ServerHTTP, Err: err}
		}
		defer func() {
			if err != nil {
				_ = s.http.Close()
			}
		}()
	}
	if cfg.Status != nil {
		if err = cfg.Status.Validate(); err != nil {
			return nil, err
		}
		s.status = status.New(*cfg.Status, cfg.Gatherer, log)
		if _, err = s.status.Listen(); err != nil {
			return nil, &ListenError{Server: ServerStatus, Err: err}
		}
		s.addChecks(s.status, nc, cfg.Workers.BlockSize)
	}
	return s, nil
}

// Run runs every part until ctx ends or one fails, and returns after all
// have stopped: the transports and the service first, then the index
// writer, once it has applied what they submitted.
//
// Start-up order: the writer, the registry, discovery, the load and KV-event
// subscribers, the scheduler and the status server start at once. With a
// warm start, the writer holds the KV events from the first one on, and
// once the subscriptions are live the joiner loads a peer's snapshot and
// releases them (package warmstart). Only then do the service, the HTTP API
// and the snapshot server start, and kv_events turns ready: a router
// answers routes, and serves its index to other joiners, only with its
// index loaded.
func (s *Stack) Run(ctx context.Context) error {
	if s.warm {
		if err := s.writer.Hold(); err != nil {
			return err
		}
	}
	wctx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWriter()
	werr := make(chan error, 1)
	go func() { werr <- s.writer.Run(wctx) }()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.reg.Run(gctx, s.writer.Notices()) })
	if s.disc != nil {
		g.Go(func() error { return s.disc.Run(gctx) })
	}
	if s.file != nil {
		g.Go(func() error { return s.file.Run(gctx) })
	}
	g.Go(func() error { return s.load.Run(gctx) })
	if s.sub != nil {
		g.Go(func() error { return s.sub.Run(gctx) })
	}
	if s.zmq != nil {
		g.Go(func() error { return s.zmq.Run(gctx) })
	}
	if s.plane != nil {
		g.Go(func() error { return s.plane.Run(gctx) })
	}
	g.Go(func() error { return s.router.Run(gctx) })
	if s.status != nil {
		g.Go(func() error { return s.status.Run(gctx) })
	}
	g.Go(func() error { return s.serve(gctx) })
	err := g.Wait()
	stopWriter()
	if e := <-werr; err == nil {
		err = e
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// serve runs the warm start, then the parts that answer requests: the
// service, the HTTP API and the snapshot server. If ctx ends first, it
// closes the HTTP API's listener, which New bound.
func (s *Stack) serve(ctx context.Context) error {
	if err := s.warmStart(ctx); err != nil {
		if s.http != nil {
			_ = s.http.Close()
		}
		return nil // ctx ended
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.svc.Run(gctx) })
	if s.http != nil {
		g.Go(func() error { return s.http.Run(gctx) })
	}
	if s.snap != nil {
		g.Go(func() error { return s.snap.Run(gctx) })
	}
	return g.Wait()
}

// warmStart loads a peer's snapshot once the KV-event subscriptions are
// live (see Run), or records that none was tried. It returns an error only
// when ctx ended first.
func (s *Stack) warmStart(ctx context.Context) error {
	if !s.warm {
		s.joiner.Disabled()
		s.warmDone.Store(true)
		return nil
	}
	select {
	case <-s.sub.Subscribed():
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, err := s.joiner.Join(ctx, s.writer); err != nil {
		return err
	}
	s.warmDone.Store(true)
	return nil
}

// EventsReady reports whether the KV events are live (always, in
// approximate mode): subscriptions registered, the warm start over and, in
// durable mode, the stream replayed.
func (s *Stack) EventsReady() bool { return s.sub == nil || (s.sub.Ready() && s.warmDone.Load()) }

// WarmStarting reports whether the warm start is still loading the index.
func (s *Stack) WarmStarting() bool { return s.sub != nil && !s.warmDone.Load() }

// Divergence returns whether the index is diverging, with the figures of
// the window (events.Writer.Divergence).
func (s *Stack) Divergence() events.Divergence { return s.writer.Divergence() }

// EventStats returns the KV event counts (zero in approximate mode).
func (s *Stack) EventStats() events.Stats {
	if s.sub == nil {
		return events.Stats{}
	}
	return s.sub.Stats()
}

// StatusAddr returns the status server's listening address, or "" when it
// is off.
func (s *Stack) StatusAddr() string {
	if s.status == nil {
		return ""
	}
	return s.status.Addr()
}

// HTTPAddr returns the HTTP API's listening address, or "" when it is
// off.
func (s *Stack) HTTPAddr() string {
	if s.http == nil {
		return ""
	}
	return s.http.Addr()
}

// Registry returns the worker registry.
func (s *Stack) Registry() *workers.Registry { return s.reg }

// Publishers returns the state of each ZMQ publisher the router subscribes
// to (none in approximate mode).
func (s *Stack) Publishers() []zmqevents.PublisherStatus {
	if s.zmq == nil {
		return nil
	}
	return s.zmq.Status()
}

// Index returns the KV index, for reads.
func (s *Stack) Index() *indexer.Index { return s.idx }

// Router returns the scheduler.
func (s *Stack) Router() *scheduler.Router { return s.router }

// engineSink hands the workers file's engines to the ZMQ source: one
// publisher per data-parallel rank of each worker with kv_events.
type engineSink struct {
	src *zmqevents.Source
	log *slog.Logger
}

// SetFileWorkers replaces the source's workers-file group. The registry
// calls it under its lock; Source.Set neither blocks nor calls back.
func (e engineSink) SetFileWorkers(ws []workers.FileWorker) {
	var eps []zmqevents.Endpoint
	for _, w := range ws {
		kv := w.KVEvents
		if kv == nil {
			continue
		}
		eng, err := zmqevents.ParseEngine(kv.Engine)
		var rank []zmqevents.Endpoint
		if err == nil {
			rank, err = zmqevents.EngineEndpoints(w.ID, w.DPSize, kv.Endpoint, kv.ReplayEndpoint, kv.Topic, eng)
		}
		if err != nil {
			// The file's decoder checked what this checks again.
			e.log.Error("workers file: kv_events not subscribed", slog.Uint64("worker_id", uint64(w.ID)), slog.Any("error", err))
			continue
		}
		eps = append(eps, rank...)
	}
	e.src.Set(FileGroup, eps)
}

// FileGroup is the ZMQ source's group of the workers file's engines.
const FileGroup = "workers-file"
