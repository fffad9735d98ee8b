package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// ErrNotLockstep is returned by AdvanceTo on a fleet that runs in real time.
var ErrNotLockstep = errors.New("fleet does not run in lockstep")

// MaxWorkers caps the workers of one fleet.
const MaxWorkers = 4096

// FleetConfig is a set of identical simulated workers in one process.
type FleetConfig struct {
	// Workers is how many.
	Workers int
	// Worker configures each; with Worker.LeaseID set, worker i asks for
	// lease LeaseID+i.
	Worker WorkerConfig
	// Lockstep makes simulated time move only through AdvanceTo, for
	// deterministic replays; otherwise it runs Speedup times as fast as
	// the wall clock.
	Lockstep bool
	// Speedup is the ratio of simulated to wall time in real-time mode.
	Speedup float64
}

// DefaultFleetConfig returns 8 workers of the default engine in namespace
// dynamo, component backend, in real time.
func DefaultFleetConfig() FleetConfig {
	return FleetConfig{
		Workers: 8,
		Worker: WorkerConfig{
			Namespace: "dynamo", Component: "backend", Model: "sim-8b",
			Engine:   DefaultEngineConfig(),
			LeaseTTL: 10 * time.Second, LoadInterval: time.Second,
		},
		Speedup: 1,
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// Validate reports every field out of range, naming its flag.
func (c FleetConfig) Validate() error {
	var errs []error
	if c.Workers < 1 || c.Workers > MaxWorkers {
		errs = append(errs, fmt.Errorf("--workers: %d is outside 1..%d", c.Workers, MaxWorkers))
	}
	if !nameRE.MatchString(c.Worker.Namespace) {
		errs = append(errs, fmt.Errorf("--namespace: %q must be 1..128 letters, digits, '-' or '_'", c.Worker.Namespace))
	}
	if !nameRE.MatchString(c.Worker.Component) {
		errs = append(errs, fmt.Errorf("--component: %q must be 1..128 letters, digits, '-' or '_'", c.Worker.Component))
	}
	if c.Worker.LeaseTTL < 2*time.Second || c.Worker.LeaseTTL > 5*time.Minute {
		errs = append(errs, fmt.Errorf("--lease-ttl: %v is outside 2s..5m", c.Worker.LeaseTTL))
	}
	if c.Worker.LeaseID < 0 || c.Worker.LeaseID > 1<<62 {
		errs = append(errs, fmt.Errorf("--first-lease-id: %d is outside 0..2^62", c.Worker.LeaseID))
	}
	if c.Worker.LoadInterval < 0 || c.Worker.LoadInterval > time.Hour {
		errs = append(errs, fmt.Errorf("--load-interval: %v is outside 0..1h (0 turns load messages off)", c.Worker.LoadInterval))
	}
	if !c.Lockstep && (c.Speedup < 0.01 || c.Speedup > 1e4) {
		errs = append(errs, fmt.Errorf("--speedup: %g is outside 0.01..10000", c.Speedup))
	}
	if err := c.Worker.Engine.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Fleet runs many simulated workers in one process, on one NATS connection
// and one etcd client that the caller owns.
//
// Run owns every goroutine of the fleet: per worker, the lease keep-alive
// and in real-time mode the step loop and the load publisher; NATS runs the
// generate handlers on its own goroutines. In lockstep mode simulated time
// stands still until AdvanceTo moves it; AdvanceTo must not be called by
// two goroutines at once, and should be called only while Run runs. The
// other methods are safe for concurrent use.
type Fleet struct {
	cfg     FleetConfig
	nc      *nats.Conn
	clock   Clock
	manual  *ManualClock
	workers []*Worker
	ready   chan struct{}

	advance sync.Mutex
}

// NewFleet checks cfg and builds the workers; it starts nothing.
func NewFleet(cfg FleetConfig, nc *nats.Conn, etcd *clientv3.Client, log *slog.Logger) (*Fleet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, nc: nc, ready: make(chan struct{})}
	if cfg.Lockstep {
		f.manual = &ManualClock{}
		f.clock = f.manual
	} else {
		f.clock = NewWallClock(cfg.Speedup)
	}
	for i := range cfg.Workers {
		wc := cfg.Worker
		if wc.LeaseID != 0 {
			wc.LeaseID += int64(i)
		}
		w, err := newWorker(wc, i, nc, etcd, f.clock, log)
		if err != nil {
			return nil, err
		}
		f.workers = append(f.workers, w)
	}
	return f, nil
}

// Run registers every worker and serves until ctx ends or a worker fails,
// then withdraws them all. It returns after all goroutines have exited; nil
// after a cancellation.
func (f *Fleet) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, w := range f.workers {
		g.Go(func() error { return w.Run(gctx) })
	}
	g.Go(func() error {
		for _, w := range f.workers {
			select {
			case <-w.ready:
			case <-gctx.Done():
				return nil
			}
		}
		close(f.ready)
		return nil
	})
	return g.Wait()
}

// Ready is closed once every worker is registered.
func (f *Fleet) Ready() <-chan struct{} { return f.ready }

// Clock returns the fleet's clock.
func (f *Fleet) Clock() Clock { return f.clock }

// Workers describes the workers, in fleet order. IDs are 0 before Ready.
func (f *Fleet) Workers() []WorkerInfo {
	out := make([]WorkerInfo, len(f.workers))
	for i, w := range f.workers {
		out[i] = w.Info()
	}
	return out
}

// Worker returns worker i, for tests.
func (f *Fleet) Worker(i int) *Worker { return f.workers[i] }

// Stats returns each worker's engine counts, in fleet order.
func (f *Fleet) Stats() []EngineStats {
	out := make([]EngineStats, len(f.workers))
	for i, w := range f.workers {
		out[i] = w.Stats()
	}
	return out
}

// Published returns what the whole fleet has published so far.
func (f *Fleet) Published() Published {
	var p Published
	for _, w := range f.workers {
		q := w.published()
		p.Events += q.Events
		p.Notices += q.Notices
	}
	return p
}

// Next returns the earliest end of a step in flight; ok is false when every
// engine is idle.
func (f *Fleet) Next() (t time.Duration, ok bool) {
	for _, w := range f.workers {
		w.mu.Lock()
		end, busy := w.engine.Next()
		w.mu.Unlock()
		if busy && (!ok || end < t) {
			t, ok = end, true
		}
	}
	return t, ok
}

// AdvanceTo moves a lockstep fleet's clock to t: every step that ends by t
// completes (worker by worker, in fleet order), and its KV events and
// replies are published and flushed to the NATS server. Requests submitted
// afterwards arrive at t. It returns what the fleet has published so far.
func (f *Fleet) AdvanceTo(ctx context.Context, t time.Duration) (Published, error) {
	if f.manual == nil {
		return Published{}, ErrNotLockstep
	}
	f.advance.Lock()
	defer f.advance.Unlock()
	for _, w := range f.workers {
		w.mu.Lock()
		w.advanceLocked(t)
		w.mu.Unlock()
	}
	f.manual.Set(t)
	if err := flush(ctx, f.nc); err != nil {
		return Published{}, fmt.Errorf("advance to %v: flush nats: %w", t, err)
	}
	return f.Published(), nil
}

// flushTimeout bounds a NATS flush (a round trip to the server).
const flushTimeout = 10 * time.Second

// flush waits until the server has everything nc has published.
func flush(ctx context.Context, nc *nats.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	return nc.FlushWithContext(ctx)
}
