package replay

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/sim"
	"github.com/kvrouter/router/traces"
)

// excerpt returns the first n requests of the trace excerpt in testdata.
func excerpt(t *testing.T, n int, rateScale float64) *Workload {
	t.Helper()
	f, err := os.Open("../testdata/mooncake_excerpt.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	reqs, err := traces.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	wl, err := FromTrace("excerpt", reqs, TraceOptions{RateScale: rateScale, MaxRequests: n})
	if err != nil {
		t.Fatal(err)
	}
	return wl
}

// chat returns a synthetic chat workload of the given size, arrival rate
// (requests a second), users and output tokens per request.
func chat(t *testing.T, requests int, rate float64, users, outputTokens int) *Workload {
	t.Helper()
	cfg := DefaultSyntheticConfig()
	cfg.Requests, cfg.Rate, cfg.Users, cfg.OutputTokens = requests, rate, users, outputTokens
	wl, err := Synthetic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return wl
}

func testFleetConfig(lockstep bool) sim.FleetConfig {
	cfg := sim.DefaultFleetConfig()
	cfg.Workers = 4
	cfg.Worker.Namespace = "replaytest"
	cfg.Worker.LeaseID = 0x7e57
	cfg.Worker.Engine.NumGPUBlocks = 1024 // 64k tokens: evictions happen, the longest prompts fail
	cfg.Lockstep = lockstep
	cfg.Speedup = 20
	return cfg
}

// runOnce replays wl against a fresh fleet and router on fresh embedded
// servers.
func runOnce(t *testing.T, wl *Workload, fcfg sim.FleetConfig, roundRobin bool, progress *bytes.Buffer) *Result {
	t.Helper()
	nsrv := testutil.NATS(t)
	esrv := testutil.Etcd(t)
	nc := testutil.NATSConn(t, nsrv.URL())
	cli := testutil.EtcdClient(t, esrv.Endpoint())
	fleet, err := sim.NewFleet(fcfg, nc, cli, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fleet.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("fleet: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	<-fleet.Ready()
	var ids []uint64
	index := map[uint64]int{}
	for _, w := range fleet.Workers() {
		ids = append(ids, w.ID)
		index[w.ID] = w.Index
	}
	// The router is the real one, built as `router compare` builds it.
	mode := scheduler.ModeKV
	if roundRobin {
		mode = scheduler.ModeRoundRobin
	}
	runs := &modeRuns{cfg: CompareConfig{Fleet: fcfg, Seed: 42, Log: slog.New(slog.DiscardHandler)},
		nc: [3]*nats.Conn{nc, nc, nc}, etcd: [2]*clientv3.Client{cli, cli}}
	router, err := runs.router(mode)
	if err != nil {
		t.Fatal(err)
	}
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-routerDone; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	rc, err := client.New(nc, client.WithNamespace(fcfg.Worker.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	if err := waitWorkers(ctx, rc, len(ids)); err != nil {
		t.Fatal(err)
	}

	cfg := DefaultConfig()
	cfg.Namespace = fcfg.Worker.Namespace
	cfg.Lockstep = fcfg.Lockstep
	cfg.Speedup = fcfg.Speedup
	cfg.Mode = "kv"
	if roundRobin {
		cfg.Mode = "round-robin"
	}
	cfg.GenerateTimeout = 30 * time.Second
	opts := Options{WorkerIndex: index}
	if progress != nil {
		cfg.ProgressInterval = 10 * time.Millisecond
		opts.Progress = progress
	}
	if fcfg.Lockstep {
		opts.Stepper = fleet
		opts.Barrier = CountBarrier(router.taken)
	}
	rp, err := New(cfg, nc, wl, opts)
	if err != nil {
		t.Fatal(err)
	}
	res, err := rp.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	stop()
	return res
}

// TestReplayLockstepIsDeterministic replays the same excerpt twice, each
// time against a fresh fleet and router: every decision, hit and latency
// must be the same.
func TestReplayLockstepIsDeterministic(t *testing.T) {
	wl := excerpt(t, 120, 4)
	a := runOnce(t, wl, testFleetConfig(true), false, nil)
	b := runOnce(t, wl, testFleetConfig(true), false, nil)
	ignore := cmpopts.IgnoreFields(Record{}, "RouteRTT")
	for i := range a.Records {
		if diff := cmp.Diff(a.Records[i], b.Records[i], ignore); diff != "" {
			t.Fatalf("two lockstep replays differ first at request %d (-first +second):\n%s", i, diff)
		}
	}
	sa, sb := a.Summarize(), b.Summarize()
	if sa.Completed == 0 || sa.Failed == 0 || sa.Digest != sb.Digest || sa.HitRate != sb.HitRate {
		t.Fatalf("summaries: %+v\n%+v", sa, sb)
	}
	if sa.HitRate <= 0 || sa.TTFT.P50 <= 0 {
		t.Fatalf("no cache hits or no latency: %+v", sa)
	}
}

// TestReplayKVBeatsRoundRobinOnChat checks the experiment end to end on a
// chat workload where prefixes repeat: the KV-aware choice finds more of
// each prompt cached than round-robin.
func TestReplayKVBeatsRoundRobinOnChat(t *testing.T) {
	wl := chat(t, 150, 8, 12, 32)
	kv := runOnce(t, wl, testFleetConfig(true), false, nil).Summarize()
	rr := runOnce(t, wl, testFleetConfig(true), true, nil).Summarize()
	if kv.Completed != 150 || rr.Completed != 150 || kv.HitRate < rr.HitRate+0.1 {
		t.Fatalf("kv: %d done, hit rate %.3f; round-robin: %d done, hit rate %.3f", kv.Completed, kv.HitRate, rr.Completed, rr.HitRate)
	}
	t.Logf("kv: hit %.3f ttft p90 %v; round-robin: hit %.3f ttft p90 %v", kv.HitRate, kv.TTFT.P90, rr.HitRate, rr.TTFT.P90)
}

// TestReplayRealTime replays a small synthetic workload on the wall clock.
func TestReplayRealTime(t *testing.T) {
	wl := chat(t, 30, 30, 4, 8)
	var progress bytes.Buffer
	res := runOnce(t, wl, testFleetConfig(false), false, &progress)
	s := res.Summarize()
	if s.Completed != 30 || s.Failed != 0 || s.TTFT.P50 <= 0 || s.HitRate <= 0 {
		t.Fatalf("summary %+v", s)
	}
	if !strings.Contains(progress.String(), "replay kv: 30/30 sent, 30 done, 0 failed") {
		t.Fatalf("progress lines:\n%s", progress.String())
	}
}
