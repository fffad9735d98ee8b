package scheduler

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// onlyOn restricts a request to worker id.
func onlyOn(id uint64) []indexer.WorkerID { return []indexer.WorkerID{indexer.WorkerID(id)} }

func TestWorkerLeavesAndReturns(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1, 2), nil))
	route(t, e, &Request{ID: "old", Tokens: tokens(0, 3, 4), AllowedWorkerIDs: onlyOn(1)})
	route(t, e, &Request{ID: "other", Tokens: tokens(100, 3, 4), AllowedWorkerIDs: onlyOn(2)})

	e.fleet.set(cands(0, 0, 2), nil) // worker 1 leaves
	if e.r.Active() != 1 {
		t.Errorf("%d requests active after worker 1 left, want 1 (worker 2's)", e.r.Active())
	}
	if _, ok := e.r.Load(w(1)); ok {
		t.Error("a departed worker still has a load")
	}
	if _, err := e.r.Route(context.Background(), &Request{Tokens: tokens(0, 1, 4), AllowedWorkerIDs: onlyOn(1)}); !errors.Is(err, ErrNoWorkers) {
		t.Errorf("route restricted to a departed worker = %v, want ErrNoWorkers", err)
	}
	if e.r.MarkPrefill("old") || e.r.Free("old", 1) {
		t.Error("the departed worker's request is still known")
	}

	e.fleet.set(cands(0, 0, 1, 2), nil) // it returns, with the same id
	if l, ok := e.r.Load(w(1)); !ok || l != (RankLoad{Worker: w(1), Kind: KindDecode}) {
		t.Errorf("returned worker's load = %+v (%v), want zero", l, ok)
	}
	d := route(t, e, &Request{ID: "new", Tokens: tokens(0, 3, 4), AllowedWorkerIDs: onlyOn(1)})
	if d.Worker != w(1) {
		t.Fatalf("route restricted to the returned worker chose %v", d.Worker)
	}
	// Only the new request's blocks: none of the old request's survive.
	if l, _ := e.r.Load(w(1)); l.Requests != 1 || l.DecodeBlocks != 3 || l.PrefillTokens != 12 {
		t.Errorf("returned worker after one request: %+v, want 1 request, 3 blocks, 12 tokens", l)
	}
	if got := promtest.ToFloat64(e.r.m.WorkerActiveDecodeBlocks.WithLabelValues("1", "0", "decode")); got != 3 {
		t.Errorf("active decode blocks gauge of the returned worker = %v, want 3", got)
	}
}

func TestDroppedRankLosesItsBookings(t *testing.T) {
	r0, r1 := indexer.Worker{ID: 1, DPRank: 0}, indexer.Worker{ID: 1, DPRank: 1}
	both := []Candidate{{Worker: r0, OverlapTrusted: true}, {Worker: r1, OverlapTrusted: true}}
	e := newEnv(t, testConfig(), newFleet(both, nil))
	for i := range 4 { // spread by load: two on each rank
		route(t, e, &Request{Tokens: tokens(100*i, 2, 4)})
	}
	if l, _ := e.r.Load(r1); l.Requests != 2 {
		t.Fatalf("rank 1 holds %d requests, want 2 (loads %+v)", l.Requests, e.r.Loads())
	}
	e.fleet.set(both[:1], nil) // the worker's card drops rank 1
	if _, ok := e.r.Load(r1); ok {
		t.Error("the dropped rank still has a load")
	}
	if l, _ := e.r.Load(r0); l.Requests != 2 || e.r.Active() != 2 {
		t.Errorf("rank 0 holds %d requests, %d active; want 2 and 2", l.Requests, e.r.Active())
	}
	e.fleet.set(both, nil)
	if l, _ := e.r.Load(r1); l != (RankLoad{Worker: r1, Kind: KindDecode}) {
		t.Errorf("rank 1 back with %+v, want no load", l)
	}
}

