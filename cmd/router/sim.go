package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/urfave/cli/v2"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/replay"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/sim"
	"github.com/kvrouter/router/traces"
	"github.com/kvrouter/router/workers"
)

// This file holds the simulation commands: `router sim` (simulated workers),
// `router replay` (a trace against a running router and fleet) and
// `router compare` (everything in-process, one run per router mode, and a
// report). docs/replay.md describes them.

// Defaults of the simulation commands: chosen so that the conversation
// trace's first ten minutes at twice their rate load 8 default workers
// enough for routing to matter (docs/replay.md, "Calibration").
const (
	defaultSimTrace  = "testdata/mooncake_excerpt.jsonl"
	defaultRateScale = 2.0
)

// compareBlockSize is the block size of `router compare`'s fleet (and of
// its in-process routers). It stays at 64, where the README's and
// docs/replay.md's quality figures and decision digests were measured,
// although `router sim` now defaults to the router's 128: changing it would
// change every compare decision.
const compareBlockSize = 64

// fleetFlags configure simulated workers of blockSize-token KV blocks by
// default.
func fleetFlags(blockSize int) []cli.Flag {
	d := sim.DefaultFleetConfig()
	e, t := d.Worker.Engine, d.Worker.Engine.Timing
	return []cli.Flag{
		&cli.IntFlag{Name: "workers", Value: d.Workers, Usage: fmt.Sprintf("simulated workers (1..%d)", sim.MaxWorkers)},
		&cli.StringFlag{Name: "component", Value: d.Worker.Component, EnvVars: []string{"DYN_COMPONENT"}, Usage: "the workers' component"},
		&cli.StringFlag{Name: "model", Value: d.Worker.Model, Usage: "display_name of the workers' model card"},
		&cli.IntFlag{Name: "block-size", Value: blockSize, Usage: "KV block size in tokens (the router's --router-block-size must match)"},
		&cli.IntFlag{Name: "num-gpu-blocks", Value: e.NumGPUBlocks, Usage: "KV cache blocks of each worker"},
		&cli.IntFlag{Name: "max-num-seqs", Value: e.MaxNumSeqs, Usage: "sequences running at once on each worker"},
		&cli.IntFlag{Name: "max-num-batched-tokens", Value: e.MaxNumBatchedTokens, Usage: "tokens per step (chunked prefill budget)"},
		&cli.IntFlag{Name: "max-waiting", Value: e.MaxWaiting, Usage: "requests waiting per worker before it refuses more"},
		&cli.DurationFlag{Name: "step-overhead", Value: t.StepOverhead, Usage: "cost model: fixed cost of a step"},
		&cli.DurationFlag{Name: "prefill-per-token", Value: t.PrefillPerToken, Usage: "cost model: each prompt token computed"},
		&cli.DurationFlag{Name: "attention-per-ktoken", Value: t.AttentionPerKToken, Usage: "cost model: each prompt token computed, per 1,000 tokens of context"},
		&cli.DurationFlag{Name: "decode-per-seq", Value: t.DecodePerSeq, Usage: "cost model: each sequence decoding in a step"},
		&cli.DurationFlag{Name: "decode-per-ktoken", Value: t.DecodePerKToken, Usage: "cost model: each 1,000 tokens of context of the decoding sequences"},
		&cli.DurationFlag{Name: "load-interval", Value: d.Worker.LoadInterval, Usage: "simulated time between load messages of a worker (0: none)"},
		&cli.DurationFlag{Name: "worker-lease-ttl", Value: d.Worker.LeaseTTL, Usage: "TTL of each worker's etcd lease"},
	}
}

// parseFleet reads fleetFlags and the namespace into a fleet configuration.
func parseFleet(c *cli.Context) sim.FleetConfig {
	cfg := sim.DefaultFleetConfig()
	cfg.Workers = c.Int("workers")
	cfg.Worker.Namespace = c.String("namespace")
	cfg.Worker.Component = c.String("component")
	cfg.Worker.Model = c.String("model")
	cfg.Worker.LoadInterval = c.Duration("load-interval")
	cfg.Worker.LeaseTTL = c.Duration("worker-lease-ttl")
	e := &cfg.Worker.Engine
	e.BlockSize = c.Int("block-size")
	e.NumGPUBlocks = c.Int("num-gpu-blocks")
	e.MaxNumSeqs = c.Int("max-num-seqs")
	e.MaxNumBatchedTokens = c.Int("max-num-batched-tokens")
	e.MaxWaiting = c.Int("max-waiting")
	e.Timing = sim.Timing{
		StepOverhead: c.Duration("step-overhead"), PrefillPerToken: c.Duration("prefill-per-token"),
		AttentionPerKToken: c.Duration("attention-per-ktoken"), DecodePerSeq: c.Duration("decode-per-seq"),
		DecodePerKToken: c.Duration("decode-per-ktoken"),
	}
	return cfg
}

