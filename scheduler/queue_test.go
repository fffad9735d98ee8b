package scheduler

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

func TestQueueOrder(t *testing.T) {
	type in struct {
		name      string
		at        time.Duration // arrival after t0
		jump      float64
		newTokens int
	}
	tests := []struct {
		name   string
		policy QueuePolicy
		in     []in
		now    time.Duration
		want   []string
	}{
		{name: "fcfs by arrival", policy: PolicyFCFS, in: []in{{"a", 0, 0, 10}, {"b", time.Second, 0, 10}, {"c", 2 * time.Second, 0, 10}}, want: []string{"a", "b", "c"}},
		// Keys: a 0, b 1 − 5 = −4, c 2 − 3 = −1.
		{name: "fcfs priority jump", policy: PolicyFCFS, in: []in{{"a", 0, 0, 10}, {"b", time.Second, 5, 10}, {"c", 2 * time.Second, 3, 10}}, want: []string{"b", "c", "a"}},
		{name: "fcfs equal keys keep arrival order", policy: PolicyFCFS, in: []in{{"a", 0, 1, 10}, {"b", time.Second, 2, 10}}, want: []string{"a", "b"}},
		{name: "wspt shortest first", policy: PolicyWSPT, in: []in{{"a", 0, 0, 1000}, {"b", 0, 0, 10}, {"c", 0, 0, 100}}, want: []string{"b", "c", "a"}},
		// (1 + 1) / 100 = 0.02 < 1 / 40 = 0.025.
		{name: "wspt priority weighs", policy: PolicyWSPT, in: []in{{"a", 0, 1, 100}, {"b", 0, 0, 40}, {"c", 0, 4, 100}}, want: []string{"c", "b", "a"}},
		{name: "wspt zero new tokens counts as one", policy: PolicyWSPT, in: []in{{"a", 0, 0, 1}, {"b", 0, 0, 0}}, want: []string{"a", "b"}},
		{
			name: "aged requests go first in arrival order", policy: PolicyWSPT, now: 3 * time.Second,
			in:   []in{{"huge", 0, 0, 40000}, {"big", 500 * time.Millisecond, 0, 9000}, {"small", 2500 * time.Millisecond, 0, 10}},
			want: []string{"huge", "big", "small"},
		},
		{
			name: "aging respects arrival, not the policy key", policy: PolicyFCFS, now: 10 * time.Second,
			in:   []in{{"a", 0, 0, 10}, {"b", time.Second, 8, 10}, {"c", 9 * time.Second, 0, 10}},
			want: []string{"a", "b", "c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := NewQueue(tt.policy, 10, 2*time.Second, t0)
			ws := map[*waiter]string{}
			for _, x := range tt.in {
				w := &waiter{req: &Request{PriorityJump: x.jump}, kind: KindDecode, isl: x.newTokens, arrival: t0.Add(x.at)}
				ws[w] = x.name
				if err := q.Push(w, x.newTokens); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for _, w := range q.Order(t0.Add(tt.now)) {
				got = append(got, ws[w])
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("order (-want +got):\n%s", diff)
			}
		})
	}
}

func TestQueueBounds(t *testing.T) {
	q := NewQueue(PolicyFCFS, 2, time.Second, t0)
	a := &waiter{req: &Request{}, kind: KindDecode, isl: 5, arrival: t0}
	b := &waiter{req: &Request{}, kind: KindPrefill, isl: 7, arrival: t0}
	c := &waiter{req: &Request{}, kind: KindDecode, isl: 9, arrival: t0}
	for _, w := range []*waiter{a, b} {
		if err := q.Push(w, w.isl); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Push(c, 9); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Push past capacity = %v, want ErrQueueFull", err)
	}
	if got := q.Pending(KindDecode); got != (Pending{Requests: 1, ISLTokens: 5}) {
		t.Errorf("decode pending = %+v", got)
	}
	if !q.Remove(a) || q.Remove(a) {
		t.Error("Remove: first call must succeed, the second fail")
	}
	if got := q.Pending(0); got != (Pending{Requests: 1, ISLTokens: 7}) {
		t.Errorf("pending after remove = %+v", got)
	}
}

// queueEnv is a router with the queue on at threshold 0 (a rank is busy
// as soon as it has prefill work) over decode workers of 100 batched
// tokens.
func queueEnv(t *testing.T, modify func(*Config), ids ...uint64) *env {
	cfg := testConfig()
	cfg.QueueThreshold = ptr(0.0)
	if modify != nil {
		modify(&cfg)
	}
	return newEnv(t, cfg, newFleet(cands(0, 100, ids...), nil))
}

// outcome collects the decision of a submitted request.
type outcome struct {
	mu   sync.Mutex
	done bool
	d    Decision
	err  error
}

func (o *outcome) set(d Decision, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.done, o.d, o.err = true, d, err
}

func (o *outcome) get() (bool, Decision, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.done, o.d, o.err
}

func submit(e *env, req *Request) *outcome {
	o := &outcome{}
	e.r.Submit(req, o.set)
	return o
}

func pendingGauge(e *env, kind Kind) float64 {
	return promtest.ToFloat64(e.r.m.QueuePendingRequests.WithLabelValues("", kind.String()))
}

func TestQueueWaitsAndReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := queueEnv(t, nil, 1)
		route(t, e, &Request{ID: "r1", Tokens: tokens(0, 2, 4)})
		r2 := submit(e, &Request{ID: "r2", Tokens: tokens(100, 2, 4)})
		if done, _, _ := r2.get(); done {
			t.Fatal("r2 routed while every worker was busy")
		}
		if p := e.r.Pending(); p != (Pending{Requests: 1, ISLTokens: 8}) || pendingGauge(e, KindDecode) != 1 {
			t.Fatalf("pending %+v, gauge %v; want 1 request of 8 tokens", p, pendingGauge(e, KindDecode))
		}
		e.r.MarkPrefill("r1") // capacity frees: r2 goes, before MarkPrefill returns
		done, d, err := r2.get()
		if !done || err != nil || d.Worker != w(1) || !d.Waited || d.RequestID != "r2" {
			t.Fatalf("r2 after r1's first token: done %v, %+v, %v", done, d, err)
		}
		if pendingGauge(e, KindDecode) != 0 {
			t.Errorf("pending gauge = %v after release, want 0", pendingGauge(e, KindDecode))
		}
		r3 := submit(e, &Request{ID: "r3", Tokens: tokens(200, 2, 4)})
		e.r.Free("r2", -1)
		if done, _, err := r3.get(); !done || err != nil {
			t.Fatalf("r3 after r2 was freed: done %v, %v", done, err)
		}
	})
}

