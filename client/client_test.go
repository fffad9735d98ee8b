package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/stack"
)

// The client's subjects are the router's.
func TestSubjectsAreTheRouters(t *testing.T) {
	nc := &nats.Conn{} // never used: New only keeps it
	rc, err := client.New(nc, client.WithNamespace("ns1"), client.WithRouterComponent("r2"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range client.Endpoints() {
		if got, want := rc.Subject(e), service.Subject("ns1", "r2", string(e)); got != want {
			t.Errorf("Subject(%s) = %q, want the router's %q", e, got, want)
		}
		for _, id := range []uint64{1, 0xabc, 1<<64 - 1} {
			if got, want := rc.ReplicaSubject(e, id), service.ReplicaSubject("ns1", "r2", string(e), id); got != want {
				t.Errorf("ReplicaSubject(%s, %d) = %q, want the router's %q", e, id, got, want)
			}
		}
	}
	if got, want := rc.ReplicaSubject(client.EndpointMarkFree, 0x2a), "namespace.ns1.component.r2.mark_free.2a"; got != want {
		t.Errorf("ReplicaSubject = %q, want %q (lower-case hex, as the etcd instance keys)", got, want)
	}
}

// New refuses what cannot be a subject token or a timeout, all at once.
func TestNewRejectsBadOptions(t *testing.T) {
	nc := &nats.Conn{}
	tests := []struct {
		name string
		opts []client.Option
		want []string
	}{
		{name: "dotted namespace", opts: []client.Option{client.WithNamespace("a.b")}, want: []string{`namespace "a.b"`}},
		{name: "empty component", opts: []client.Option{client.WithRouterComponent("")}, want: []string{`router component ""`}},
		{name: "everything", opts: []client.Option{client.WithNamespace("*"), client.WithRouterComponent("x y"), client.WithTimeout(0)},
			want: []string{`namespace "*"`, `router component "x y"`, "timeout 0s must be positive"}},
		{name: "route retry past the timeout", opts: []client.Option{client.WithTimeout(time.Second), client.WithRouteRetry(2 * time.Second)},
			want: []string{"route retry attempt 2s is out of range"}},
		{name: "negative route retry", opts: []client.Option{client.WithRouteRetry(-time.Second)}, want: []string{"route retry attempt -1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.New(nc, tt.opts...)
			if err == nil {
				t.Fatal("New accepted it")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
	if _, err := client.New(nil); err == nil {
		t.Error("New(nil) accepted a nil connection")
	}
}

// Requests are encoded as docs/api.md shows them: absent fields left out,
// an empty prompt or an empty allowed_worker_ids sent rather than dropped.
func TestRequestJSON(t *testing.T) {
	one := 1.0
	tests := []struct {
		name string
		req  any
		want string
	}{
		{name: "tokens only", req: client.RouteRequest{Prompt: client.Prompt{TokenIDs: []uint32{1, 2}}}, want: `{"token_ids":[1,2]}`},
		{name: "empty prompt", req: client.Prompt{TokenIDs: []uint32{}}, want: `{"token_ids":[]}`},
		{name: "no prompt", req: client.Prompt{}, want: `{}`},
		{name: "every field", req: client.RouteRequest{
			RequestID: "r-1", Prompt: client.Prompt{BlockHashes: []uint64{1 << 63}, ISL: 3, LoRAName: "a"},
			WorkerType: client.WorkerTypeDisaggregated, Book: new(false), PriorityJump: 1.5, DoNotQueue: true,
			AllowedWorkerIDs: []client.WorkerID{7, 9}, RouterConfigOverride: &client.RouterConfigOverride{OverlapScoreWeight: &one}, Retry: true,
		}, want: `{"request_id":"r-1","block_hashes":[9223372036854775808],"isl":3,"lora_name":"a","worker_type":"disaggregated",` +
			`"book":false,"priority_jump":1.5,"do_not_queue":true,"allowed_worker_ids":[7,9],"router_config_override":{"overlap_score_weight":1},"retry":true}`},
		{name: "marks name their replica", req: client.MarkFreeRequest{RequestID: "r", RouterID: 42}, want: `{"request_id":"r","router_id":42}`},
		{name: "marks without a replica", req: client.MarkPrefillRequest{RequestID: "r"}, want: `{"request_id":"r"}`},
		{name: "empty allowed list", req: client.RouteRequest{AllowedWorkerIDs: []client.WorkerID{}}, want: `{"allowed_worker_ids":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(b)); diff != "" {
				t.Errorf("json.Marshal (-want +got):\n%s", diff)
			}
			// What the client sends: the same object, prompt lists first.
			ptr := reflect.New(reflect.TypeOf(tt.req))
			ptr.Elem().Set(reflect.ValueOf(tt.req))
			sent, err := client.Encode(ptr.Interface())
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, tt.want, string(sent))
		})
	}
}

// sameJSON fails t unless want and got are the same JSON value.
func sameJSON(t *testing.T, want, got string) {
	t.Helper()
	var w, g any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %s: %v", want, err)
	}
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("the client sends %s, which is not JSON: %v", got, err)
	}
	if diff := cmp.Diff(w, g); diff != "" {
		t.Errorf("the client sends %s; want %s (-want +got):\n%s", got, want, diff)
	}
}

// The client's own encoding of route requests is json.Marshal's, whatever
// the request.
func FuzzRequestEncoding(f *testing.F) {
	f.Add("r-1", []byte{1, 2, 3, 4}, true, false, 0, "", uint8(0))
	f.Add("", []byte{}, false, true, 3, "a\"b\u2028", uint8(3))
	f.Add("\xff", []byte(nil), false, false, -1, "", uint8(1))
	f.Fuzz(func(t *testing.T, id string, prompt []byte, tokens, hashes bool, isl int, lora string, flags uint8) {
		q := client.RouteRequest{RequestID: id, Prompt: client.Prompt{ISL: isl, LoRAName: lora}, DoNotQueue: flags&1 != 0}
		if tokens {
			q.TokenIDs = []uint32{}
			for _, b := range prompt {
				q.TokenIDs = append(q.TokenIDs, uint32(b)<<24|uint32(b))
			}
		}
		if hashes {
			q.BlockHashes = []uint64{}
			for _, b := range prompt {
				q.BlockHashes = append(q.BlockHashes, uint64(b)<<56|uint64(b))
			}
		}
		if flags&2 != 0 {
			q.Book = new(false)
		}
		for _, req := range []any{q, q.Prompt} {
			want, err := json.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			ptr := reflect.New(reflect.TypeOf(req))
			ptr.Elem().Set(reflect.ValueOf(req))
			got, err := client.Encode(ptr.Interface())
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, string(want), string(got))
		}
	})
}

// CheckReply reads failure from any reply alike.
func TestCheckReply(t *testing.T) {
	tests := []struct {
		reply string
		is    error
		code  client.Code
	}{
		{reply: `{"error":{"code":"queue_full","message":"4096 requests waiting"}}`, is: client.ErrQueueFull, code: client.CodeQueueFull},
		{reply: `{"error":{"code":"internal","message":"router shutting down"}}`, is: client.ErrInternal, code: client.CodeInternal},
		{reply: `{"error":{"code":"from_the_future","message":"?"}}`, code: "from_the_future"},
		{reply: `{"success":false}`, is: client.ErrUnknownRequest},
		{reply: `{"success":true}`},
		{reply: `{"worker_id":7}`},
		{reply: `not json`},
	}
	sentinels := []error{client.ErrBadRequest, client.ErrNoWorkers, client.ErrOverloaded, client.ErrQueueFull,
		client.ErrQueueRejected, client.ErrTimeout, client.ErrInternal, client.ErrUnknownRequest}
	for _, tt := range tests {
		t.Run(tt.reply, func(t *testing.T) {
			err := client.CheckReply([]byte(tt.reply))
			if (err == nil) != (tt.is == nil && tt.code == "") {
				t.Fatalf("CheckReply = %v", err)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) != (s == tt.is) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, !(s == tt.is))
				}
			}
			var e *client.Error
			if errors.As(err, &e) != (tt.code != "") || (e != nil && e.Code != tt.code) {
				t.Errorf("CheckReply = %#v, want an *Error of code %q", err, tt.code)
			}
		})
	}
}

// The lifecycle against a real router: route books on the worker,
// mark_prefill and mark_free reach it, a query-only route books nothing,
// a generated id comes back, and marks by id work too.
func TestLifecycle(t *testing.T) {
	c, r := withWorker(t)
	rc := c.client()
	ctx := context.Background()

	req, err := rc.Route(ctx, client.RouteRequest{RequestID: "r-1", Prompt: client.Prompt{TokenIDs: tokens(1, 9)}})
	if err != nil {
		t.Fatal(err)
	}
	want := client.Decision{RequestID: "r-1", Worker: client.Worker{WorkerID: 7}, NumBlocks: 2, WorkerType: client.WorkerTypeAggregated, RouterID: 1}
	if diff := cmp.Diff(want, req.Decision()); diff != "" {
		t.Errorf("decision (-want +got):\n%s", diff)
	}
	if req.ID() != "r-1" || r.active(7) != 1 {
		t.Fatalf("ID %q, %d requests on worker 7; want r-1 booked", req.ID(), r.active(7))
	}
	if err := req.Prefilled(ctx); err != nil {
		t.Errorf("Prefilled: %v", err)
	}
	if err := req.Prefilled(ctx); err != nil {
		t.Errorf("Prefilled again (mark_prefill is idempotent): %v", err)
	}
	if err := req.Done(ctx, 5); err != nil {
		t.Errorf("Done: %v", err)
	}
	if n := r.active(7); n != 0 {
		t.Errorf("%d requests on worker 7 after Done, want 0", n)
	}

	// book: false decides and books nothing; its handle marks nothing.
	q, err := rc.Route(ctx, client.RouteRequest{Prompt: client.Prompt{TokenIDs: tokens(1, 9)}, Book: new(false)})
	if err != nil {
		t.Fatal(err)
	}
	if q.Decision().WorkerID != 7 || r.active(7) != 0 {
		t.Errorf("query-only route: worker %d, %d booked; want worker 7, none booked", q.Decision().WorkerID, r.active(7))
	}
	if err := q.Prefilled(ctx); err != nil {
		t.Errorf("Prefilled of a query-only decision: %v, want nil", err)
	}
	if err := q.Done(ctx, 1); err != nil {
		t.Errorf("Done of a query-only decision: %v, want nil", err)
	}

	// A generated id, marked by id.
	g, err := rc.Route(ctx, client.RouteRequest{Prompt: client.Prompt{TokenIDs: []uint32{}}})
	if err != nil {
		t.Fatal(err)
	}
	if g.ID() == "" {
		t.Fatal("the router's generated id is missing")
	}
	if err := rc.MarkPrefill(ctx, g.ID()); err != nil {
		t.Errorf("MarkPrefill: %v", err)
	}
	if err := rc.MarkFree(ctx, g.ID(), -1); err != nil {
		t.Errorf("MarkFree: %v", err)
	}
	if err := rc.MarkFree(ctx, g.ID(), -1); !errors.Is(err, client.ErrUnknownRequest) || !strings.Contains(err.Error(), g.ID()) {
		t.Errorf("MarkFree of a freed request = %v, want ErrUnknownRequest naming the id", err)
	}
	if r.active(7) != 0 {
		t.Errorf("%d requests left on worker 7", r.active(7))
	}
}

// Disaggregated decisions carry the prefill and decode workers.
func TestDisaggregatedDecision(t *testing.T) {
	c := newCluster(t)
	r := c.start("dynamo")
	c.register("dynamo", "backend", 7)
	c.register("dynamo", "prefill", 11)
	r.waitWorker(7)
	r.waitWorker(11)
	testutil.Eventually(t, 10*time.Second, r.st.Router().Disaggregated, "prefill worker a candidate")
	req, err := c.client().Route(context.Background(), client.RouteRequest{Prompt: client.Prompt{TokenIDs: tokens(1, 8)}})
	if err != nil {
		t.Fatal(err)
	}
	defer req.Done(context.Background(), -1)
	d := req.Decision()
	want := client.Decision{RequestID: d.RequestID, Worker: client.Worker{WorkerID: 11}, NumBlocks: 2, WorkerType: client.WorkerTypeDisaggregated,
		Prefill: &client.PrefillWorker{Worker: client.Worker{WorkerID: 11}}, Decode: &client.Worker{WorkerID: 7}, RouterID: 1}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Errorf("decision (-want +got):\n%s", diff)
	}
}

// overlap_scores and potential_loads, decoded.
func TestOverlapScoresAndPotentialLoads(t *testing.T) {
	c, _ := withWorker(t)
	rc := c.client()
	ctx := context.Background()
	prompt := client.Prompt{TokenIDs: tokens(100, 12)}

	c.store("dynamo", 7, prompt.TokenIDs[:8])
	var o *client.Overlaps
	testutil.Eventually(t, 10*time.Second, func() bool {
		var err error
		o, err = rc.OverlapScores(ctx, prompt)
		if err != nil {
			t.Fatal(err)
		}
		return len(o.Workers) == 1
	}, "the stored blocks indexed")
	want := &client.Overlaps{BlockSize: blockSize, NumBlocks: 3, Workers: []client.WorkerOverlap{
		{Worker: client.Worker{WorkerID: 7}, OverlapBlocks: 2, WorkerType: client.WorkerTypeAggregated}}}
	if diff := cmp.Diff(want, o); diff != "" {
		t.Errorf("overlap_scores (-want +got):\n%s", diff)
	}

	req, err := rc.Route(ctx, client.RouteRequest{Prompt: prompt})
	if err != nil {
		t.Fatal(err)
	}
	defer req.Done(ctx, -1)
	l, err := rc.PotentialLoads(ctx, prompt)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Loads) != 1 || l.Loads[0].WorkerID != 7 || l.Loads[0].ActiveRequests != 1 || l.Loads[0].PotentialPrefillTokens == 0 || l.PendingCount != 0 {
		t.Errorf("potential_loads = %+v, want worker 7 with the one request and prefill tokens, nothing pending", l)
	}
}

// Each error the router can be made to answer comes back as its sentinel,
// as an *Error with the router's message.
func TestErrorReplies(t *testing.T) {
	c := newCluster(t)
	r := c.start("dynamo")
	rc := c.client()
	ctx := context.Background()
	prompt := client.Prompt{TokenIDs: tokens(1, 8)}
	route := func(req client.RouteRequest) error { _, err := rc.Route(ctx, req); return err }
	tests := []struct {
		name string
		call func() error
		is   error
		has  string // in the message
	}{
		{name: "no workers registered", call: func() error { return route(client.RouteRequest{Prompt: prompt}) }, is: client.ErrNoWorkers},
		{name: "both prompts", call: func() error {
			return route(client.RouteRequest{Prompt: client.Prompt{TokenIDs: []uint32{1}, BlockHashes: []uint64{1}}})
		}, is: client.ErrBadRequest, has: "exclusive"},
		{name: "empty allowed list", call: func() error {
			return route(client.RouteRequest{Prompt: prompt, AllowedWorkerIDs: []client.WorkerID{}})
		}, is: client.ErrBadRequest, has: "allowed_worker_ids"},
		{name: "unknown worker type", call: func() error { return route(client.RouteRequest{Prompt: prompt, WorkerType: "gpu"}) },
			is: client.ErrBadRequest, has: "worker_type"},
		{name: "no prompt", call: func() error { _, err := rc.OverlapScores(ctx, client.Prompt{}); return err },
			is: client.ErrBadRequest, has: "neither"},
		{name: "potential_loads, no prompt", call: func() error { _, err := rc.PotentialLoads(ctx, client.Prompt{}); return err },
			is: client.ErrBadRequest},
		{name: "mark without id", call: func() error { return rc.MarkFree(ctx, "", 1) }, is: client.ErrBadRequest, has: "request_id"},
		{name: "mark_free, unknown id", call: func() error { return rc.MarkFree(ctx, "never-routed", 1) }, is: client.ErrUnknownRequest, has: "never-routed"},
		{name: "mark_prefill, unknown id", call: func() error { return rc.MarkPrefill(ctx, "never-routed") }, is: client.ErrUnknownRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.is) {
				t.Fatalf("error %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.has) {
				t.Errorf("error %q does not say %q", err, tt.has)
			}
			var e *client.Error
			if errors.As(err, &e) != (tt.is != client.ErrUnknownRequest) || (e != nil && e.Message == "") {
				t.Errorf("error %#v: want an *Error with the router's message for error replies only", err)
			}
		})
	}
	if n := r.st.Router().Active(); n != 0 {
		t.Errorf("%d requests booked by failed requests", n)
	}
}

// A worker over a busy threshold: overloaded, until the first token of
// the request that made it busy (Prefilled) takes its prefill off.
func TestOverloaded(t *testing.T) {
	c := newCluster(t)
	r := c.start("dynamo", func(cfg *stack.Config) { cfg.Scheduler.ActivePrefillTokensThreshold = new(0) })
	c.register("dynamo", "backend", 7)
	r.waitWorker(7)
	rc := c.client()
	ctx := context.Background()
	prompt := client.Prompt{TokenIDs: tokens(1, 8)}
	a, err := rc.Route(ctx, client.RouteRequest{Prompt: prompt})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Done(ctx, -1)
	if _, err := rc.Route(ctx, client.RouteRequest{Prompt: prompt}); !errors.Is(err, client.ErrOverloaded) {
		t.Fatalf("route to a busy worker: %v, want ErrOverloaded", err)
	}
	if err := a.Prefilled(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := rc.Route(ctx, client.RouteRequest{Prompt: prompt})
	if err != nil {
		t.Fatalf("route after the busy request's first token: %v", err)
	}
	if err := b.Done(ctx, -1); err != nil {
		t.Error(err)
	}
}

// The router's queue: queue_rejected, queue_full, timeout, and a decision
// for a request still waiting when the router stops; a request released
// from the queue is a decision like any other.
func TestQueueErrors(t *testing.T) {
	c := newCluster(t)
	queued := func(timeout time.Duration) func(*stack.Config) {
		return func(cfg *stack.Config) {
			cfg.Scheduler.QueueThreshold = new(0.0) // busy while any prompt is not prefilled
			cfg.Scheduler.QueueCapacity = 1
			cfg.Scheduler.QueueTimeout = timeout
		}
	}
	ctx := context.Background()
	prompt := client.Prompt{TokenIDs: tokens(1, 8)}
	// busy starts a router in ns with worker 7 busy with one request, and
	// returns a client and the busy request.
	busy := func(ns string, timeout time.Duration) (*router, *client.Client, *client.Request) {
		r := c.start(ns, queued(timeout))
		c.register(ns, "backend", 7)
		r.waitWorker(7)
		rc := c.client(client.WithNamespace(ns))
		a, err := rc.Route(ctx, client.RouteRequest{Prompt: prompt})
		if err != nil {
			t.Fatal(err)
		}
		return r, rc, a
	}
	// routed is what a route in the background came to.
	type routed struct {
		req *client.Request
		err error
	}
	// wait routes in the background, into the queue, and returns once the
	// request waits there.
	wait := func(rc *client.Client) chan routed {
		ch := make(chan routed, 1)
		go func() {
			req, err := rc.Route(ctx, client.RouteRequest{Prompt: prompt})
			ch <- routed{req, err}
		}()
		testutil.Eventually(t, 10*time.Second, func() bool {
			l, err := rc.PotentialLoads(ctx, prompt)
			return err == nil && l.PendingCount == 1
		}, "the request waiting in the queue")
		return ch
	}

	t.Run("rejected, full, released", func(t *testing.T) {
		_, rc, a := busy("q1", time.Minute)
		if _, err := rc.Route(ctx, client.RouteRequest{Prompt: prompt, DoNotQueue: true}); !errors.Is(err, client.ErrQueueRejected) {
			t.Errorf("do_not_queue: %v, want ErrQueueRejected", err)
		}
		waiting := wait(rc)
		if _, err := rc.Route(ctx, client.RouteRequest{Prompt: prompt}); !errors.Is(err, client.ErrQueueFull) {
			t.Errorf("queue of 1 full: %v, want ErrQueueFull", err)
		}
		if err := a.Prefilled(ctx); err != nil {
			t.Fatal(err)
		}
		got := <-waiting
		if got.err == nil {
			got.err = got.req.Done(ctx, -1)
		}
		if got.err != nil {
			t.Errorf("released request: %v", got.err)
		}
		if err := a.Done(ctx, -1); err != nil {
			t.Error(err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		_, rc, a := busy("q2", 200*time.Millisecond)
		defer a.Done(ctx, -1)
		_, err := rc.Route(ctx, client.RouteRequest{Prompt: prompt})
		if !errors.Is(err, client.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("queue timeout: %v, want the router's ErrTimeout, not a deadline of the client", err)
		}
	})
	t.Run("router stops", func(t *testing.T) {
		r, rc, _ := busy("q3", time.Minute)
		waiting := wait(rc)
		r.stop()
		// The leaving router routes what waits, as if no worker were busy.
		if got := <-waiting; got.err != nil || got.req == nil || got.req.Decision().WorkerID != 7 {
			t.Errorf("request waiting while the router stops: %+v, want worker 7", got)
		}
	})
}

// Deadlines, the caller's or the client's, end calls with
// context.DeadlineExceeded; marks are retried until then, routes never.
func TestDeadlines(t *testing.T) {
	c := newCluster(t)
	c.start("dynamo", func(cfg *stack.Config) { cfg.Scheduler.QueueThreshold = new(0.0) })
	c.register("dynamo", "backend", 7)
	ctx := context.Background()
	prompt := client.Prompt{TokenIDs: tokens(1, 8)}
	rc := c.client()
	testutil.Eventually(t, 10*time.Second, func() bool {
		req, err := rc.Route(ctx, client.RouteRequest{Prompt: prompt}) // keeps the worker busy
		return err == nil && req != nil
	}, "worker 7 routable")

	t.Run("route waiting past the caller's deadline", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		req, err := rc.Route(dctx, client.RouteRequest{Prompt: prompt})
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, client.ErrTimeout) || req != nil {
			t.Errorf("Route = %v, %v; want no handle and context.DeadlineExceeded", req, err)
		}
		if err := req.Done(ctx, 1); err != nil {
			t.Errorf("Done after a failed Route = %v, want nil", err)
		}
	})
	t.Run("route waiting past the client's timeout", func(t *testing.T) {
		short := c.client(client.WithTimeout(100 * time.Millisecond))
		if _, err := short.Route(ctx, client.RouteRequest{Prompt: prompt}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Route = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("mark with no router, retried until the deadline", func(t *testing.T) {
		other := c.client(client.WithNamespace("nobody"))
		var retries atomic.Int32
		client.OnRetry(other, func(int, error) { retries.Add(1) })
		dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		err := other.MarkFree(dctx, "r-1", 1)
		for _, want := range []error{client.ErrNoRouter, nats.ErrNoResponders, context.DeadlineExceeded} {
			if !errors.Is(err, want) {
				t.Errorf("MarkFree = %v, want it to wrap %v", err, want)
			}
		}
		if retries.Load() < 2 {
			t.Errorf("%d retries within 300ms, want several", retries.Load())
		}
	})
	t.Run("mark never answered, retried until the deadline", func(t *testing.T) {
		// A responder that takes marks and never answers, as a replica
		// that dies before replying.
		mute := testutil.NATSConn(t, c.natsURL)
		if _, err := mute.Subscribe(service.Subject("mute", "router", "mark_prefill"), func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		if err := mute.Flush(); err != nil {
			t.Fatal(err)
		}
		other := c.client(client.WithNamespace("mute"), client.WithTimeout(time.Second))
		var retries atomic.Int32
		client.OnRetry(other, func(int, error) { retries.Add(1) })
		start := time.Now()
		err := other.MarkPrefill(ctx, "r-1")
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, client.ErrNoRouter) {
			t.Errorf("MarkPrefill = %v, want context.DeadlineExceeded", err)
		}
		if retries.Load() < 2 || time.Since(start) > 5*time.Second {
			t.Errorf("%d retries in %v, want several within the 1s timeout", retries.Load(), time.Since(start))
		}
	})
	t.Run("mark whose first reply is lost", func(t *testing.T) {
		// A responder that drops the first mark of each id, as a replica
		// that died with it, and answers the next with success.
		for _, success := range []bool{true, false} {
			ns := fmt.Sprintf("lossy%v", success)
			lossy := testutil.NATSConn(t, c.natsURL)
			seen := map[string]bool{}
			if _, err := lossy.Subscribe(service.Subject(ns, "router", "mark_free"), func(m *nats.Msg) {
				if !seen[string(m.Data)] {
					seen[string(m.Data)] = true
					return
				}
				_ = m.Respond(fmt.Appendf(nil, `{"success":%v}`, success))
			}); err != nil {
				t.Fatal(err)
			}
			if err := lossy.Flush(); err != nil {
				t.Fatal(err)
			}
			other := c.client(client.WithNamespace(ns), client.WithTimeout(time.Second))
			err := other.MarkFree(ctx, "r-1", 2)
			switch {
			case success && err != nil:
				t.Errorf("MarkFree answered on the second attempt: %v, want nil", err)
			case !success && (!errors.Is(err, client.ErrUnknownRequest) || !strings.Contains(err.Error(), "may have reached the router")):
				t.Errorf("MarkFree unknown on the second attempt: %v, want ErrUnknownRequest saying the first may have freed it", err)
			}
		}
	})
	t.Run("route with no router, retried until the deadline", func(t *testing.T) {
		other := c.client(client.WithNamespace("nobody"), client.WithTimeout(300*time.Millisecond))
		var retries atomic.Int32
		client.OnRetry(other, func(int, error) { retries.Add(1) })
		_, err := other.Route(ctx, client.RouteRequest{Prompt: prompt})
		for _, want := range []error{client.ErrNoRouter, nats.ErrNoResponders, context.DeadlineExceeded} {
			if !errors.Is(err, want) {
				t.Errorf("Route = %v, want it to wrap %v", err, want)
			}
		}
		if retries.Load() < 2 {
			t.Errorf("%d retries within 300ms, want several", retries.Load())
		}
	})
	t.Run("route never answered, sent again only with WithRouteRetry", func(t *testing.T) {
		// A responder that never answers routes, as a replica killed with
		// them in hand. It counts them; a "marker" message, sent after the
		// routes on the same connection, arrives after them all.
		subject := service.Subject("muteroute", "router", "route")
		mute := testutil.NATSConn(t, c.natsURL)
		counts := make(chan int, 1)
		n := 0
		if _, err := mute.Subscribe(subject, func(m *nats.Msg) {
			if string(m.Data) == "marker" {
				counts <- n
				n = 0
				return
			}
			n++
		}); err != nil {
			t.Fatal(err)
		}
		if err := mute.Flush(); err != nil {
			t.Fatal(err)
		}
		nc := testutil.NATSConn(t, c.natsURL)
		sent := func(opts ...client.Option) int {
			t.Helper()
			rc, err := client.New(nc, append(opts, client.WithNamespace("muteroute"), client.WithTimeout(300*time.Millisecond))...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rc.Route(ctx, client.RouteRequest{Prompt: prompt}); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Route = %v, want context.DeadlineExceeded", err)
			}
			if err := nc.Publish(subject, []byte("marker")); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-counts:
				return got
			case <-time.After(10 * time.Second):
				t.Fatal("the marker did not arrive within 10s")
				return 0
			}
		}
		if got := sent(); got != 1 {
			t.Errorf("Route without WithRouteRetry sent %d attempts, want 1", got)
		}
		if got := sent(client.WithRouteRetry(50 * time.Millisecond)); got < 3 {
			t.Errorf("Route with WithRouteRetry(50ms) sent %d attempts in 300ms, want several", got)
		}
	})
}

// Dial owns its connection: Close closes it, once however often it is
// called, and calls fail after; a client from New leaves its connection
// open.
func TestDialClose(t *testing.T) {
	ns := testutil.NATS(t)
	rc, err := client.Dial(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := rc.MarkFree(context.Background(), "r-1", 1); !errors.Is(err, nats.ErrConnectionClosed) {
		t.Errorf("MarkFree after Close = %v, want nats.ErrConnectionClosed", err)
	}

	nc := testutil.NATSConn(t, ns.URL())
	rc, err = client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil || nc.IsClosed() {
		t.Errorf("Close of a client from New: %v, connection closed %v; want it left open", err, nc.IsClosed())
	}

	ns.Close()
	if _, err := client.Dial(ns.URL()); err == nil || !strings.Contains(err.Error(), ns.URL()) {
		t.Errorf("Dial of a stopped server = %v, want an error naming it", err)
	}
}

// Done sends mark_free once, whatever calls it, concurrently or not; it
// frees the booking even when the caller's context has ended; Prefilled
// after Done sends nothing.
func TestDoneOnce(t *testing.T) {
	c, r := withWorker(t)
	nc := testutil.NATSConn(t, c.natsURL)
	rc, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s := c.spy()
	ctx := context.Background()
	req, err := rc.Route(ctx, client.RouteRequest{RequestID: "once", Prompt: client.Prompt{TokenIDs: tokens(1, 8)}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Go(func() { errs[i] = req.Done(ctx, i) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Done #%d: %v", i, err)
		}
	}
	if err := req.Prefilled(ctx); err != nil {
		t.Errorf("Prefilled after Done: %v", err)
	}
	// The handle's marks go to the subject of the replica that booked it.
	id := req.Decision().RouterID
	if id == 0 {
		t.Fatal("the decision names no router replica")
	}
	if n := s.count(nc, rc.ReplicaSubject(client.EndpointMarkFree, id)); n != 1 {
		t.Errorf("%d mark_free sent to the replica by 16 Done calls, want 1", n)
	}
	if n := s.count(nc, rc.Subject(client.EndpointMarkFree)); n != 0 {
		t.Errorf("%d mark_free sent to the queue group, want 0", n)
	}
	for _, subject := range []string{rc.Subject(client.EndpointMarkPrefill), rc.ReplicaSubject(client.EndpointMarkPrefill, id)} {
		if n := s.count(nc, subject); n != 0 {
			t.Errorf("%d mark_prefill sent to %s after Done, want 0", n, subject)
		}
	}
	if r.active(7) != 0 {
		t.Errorf("%d requests left booked", r.active(7))
	}

	// A cancelled request's context still frees its booking.
	cctx, cancel := context.WithCancel(ctx)
	req, err = rc.Route(cctx, client.RouteRequest{Prompt: client.Prompt{TokenIDs: tokens(1, 8)}})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := req.Done(cctx, -1); err != nil || r.active(7) != 0 {
		t.Errorf("Done with a cancelled context: %v, %d left booked; want the booking freed", err, r.active(7))
	}

	var none *client.Request
	if none.Done(ctx, 1) != nil || none.Prefilled(ctx) != nil || none.ID() != "" {
		t.Error("a nil *Request is not a no-op")
	}
}

// A router restart under a client: a mark sent while no router runs is
// retried until the new one answers (which does not know the request),
// and routes work again on the new router.
func TestRouterRestart(t *testing.T) {
	c, old := withWorker(t)
	rc := c.client()
	ctx := context.Background()
	prompt := client.Prompt{TokenIDs: tokens(1, 8)}
	req, err := rc.Route(ctx, client.RouteRequest{RequestID: "before", Prompt: prompt})
	if err != nil {
		t.Fatal(err)
	}
	old.stop()

	retried := make(chan struct{})
	var once sync.Once
	client.OnRetry(rc, func(_ int, err error) {
		if errors.Is(err, nats.ErrNoResponders) {
			once.Do(func() { close(retried) })
		}
	})
	done := make(chan error, 1)
	go func() { done <- req.Done(ctx, 3) }()
	select {
	case <-retried:
	case err := <-done:
		t.Fatalf("Done returned %v with no router running, want it to retry", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Done did not retry within 10s")
	}
	r := c.start("dynamo")
	if err := <-done; err != nil && !errors.Is(err, client.ErrUnknownRequest) {
		t.Errorf("Done across the restart = %v, want nil or ErrUnknownRequest", err)
	}

	r.waitWorker(7)
	after, err := rc.Route(ctx, client.RouteRequest{RequestID: "after", Prompt: prompt})
	if err != nil {
		t.Fatalf("Route after the restart: %v", err)
	}
	if after.Decision().WorkerID != 7 || r.active(7) != 1 {
		t.Errorf("after the restart: worker %d, %d booked; want worker 7, one booked", after.Decision().WorkerID, r.active(7))
	}
	if err := after.Done(ctx, 3); err != nil || r.active(7) != 0 {
		t.Errorf("Done after the restart: %v, %d left booked", err, r.active(7))
	}
}

// Two replicas in one queue group, with replica sync: requests spread over
// both, each handle's marks go to the replica that booked it, and every
// booking is freed on both.
func TestQueueGroup(t *testing.T) {
	c := newCluster(t)
	withSync := func(cfg *stack.Config) { cfg.Scheduler.ReplicaSync = true }
	replicas := []*router{c.start("dynamo", withSync), c.start("dynamo", withSync)}
	c.register("dynamo", "backend", 7)
	for _, r := range replicas {
		r.waitWorker(7)
	}
	rc := c.client()
	ctx := context.Background()
	for i := range 40 {
		req, err := rc.Route(ctx, client.RouteRequest{Prompt: client.Prompt{TokenIDs: tokens(i, 8)}})
		if err != nil {
			t.Fatal(err)
		}
		if err := req.Done(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range replicas {
		if n := r.handled(client.EndpointRoute); n == 0 {
			t.Errorf("replica %d answered no route of 40", i)
		}
		testutil.Eventually(t, 10*time.Second, func() bool { return r.st.Router().Active() == 0 }, "replica %d holds no booking", i)
	}
}

// After no responders, the client sends again only while an answer could
// still come back before the deadline: an attempt cut short there would
// turn "no router" into "no reply" (TestReplayRealTimeWithoutRouter saw
// one route in five end so).
func TestTooLate(t *testing.T) {
	ctx := context.Background()
	long, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	short, cancel2 := context.WithTimeout(ctx, client.MinAttempt+50*time.Millisecond)
	defer cancel2()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		wait time.Duration
		want bool
	}{
		{"no deadline", ctx, time.Hour, false},
		{"an hour left", long, 250 * time.Millisecond, false},
		{"less than MinAttempt left after the wait", short, 100 * time.Millisecond, true},
		{"past the deadline", short, time.Hour, true},
	} {
		if got := client.TooLate(tc.ctx, tc.wait); got != tc.want {
			t.Errorf("%s: TooLate = %v, want %v", tc.name, got, tc.want)
		}
	}
}