// connFlags say where NATS and etcd are.
func connFlags(withEtcd bool) []cli.Flag {
	fs := []cli.Flag{
		&cli.StringFlag{Name: "nats-url", Value: "nats://127.0.0.1:4222", EnvVars: []string{"NATS_SERVER"}, Usage: "NATS server URL"},
		&cli.StringFlag{Name: "namespace", Value: "dynamo", EnvVars: []string{"DYN_NAMESPACE"}, Usage: "Dynamo namespace"},
	}
	if withEtcd {
		fs = append(fs, &cli.StringFlag{Name: "etcd-endpoints", Value: "http://127.0.0.1:2379", EnvVars: []string{"ETCD_ENDPOINTS"}, Usage: "comma-separated etcd endpoints"})
	}
	return fs
}

// workloadFlags choose the workload of a replay.
func workloadFlags() []cli.Flag {
	s := replay.DefaultSyntheticConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: "trace", Value: defaultSimTrace, Usage: "Mooncake JSONL trace to replay; a relative path is resolved against the working directory"},
		&cli.Float64Flag{Name: "rate-scale", Value: defaultRateScale, Usage: "multiply the trace's request rate (arrivals at timestamp / rate-scale)"},
		&cli.DurationFlag{Name: "window", Usage: "replay only the requests of the trace's first WINDOW (trace time; 0: all)"},
		&cli.IntFlag{Name: "max-requests", Usage: "replay at most this many requests (0: all)"},
		&cli.BoolFlag{Name: "synthetic", Usage: "replay a synthetic multi-turn chat workload instead of --trace"},
		&cli.IntFlag{Name: "requests", Value: s.Requests, Usage: "synthetic: number of requests"},
		&cli.Float64Flag{Name: "rate", Value: s.Rate, Usage: "synthetic: mean arrival rate, requests per simulated second"},
		&cli.IntFlag{Name: "users", Value: s.Users, Usage: "synthetic: concurrent conversations"},
		&cli.IntFlag{Name: "system-prompts", Value: s.SystemPrompts, Usage: "synthetic: distinct system prompts"},
		&cli.IntFlag{Name: "system-blocks", Value: s.SystemBlocks, Usage: "synthetic: system prompt length, in 512-token blocks"},
		&cli.IntFlag{Name: "turn-blocks", Value: s.TurnBlocks, Usage: "synthetic: mean new blocks per turn"},
		&cli.IntFlag{Name: "max-blocks", Value: s.MaxBlocks, Usage: "synthetic: a conversation restarts past this many blocks"},
		&cli.IntFlag{Name: "output-tokens", Value: s.OutputTokens, Usage: "synthetic: mean output length"},
		&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the synthetic workload and of the in-process routers' random choices"},
	}
}

// loadWorkload reads or makes the workload the flags describe: the trace
// at --rate-scale, or the synthetic workload (which has its own --rate).
func loadWorkload(c *cli.Context) (*replay.Workload, error) {
	scale := 1.0
	if !c.Bool("synthetic") {
		scale = c.Float64("rate-scale")
		if !(scale > 0 && scale <= 1e6) {
			return nil, usageError("%s: --rate-scale: %g is outside (0, 1e6]", c.Command.Name, scale)
		}
	}
	src, err := newWorkloadSource(c)
	if err != nil {
		return nil, err
	}
	return src.at(c, scale)
}

// workloadSource is the workload the flags describe, at any rate scale:
// a trace is read once, and cut and scaled for each.
type workloadSource struct {
	// synth is the synthetic workload's configuration, nil for a trace.
	synth *replay.SyntheticConfig
	// name, reqs and opts are the trace's (opts.RateScale unset).
	name string
	reqs []traces.Request
	opts replay.TraceOptions
}

// newWorkloadSource checks the workload flags and reads the trace.
func newWorkloadSource(c *cli.Context) (*workloadSource, error) {
	if c.Bool("synthetic") {
		s := replay.DefaultSyntheticConfig()
		s.Seed = c.Uint64("seed")
		s.Requests, s.Rate, s.Users = c.Int("requests"), c.Float64("rate"), c.Int("users")
		s.SystemPrompts, s.SystemBlocks, s.TurnBlocks = c.Int("system-prompts"), c.Int("system-blocks"), c.Int("turn-blocks")
		s.MaxBlocks, s.OutputTokens = c.Int("max-blocks"), c.Int("output-tokens")
		if err := s.Validate(); err != nil {
			return nil, usageError("%s: %v", c.Command.Name, err)
		}
		return &workloadSource{synth: &s}, nil
	}
	opts := replay.TraceOptions{Window: c.Duration("window"), MaxRequests: c.Int("max-requests")}
	if opts.Window < 0 || opts.MaxRequests < 0 {
		return nil, usageError("%s: --window and --max-requests must not be negative", c.Command.Name)
	}
	path := c.String("trace")
	f, err := os.Open(path)
	if err != nil {
		return nil, exitError("%s: --trace: %v", c.Command.Name, err)
	}
	defer f.Close()
	reqs, err := traces.Read(f)
	if err != nil {
		return nil, exitError("%s: --trace %s: %v", c.Command.Name, path, err)
	}
	name := filepath.Base(path)
	if opts.Window > 0 {
		name += fmt.Sprintf(", first %v", opts.Window)
	}
	return &workloadSource{name: name, reqs: reqs, opts: opts}, nil
}