// A route's retry that waits in the queue next to the route it retries:
// whichever is released first books, and the other is answered from that
// booking at once, though the worker is busy again and a request between
// them still waits.
func TestQueueRetryOfAWaitingRoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := queueEnv(t, nil, 1)
		route(t, e, &Request{ID: "busy", Tokens: tokens(0, 2, 4)})
		first := submit(e, &Request{ID: "r", Tokens: tokens(100, 2, 4)})
		other := submit(e, &Request{ID: "o", Tokens: tokens(200, 2, 4)})
		retry := submit(e, &Request{ID: "r", Tokens: tokens(100, 2, 4), Retry: true})
		if p := e.r.Pending(); p.Requests != 3 {
			t.Fatalf("pending %+v, want the three waiting", p)
		}
		e.r.Free("busy", -1)
		var workers []indexer.Worker
		for _, x := range []*outcome{first, retry} {
			done, d, err := x.get()
			if !done || err != nil || d.RequestID != "r" {
				t.Fatalf("after release: done %v, %+v, %v", done, d, err)
			}
			workers = append(workers, d.Worker)
		}
		if workers[0] != workers[1] {
			t.Errorf("the route went to %v and its retry was answered %v", workers[0], workers[1])
		}
		// o, between them, still waits: the worker is busy with r.
		if done, _, _ := other.get(); done || e.r.Pending().Requests != 1 {
			t.Errorf("o answered %v, pending %+v; want o alone still waiting", done, e.r.Pending())
		}
		if n := e.r.Active(); n != 1 {
			t.Errorf("%d requests active, want the one booking", n)
		}
	})
}

