package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/kvrouter/router/internal/indexbench"
	"github.com/kvrouter/router/traces"
)

// defaultTrace is the excerpt checked into the repository. Like any
// relative --trace, it is resolved against the working directory, so the
// default works from the repository root.
const defaultTrace = "testdata/mooncake_excerpt.jsonl"

func benchCommand() *cli.Command {
	def := indexbench.DefaultConfig()
	return &cli.Command{
		Name:  "bench",
		Usage: "benchmark the router's parts",
		Subcommands: []*cli.Command{{
			Name:  "index",
			Usage: "replay a Mooncake trace into the KV index and measure block ops/s, find_matches latency and memory",
			Description: "Simulated workers with LRU caches replay the trace's stores and evictions into the index, " +
				"which then answers each request's find_matches query; see internal/indexbench for the method.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "trace", Value: defaultTrace, Usage: "Mooncake JSONL trace; a relative path is resolved against the working directory"},
				&cli.IntFlag{Name: "workers", Value: def.Workers, Usage: fmt.Sprintf("simulated workers (1..%d)", indexbench.MaxWorkers)},
				&cli.IntFlag{Name: "cache-blocks", Value: def.CacheBlocks, Usage: fmt.Sprintf("LRU capacity of each worker in router blocks (1..%d)", indexbench.MaxCacheBlocks)},
				&cli.IntFlag{Name: "keys-per-block", Value: def.KeysPerBlock, Usage: fmt.Sprintf("router blocks per 512-token trace block (1..%d)", indexbench.MaxKeysPerBlock)},
				&cli.IntFlag{Name: "duplicate", Value: def.Duplicate, Usage: fmt.Sprintf("copies of the trace in disjoint hash spaces (1..%d)", indexbench.MaxDuplicate)},
				&cli.IntFlag{Name: "goroutines", Value: def.Goroutines, Usage: fmt.Sprintf("goroutines that query, or write and query (1..%d; default GOMAXPROCS)", indexbench.MaxGoroutines)},
				&cli.IntFlag{Name: "max-entries", Value: def.MaxEntries, Usage: "cap on the index's (worker, block) entries; 0 means no cap"},
				&cli.IntFlag{Name: "latency-every", Value: def.LatencyEvery, Usage: fmt.Sprintf("time every Nth query for the latency figures (1..%d)", indexbench.MaxLatencyEvery)},
				&cli.DurationFlag{Name: "min-query-time", Value: def.MinQueryTime, Usage: fmt.Sprintf("repeat the query-only pass until this much time has passed (0..%v; 0 means one pass)", indexbench.MaxQueryTime)},
				&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of a table"},
				&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile to this file; it covers the whole run, including the untimed stream build, " +
					"and the timed phases carry the label phase (load, query, latency, mixed), so go tool pprof -tagfocus=phase=mixed FILE shows one"},
			},
			Action: benchIndex,
		}},
	}
}

// benchIndex runs `router bench index`.
func benchIndex(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageError("bench index: unexpected argument %q", c.Args().First())
	}
	cfg := indexbench.Config{
		Workers:      c.Int("workers"),
		CacheBlocks:  c.Int("cache-blocks"),
		KeysPerBlock: c.Int("keys-per-block"),
		Duplicate:    c.Int("duplicate"),
		Goroutines:   c.Int("goroutines"),
		MaxEntries:   c.Int("max-entries"),
		LatencyEvery: c.Int("latency-every"),
		MinQueryTime: c.Duration("min-query-time"),
	}
	if err := cfg.Validate(); err != nil {
		return usageError("bench index: %v", err)
	}
	path := c.String("trace")
	f, err := os.Open(path)
	if err != nil {
		return usageError("bench index: --trace: %v", err)
	}
	reqs, err := traces.Read(f)
	f.Close() // read-only: a close error cannot lose data
	if err != nil {
		return fmt.Errorf("bench index: read trace %s: %w", path, err)
	}
	if p := c.String("cpuprofile"); p != "" {
		stop, err := startCPUProfile(p)
		if err != nil {
			return usageError("bench index: --cpuprofile: %v", err)
		}
		defer stop()
	}
	res, err := indexbench.Run(c.Context, reqs, cfg)
	if err != nil {
		return fmt.Errorf("bench index: %s: %w", path, err)
	}
	if c.Bool("json") {
		out := struct {
			Trace string `json:"trace"`
			indexbench.Result
		}{path, res}
		if err := json.NewEncoder(c.App.Writer).Encode(out); err != nil {
			return fmt.Errorf("bench index: write result: %w", err)
		}
		return nil
	}
	if err := printBench(c.App.Writer, path, res); err != nil {
		return fmt.Errorf("bench index: write result: %w", err)
	}
	return nil
}

// printBench writes the result as a table for people.
func printBench(w io.Writer, path string, r indexbench.Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	cfg := r.Config
	rows := [][2]string{
		{"trace", fmt.Sprintf("%s (%d requests × %d copies = %d)", path, r.TraceRequests, cfg.Duplicate, r.Requests)},
		{"workers", fmt.Sprintf("%d × %d-block LRU, %d keys per trace block, %d goroutines", cfg.Workers, cfg.CacheBlocks, cfg.KeysPerBlock, r.Goroutines)},
		{"stream", fmt.Sprintf("%d events: %d blocks stored, %d removed; %d query blocks, %.1f%% cache hits", r.Events, r.StoredBlocks, r.RemovedBlocks, r.QueryBlocks, 100*r.CacheHitRatio)},
		{"index", fmt.Sprintf("%d entries, %d nodes, %d worker ranks, %.1f bytes/entry", r.Entries, r.Nodes, r.Workers, r.BytesPerEntry)},
		{"load", fmt.Sprintf("%s block-ops/s (1 writer, %.2fs)", mops(r.LoadBlockOpsPerSec), r.LoadSeconds)},
		{"query", fmt.Sprintf("%s block-ops/s (%d passes, %.2fs; %.1f%% of query blocks matched)", mops(r.QueryBlockOpsPerSec), r.QueryPasses, r.QuerySeconds, 100*r.QueryMatchedRatio)},
		{"mixed", fmt.Sprintf("%s block-ops/s (%.2fs)", mops(r.MixedBlockOpsPerSec), r.MixedSeconds)},
		{"find_matches", fmt.Sprintf("p50 %d ns, p99 %d ns (%d samples)", r.FindMatchesP50Ns, r.FindMatchesP99Ns, r.LatencySamples)},
	}
	if cfg.MaxEntries > 0 || r.EventsNotOK > 0 {
		rows = append(rows, [2]string{"cap", fmt.Sprintf("max %d entries, %d evicted, %d events not ok", cfg.MaxEntries, r.IndexEvicted, r.EventsNotOK)})
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}

// mops renders a rate in millions.
func mops(v float64) string { return fmt.Sprintf("%.2fM", v/1e6) }

// startCPUProfile profiles the process into path until the returned stop is
// called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