// at makes the workload at rate scale s: the trace's arrivals at
// timestamp / s, or the synthetic workload at s × --rate (the same
// requests, the same draws, closer together).
func (ws *workloadSource) at(c *cli.Context, s float64) (*replay.Workload, error) {
	if ws.synth != nil {
		cfg := *ws.synth
		cfg.Rate *= s
		wl, err := replay.Synthetic(cfg)
		if err != nil {
			return nil, usageError("%s: %v", c.Command.Name, err)
		}
		return wl, nil
	}
	opts := ws.opts
	opts.RateScale = s
	name := ws.name
	if s != 1 {
		name += fmt.Sprintf(", at %g× its rate", s)
	}
	wl, err := replay.FromTrace(name, ws.reqs, opts)
	if err != nil {
		return nil, usageError("%s: %v", c.Command.Name, err)
	}
	return wl, nil
}

// scaledCommandLine is the single-scale command that makes the report of
// rate scale s of a sweep: --rate-scale s (or, for a synthetic workload,
// --rate) in place of --rate-scales, and that report's --out.
func (ws *workloadSource) scaledCommandLine(c *cli.Context, s float64, out string) string {
	set := map[string]string{"rate-scales": "", "out": out}
	if ws.synth != nil {
		set["rate"] = strconv.FormatFloat(ws.synth.Rate*s, 'g', -1, 64)
	} else {
		set["rate-scale"] = strconv.FormatFloat(s, 'g', -1, 64)
	}
	return commandLineWith(c, set)
}

func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-format", Value: "auto", EnvVars: []string{"DYN_LOG_FORMAT"}, Usage: "auto, text or json"},
		&cli.StringFlag{Name: "log-level", Value: "warn", EnvVars: []string{"DYN_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
	}
}

func cmdLogger(c *cli.Context) (*slog.Logger, error) {
	log, err := newLogger(c.App.ErrWriter, c.String("log-format"), c.String("log-level"))
	if err != nil {
		return nil, usageError("%s: %v", c.Command.Name, err)
	}
	return log, nil
}

// simCommand is `router sim`: a fleet of simulated workers in real time.
func simCommand() *cli.Command {
	// The router's default block size, so that `router sim` next to
	// `router serve` agree without a flag.
	flags := append(connFlags(true), fleetFlags(workers.DefaultBlockSize)...)
	flags = append(flags,
		&cli.Float64Flag{Name: "speedup", Value: 1, Usage: "simulated seconds per wall second (replay with the same --speedup)"},
		&cli.Int64Flag{Name: "first-lease-id", Usage: "lease (instance) id of the first worker, the others following; 0 lets etcd choose"},
	)
	flags = append(flags, logFlags()...)
	return &cli.Command{
		Name:  "sim",
		Usage: "run simulated vLLM-like workers until interrupted",
		Description: "Each worker registers in etcd with a lease and a model card, publishes KV events and load on NATS, " +
			"and serves the generate protocol of docs/replay.md on its own subject, with a simulated KV cache, " +
			"scheduler and GPU cost model.",
		Flags:       flags,
		Subcommands: []*cli.Command{simGenerateCommand()},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError("sim: unexpected argument %q", c.Args().First())
			}
			cfg := parseFleet(c)
			cfg.Speedup = c.Float64("speedup")
			cfg.Worker.LeaseID = c.Int64("first-lease-id")
			if err := cfg.Validate(); err != nil {
				return usageError("sim: invalid configuration:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))
			}
			log, err := cmdLogger(c)
			if err != nil {
				return err
			}
			nc, err := nats.Connect(c.String("nats-url"), nats.Name("kvrouter-sim"), nats.MaxReconnects(-1))
			if err != nil {
				return exitError("sim: cannot reach NATS at %s: %v", c.String("nats-url"), err)
			}
			defer nc.Close()
			etcd, err := connectEtcd(c.Context, splitEndpoints(c.String("etcd-endpoints")))
			if err != nil {
				return exitError("sim: %v", err)
			}
			defer etcd.Close()
			fleet, err := sim.NewFleet(cfg, nc, etcd, log)
			if err != nil {
				return usageError("sim: %v", err)
			}
			g, ctx := errgroup.WithContext(c.Context)
			g.Go(func() error { return fleet.Run(ctx) })
			g.Go(func() error {
				select {
				case <-fleet.Ready():
				case <-ctx.Done():
					return nil
				}
				fmt.Fprintln(c.App.Writer, readyLine(cfg, fleet.Workers()))
				return nil
			})
			if err := g.Wait(); err != nil {
				return exitError("sim: %v", err)
			}
			return nil
		},
	}
}

// readyLine says that the fleet is up, with the worker ids as route
// replies print them (decimal).
func readyLine(cfg sim.FleetConfig, ws []sim.WorkerInfo) string {
	const shown = 4
	ids := make([]string, 0, shown+1)
	for i, w := range ws {
		if i == shown {
			ids = append(ids, fmt.Sprintf("and %d more", len(ws)-shown))
			break
		}
		ids = append(ids, strconv.FormatUint(w.ID, 10))
	}
	what := "simulated workers ready"
	if len(ws) == 1 {
		what = "simulated worker ready"
	}
	return fmt.Sprintf("%d %s (block size %d) in namespace %s, component %s: ids %s",
		len(ws), what, cfg.Worker.Engine.BlockSize, cfg.Worker.Namespace, cfg.Worker.Component, strings.Join(ids, ", "))
}

