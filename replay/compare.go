package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/internal/embedded"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/sim"
	"github.com/kvrouter/router/stack"
	"github.com/kvrouter/router/workers"
)

// CompareLeaseID is the first simulated worker's lease id in a comparison:
// fixed ids make two runs route identically.
const CompareLeaseID = 0x51a0_0000_0001

// CompareConfig is one comparison of router modes on a workload
// (`router compare`).
type CompareConfig struct {
	// Fleet configures the simulated workers, rebuilt fresh for each mode.
	Fleet sim.FleetConfig
	// Workload is replayed once per mode.
	Workload *Workload
	// Modes are the router modes compared, in order.
	Modes []scheduler.Mode
	// Seed seeds each router's choices, with the mode: two runs decide
	// alike.
	Seed uint64
	// Temperature is the routers' --router-temperature.
	Temperature float64
	// PrefillLoadScale is the kv routers' --router-prefill-load-scale, the
	// weight of prefill work (cached blocks credited) against decode
	// blocks; 0 means the default.
	PrefillLoadScale float64
	// SaturationPrefillTokens, SaturationDecodeBlocks and
	// PrefillLoadScaleSaturated are the kv routers'
	// --router-saturation-prefill-tokens,
	// --router-saturation-decode-blocks (both 0, off, by default) and
	// --router-prefill-load-scale-saturated (0 means the default): the
	// adaptive weight of prefill work. The other modes do not take them.
	SaturationPrefillTokens   int
	SaturationDecodeBlocks    int
	PrefillLoadScaleSaturated float64
	// CacheAffinity is the kv routers' --router-cache-affinity; nil means
	// the default (a pointer, since 0 turns it off). The other modes do
	// not take it.
	CacheAffinity *float64
	// Progress receives a line of progress now and then; nil for none.
	Progress io.Writer
	// Log receives the parts' logs; nil discards them.
	Log *slog.Logger
}