func TestQueueRejections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := queueEnv(t, func(c *Config) { c.QueueCapacity = 1 }, 1)
		route(t, e, &Request{ID: "busy", Tokens: tokens(0, 2, 4)})

		_, err := e.r.Route(context.Background(), &Request{Tokens: tokens(9, 1, 4), DoNotQueue: true})
		if !errors.Is(err, ErrQueueRejected) {
			t.Fatalf("do_not_queue = %v, want ErrQueueRejected", err)
		}
		first := submit(e, &Request{ID: "first", Tokens: tokens(10, 1, 4)})
		_, err = e.r.Route(context.Background(), &Request{Tokens: tokens(11, 1, 4)})
		if !errors.Is(err, ErrQueueFull) {
			t.Fatalf("past capacity = %v, want ErrQueueFull", err)
		}
		for reason, want := range map[string]float64{metrics.BackpressureDoNotQueue: 1, metrics.BackpressureRequestLimit: 1} {
			if got := promtest.ToFloat64(e.r.m.QueueBackpressure.WithLabelValues("", "decode", reason)); got != want {
				t.Errorf("backpressure{reason=%q} = %v, want %v", reason, got, want)
			}
		}
		// A query-only request never waits.
		if d := route(t, e, &Request{Tokens: tokens(12, 1, 4), QueryOnly: true}); d.Worker != w(1) {
			t.Errorf("query-only while busy: %+v", d)
		}
		// The waiting request times out.
		time.Sleep(DefaultQueueTimeout)
		synctest.Wait()
		if done, _, err := first.get(); !done || !errors.Is(err, ErrTimeout) {
			t.Errorf("after the queue timeout: done %v, %v; want ErrTimeout", done, err)
		}
		if p := e.r.Pending(); p.Requests != 0 {
			t.Errorf("%d requests still waiting after the timeout", p.Requests)
		}
	})
}

func TestQueueCancelAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := queueEnv(t, nil, 1)
		route(t, e, &Request{ID: "busy", Tokens: tokens(0, 2, 4)})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := e.r.Route(ctx, &Request{ID: "c", Tokens: tokens(5, 1, 4)}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Route past its context = %v, want DeadlineExceeded", err)
		}
		if p := e.r.Pending(); p.Requests != 0 {
			t.Fatalf("a cancelled request still waits")
		}
		waiting := submit(e, &Request{ID: "w", Tokens: tokens(6, 1, 4)})
		if done, _, _ := waiting.get(); done {
			t.Fatal("w routed while every worker was busy")
		}
		e.r.Close()
		// A closing router answers what waits, on the best rank as if none
		// were busy, and queues nothing more.
		if done, d, err := waiting.get(); !done || err != nil || d.Worker.ID != 1 || !d.Waited || d.RequestID != "w" {
			t.Errorf("waiting request at Close: done %v, %+v, %v; want routed to worker 1 after waiting", done, d, err)
		}
		if p := e.r.Pending(); p.Requests != 0 || pendingGauge(e, KindDecode) != 0 {
			t.Errorf("after Close: pending %+v, gauge %v; want none", p, pendingGauge(e, KindDecode))
		}
		d, err := e.r.Route(context.Background(), &Request{ID: "late", Tokens: tokens(7, 1, 4)})
		if err != nil || d.Worker.ID != 1 || d.Waited {
			t.Errorf("Route after Close, every worker busy = %+v, %v; want worker 1 at once", d, err)
		}
		if n := e.r.Active(); n != 3 {
			t.Errorf("%d requests active after Close, want 3 (busy, w, late)", n)
		}
		if !e.r.Free("busy", -1) {
			t.Error("Free after Close failed")
		}
	})
}

func TestQueueFilteredRequestDoesNotBlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := queueEnv(t, nil, 1, 2)
		route(t, e, &Request{ID: "b1", Tokens: tokens(0, 2, 4), AllowedWorkerIDs: []indexer.WorkerID{1}})
		route(t, e, &Request{ID: "b2", Tokens: tokens(50, 2, 4), AllowedWorkerIDs: []indexer.WorkerID{2}})
		only1 := submit(e, &Request{ID: "only1", Tokens: tokens(100, 1, 4), AllowedWorkerIDs: []indexer.WorkerID{1}})
		any := submit(e, &Request{ID: "any", Tokens: tokens(200, 1, 4)})
		// Worker 2 frees: the first in line may only use worker 1 and keeps
		// waiting; the next one goes.
		e.r.MarkPrefill("b2")
		if done, _, _ := only1.get(); done {
			t.Error("request pinned to busy worker 1 was released")
		}
		if done, d, err := any.get(); !done || err != nil || d.Worker != w(2) {
			t.Errorf("unfiltered request: done %v, %+v, %v; want worker 2", done, d, err)
		}
	})
}