func splitEndpoints(s string) []string {
	var out []string
	for _, ep := range strings.Split(s, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			out = append(out, ep)
		}
	}
	return out
}

// replayCommand is `router replay`: a workload against a running router and
// fleet, in real time.
func replayCommand() *cli.Command {
	flags := append(connFlags(false), workloadFlags()...)
	flags = append(flags,
		&cli.StringFlag{Name: "component", Value: "backend", EnvVars: []string{"DYN_COMPONENT"}, Usage: "the workers' component"},
		&cli.StringFlag{Name: "router-component", Value: "router", EnvVars: []string{"DYN_ROUTER_COMPONENT"}, Usage: "the router's component"},
		&cli.StringFlag{Name: "mode", Value: "kv", Usage: "the router's --router-mode, to label the results"},
		&cli.Float64Flag{Name: "speedup", Value: 1, Usage: "simulated seconds per wall second; the workers' --speedup"},
		&cli.DurationFlag{Name: "router-timeout", Value: 10 * time.Second, Usage: "bound on each call to the router"},
		&cli.DurationFlag{Name: "route-retry", Value: 0, DefaultText: "0 (off)", Usage: "send a route again, with the same request id, after no reply within this (rides out a router replica killed mid-load; at most --router-timeout)"},
		&cli.DurationFlag{Name: "drain-timeout", Value: 10 * time.Minute, Usage: "how long to wait for the last requests after the last arrival (wall time)"},
		&cli.StringFlag{Name: "router-metrics-url", Usage: "the router's /metrics, to report its own decision time (optional)"},
		&cli.StringFlag{Name: "out", Usage: "write the report (report.md, report.txt, results.json, SVG plots) into this directory"},
	)
	flags = append(flags, logFlags()...)
	return &cli.Command{
		Name:  "replay",
		Usage: "replay a trace against a running router and simulated workers, in real time",
		Description: "Acts as the frontend: route, generate on the chosen worker, mark_prefill at the first token, " +
			"mark_free at the end; prints the results table. Start the workers with `router sim` and the router with " +
			"`router serve` first; use `router compare` for deterministic, in-process comparisons.",
		Flags:  flags,
		Action: runReplayCommand,
	}
}

func runReplayCommand(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageError("replay: unexpected argument %q", c.Args().First())
	}
	wl, err := loadWorkload(c)
	if err != nil {
		return err
	}
	cfg := replay.DefaultConfig()
	cfg.Namespace, cfg.WorkerComponent, cfg.RouterComponent = c.String("namespace"), c.String("component"), c.String("router-component")
	cfg.Mode, cfg.Speedup = c.String("mode"), c.Float64("speedup")
	cfg.RouterTimeout, cfg.GenerateTimeout = c.Duration("router-timeout"), c.Duration("drain-timeout")
	cfg.RouteRetry = c.Duration("route-retry")
	if err := cfg.Validate(); err != nil {
		return usageError("replay: %v", err)
	}
	log, err := cmdLogger(c)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(c.String("nats-url"), nats.Name("kvrouter-replay"), nats.MaxReconnects(-1))
	if err != nil {
		return exitError("replay: cannot reach NATS at %s: %v", c.String("nats-url"), err)
	}
	defer nc.Close()
	rp, err := replay.New(cfg, nc, wl, replay.Options{Progress: c.App.ErrWriter, Log: log})
	if err != nil {
		return usageError("replay: %v", err)
	}
	res, err := rp.Run(c.Context)
	if err != nil {
		return exitError("replay: %v", err)
	}
	res.RouterOverheadMs = math.NaN()
	if u := c.String("router-metrics-url"); u != "" {
		res.RouterOverheadMs = scrapeOverhead(c.Context, u, log)
	}
	rep := &replay.Report{Title: "Replay of " + wl.Name, Command: commandLine(c), Results: []*replay.Result{res}}
	rep.WriteText(c.App.Writer)
	if out := c.String("out"); out != "" {
		if err := rep.Write(out); err != nil {
			return exitError("replay: %v", err)
		}
	}
	return nil
}

// scrapeOverhead reads the router's mean decision time from its metrics.
func scrapeOverhead(ctx context.Context, u string, log *slog.Logger) float64 {
	if _, err := url.Parse(u); err != nil {
		log.Warn("router metrics url", "err", err)
		return math.NaN()
	}
	sums, err := replay.Scrape(ctx, httpClient(), u)
	if err != nil {
		log.Warn("scrape router metrics", "err", err)
		return math.NaN()
	}
	n := sums[metrics.NameOverheadTotal+"_count"]
	if n == 0 {
		return math.NaN()
	}
	return sums[metrics.NameOverheadTotal+"_sum"] / n
}

func httpClient() *http.Client { return &http.Client{Timeout: 5 * time.Second} }

