package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/embedded"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/sim"
	"github.com/kvrouter/router/stack"
	"github.com/kvrouter/router/workers"
)

// TestMain runs the tests and the examples, stops the examples' router,
// then checks that no goroutine is left.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := examples.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "examples' router:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(testutil.LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// exampleWorker is the simulated worker's instance id in the examples.
const exampleWorker = 1000

// examples is the router the examples run against: Example functions
// take no arguments, so they find it here. The first example that needs
// it starts it; TestMain stops it after the last.
var examples exampleRouter

// exampleRouter is embedded NATS and etcd, a router with its defaults
// (block size 128) and one simulated worker of id exampleWorker.
type exampleRouter struct {
	once sync.Once
	url  string
	err  error
	// cancel and wait stop the router and the worker; closers then
	// release the rest, in reverse order.
	cancel  context.CancelFunc
	wait    func() error
	closers []func()
}

// exampleNATSURL returns the NATS URL of the examples' router, started on
// first use.
func exampleNATSURL() string {
	examples.once.Do(examples.start)
	if examples.err != nil {
		panic(fmt.Sprintf("examples' router: %v", examples.err))
	}
	return examples.url
}

func (e *exampleRouter) start() {
	dir, err := os.MkdirTemp("", "client-examples-")
	if err != nil {
		e.err = err
		return
	}
	e.closers = append(e.closers, func() { _ = os.RemoveAll(dir) })
	ns, err := embedded.StartNATS(embedded.NATSConfig{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		e.err = err
		return
	}
	e.closers = append(e.closers, ns.Close)
	es, err := embedded.StartEtcd(embedded.EtcdConfig{ClientURL: "http://127.0.0.1:0", PeerURL: "http://127.0.0.1:0", Dir: filepath.Join(dir, "etcd")})
	if err != nil {
		e.err = err
		return
	}
	e.closers = append(e.closers, es.Close)
	e.url = ns.URL()
	e.err = e.run(ns.URL(), es.Endpoint())
}

// run starts the router and the worker and waits until the router routes
// to the worker.
func (e *exampleRouter) run(natsURL, etcdURL string) error {
	var ncs [2]*nats.Conn
	var ecs [2]*clientv3.Client
	for i := range 2 {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			return err
		}
		e.closers = append(e.closers, nc.Close)
		ec, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		e.closers = append(e.closers, func() { _ = ec.Close() })
		ncs[i], ecs[i] = nc, ec
	}
	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		return err
	}
	st, err := stack.New(stack.Config{RouterID: 1, KVEvents: true, Events: events.DefaultConfig(), Workers: workers.DefaultConfig(),
		Scheduler: scheduler.DefaultConfig(), Service: service.DefaultConfig()}, ncs[0], ecs[0], m, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	fc := sim.DefaultFleetConfig()
	fc.Workers, fc.Worker.LeaseID, fc.Speedup = 1, exampleWorker, 100
	fc.Worker.Engine.BlockSize = scheduler.DefaultBlockSize
	fleet, err := sim.NewFleet(fc, ncs[1], ecs[1], slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return st.Run(gctx) })
	g.Go(func() error { return fleet.Run(gctx) })
	e.cancel, e.wait = cancel, g.Wait
	// testutil.Eventually, without a *testing.T.
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		_, listed := st.Registry().Snapshot().Get(indexer.WorkerID(exampleWorker))
		_, err := ncs[0].Request(service.Subject("dynamo", "router", "overlap_scores"), []byte(`{"token_ids":[]}`), time.Second)
		if listed && err == nil {
			return nil
		}
		select {
		case <-tick.C:
		case <-gctx.Done():
			return fmt.Errorf("the router or the worker stopped: %w", context.Cause(gctx))
		case <-deadline:
			return errors.New("the router did not list the simulated worker within 30s")
		}
	}
}

// stop stops what start started, if anything.
func (e *exampleRouter) stop() error {
	var err error
	if e.cancel != nil {
		e.cancel()
		err = e.wait()
	}
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	return err
}
