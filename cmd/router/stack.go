package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"

	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/workers"
)

// stackConfig configures the router's parts, as `serve` and `compare` both
// run them.
type stackConfig struct {
	RouterID        uint64
	MaxIndexEntries int
	// KVEvents subscribes to the workers' KV events; off is approximate mode.
	KVEvents  bool
	Events    events.Config
	Workers   workers.Config
	Scheduler scheduler.Config
	Service   service.Config
	// Rand seeds the scheduler's choices; nil means from entropy.
	Rand *rand.Rand
}

// stack is the router: index, worker registry and discovery, KV events,
// scheduler and NATS service, wired together.
type stack struct {
	idx    *indexer.Index
	reg    *workers.Registry
	disc   *workers.Discovery
	load   *workers.LoadSubscriber
	sub    *events.Subscriber // nil in approximate mode
	router *scheduler.Router
	svc    *service.Service
}

// newStack builds the router's parts on nc and etcd. It starts nothing.
func newStack(cfg stackConfig, nc *nats.Conn, etcd *clientv3.Client, m *metrics.Router, log *slog.Logger) (*stack, error) {
	s := &stack{idx: indexer.NewIndex(indexer.Config{MaxEntries: cfg.MaxIndexEntries})}
	// The registry removes a leaving worker from the index and from the
	// scheduler's bookkeeping.
	rm := service.NewRemover(s.idx)
	var err error
	if s.reg, err = workers.NewRegistry(cfg.Workers, rm, m, log); err != nil {
		return nil, fmt.Errorf("worker registry: %w", err)
	}
	if s.disc, err = workers.NewDiscovery(cfg.Workers, etcd, s.reg, log); err != nil {
		return nil, fmt.Errorf("worker discovery: %w", err)
	}
	if s.load, err = workers.NewLoadSubscriber(cfg.Workers, nc, s.reg, m, log); err != nil {
		return nil, fmt.Errorf("worker load: %w", err)
	}
	if cfg.KVEvents {
		if cfg.Events.RouterID == "" {
			cfg.Events.RouterID = fmt.Sprint(cfg.RouterID)
		}
		if s.sub, err = events.NewSubscriber(cfg.Events, nc, s.idx, m, log, events.WithObserver(s.reg)); err != nil {
			return nil, fmt.Errorf("kv events: %w", err)
		}
		s.reg.SetForgetter(s.sub)
	}
	cfg.Scheduler.UseKVEvents = cfg.KVEvents
	if s.router, err = scheduler.New(cfg.Scheduler, service.NewFleet(s.reg), s.idx, m, scheduler.Options{Rand: cfg.Rand, Log: log}); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	rm.Attach(s.router)
	cfg.Service.RouterID = cfg.RouterID
	if s.svc, err = service.New(cfg.Service, nc, s.router, m, log); err != nil {
		return nil, fmt.Errorf("routing service: %w", err)
	}
	return s, nil
}

// run runs every part until ctx ends or one fails, and returns after all
// have stopped.
func (s *stack) run(ctx context.Context) error {
	defer s.reg.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.disc.Run(gctx) })
	g.Go(func() error { return s.load.Run(gctx) })
	if s.sub != nil {
		g.Go(func() error { return s.sub.Run(gctx) })
	}
	g.Go(func() error { return s.router.Run(gctx) })
	g.Go(func() error { return s.svc.Run(gctx) })
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// ready reports whether the KV events are live (always, in approximate
// mode).
func (s *stack) eventsReady() bool { return s.sub == nil || s.sub.Ready() }