// compareCommand is `router compare`: embedded NATS and etcd, a fleet and a
// router per mode, the replay, the report; or all of it at several rate
// scales, and the sweep's report.
func compareCommand() *cli.Command {
	flags := append(workloadFlags(), fleetFlags(compareBlockSize)...)
	flags = append(flags,
		&cli.StringFlag{Name: "rate-scales", Usage: "sweep the load: run the whole comparison at each of these comma-separated rate scales, in order " +
			"(instead of --rate-scale; with --synthetic each multiplies --rate), each report in a subdirectory of --out (x1.5/ for 1.5), " +
			"and write sweep.md, sweep.txt, sweep.json and two plots (TTFT p90, hit rate against offered load) into --out"},
		&cli.StringFlag{Name: "namespace", Value: "dynamo", EnvVars: []string{"DYN_NAMESPACE"}, Usage: "Dynamo namespace of the in-process router and workers"},
		&cli.StringFlag{Name: "modes", Value: "kv,round-robin,random", Usage: "router modes to compare, comma-separated"},
		&cli.StringFlag{Name: "out", Value: "compare-out", Usage: "directory of the report (report.md, report.txt, results.json, SVG plots)"},
		&cli.StringFlag{Name: "clock", Value: "lockstep", Usage: "lockstep (deterministic, as fast as the machine allows) or real (wall clock, --speedup)"},
		&cli.Float64Flag{Name: "speedup", Value: 10, Usage: "with --clock real: simulated seconds per wall second"},
		&cli.Float64Flag{Name: "router-temperature", Usage: "the router's --router-temperature"},
		&cli.Float64Flag{Name: "router-prefill-load-scale", Value: scheduler.DefaultPrefillLoadScale, Usage: "the kv routers' --router-prefill-load-scale: the weight of prefill work, cached blocks credited, against decode blocks (Dynamo's default 1)"},
		&cli.IntFlag{Name: "router-saturation-prefill-tokens", Usage: "the kv routers' --router-saturation-prefill-tokens: when every worker has more prefill tokens in flight, prefill work weighs --router-prefill-load-scale-saturated; 0 leaves this test out"},
		&cli.IntFlag{Name: "router-saturation-decode-blocks", Usage: "the kv routers' --router-saturation-decode-blocks: when every worker has more active KV blocks, prefill work weighs --router-prefill-load-scale-saturated; 0 leaves this test out"},
		&cli.Float64Flag{Name: "router-prefill-load-scale-saturated", Value: scheduler.DefaultPrefillLoadScaleSaturated, Usage: "the kv routers' --router-prefill-load-scale-saturated: the weight of prefill work while every worker is over --router-saturation-prefill-tokens or --router-saturation-decode-blocks"},
		&cli.Float64Flag{Name: "router-cache-affinity", Value: scheduler.DefaultCacheAffinity, Usage: "the kv routers' --router-cache-affinity: blocks of cost taken off a worker per block of the prompt it holds, besides the overlap credit; 0 is off"},
	)
	flags = append(flags, logFlags()...)
	return &cli.Command{
		Name:  "compare",
		Usage: "compare router modes on a trace: in-process NATS, etcd, simulated workers and routers; writes a report",
		Description: "For each mode, starts a fresh fleet of simulated workers and a fresh router with that --router-mode, " +
			"replays the workload, and finally writes a table and plots (TTFT distribution, prefix hit rate) to --out. " +
			"With --rate-scales, does so at each rate scale and writes the sweep's tables and plots too. " +
			"With the default --clock lockstep the results depend only on the flags: two runs give the same decisions.",
		Flags:  flags,
		Action: runCompareCommand,
	}
}

// parseRateScales reads --rate-scales: positive, distinct rate scales, in
// the order given.
func parseRateScales(s string) ([]float64, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("--rate-scales: empty: give comma-separated rate scales, such as 1,1.5,2")
	}
	var out []float64
	for i, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		switch {
		case err != nil:
			return nil, fmt.Errorf("--rate-scales: item %d: %q is not a number", i, f)
		case !(v > 0 && v <= 1e6):
			return nil, fmt.Errorf("--rate-scales: item %d: %q is outside (0, 1e6]", i, f)
		}
		if j := slices.Index(out, v); j >= 0 {
			return nil, fmt.Errorf("--rate-scales: item %d: %q repeats item %d", i, f, j)
		}
		out = append(out, v)
	}
	return out, nil
}

// comparison is what every comparison of one `router compare` shares: the
// modes, the fleet, the routers' settings.
type comparison struct {
	cfg   replay.CompareConfig // without its workload
	clock string
}