// TestLeaveReturnCyclesKeepMemoryFlat makes one worker id leave and
// return a thousand times, with bookings on it each time: the router's
// bookkeeping, its per-rank arrays and the heap stay flat.
func TestLeaveReturnCyclesKeepMemoryFlat(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1, 2), nil))
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	var before uint64
	for i := range 1000 {
		e.fleet.set(cands(0, 0, 1, 2), nil)
		route(t, e, &Request{Tokens: tokens(1000*i, 4, 4), AllowedWorkerIDs: onlyOn(1)})
		route(t, e, &Request{ID: "kept", Tokens: tokens(1000*i, 4, 4), AllowedWorkerIDs: onlyOn(2)})
		e.r.Free("kept", 1)
		e.fleet.set(cands(0, 0, 2), nil)
		if i == 9 {
			before = heap()
		}
	}
	after := heap()
	e.r.mu.Lock()
	z, kinds, gauges := e.r.seqs.Sizes(), len(e.r.kinds), len(e.r.gauges)
	e.r.mu.Unlock()
	if z.Slots > 2 || z.Requests != 0 || z.Nodes != 0 || z.Edges != 0 || z.Queued > 4096 || kinds > 2 || gauges > 2 {
		t.Errorf("after 1000 cycles: %+v, %d kinds, %d gauges; want 2 slots at most, nothing booked", z, kinds, gauges)
	}
	// A generous bound: a leak of a rank or a request per cycle would
	// pass it only if each were under a few hundred bytes, and the counts
	// above catch those.
	if after > before+1<<20 {
		t.Errorf("heap in use grew from %d to %d bytes over 990 cycles", before, after)
	}
}

func TestReplicaEventOfADepartedRankIsIgnored(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1, 2), nil))
	e.fleet.set(cands(0, 0, 2), nil)
	for _, wk := range []uint64{1, 9} { // departed, never a candidate
		e.r.ApplyRemote(SyncEvent{Kind: SyncAdd, RequestID: "remote", Worker: w(wk), SeqHashes: []uint64{1, 2}, ISL: 8, TrackPrefill: true})
		if e.r.Active() != 0 {
			t.Fatalf("a replica's add on worker %d was booked", wk)
		}
	}
	if _, ok := e.r.Load(w(1)); ok {
		t.Error("a replica's add brought a departed worker back")
	}
	e.r.ApplyRemote(SyncEvent{Kind: SyncAdd, RequestID: "remote", Worker: w(2), SeqHashes: []uint64{1, 2}, ISL: 8, TrackPrefill: true})
	if l, _ := e.r.Load(w(2)); l.Requests != 1 {
		t.Errorf("a replica's add on a candidate: %+v, want 1 request", l)
	}
}

func TestNoCandidatesBeforeTheFirstPush(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(nil, nil))
	if _, err := e.r.Route(context.Background(), &Request{Tokens: tokens(0, 1, 4)}); !errors.Is(err, ErrNoWorkers) {
		t.Errorf("route before any candidate = %v, want ErrNoWorkers", err)
	}
	if e.r.Disaggregated() {
		t.Error("disaggregated with no prefill candidates")
	}
	e.fleet.set(cands(0, 0, 1), cands(0, 0, 10))
	if !e.r.Disaggregated() {
		t.Error("not disaggregated with a prefill candidate")
	}
	if d := route(t, e, &Request{Tokens: tokens(0, 1, 4)}); d.Type != WorkerTypeDisaggregated || d.Prefill.Worker != w(10) || d.Decode.Worker != w(1) {
		t.Errorf("auto with a prefill candidate: %+v", d)
	}
}

func TestPrefillTimeoutExpiresUnmarkedBookings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.PrefillTimeout = time.Minute
		e := newEnv(t, cfg, newFleet(cands(0, 0, 1), nil))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- e.r.Run(ctx) }()
		route(t, e, &Request{ID: "lost", Tokens: tokens(0, 2, 4)})
		route(t, e, &Request{ID: "marked", Tokens: tokens(100, 2, 4)})
		e.r.MarkPrefill("marked")
		time.Sleep(61 * time.Second)
		synctest.Wait()
		if e.r.MarkPrefill("lost") {
			t.Error("a booking never marked prefilled outlived the prefill timeout")
		}
		if l, _ := e.r.Load(w(1)); l.Requests != 1 || l.PrefillTokens != 0 {
			t.Errorf("load after the prefill timeout: %+v, want the marked request only", l)
		}
		if got := promtest.ToFloat64(e.r.m.BookingsExpired.WithLabelValues(metrics.ExpiredNoPrefill)); got != 1 {
			t.Errorf("no_prefill expiries = %v, want 1", got)
		}
		if got := promtest.ToFloat64(e.r.m.BookingsExpired.WithLabelValues(metrics.ExpiredStale)); got != 0 {
			t.Errorf("stale expiries = %v, want 0", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