// The two tests below replay Dynamo PR #8163's setting on simulated
// engines: threshold 4.0 over workers of 8,192 batched tokens (busy past
// 32,768 tokens of prefill work), four engines that prefill 50,000 tokens a
// second each, one request at a time, then decode for 200 ms.

// TestQueueKeepsThroughputWithLargePrompts offers 8,500-token prompts
// (Dynamo's case: about 3.8 of them fill a worker's threshold) at 106 % of
// the fleet's capacity for 20 s, so that the queue fills. With the queue
// on, every prompt is served, no engine ever idles while a request waits,
// and the last prompt finishes within 5 % of the time it does with the
// queue off: no throughput lost to the queue.
func TestQueueKeepsThroughputWithLargePrompts(t *testing.T) {
	var off, on simResult
	spec := simSpec{burst: 20 * time.Second, small: 8500, smallEvery: 40 * time.Millisecond, policy: PolicyFCFS, aging: DefaultQueueAgingLimit}
	synctest.Test(t, func(t *testing.T) { off = simulate(t, spec) })
	spec.threshold = ptr(4.0)
	synctest.Test(t, func(t *testing.T) { on = simulate(t, spec) })
	t.Logf("queue off: %d/%d served, last prefill at %v; queue on: %d/%d served, last prefill at %v, max wait %v",
		off.smallServed, off.smallOffered, off.makespan, on.smallServed, on.smallOffered, on.makespan, on.smallMaxWait)
	if on.smallServed != on.smallOffered || off.smallServed != off.smallOffered {
		t.Errorf("served %d of %d with the queue, %d of %d without; want all", on.smallServed, on.smallOffered, off.smallServed, off.smallOffered)
	}
	if on.smallMaxWait == 0 {
		t.Errorf("no request waited: the scenario no longer exercises the queue")
	}
	if on.idleWhileWaiting != 0 {
		t.Errorf("an engine went idle %d times while requests waited", on.idleWhileWaiting)
	}
	if float64(on.makespan) > 1.05*float64(off.makespan) {
		t.Errorf("with the queue the last prefill ended at %v, without at %v: throughput lost", on.makespan, off.makespan)
	}
}

// TestQueueLargePromptsDoNotStarve offers, for 12 s, 2,000-token prompts at
// the whole capacity of the fleet and a 40,000-token prompt (more than a
// worker's threshold on its own) every half second, under WSPT, which
// serves the small prompts first. The fleet is overloaded (120 %), so every
// request's wait grows while the burst lasts. With the aging limit a huge
// prompt waits no longer than the small ones do; with aging effectively
// off, huge prompts wait until the stream of small ones stops.
func TestQueueLargePromptsDoNotStarve(t *testing.T) {
	spec := simSpec{
		threshold: ptr(4.0), policy: PolicyWSPT, burst: 12 * time.Second,
		small: 2000, smallEvery: 10 * time.Millisecond, huge: 40000, hugeEvery: 500 * time.Millisecond,
	}
	tests := []struct {
		name  string
		aging time.Duration
		check func(t *testing.T, r simResult)
	}{
		{
			name: "aging limit 2s", aging: 2 * time.Second,
			check: func(t *testing.T, r simResult) {
				// Overloaded at 120 %, everyone's wait grows; a huge prompt
				// must wait no longer than small ones do (within one huge
				// prefill, 0.8 s), never until the stream stops.
				if r.hugeMaxWait > max(r.smallMaxWait, 2*time.Second)+800*time.Millisecond {
					t.Errorf("a huge prompt waited %v, small ones at most %v: huge prompts are starved", r.hugeMaxWait, r.smallMaxWait)
				}
			},
		},
		{
			name: "aging off (control)", aging: 24 * time.Hour,
			check: func(t *testing.T, r simResult) {
				if r.hugeMaxWait < 8*time.Second {
					t.Errorf("control: huge prompts waited at most %v with aging off; the simulation no longer shows starvation", r.hugeMaxWait)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				spec := spec
				spec.aging = tt.aging
				r := simulate(t, spec)
				t.Logf("huge: %d/%d served, max wait %v; small: %d/%d served, max wait %v; last prefill at %v",
					r.hugeServed, r.hugeOffered, r.hugeMaxWait, r.smallServed, r.smallOffered, r.smallMaxWait, r.makespan)
				if r.hugeServed != r.hugeOffered || r.smallServed != r.smallOffered {
					t.Errorf("not every prompt was served")
				}
				tt.check(t, r)
			})
		})
	}
}