func runCompareCommand(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageError("compare: unexpected argument %q", c.Args().First())
	}
	var scales []float64
	if c.IsSet("rate-scales") {
		if c.IsSet("rate-scale") {
			return usageError("compare: --rate-scales and --rate-scale are mutually exclusive: give every scale of the sweep in --rate-scales")
		}
		var err error
		if scales, err = parseRateScales(c.String("rate-scales")); err != nil {
			return usageError("compare: %v", err)
		}
	}
	var modes []scheduler.Mode
	for _, s := range strings.Split(c.String("modes"), ",") {
		m, err := scheduler.ParseMode(strings.TrimSpace(s))
		if err != nil {
			return usageError("compare: --modes: %v", err)
		}
		modes = append(modes, m)
	}
	fcfg := parseFleet(c)
	switch c.String("clock") {
	case "lockstep":
		fcfg.Lockstep = true
	case "real":
		fcfg.Speedup = c.Float64("speedup")
	default:
		return usageError("compare: --clock: %q is not lockstep or real", c.String("clock"))
	}
	fcfg.Worker.LeaseID = replay.CompareLeaseID
	if err := fcfg.Validate(); err != nil {
		return usageError("compare: invalid configuration:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	if t := c.Float64("router-temperature"); t < 0 || t > 100 {
		return usageError("compare: --router-temperature: %g is outside 0..100", t)
	}
	if s := c.Float64("router-prefill-load-scale"); !(s > 0 && s <= 1000) {
		return usageError("compare: --router-prefill-load-scale: %g is outside (0, 1000]", s)
	}
	if s := c.Float64("router-prefill-load-scale-saturated"); !(s > 0 && s <= 1000) {
		return usageError("compare: --router-prefill-load-scale-saturated: %g is outside (0, 1000]", s)
	}
	for _, f := range []string{"router-saturation-prefill-tokens", "router-saturation-decode-blocks"} {
		if t := c.Int(f); t < 0 || t > scheduler.MaxTokens {
			return usageError("compare: --%s: %d is outside 0..%d", f, t, scheduler.MaxTokens)
		}
	}
	affinity := c.Float64("router-cache-affinity")
	if !(affinity >= 0 && affinity <= 1000) {
		return usageError("compare: --router-cache-affinity: %g is outside 0..1000", affinity)
	}
	log, err := cmdLogger(c)
	if err != nil {
		return err
	}
	comp := &comparison{
		cfg: replay.CompareConfig{
			Fleet: fcfg, Modes: modes, Seed: c.Uint64("seed"),
			Temperature: c.Float64("router-temperature"), PrefillLoadScale: c.Float64("router-prefill-load-scale"),
			SaturationPrefillTokens:   c.Int("router-saturation-prefill-tokens"),
			SaturationDecodeBlocks:    c.Int("router-saturation-decode-blocks"),
			PrefillLoadScaleSaturated: c.Float64("router-prefill-load-scale-saturated"),
			CacheAffinity:             &affinity,
			Progress:                  c.App.ErrWriter, Log: log,
		},
		clock: "lockstep",
	}
	if !fcfg.Lockstep {
		comp.clock = fmt.Sprintf("real time at %g×", fcfg.Speedup)
	}
	if scales != nil {
		return comp.sweep(c, scales)
	}
	wl, err := loadWorkload(c)
	if err != nil {
		return err
	}
	bounds, err := comp.bounds(wl)
	if err != nil {
		return err
	}
	_, err = comp.run(c, wl, &bounds, c.String("out"), commandLine(c))
	return err
}

// bounds computes the workload's hit-rate references on the fleet.
func (comp *comparison) bounds(wl *replay.Workload) (replay.Bounds, error) {
	fc := comp.cfg.Fleet
	b, err := replay.ComputeBounds(wl, fc.Worker.Engine.BlockSize, fc.Workers*fc.Worker.Engine.NumGPUBlocks)
	if err != nil {
		return replay.Bounds{}, exitError("compare: %v", err)
	}
	return b, nil
}

// run compares the modes on wl, writes the report into out and prints its
// short table.
func (comp *comparison) run(c *cli.Context, wl *replay.Workload, bounds *replay.Bounds, out, command string) ([]*replay.Result, error) {
	fc := comp.cfg.Fleet
	fmt.Fprintf(c.App.ErrWriter, "compare: %d requests of %s, %d workers, modes %s, clock %s\n",
		len(wl.Requests), wl.Name, fc.Workers, c.String("modes"), c.String("clock"))
	cfg := comp.cfg
	cfg.Workload = wl
	results, err := replay.Compare(c.Context, cfg)
	if err != nil {
		return nil, exitError("%v", err)
	}
	rep := &replay.Report{
		Title:   fmt.Sprintf("Router modes on %s: %d simulated workers, %s clock", wl.Name, fc.Workers, comp.clock),
		Command: command, Results: results, Bounds: bounds,
	}
	if err := rep.Write(out); err != nil {
		return nil, exitError("compare: %v", err)
	}
	rep.WriteText(c.App.Writer)
	fmt.Fprintf(c.App.Writer, "report: %s\n", filepath.Join(out, replay.FileMarkdown))
	return results, nil
}

