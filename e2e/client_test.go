package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/internal/testutil"
)

// TestClientEndToEnd drives the router binary, on nats-server and etcd
// processes, through the client package's typed API as a Go frontend
// would: a route's handle books the request on the worker that holds the
// prompt, its marks reach the router, a second Done sends nothing, errors
// come back as the sentinels of their codes, and a killed router is
// ErrNoRouter.
func TestClientEndToEnd(t *testing.T) {
	const blockSize = 4
	bins := need(t, natsServer, etcdServer)
	c := newCluster(t, bins, "--router-block-size", fmt.Sprint(blockSize))
	c.waitHealth(200, 60*time.Second)
	f := newFleet(t, c, blockSize)
	ctx := t.Context()

	w1, w2 := f.register(64), f.register(64)
	p := f.newPrompt(3000, 4*blockSize)
	if err := f.publish(storedEvent(w1, p, 0, 4)); err != nil {
		t.Fatal(err)
	}
	var last string
	testutil.Eventually(t, 30*time.Second, func() bool {
		o, err := f.rc.OverlapScores(ctx, client.Prompt{TokenIDs: p.tokens})
		last = fmt.Sprintf("%+v, %v", o, err)
		return err == nil && len(o.Workers) == 1 && o.Workers[0].WorkerID == client.WorkerID(w1.id) && o.Workers[0].OverlapBlocks == 4
	}, "overlap_scores never showed w1 holding p; last %s", lazy(func() string { return last }))
	testutil.Eventually(t, 30*time.Second, func() bool {
		l, err := f.rc.PotentialLoads(ctx, client.Prompt{TokenIDs: p.tokens})
		return err == nil && len(l.Loads) == 2
	}, "potential_loads never listed both workers")

	// active returns w1's active requests.
	active := func() int {
		t.Helper()
		l, err := f.rc.PotentialLoads(ctx, client.Prompt{TokenIDs: p.tokens})
		if err != nil {
			t.Fatal(err)
		}
		for _, wl := range l.Loads {
			if wl.WorkerID == client.WorkerID(w1.id) {
				return wl.ActiveRequests
			}
		}
		t.Fatalf("potential_loads has no w1: %+v", l)
		return 0
	}

	req, err := f.rc.Route(ctx, client.RouteRequest{RequestID: "c-1", Prompt: client.Prompt{TokenIDs: p.tokens}})
	if err != nil {
		t.Fatal(err)
	}
	if d := req.Decision(); d.WorkerID != client.WorkerID(w1.id) || d.OverlapBlocks != 4 || d.RequestID != "c-1" {
		t.Fatalf("decision %+v, want c-1 on w1 (%d) with 4 cached blocks", d, w1.id)
	}
	if n := active(); n != 1 {
		t.Fatalf("w1 has %d active requests after the route, want 1", n)
	}
	if err := req.Prefilled(ctx); err != nil {
		t.Fatalf("Prefilled: %v", err)
	}
	if err := req.Done(ctx, 8); err != nil {
		t.Fatalf("Done: %v", err)
	}
	if n := active(); n != 0 {
		t.Fatalf("w1 has %d active requests after Done, want 0", n)
	}
	// A second Done sends nothing: were it sent, the router would answer
	// success false, which Done would return as ErrUnknownRequest.
	if err := req.Done(ctx, 8); err != nil {
		t.Errorf("a second Done: %v, want nil", err)
	}
	if err := f.rc.MarkFree(ctx, "c-1", 8); !errors.Is(err, client.ErrUnknownRequest) {
		t.Errorf("mark_free of c-1 once freed: %v, want ErrUnknownRequest", err)
	}

	// Errors are the sentinels of their codes.
	for _, tt := range []struct {
		name string
		req  client.RouteRequest
		want error
	}{
		{"no worker allowed", client.RouteRequest{Prompt: client.Prompt{TokenIDs: p.tokens}, AllowedWorkerIDs: []client.WorkerID{client.WorkerID(w2.id + 1000)}}, client.ErrNoWorkers},
		{"empty allowed list", client.RouteRequest{Prompt: client.Prompt{TokenIDs: p.tokens}, AllowedWorkerIDs: []client.WorkerID{}}, client.ErrBadRequest},
		{"no prompt", client.RouteRequest{RequestID: "c-2"}, client.ErrBadRequest},
	} {
		req, err := f.rc.Route(ctx, tt.req)
		var e *client.Error
		if !errors.Is(err, tt.want) || !errors.As(err, &e) || req != nil {
			t.Errorf("%s: %v, %v; want %v as a *client.Error and no handle", tt.name, req, err, tt.want)
		}
	}
	if n := active(); n != 0 {
		t.Fatalf("w1 has %d active requests after refused routes, want 0", n)
	}

	// No router: once nats-server has seen the router's connection close
	// (a request sent before then finds a subscription still listed and
	// gets no reply), NATS answers no responders, which the client names
	// once it has retried until the call's deadline (a route that reached
	// no router booked nothing).
	c.router.Kill()
	testutil.Eventually(t, 30*time.Second, func() bool {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := f.rc.Route(rctx, client.RouteRequest{Prompt: client.Prompt{TokenIDs: p.tokens}})
		last = fmt.Sprint(err)
		return errors.Is(err, client.ErrNoRouter)
	}, "route with the router killed never failed with ErrNoRouter; last %s", lazy(func() string { return last }))
}
