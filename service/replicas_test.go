package service

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
)

// Several replicas in one queue group: every mark reaches the replica that
// booked its request (docs/api.md §3, "Several replicas").

// replicas starts n routers with ids 1001, 1002, ... in one queue group,
// with replica sync as given, and three decode workers they all list.
func replicas(t *testing.T, n int, sync bool) (*servers, []*router) {
	t.Helper()
	srv := startServers(t)
	cfg := testConfig()
	cfg.ReplicaSync = sync
	var rts []*router
	for i := range n {
		rts = append(rts, startRouter(t, srv, uint64(1001+i), cfg))
	}
	for _, id := range []uint64{7, 8, 9} {
		srv.register(t, worker{id: id, totalKVBlocks: 1000, maxBatched: 64})
	}
	waitWorkers(t, 3, rts...)
	return srv, rts
}

// newClient returns a client of the test routers on a connection of its
// own.
func newClient(t *testing.T, srv *servers, opts ...client.Option) *client.Client {
	t.Helper()
	rc, err := client.New(testutil.NATSConn(t, srv.nats.URL()), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// idle fails t unless every replica holds no booking and no load on any
// worker.
func idle(t *testing.T, rts ...*router) {
	t.Helper()
	for _, rt := range rts {
		if n := rt.r.Active(); n != 0 {
			t.Errorf("router %d holds %d bookings, want none", rt.svc.cfg.RouterID, n)
		}
		for _, l := range rt.r.Loads() {
			if l.PrefillTokens != 0 || l.DecodeBlocks != 0 || l.Requests != 0 {
				t.Errorf("router %d: worker %d still has %+v", rt.svc.cfg.RouterID, l.Worker.ID, l)
			}
		}
	}
}

// unknownMarks returns a replica's dynamo_router_marks_unknown_total of
// endpoint ep.
func (rt *router) unknownMarks(ep string) float64 {
	e, _ := rt.svc.h.m.Endpoint(ep)
	return promtest.ToFloat64(e.UnknownMarks)
}

// handled returns how many requests of endpoint ep a replica answered.
func (rt *router) handled(ep string) float64 {
	e, _ := rt.svc.h.m.Endpoint(ep)
	return promtest.ToFloat64(e.Requests)
}

// Without replica sync, 200 requests through the client: routes land on
// either replica, and every handle's marks reach the replica that booked
// it, so every mark succeeds and neither replica keeps any load.
func TestMarksReachTheirReplica(t *testing.T) {
	srv, rts := replicas(t, 2, false)
	rc := newClient(t, srv)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < 200; i += 8 {
				req, err := rc.Route(ctx, client.RouteRequest{Prompt: client.Prompt{TokenIDs: seq(i*100, 8+i%3*4)}})
				if err != nil {
					errs <- err
					continue
				}
				if id := req.Decision().RouterID; id != 1001 && id != 1002 {
					errs <- fmt.Errorf("route %s: router_id %d, want one of the replicas", req.ID(), id)
				}
				if err := req.Prefilled(ctx); err != nil {
					errs <- err
				}
				if err := req.Done(ctx, 3); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, rt := range rts {
		if n := rt.handled(metrics.EndpointRoute); n == 0 {
			t.Errorf("router %d answered no route of 200", rt.svc.cfg.RouterID)
		}
		for _, ep := range []string{metrics.EndpointMarkPrefill, metrics.EndpointMarkFree} {
			if n := rt.unknownMarks(ep); n != 0 {
				t.Errorf("router %d counted %v unknown %s", rt.svc.cfg.RouterID, n, ep)
			}
		}
	}
	idle(t, rts...)
	// potential_loads says so too, to anyone who asks either replica.
	for range 4 {
		l, err := rc.PotentialLoads(ctx, client.Prompt{TokenIDs: seq(0, 4)})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range l.Loads {
			if w.ActiveRequests != 0 || w.PotentialDecodeBlocks != 1 {
				t.Errorf("potential load of worker %d: %+v, want no request and the prompt's one block", w.WorkerID, w)
			}
		}
	}
}

// book books request id on rt directly, as if rt had answered its route.
func (rt *router) book(t *testing.T, id string, toks []uint32) {
	t.Helper()
	if _, err := rt.r.Route(context.Background(), &scheduler.Request{ID: id, Tokens: toks}); err != nil {
		t.Fatal(err)
	}
}

// reply is a Sender that keeps the reply, as the HTTP API's does.
type reply struct {
	body []byte
	code string
}

func (r *reply) Send(body []byte, code string) error {
	r.body, r.code = append([]byte(nil), body...), code
	return nil
}

// markBody is a mark's JSON.
func markBody(t *testing.T, id string, routerID uint64) []byte {
	t.Helper()
	b, err := json.Marshal(client.MarkFreeRequest{RequestID: id, RouterID: routerID})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A mark naming its replica, taken by another one, through the queue
// group, the HTTP API's handler, or the other's own subject, is forwarded
// once and succeeds; a mark nobody knows is {"success":false} and counted
// once, by the replica that took it.
func TestMarksAreForwarded(t *testing.T) {
	_, rts := replicas(t, 2, false)
	a, b := rts[0], rts[1]
	ctx := context.Background()

	t.Run("through the queue group", func(t *testing.T) {
		const n = 40
		for i := range n {
			a.book(t, fmt.Sprintf("g%d", i), seq(i*10, 8))
		}
		before := b.handled(metrics.EndpointMarkFree)
		for i := range n {
			got := a.request(t, metrics.EndpointMarkFree, string(markBody(t, fmt.Sprintf("g%d", i), a.svc.cfg.RouterID)))
			jsonEqual(t, `{"success":true}`, got)
		}
		// NATS spreads the group's messages at random: 40 all on a would
		// be a 2^-40 chance.
		if b.handled(metrics.EndpointMarkFree) == before {
			t.Errorf("replica b took none of %d marks: nothing was forwarded", n)
		}
		idle(t, a, b)
	})

	t.Run("through the HTTP API", func(t *testing.T) {
		a.book(t, "h", seq(0, 8))
		var rep reply
		if err := b.svc.Handler().Serve(ctx, metrics.EndpointMarkFree, markBody(t, "h", a.svc.cfg.RouterID), &rep); err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, `{"success":true}`, string(rep.body))
		idle(t, a, b)
	})

	t.Run("to another replica's subject", func(t *testing.T) {
		a.book(t, "s", seq(0, 8))
		msg, err := b.client.Request(ReplicaSubject("dynamo", "router", metrics.EndpointMarkFree, b.svc.cfg.RouterID), markBody(t, "s", a.svc.cfg.RouterID), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, `{"success":true}`, string(msg.Data))
		idle(t, a, b)
	})

	t.Run("a forwarded mark is not forwarded again", func(t *testing.T) {
		b.book(t, "f", seq(0, 8))
		m := nats.NewMsg(ReplicaSubject("dynamo", "router", metrics.EndpointMarkFree, a.svc.cfg.RouterID))
		m.Header.Set(HeaderForwarded, "1")
		m.Data = markBody(t, "f", b.svc.cfg.RouterID)
		rep, err := a.client.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, `{"success":false}`, string(rep.Data))
		if b.r.Active() != 1 {
			t.Errorf("b holds %d bookings, want f still booked", b.r.Active())
		}
		b.r.Free("f", -1)
	})

	t.Run("unknown everywhere", func(t *testing.T) {
		aBefore, bBefore := a.unknownMarks(metrics.EndpointMarkFree), b.unknownMarks(metrics.EndpointMarkFree)
		for _, routerID := range []uint64{a.svc.cfg.RouterID, 0, 0xdead} { // the owner's, none, a replica that never was
			var rep reply
			if err := b.svc.Handler().Serve(ctx, metrics.EndpointMarkFree, markBody(t, "nobody", routerID), &rep); err != nil {
				t.Fatal(err)
			}
			jsonEqual(t, `{"success":false}`, string(rep.body))
		}
		if got := b.unknownMarks(metrics.EndpointMarkFree) - bBefore; got != 3 {
			t.Errorf("b counted %v unknown marks, want 3", got)
		}
		if got := a.unknownMarks(metrics.EndpointMarkFree) - aBefore; got != 0 {
			t.Errorf("a counted %v unknown marks it was forwarded, want 0: b counts them", got)
		}
	})
}

// A replica stopped with requests booked: the handles' marks find its
// subject gone and go to the queue group. Without replica sync the
// bookings went with it, and Done reports nothing to do; with replica
// sync the survivor frees them.
func TestMarksOfAStoppedReplica(t *testing.T) {
	for _, withSync := range []bool{false, true} {
		t.Run(fmt.Sprintf("replica sync %v", withSync), func(t *testing.T) {
			srv, rts := replicas(t, 2, withSync)
			a, b := rts[0], rts[1]
			rc := newClient(t, srv, client.WithTimeout(10*time.Second))
			ctx := context.Background()
			var onA, onB []*client.Request
			for i := 0; len(onA) < 5 || len(onB) < 5; i++ {
				if i == 200 {
					t.Fatalf("200 routes: %d on a, %d on b", len(onA), len(onB))
				}
				req, err := rc.Route(ctx, client.RouteRequest{Prompt: client.Prompt{TokenIDs: seq(i*100, 8)}})
				if err != nil {
					t.Fatal(err)
				}
				if req.Decision().RouterID == a.svc.cfg.RouterID {
					onA = append(onA, req)
				} else {
					onB = append(onB, req)
				}
			}
			if withSync {
				testutil.Eventually(t, 10*time.Second, func() bool { return b.r.Active() == len(onA)+len(onB) }, "b hears of a's bookings")
			}
			a.stop()
			unknownBefore := b.unknownMarks(metrics.EndpointMarkFree)
			for _, req := range append(onA, onB...) {
				if err := req.Done(ctx, 1); err != nil {
					t.Errorf("Done of %s (router %d): %v", req.ID(), req.Decision().RouterID, err)
				}
			}
			// Without sync, b knew none of a's: it forwarded each to a's
			// subject, found no one, and counted it.
			wantUnknown := float64(len(onA))
			if withSync {
				wantUnknown = 0
			}
			if got := b.unknownMarks(metrics.EndpointMarkFree) - unknownBefore; got != wantUnknown {
				t.Errorf("b counted %v unknown marks, want %v", got, wantUnknown)
			}
			idle(t, b)
		})
	}
}

// Routes survive a replica that takes them and never answers (a replica
// killed with the request in hand): with WithRouteRetry, each is sent
// again with its id and the retry flag, and every one is answered and
// booked once.
func TestRouteRetry(t *testing.T) {
	srv, rts := replicas(t, 1, false)
	rt := rts[0]
	mute := testutil.NATSConn(t, srv.nats.URL())
	var swallowed atomic.Int32
	if _, err := mute.QueueSubscribe(Subject("dynamo", "router", metrics.EndpointRoute), "router", func(*nats.Msg) { swallowed.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := mute.Flush(); err != nil {
		t.Fatal(err)
	}
	rc := newClient(t, srv, client.WithRouteRetry(200*time.Millisecond), client.WithTimeout(10*time.Second))
	ctx := context.Background()
	var reqs []*client.Request
	for i := range 30 {
		req, err := rc.Route(ctx, client.RouteRequest{Prompt: client.Prompt{TokenIDs: seq(i*100, 8)}})
		if err != nil {
			t.Fatalf("route %d: %v", i, err)
		}
		if len(req.ID()) != 16 {
			t.Errorf("route %d: request id %q, want the client's 16 hex digits", i, req.ID())
		}
		reqs = append(reqs, req)
	}
	if swallowed.Load() == 0 {
		t.Error("the mute replica took no route of 30: nothing was retried")
	}
	if n := rt.r.Active(); n != len(reqs) {
		t.Errorf("%d bookings for %d routes", n, len(reqs))
	}
	for _, req := range reqs {
		if err := req.Done(ctx, 1); err != nil {
			t.Error(err)
		}
	}
	idle(t, rt)

	// A retry of an id that is booked is answered from the booking; the
	// same route without the flag is a duplicate. The mute subscriber
	// would swallow what goes to the group: ask rt's handler.
	var booked reply
	if err := rt.svc.Handler().Serve(ctx, metrics.EndpointRoute, []byte(`{"request_id":"again","token_ids":`+tokensJSON(seq(5000, 8))+`}`), &booked); err != nil {
		t.Fatal(err)
	}
	first := string(booked.body)
	var d client.Decision
	if err := json.Unmarshal(booked.body, &d); err != nil || d.RequestID != "again" || d.RouterID != rt.svc.cfg.RouterID {
		t.Fatalf("route: %s (%v)", first, err)
	}
	for range 3 {
		var rep reply
		if err := rt.svc.Handler().Serve(ctx, metrics.EndpointRoute, []byte(`{"request_id":"again","retry":true,"token_ids":`+tokensJSON(seq(5000, 8))+`}`), &rep); err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, first, string(rep.body))
	}
	var rep reply
	if err := rt.svc.Handler().Serve(ctx, metrics.EndpointRoute, []byte(`{"request_id":"again","token_ids":[1]}`), &rep); err != nil {
		t.Fatal(err)
	}
	assertError(t, string(rep.body), "bad_request", "already active")
	if n := rt.r.Active(); n != 1 {
		t.Errorf("%d bookings after the retries, want 1", n)
	}
}

// A mark leaves at once, with whatever the batch held, so that a replica
// killed right after answering a mark has already handed it to NATS; an
// add waits for the batch. The publisher's run goroutine, which sends
// batches after their delay, is not started here: only what Publish itself
// sends arrives.
func TestSyncMarksLeaveAtOnce(t *testing.T) {
	srv := testutil.NATS(t)
	nc := testutil.NATSConn(t, srv.URL())
	cfg := DefaultConfig()
	cfg.RouterID = 42
	listener := testutil.NATSConn(t, srv.URL())
	sub, err := listener.SubscribeSync(SyncSubject(cfg.Namespace, cfg.Component))
	if err != nil {
		t.Fatal(err)
	}
	// The subscription is on another connection than the publisher's: the
	// server must have it before anything is published.
	if err := listener.Flush(); err != nil {
		t.Fatal(err)
	}
	pub := NewSyncPublisher(nc, cfg, nil)
	w := indexer.Worker{ID: 7}
	pub.Publish(scheduler.SyncEvent{Kind: scheduler.SyncAdd, RequestID: "r", Worker: w})
	pub.Publish(scheduler.SyncEvent{Kind: scheduler.SyncFree, RequestID: "r", Worker: w})
	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("the free did not leave at once: %v", err)
	}
	var batch struct {
		Events []struct {
			RequestID string          `json:"request_id"`
			Data      json.RawMessage `json:"data"`
		} `json:"events"`
	}
	if err := json.Unmarshal(msg.Data, &batch); err != nil {
		t.Fatalf("batch %s: %v", msg.Data, err)
	}
	// The add waited in the batch and left with the free, in one message.
	if len(batch.Events) != 2 || batch.Events[0].RequestID != "r" || string(batch.Events[1].Data) != `"Free"` {
		t.Errorf("batch %s: want the add, then the free", msg.Data)
	}
}