// sweep runs the comparison at each rate scale, in order, each report in
// its own directory under --out, then writes the sweep's report. The
// hit-rate references do not depend on the rate: they are computed once.
func (comp *comparison) sweep(c *cli.Context, scales []float64) error {
	src, err := newWorkloadSource(c)
	if err != nil {
		return err
	}
	out := c.String("out")
	sw := &replay.Sweep{Command: commandLine(c)}
	for _, s := range scales {
		wl, err := src.at(c, s)
		if err != nil {
			return err
		}
		if sw.Bounds == nil {
			b, err := comp.bounds(wl)
			if err != nil {
				return err
			}
			sw.Bounds = &b
			name := wl.Name
			if src.synth == nil {
				name = src.name
			}
			sw.Title = fmt.Sprintf("Router modes against offered load on %s (rate scales %s): %d simulated workers, %s clock",
				name, c.String("rate-scales"), comp.cfg.Fleet.Workers, comp.clock)
		}
		dir := replay.ScaleDir(s)
		fmt.Fprintf(c.App.ErrWriter, "compare: rate scale %g (%d of %d)\n", s, len(sw.Points)+1, len(scales))
		results, err := comp.run(c, wl, sw.Bounds, filepath.Join(out, dir), src.scaledCommandLine(c, s, filepath.Join(out, dir)))
		if err != nil {
			return err
		}
		sw.Points = append(sw.Points, replay.SweepPoint{Scale: s, Dir: dir, Results: results})
	}
	if err := sw.Write(out); err != nil {
		return exitError("compare: %v", err)
	}
	fmt.Fprintln(c.App.Writer)
	sw.WriteText(c.App.Writer)
	fmt.Fprintf(c.App.Writer, "sweep report: %s\n", filepath.Join(out, replay.FileSweepMarkdown))
	return nil
}

// commandLine renders the command as a user would type it: the command's
// name and the flags that were set (on the command line or by environment
// variable), in the order the command declares them.
func commandLine(c *cli.Context) string { return commandLineWith(c, nil) }

// commandLineWith is commandLine with the flags of set given those values
// instead, in their place, whether set or not: "" leaves a flag out.
func commandLineWith(c *cli.Context, set map[string]string) string {
	args := []string{"router", c.Command.Name}
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		if v, ok := set[name]; ok {
			if v != "" {
				args = append(args, "--"+name, quoteArg(v))
			}
			continue
		}
		if !c.IsSet(name) {
			continue
		}
		if _, ok := f.(*cli.BoolFlag); ok {
			if c.Bool(name) {
				args = append(args, "--"+name)
			}
			continue
		}
		args = append(args, "--"+name, quoteArg(fmt.Sprint(c.Value(name))))
	}
	return strings.Join(args, " ")
}

// quoteArg quotes v for a POSIX shell when it needs quotes.
func quoteArg(v string) string {
	if strings.ContainsAny(v, " \t'\"$") || v == "" {
		return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
	}
	return v
}

// simGenerateCommand is `router sim generate`: one prompt through the
// router to a simulated worker, as a frontend sends it.
func simGenerateCommand() *cli.Command {
	return &cli.Command{
		Name:  "generate",
		Usage: "send one prompt through the router to a simulated worker, as a frontend does",
		Description: "Asks the router for a worker (route), sends the prompt to that worker's generate subject, " +
			"reports the first token (mark_prefill) and the end (mark_free), and prints each step. " +
			"The worker keeps the prompt's blocks in its prefix cache and tells the router with KV events, " +
			"so the next route of the same prompt goes to it.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "nats-url", Value: "nats://127.0.0.1:4222", EnvVars: []string{"NATS_SERVER"}, Usage: "NATS server URL"},
			&cli.StringFlag{Name: "namespace", Value: "dynamo", EnvVars: []string{"DYN_NAMESPACE"}, Usage: "Dynamo namespace"},
			&cli.StringFlag{Name: "component", Value: "backend", EnvVars: []string{"DYN_COMPONENT"}, Usage: "the workers' component"},
			&cli.StringFlag{Name: "router-component", Value: "router", EnvVars: []string{"DYN_ROUTER_COMPONENT"}, Usage: "the router's component"},
			&cli.StringFlag{Name: "token-ids", Usage: "the prompt: comma-separated token ids (required)"},
			&cli.StringFlag{Name: "request-id", Usage: "request id (default: the router makes one)"},
			&cli.IntFlag{Name: "max-tokens", Value: 16, Usage: fmt.Sprintf("tokens to generate (1..%d)", sim.MaxOutputTokens)},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "how long to wait for each answer of the router and the worker"},
		},
		Action: runSimGenerate,
	}
}

func runSimGenerate(c *cli.Context) error {
	var problems []string
	if c.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected argument %q", c.Args().First()))
	}
	tokens, err := parseTokenIDs(c.String("token-ids"))
	if err != nil {
		problems = append(problems, err.Error())
	}
	if n := c.Int("max-tokens"); n < 1 || n > sim.MaxOutputTokens {
		problems = append(problems, fmt.Sprintf("--max-tokens: %d is outside 1..%d", n, sim.MaxOutputTokens))
	}
	if d := c.Duration("timeout"); d <= 0 {
		problems = append(problems, fmt.Sprintf("--timeout: %v must be positive", d))
	}
	if len(problems) > 0 {
		return usageError("sim generate: %s", strings.Join(problems, "\n  "))
	}
	nc, err := nats.Connect(c.String("nats-url"), nats.Name("kvrouter-sim-generate"))
	if err != nil {
		return exitError("sim generate: cannot reach NATS at %s: %v", c.String("nats-url"), err)
	}
	defer nc.Close()
	rc, err := client.New(nc, client.WithNamespace(c.String("namespace")), client.WithRouterComponent(c.String("router-component")),
		client.WithTimeout(c.Duration("timeout")))
	if err != nil {
		return usageError("sim generate: %v", err)
	}
	g := &generator{nc: nc, rc: rc, out: c.App.Writer, timeout: c.Duration("timeout")}
	if err := g.run(c.Context, c.String("namespace"), c.String("component"), c.String("request-id"), tokens, c.Int("max-tokens")); err != nil {
		return exitError("sim generate: %v", err)
	}
	return nil
}