// Compare runs every mode of cfg in this process, on embedded NATS and
// etcd: for each, a fresh fleet of simulated workers and a fresh router
// built by stack.New as `router serve` builds it, with that mode, and the
// replay of the workload. It returns one result per mode, in order.
func Compare(ctx context.Context, cfg CompareConfig) ([]*Result, error) {
	if cfg.Workload == nil || len(cfg.Modes) == 0 {
		return nil, errors.New("compare: no workload or no modes")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "kvrouter-compare-")
	if err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	defer os.RemoveAll(dir)
	ns, err := embedded.StartNATS(embedded.NATSConfig{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	defer ns.Close()
	es, err := embedded.StartEtcd(embedded.EtcdConfig{ClientURL: "http://127.0.0.1:0", PeerURL: "http://127.0.0.1:0", Dir: filepath.Join(dir, "etcd")})
	if err != nil {
		return nil, fmt.Errorf("compare: %w", err)
	}
	defer es.Close()
	run := modeRuns{cfg: cfg}
	for i, name := range []string{"kvrouter-sim", "kvrouter", "kvrouter-replay"} {
		nc, err := nats.Connect(ns.URL(), nats.Name(name))
		if err != nil {
			return nil, fmt.Errorf("compare: %w", err)
		}
		defer nc.Close()
		run.nc[i] = nc
	}
	for i := range run.etcd {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{es.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return nil, fmt.Errorf("compare: %w", err)
		}
		defer cli.Close()
		run.etcd[i] = cli
	}
	var results []*Result
	for _, m := range cfg.Modes {
		res, err := run.one(ctx, m)
		if err != nil {
			return nil, fmt.Errorf("compare: %s: %w", m, err)
		}
		results = append(results, res)
	}
	return results, nil
}

// modeRuns is one Compare run's servers and connections.
type modeRuns struct {
	cfg  CompareConfig
	nc   [3]*nats.Conn // fleet, router, replay
	etcd [2]*clientv3.Client
}

// one runs one mode: a fresh fleet and router, the replay.
func (c *modeRuns) one(ctx context.Context, mode scheduler.Mode) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fleet, err := sim.NewFleet(c.cfg.Fleet, c.nc[0], c.etcd[0], c.cfg.Log)
	if err != nil {
		return nil, err
	}
	rt, err := c.router(mode)
	if err != nil {
		return nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return fleet.Run(gctx) })
	g.Go(func() error { return rt.Run(gctx) })

	var res *Result
	g.Go(func() error {
		defer cancel() // the replay is the job: when it ends, everything ends
		select {
		case <-fleet.Ready():
		case <-gctx.Done():
			return nil
		}
		index := map[uint64]int{}
		for _, w := range fleet.Workers() {
			index[w.ID] = w.Index
		}
		fc := c.cfg.Fleet
		rc, err := client.New(c.nc[2], client.WithNamespace(fc.Worker.Namespace), client.WithTimeout(10*time.Second))
		if err != nil {
			return err
		}
		if err := waitWorkers(gctx, rc, len(index)); err != nil {
			return err
		}
		cfg := DefaultConfig()
		cfg.Namespace, cfg.WorkerComponent, cfg.Mode = fc.Worker.Namespace, fc.Worker.Component, mode.String()
		cfg.Lockstep, cfg.Speedup = fc.Lockstep, fc.Speedup
		opts := Options{WorkerIndex: index, Progress: c.cfg.Progress, Log: c.cfg.Log}
		if fc.Lockstep {
			opts.Stepper, opts.Barrier = fleet, CountBarrier(rt.taken)
		}
		rp, err := New(cfg, c.nc[2], c.cfg.Workload, opts)
		if err != nil {
			return err
		}
		res, err = rp.Run(gctx)
		if err != nil {
			return err
		}
		res.RouterOverheadMs = rt.overheadMs()
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if res == nil {
		return nil, ctx.Err()
	}
	return res, nil
}

// waitWorkers waits until the router offers n workers.
func waitWorkers(ctx context.Context, rc *client.Client, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var known int
		loads, err := rc.PotentialLoads(ctx, client.Prompt{TokenIDs: []uint32{0}})
		if err == nil {
			known = len(loads.Loads)
			if known >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the router knows %d of %d workers after 30s (last error: %v)", known, n, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// simRouter is the router of one mode, built as `router serve` builds it
// (stack.New), with what a comparison needs on top: a seeded random source
// (ties and random mode repeat from run to run), the KV event count for the
// lockstep barrier, and the metrics registry for the decision time.
type simRouter struct {
	reg *prometheus.Registry
	*stack.Stack
}

// router builds the router of one mode.
func (c *modeRuns) router(mode scheduler.Mode) (*simRouter, error) {
	const routerID = 1
	fc := c.cfg.Fleet
	ns, comp := fc.Worker.Namespace, fc.Worker.Component
	rt := &simRouter{reg: prometheus.NewRegistry()}
	m, err := metrics.New(rt.reg, metrics.Config{Namespace: ns, Component: "router", RouterID: routerID})
	if err != nil {
		return nil, err
	}
	wcfg := workers.DefaultConfig()
	wcfg.Namespace, wcfg.Component, wcfg.BlockSize = ns, comp, fc.Worker.Engine.BlockSize
	scfg := scheduler.DefaultConfig()
	scfg.BlockSize, scfg.Mode, scfg.Temperature = fc.Worker.Engine.BlockSize, mode, c.cfg.Temperature
	if c.cfg.PrefillLoadScale != 0 {
		scfg.PrefillLoadScale = c.cfg.PrefillLoadScale
	}
	if mode == scheduler.ModeKV {
		scfg.SaturationPrefillTokens = c.cfg.SaturationPrefillTokens
		scfg.SaturationDecodeBlocks = c.cfg.SaturationDecodeBlocks
		if c.cfg.PrefillLoadScaleSaturated != 0 {
			scfg.PrefillLoadScaleSaturated = c.cfg.PrefillLoadScaleSaturated
		}
		if c.cfg.CacheAffinity != nil {
			scfg.CacheAffinity = *c.cfg.CacheAffinity
		}
	}
	// The replay may take longer in wall time than the stale and prefill
	// timeouts; every request is marked and freed, so none should expire.
	scfg.StaleTimeout = 24 * time.Hour
	scfg.PrefillTimeout = 24 * time.Hour
	ecfg := events.DefaultConfig()
	ecfg.Namespace, ecfg.Component = ns, comp
	scv := service.DefaultConfig()
	scv.Namespace = ns
	rt.Stack, err = stack.New(stack.Config{
		RouterID: routerID, KVEvents: true,
		Events: ecfg, Workers: wcfg, Scheduler: scfg, Service: scv,
		Rand: rand.New(rand.NewPCG(c.cfg.Seed, uint64(mode))),
	}, c.nc[1], c.etcd[1], m, c.cfg.Log)
	if err != nil {
		return nil, err
	}
	return rt, nil
}

// taken counts the KV events the router has taken in: applied, refused
// by its decoders, or dropped.
func (rt *simRouter) taken() uint64 {
	st := rt.EventStats()
	return st.Applied + st.DecodeErrors + st.Dropped
}

// overheadMs returns the router's mean decision time from its
// dynamo_router_overhead_total_ms histogram (NaN when it has none).
func (rt *simRouter) overheadMs() float64 {
	mfs, err := rt.reg.Gather()
	if err != nil {
		return math.NaN()
	}
	for _, mf := range mfs {
		if mf.GetName() != metrics.NameOverheadTotal {
			continue
		}
		var sum float64
		var n uint64
		for _, m := range mf.GetMetric() {
			sum += m.GetHistogram().GetSampleSum()
			n += m.GetHistogram().GetSampleCount()
		}
		if n > 0 {
			return sum / float64(n)
		}
	}
	return math.NaN()
}
