package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kvrouter/router/internal/testutil"
)

// TestDaemonRoutesEndToEnd runs the router binary against nats-server and
// etcd processes and plays the workers and the frontend over the wire:
// two workers register in etcd, one publishes KV events, and every
// endpoint of docs/api.md §3 answers as documented, with /metrics showing
// it. Then NATS goes away and comes back, and the router routes again and
// applies new events; last, a worker's instance key is deleted, and the
// worker, its blocks and its series disappear.
func TestDaemonRoutesEndToEnd(t *testing.T) {
	const blockSize = 4
	bins := need(t, natsServer, etcdServer, promtool)
	c := newCluster(t, bins, "--router-block-size", fmt.Sprint(blockSize))
	c.waitHealth(200, 60*time.Second)
	f := newFleet(t, c, blockSize)

	w1, w2 := f.register(64), f.register(64)
	testutil.Eventually(t, 30*time.Second, every(50*time.Millisecond, func() bool {
		fams := c.mustScrape()
		return len(samples(fams, "dynamo_component_router_worker_registered", map[string]string{"router_worker_id": id(w1)})) == 1 &&
			len(samples(fams, "dynamo_component_router_worker_registered", map[string]string{"router_worker_id": id(w2)})) == 1
	}), "workers %d and %d never showed in dynamo_component_router_worker_registered", w1.id, w2.id)

	// w1 holds the four full blocks of p (18 tokens: the last 2 are a
	// partial block, which never counts), stored by two chained events.
	p := f.newPrompt(1000, 4*blockSize+2)
	if len(p.locals) != 4 {
		t.Fatalf("prompt of %d tokens has %d blocks, want 4", len(p.tokens), len(p.locals))
	}
	for _, ev := range [][]byte{storedEvent(w1, p, 0, 2), storedEvent(w1, p, 2, 4)} {
		if err := f.publish(ev); err != nil {
			t.Fatal(err)
		}
	}
	wantOverlap := overlapReply{BlockSize: blockSize, NumBlocks: 4, Workers: []overlap{
		{WorkerID: w1.id, OverlapBlocks: 4, WorkerType: "aggregated"},
	}}
	testutil.Eventually(t, 30*time.Second, func() bool {
		return cmp.Diff(wantOverlap, f.overlaps(promptRequest{TokenIDs: p.tokens})) == ""
	}, "overlap_scores never showed w1 holding the 4 blocks: %+v", wantOverlap)
	// The same question asked with the hashes instead of the tokens.
	if diff := cmp.Diff(wantOverlap, f.overlaps(promptRequest{BlockHashes: p.locals})); diff != "" {
		t.Errorf("overlap_scores by block_hashes (-want +got):\n%s", diff)
	}

	// A prompt sharing only p's first two blocks goes to w1 with overlap 2,
	// and one given as block hashes sharing three with overlap 3; book:
	// false changes nothing.
	prefix2 := append(slices.Clone(p.tokens[:2*blockSize]), f.newPrompt(5000, 2*blockSize).tokens...)
	got := f.route(routeRequest{TokenIDs: prefix2, Book: book(false)})
	if got.WorkerID != w1.id || got.OverlapBlocks != 2 || got.NumBlocks != 4 {
		t.Errorf("route of a 2-block prefix: %+v, want worker %d, overlap 2 of 4", got, w1.id)
	}
	got = f.route(routeRequest{BlockHashes: append(slices.Clone(p.locals[:3]), 42), Book: book(false)})
	if got.WorkerID != w1.id || got.OverlapBlocks != 3 || got.NumBlocks != 4 {
		t.Errorf("route of 3 of 4 block hashes: %+v, want worker %d, overlap 3 of 4", got, w1.id)
	}

	// The whole prompt, booked.
	got = f.route(routeRequest{RequestID: "r-1", TokenIDs: p.tokens})
	want := routeReply{RequestID: "r-1", WorkerID: w1.id, OverlapBlocks: 4, NumBlocks: 4, WorkerType: "aggregated"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("route r-1 (-want +got):\n%s", diff)
	}

	// r-1 is booked on w1 with its 2 uncached prompt tokens; the loads
	// say so, and /metrics agrees on w1's decode blocks.
	var loads loadsReply
	f.call("potential_loads", promptRequest{TokenIDs: p.tokens}, &loads)
	if loads.Error != nil {
		t.Fatalf("potential_loads: %s", loads.Error)
	}
	fams := c.mustScrape()
	w1Blocks := samples(fams, "dynamo_frontend_worker_active_decode_blocks", map[string]string{"worker_id": id(w1), "dp_rank": "0", "worker_type": "decode"})
	if len(w1Blocks) != 1 || w1Blocks[0] < 1 {
		t.Fatalf("dynamo_frontend_worker_active_decode_blocks of w1 after r-1: %v, want one series ≥ 1", w1Blocks)
	}
	wantLoads := loadsReply{Loads: []load{
		{WorkerID: w1.id, PotentialPrefillTokens: 2 + 2, PotentialDecodeBlocks: int(w1Blocks[0]), ActiveRequests: 1},
		{WorkerID: w2.id, PotentialPrefillTokens: len(p.tokens), PotentialDecodeBlocks: 4, ActiveRequests: 0},
	}}
	sortLoads := cmpopts.SortSlices(func(a, b load) bool { return a.WorkerID < b.WorkerID })
	if diff := cmp.Diff(wantLoads, loads, sortLoads); diff != "" {
		t.Errorf("potential_loads after r-1 (-want +got):\n%s", diff)
	}
	if v := samples(fams, "dynamo_frontend_worker_active_prefill_tokens", map[string]string{"worker_id": id(w1)}); len(v) != 1 || v[0] != 2 {
		t.Errorf("dynamo_frontend_worker_active_prefill_tokens of w1 after r-1: %v, want [2]", v)
	}

	// mark_prefill and mark_free: true for r-1, false for an unknown id or
	// a second time.
	for _, m := range []struct {
		endpoint string
		req      markRequest
		want     bool
	}{
		{"mark_prefill", markRequest{RequestID: "r-1"}, true},
		{"mark_prefill", markRequest{RequestID: "r-unknown"}, false},
		{"mark_free", markRequest{RequestID: "r-1", OutputTokens: 8}, true},
		{"mark_free", markRequest{RequestID: "r-1", OutputTokens: 8}, false},
		{"mark_free", markRequest{RequestID: "r-unknown"}, false},
	} {
		if got := f.mark(m.endpoint, m.req); got != m.want {
			t.Errorf("%s %+v: success %v, want %v", m.endpoint, m.req, got, m.want)
		}
	}

	// Bad requests: bad_request, and nothing changes.
	for _, b := range []struct{ endpoint, body string }{
		{"route", `{`},
		{"route", `{"token_ids":[1,2,3,4],"block_hashes":[7]}`},
		{"route", `{"request_id":"r-bad"}`},
		{"route", `{"token_ids":[1,2,3,4],"worker_type":"sideways"}`},
		{"route", `{"token_ids":[-1]}`},
		{"mark_prefill", `{"request_id":5}`},
		{"overlap_scores", `[]`},
		{"potential_loads", `{"token_ids":"x"}`},
	} {
		var r struct {
			Error *replyError `json:"error"`
		}
		f.call(b.endpoint, []byte(b.body), &r)
		if r.Error == nil || r.Error.Code != "bad_request" || r.Error.Message == "" {
			t.Errorf("%s %s: error %s, want code bad_request with a message", b.endpoint, b.body, r.Error)
		}
	}
	if diff := cmp.Diff(wantOverlap, f.overlaps(promptRequest{TokenIDs: p.tokens})); diff != "" {
		t.Errorf("overlap_scores after the bad requests (-want +got):\n%s", diff)
	}

	// The endpoints record a request once its reply is sent, so a scrape
	// right after the last reply may miss it: scrape until every family has
	// counted what the requests above make it count.
	mins := []struct {
		name  string
		match map[string]string
		min   float64
	}{
		{"dynamo_component_kv_cache_events_applied", map[string]string{"event_type": "stored", "status": "ok", "dynamo_namespace": namespace, "dynamo_component": routerComponent}, 2},
		{"dynamo_component_router_requests_total", map[string]string{"dynamo_namespace": namespace, "dynamo_component": routerComponent}, 1},
		{"dynamo_component_router_worker_registered", map[string]string{"router_worker_id": id(w1), "dp_rank": "0", "worker_type": "decode"}, 1},
		{"dynamo_component_router_worker_registered", map[string]string{"router_worker_id": id(w2), "dp_rank": "0", "worker_type": "decode"}, 1},
		{"dynamo_component_requests_total", map[string]string{"dynamo_endpoint": "route"}, 4},
		{"dynamo_component_requests_total", map[string]string{"dynamo_endpoint": "mark_prefill"}, 2},
		{"dynamo_component_requests_total", map[string]string{"dynamo_endpoint": "mark_free"}, 3},
		{"dynamo_component_requests_total", map[string]string{"dynamo_endpoint": "overlap_scores"}, 2},
		{"dynamo_component_requests_total", map[string]string{"dynamo_endpoint": "potential_loads"}, 1},
		{"dynamo_component_errors_total", map[string]string{"dynamo_endpoint": "route", "error_type": "bad_request"}, 5},
		{"dynamo_component_router_bad_requests_total", nil, 8},
		{"dynamo_component_kv_index_entries", nil, 4},
	}
	var (
		exposition string
		short      []string
	)
	testutil.Eventually(t, 10*time.Second, func() bool {
		var err error
		if exposition, fams, err = c.scrape(); err != nil {
			short = []string{err.Error()}
			return false
		}
		short = short[:0]
		for _, m := range mins {
			if v := samples(fams, m.name, m.match); len(v) == 0 || sum(v) < m.min {
				short = append(short, fmt.Sprintf("%s%v: %v, want series summing to ≥ %v", m.name, m.match, v, m.min))
			}
		}
		return len(short) == 0
	}, "the families never counted the requests: %v", lazy(func() string { return strings.Join(short, "; ") }))
	// Exactly one request was booked: book:false and bad requests do not count.
	if v := samples(fams, "dynamo_component_router_requests_total", nil); sum(v) != 1 {
		t.Errorf("dynamo_component_router_requests_total: %v, want 1 (only r-1 was booked)", v)
	}
	if v := samples(fams, "dynamo_frontend_worker_active_decode_blocks", map[string]string{"worker_id": id(w1)}); len(v) != 1 || v[0] != 0 {
		t.Errorf("dynamo_frontend_worker_active_decode_blocks of w1 after r-1 was freed: %v, want [0]", v)
	}
	checkExposition(t, bins, exposition)

	// NATS goes away: health says so; NATS comes back on the same port:
	// the router routes again, with the index it had, and applies events
	// published after the outage.
	c.nats.Kill()
	c.waitHealth(503, 30*time.Second)
	if _, eps := c.health(); eps["nats"] != "notready" {
		t.Fatalf("health endpoints during the outage: %v, want nats notready", eps)
	}
	c.startNATS()
	c.waitHealth(200, 60*time.Second)
	var last string
	testutil.Eventually(t, 60*time.Second, every(20*time.Millisecond, func() bool {
		var r routeReply
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := f.ask(ctx, "route", routeRequest{TokenIDs: p.tokens, Book: book(false)}, &r)
		last = fmt.Sprintf("%+v %v", r, err)
		return err == nil && r.Error == nil && r.WorkerID == w1.id && r.OverlapBlocks == 4
	}), "route never answered w1 with overlap 4 after NATS came back; last: %s", lazy(func() string { return last }))
	// The route above proves the router resubscribed (nats.go sends every
	// subscription again at once on reconnect), so this event is not lost.
	q := f.newPrompt(7000, 2*blockSize)
	if err := f.publish(storedEvent(w2, q, 0, 2)); err != nil {
		t.Fatal(err)
	}
	wantQ := overlapReply{BlockSize: blockSize, NumBlocks: 2, Workers: []overlap{{WorkerID: w2.id, OverlapBlocks: 2, WorkerType: "aggregated"}}}
	testutil.Eventually(t, 30*time.Second, func() bool {
		return cmp.Diff(wantQ, f.overlaps(promptRequest{TokenIDs: q.tokens})) == ""
	}, "an event published after the outage was never applied")
	if got := f.route(routeRequest{RequestID: "r-2", TokenIDs: q.tokens}); got.WorkerID != w2.id || got.OverlapBlocks != 2 {
		t.Errorf("route r-2 after the outage: %+v, want worker %d with overlap 2", got, w2.id)
	}
	if !f.mark("mark_prefill", markRequest{RequestID: "r-2"}) || !f.mark("mark_free", markRequest{RequestID: "r-2", OutputTokens: 4}) {
		t.Errorf("marking r-2 after the outage failed")
	}

	// w1 leaves: its series go, its blocks go, and no route picks it.
	f.deregister(w1)
	testutil.Eventually(t, 30*time.Second, every(50*time.Millisecond, func() bool {
		fams := c.mustScrape()
		return len(samples(fams, "dynamo_component_router_worker_registered", map[string]string{"router_worker_id": id(w1)})) == 0
	}), "dynamo_component_router_worker_registered of w1 outlived its instance key")
	testutil.Eventually(t, 30*time.Second, func() bool {
		return len(f.overlaps(promptRequest{TokenIDs: p.tokens}).Workers) == 0
	}, "overlap_scores still lists workers for p after w1 left")
	fams = c.mustScrape()
	for _, name := range []string{"dynamo_frontend_worker_active_decode_blocks", "dynamo_frontend_worker_active_prefill_tokens"} {
		if v := samples(fams, name, map[string]string{"worker_id": id(w1)}); len(v) != 0 {
			t.Errorf("%s of w1 after it left: %v, want no series", name, v)
		}
	}
	if v := samples(fams, "dynamo_component_router_worker_registered", map[string]string{"router_worker_id": id(w2)}); len(v) != 1 {
		t.Errorf("dynamo_component_router_worker_registered of w2 after w1 left: %v, want one series", v)
	}
	for i := range 20 {
		toks := p.tokens
		if i > 0 {
			toks = f.newPrompt(uint32(20000+100*i), 4*blockSize).tokens
		}
		got := f.route(routeRequest{TokenIDs: toks, Book: book(false)})
		if got.WorkerID != w2.id || (i == 0 && got.OverlapBlocks != 0) {
			t.Fatalf("route %d after w1 left: %+v, want worker %d (overlap 0 for p)", i, got, w2.id)
		}
	}
	var r routeReply
	f.call("route", routeRequest{TokenIDs: p.tokens, AllowedWorkerIDs: []uint64{w1.id}}, &r)
	if r.Error == nil || r.Error.Code != "no_workers" {
		t.Errorf("route allowed only on w1 after it left: %+v, want error no_workers", r)
	}
}