// parseTokenIDs reads --token-ids.
func parseTokenIDs(s string) ([]uint32, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("--token-ids: missing: give the prompt as comma-separated token ids")
	}
	fields := strings.Split(s, ",")
	tokens := make([]uint32, 0, len(fields))
	for i, f := range fields {
		v, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--token-ids: item %d: %q is not a token id (0..4294967295)", i, f)
		}
		tokens = append(tokens, uint32(v))
	}
	return tokens, nil
}

// generator plays the frontend for one request (docs/replay.md, "The
// generate protocol"), printing every answer it gets.
type generator struct {
	nc      *nats.Conn
	rc      *client.Client
	out     io.Writer
	timeout time.Duration
}

func (g *generator) run(ctx context.Context, namespace, component, id string, tokens []uint32, maxTokens int) error {
	var choice client.Decision
	if err := g.call(ctx, client.EndpointRoute, client.RouteRequest{RequestID: id, Prompt: client.Prompt{TokenIDs: tokens}}, &choice); err != nil {
		return err
	}
	// From here on the router holds a booking: free it whatever happens.
	freed := false
	defer func() {
		if !freed {
			_ = g.call(context.WithoutCancel(ctx), client.EndpointMarkFree, client.MarkFreeRequest{RequestID: choice.RequestID, RouterID: choice.RouterID}, nil)
		}
	}()
	subject := sim.GenerateSubject(namespace, component, uint64(choice.WorkerID))
	inbox := g.nc.NewRespInbox()
	sub, err := g.nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	defer sub.Unsubscribe()
	req, err := json.Marshal(sim.GenerateRequest{RequestID: choice.RequestID, TokenIDs: tokens, MaxTokens: maxTokens})
	if err != nil {
		return err
	}
	if err := g.nc.PublishRequest(subject, inbox, req); err != nil {
		return fmt.Errorf("generate: publish on %s: %w", subject, err)
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, g.timeout)
		msg, err := sub.NextMsgWithContext(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("generate: worker %d did not answer on %s within %v (is it a `router sim` worker?): %w",
				choice.WorkerID, subject, g.timeout, err)
		}
		var rep sim.GenerateReply
		if err := json.Unmarshal(msg.Data, &rep); err != nil {
			return fmt.Errorf("generate: worker %d answered %.200q: %w", choice.WorkerID, msg.Data, err)
		}
		switch rep.Event {
		case sim.ReplyError:
			if rep.Error != nil {
				return fmt.Errorf("generate: worker %d refused the request: %s: %s", choice.WorkerID, rep.Error.Code, rep.Error.Message)
			}
			return fmt.Errorf("generate: worker %d refused the request", choice.WorkerID)
		case sim.ReplyFirstToken:
			fmt.Fprintf(g.out, "%-12s worker %d: %d prompt blocks, %d of them from its prefix cache; first token after %.3f s\n",
				"first_token", choice.WorkerID, rep.PromptBlocks, rep.CachedBlocks, rep.FirstTokenAt-rep.ReceivedAt)
			if err := g.call(ctx, client.EndpointMarkPrefill, client.MarkPrefillRequest{RequestID: choice.RequestID, RouterID: choice.RouterID}, nil); err != nil {
				return err
			}
		case sim.ReplyDone:
			fmt.Fprintf(g.out, "%-12s worker %d: %d tokens after %.3f s\n", "done", choice.WorkerID, rep.OutputTokens, rep.DoneAt-rep.ReceivedAt)
			freed = true
			return g.call(ctx, client.EndpointMarkFree, client.MarkFreeRequest{RequestID: choice.RequestID, RouterID: choice.RouterID, OutputTokens: &rep.OutputTokens}, nil)
		}
	}
}

// call sends one request to the router (client.Do), prints its answer,
// and decodes it into out (when not nil). An error answer, or
// {"success":false}, is an error.
func (g *generator) call(ctx context.Context, endpoint client.Endpoint, body, out any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	reply, err := g.rc.Do(ctx, endpoint, data)
	if reply != nil {
		fmt.Fprintf(g.out, "%-12s %s\n", endpoint, reply)
	}
	switch {
	case errors.Is(err, client.ErrNoRouter):
		return fmt.Errorf("%s: no router answers on %s: is `router serve` running, in this namespace?", endpoint, g.rc.Subject(endpoint))
	case err != nil:
		return fmt.Errorf("%s: %w", endpoint, err)
	}
	if out != nil {
		if err := json.Unmarshal(reply, out); err != nil {
			return fmt.Errorf("%s: answer %.200q: %w", endpoint, reply, err)
		}
	}
	return nil
}