// simSpec describes a simulated run: the router's queue, and arrivals of
// small (and optionally huge) prompts during the burst.
type simSpec struct {
	threshold   *float64
	policy      QueuePolicy
	aging       time.Duration
	burst       time.Duration
	small, huge int
	smallEvery  time.Duration
	hugeEvery   time.Duration
}

type simResult struct {
	smallOffered, smallServed, hugeOffered, hugeServed int
	smallMaxWait, hugeMaxWait                          time.Duration
	// makespan is when the last prefill ended, from the first arrival.
	makespan time.Duration
	// idleWhileWaiting counts engines found idle with requests waiting.
	idleWhileWaiting int
}

// simulate runs spec inside a synctest bubble and returns what happened.
func simulate(t *testing.T, spec simSpec) simResult {
	const (
		workers    = 4
		batched    = 8192
		rate       = 50000 // prefill tokens per second per engine
		decodeTime = 200 * time.Millisecond
	)
	cfg := DefaultConfig()
	cfg.BlockSize = 16
	cfg.QueueThreshold = spec.threshold
	cfg.QueuePolicy = spec.policy
	cfg.QueueAgingLimit = spec.aging
	cfg.QueueCapacity = 100000
	cfg.QueueTimeout = time.Hour
	ids := make([]uint64, workers)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	e := newEnv(t, cfg, newFleet(cands(0, batched, ids...), nil))

	type job struct {
		id  string
		isl int
	}
	var mu sync.Mutex
	var res simResult
	start := time.Now()
	engines := map[indexer.WorkerID]chan job{}
	var wg sync.WaitGroup
	for _, id := range ids {
		ch := make(chan job, 100000)
		engines[indexer.WorkerID(id)] = ch
		wg.Go(func() {
			for {
				var j job
				var ok bool
				select {
				case j, ok = <-ch:
				default:
					if e.r.Pending().Requests > 0 {
						mu.Lock()
						res.idleWhileWaiting++
						mu.Unlock()
					}
					j, ok = <-ch
				}
				if !ok {
					return
				}
				time.Sleep(time.Duration(j.isl) * time.Second / rate)
				mu.Lock()
				res.makespan = max(res.makespan, time.Since(start))
				mu.Unlock()
				e.r.MarkPrefill(j.id)
				time.AfterFunc(decodeTime, func() { e.r.Free(j.id, 10) })
			}
		})
	}
	offer := func(isl int) {
		at := time.Now()
		e.r.Submit(&Request{Tokens: make([]uint32, isl)}, func(d Decision, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("request of %d tokens: %v", isl, err)
				return
			}
			engines[d.Worker.ID] <- job{id: d.RequestID, isl: isl}
			if isl == spec.huge {
				res.hugeServed++
				res.hugeMaxWait = max(res.hugeMaxWait, time.Since(at))
			} else {
				res.smallServed++
				res.smallMaxWait = max(res.smallMaxWait, time.Since(at))
			}
		})
	}
	for next := time.Duration(0); next < spec.burst; next += spec.smallEvery {
		time.Sleep(time.Until(start.Add(next)))
		mu.Lock()
		res.smallOffered++
		mu.Unlock()
		offer(spec.small)
		if spec.huge > 0 && next%spec.hugeEvery == 0 {
			mu.Lock()
			res.hugeOffered++
			mu.Unlock()
			offer(spec.huge)
		}
	}
	// Wait until nothing waits, then let the engines drain.
	for e.r.Pending().Requests > 0 {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Minute)
	e.r.Close()
	for _, ch := range engines {
		close(ch)
	}
	wg.Wait()
	time.Sleep(decodeTime)
	mu.Lock()
	defer mu.Unlock()
	return res
}
