package scheduler

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

func approxConfig() Config {
	cfg := testConfig()
	cfg.UseKVEvents = false
	return cfg
}

// overlapOf returns the index's overlap of worker w0 with toks.
func (e *env) overlapOf(w0 uint64, toks []uint32) int {
	_, scores, err := e.r.OverlapScores(&Request{Tokens: toks})
	if err != nil {
		return -1
	}
	for _, s := range scores {
		if s.Worker == w(w0) {
			return s.OverlapBlocks
		}
	}
	return 0
}

func TestApproximateModeIndexesDecisions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, approxConfig(), newFleet(cands(0, 0, 1, 2), nil))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- e.r.Run(ctx) }()

		p := tokens(0, 3, 4)
		d := route(t, e, &Request{ID: "a", Tokens: p})
		if got := e.overlapOf(uint64(d.Worker.ID), p); got != 3 {
			t.Fatalf("overlap of the chosen worker after routing = %d, want 3", got)
		}
		if got := e.w.stored.Load(); got != 3 {
			t.Fatalf("blocks stored through the writer = %d, want 3", got)
		}
		// The same prompt is routed to the same worker: its blocks are
		// cached there now.
		e.r.Free("a", -1)
		if d2 := route(t, e, &Request{ID: "b", Tokens: p}); d2.Worker != d.Worker || d2.OverlapBlocks != 3 {
			t.Fatalf("second routing: %+v, want %v with overlap 3", d2, d.Worker)
		}
		e.r.Free("b", -1)

		// 100 s later the prompt's first two blocks are routed again: they
		// live on; the third expires at 120 s.
		time.Sleep(100 * time.Second)
		route(t, e, &Request{ID: "c", Tokens: p[:8], AllowedWorkerIDs: []indexer.WorkerID{d.Worker.ID}})
		e.r.Free("c", -1)
		time.Sleep(21 * time.Second)
		synctest.Wait()
		if got := e.overlapOf(uint64(d.Worker.ID), p); got != 2 {
			t.Errorf("overlap at 121 s = %d, want 2 (the refreshed blocks)", got)
		}
		time.Sleep(100 * time.Second)
		synctest.Wait()
		if got := e.overlapOf(uint64(d.Worker.ID), p); got != 0 {
			t.Errorf("overlap at 221 s = %d, want 0", got)
		}
		if got := e.w.removed.Load(); got != 3 {
			t.Errorf("blocks removed through the writer = %d, want 3", got)
		}
		if got := e.idx.Stats().Entries; got != 0 {
			t.Errorf("index entries = %d, want 0", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestApproximateModeCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := approxConfig()
		cfg.ApproxMaxEntries = 10
		e := newEnv(t, cfg, newFleet(cands(0, 0, 1), nil))
		for i := range 6 {
			route(t, e, &Request{Tokens: tokens(1000*i, 2, 4), QueryOnly: false})
			time.Sleep(time.Second)
		}
		// 12 entries went in; the cap (10) pruned the soonest to expire down
		// to 8, then 2 more came in.
		if n := e.r.approx.len(); n > 10 || n < 8 {
			t.Errorf("approximate entries = %d, want 8..10", n)
		}
		if got := e.w.removed.Load(); got == 0 {
			t.Error("no pruned entry removed through the writer")
		}
		if got := e.idx.Stats().Entries; got != e.r.approx.len() {
			t.Errorf("index holds %d entries, approximate mode tracks %d", got, e.r.approx.len())
		}
	})
}

func TestApproximateModeNeedsAWriter(t *testing.T) {
	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	idx := indexer.NewIndex(indexer.Config{})
	if _, err := New(approxConfig(), idx, nil, m, Options{}); err == nil || !strings.Contains(err.Error(), "index writer") {
		t.Errorf("New in approximate mode without a writer = %v, want an error naming the writer", err)
	}
	if _, err := New(testConfig(), idx, nil, m, Options{}); err != nil {
		t.Errorf("New with KV events and no writer = %v, want nil", err)
	}
}
