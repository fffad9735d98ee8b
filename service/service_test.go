package service

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
)

// jsonEqual compares two JSON documents by value.
func jsonEqual(t *testing.T, want, got string) {
	t.Helper()
	var w, g any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %s: %v", want, err)
	}
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("reply %s is not JSON: %v", got, err)
	}
	if diff := cmp.Diff(w, g); diff != "" {
		t.Errorf("reply %s (-want +got):\n%s", got, diff)
	}
}

func TestEndpoints(t *testing.T) {
	srv := startServers(t)
	rt := startRouter(t, srv, 42, testConfig())
	srv.register(t, worker{id: 7, totalKVBlocks: 1000, maxBatched: 64})
	srv.register(t, worker{id: 9, totalKVBlocks: 1000, maxBatched: 64})
	waitWorkers(t, 2, rt)
	prompt := seq(100, 16) // 4 blocks
	rt.store(t, 9, prompt[:12])

	t.Run("route", func(t *testing.T) {
		got := rt.request(t, "route", `{"request_id":"r-1","token_ids":`+tokensJSON(prompt)+`}`)
		jsonEqual(t, `{"request_id":"r-1","worker_id":9,"dp_rank":0,"overlap_blocks":3,"num_blocks":4,"worker_type":"aggregated","router_id":42}`, got)
	})
	t.Run("route by block hashes, query only", func(t *testing.T) {
		h := localHashesJSON(t, prompt)
		got := rt.request(t, "route", `{"block_hashes":`+h+`,"book":false}`)
		// Worker 9 now has r-1's 4 blocks active and 4 prefill tokens: cost
		// (4 + 16) / 4 − 3 + 4 + 0 = 6 against worker 7's 16 / 4 + 4 = 8.
		jsonEqual(t, `{"worker_id":9,"dp_rank":0,"overlap_blocks":3,"num_blocks":4,"worker_type":"aggregated","router_id":42}`, got)
	})
	t.Run("route generates an id", func(t *testing.T) {
		var d struct {
			RequestID string `json:"request_id"`
			WorkerID  uint64 `json:"worker_id"`
		}
		if err := json.Unmarshal([]byte(rt.request(t, "route", `{"token_ids":[1,2,3,4]}`)), &d); err != nil {
			t.Fatal(err)
		}
		if d.RequestID == "" {
			t.Fatal("no request_id generated")
		}
		jsonEqual(t, `{"success":true}`, rt.request(t, "mark_free", `{"request_id":"`+d.RequestID+`"}`))
	})
	t.Run("overlap_scores", func(t *testing.T) {
		got := rt.request(t, "overlap_scores", `{"token_ids":`+tokensJSON(prompt)+`}`)
		jsonEqual(t, `{"block_size":4,"num_blocks":4,"workers":[{"worker_id":9,"dp_rank":0,"overlap_blocks":3,"worker_type":"aggregated"}]}`, got)
	})
	t.Run("potential_loads", func(t *testing.T) {
		got := rt.request(t, "potential_loads", `{"token_ids":`+tokensJSON(prompt)+`}`)
		jsonEqual(t, `{"loads":[
			{"worker_id":7,"dp_rank":0,"potential_prefill_tokens":16,"potential_decode_blocks":4,"active_requests":0},
			{"worker_id":9,"dp_rank":0,"potential_prefill_tokens":8,"potential_decode_blocks":4,"active_requests":1}],
			"pending_count":0,"pending_isl_tokens":0}`, got)
	})
	t.Run("mark_prefill and mark_free", func(t *testing.T) {
		jsonEqual(t, `{"success":true}`, rt.request(t, "mark_prefill", `{"request_id":"r-1"}`))
		jsonEqual(t, `{"success":true}`, rt.request(t, "mark_free", `{"request_id":"r-1","output_tokens":12}`))
		jsonEqual(t, `{"success":false}`, rt.request(t, "mark_prefill", `{"request_id":"r-1"}`))
		jsonEqual(t, `{"success":false}`, rt.request(t, "mark_free", `{"request_id":"nope"}`))
		if n := rt.r.Active(); n != 0 {
			t.Errorf("%d requests active after every free", n)
		}
	})
}

// localHashesJSON returns the LocalBlockHashes of toks as a JSON array.
func localHashesJSON(t *testing.T, toks []uint32) string {
	t.Helper()
	h := hasher(t)
	b, _ := json.Marshal(h.LocalHashes(nil, toks))
	return string(b)
}

func TestErrorReplies(t *testing.T) {
	srv := startServers(t)
	// Worker 7 has 100 batched tokens; the queue threshold 0 makes it busy
	// as soon as it has prefill work, and the queue holds one request.
	cfg := testConfig()
	cfg.QueueThreshold = ptr(0.0)
	cfg.QueueCapacity = 1
	cfg.QueueTimeout = 300 * time.Millisecond
	rt := startRouter(t, srv, 42, cfg)
	srv.register(t, worker{id: 7, totalKVBlocks: 1000, maxBatched: 100})
	waitWorkers(t, 1, rt)

	tests := []struct {
		name, endpoint, body string
		code, message        string
	}{
		{"malformed", "route", `{"token_ids":[1,`, "bad_request", "token_ids: unexpected end of input"},
		{"not json", "route", `hello`, "bad_request", "malformed JSON"},
		{"no tokens", "route", `{"isl":4}`, "bad_request", "neither token_ids nor block_hashes"},
		{"unknown worker type", "route", `{"token_ids":[1],"worker_type":"gpu"}`, "bad_request", `worker_type: "gpu" is unknown`},
		{"absurd", "route", `{"token_ids":[1],"isl":5000000}`, "bad_request", "isl: 5000000 is out of range"},
		{"bad mark", "mark_free", `{"request_id":7}`, "bad_request", "request_id: expected a string, found a number"},
		{"bad overlap_scores", "overlap_scores", `{"token_ids":[1],"book":false}`, "bad_request", `unknown field "book"`},
		{"bad potential_loads", "potential_loads", `{}`, "bad_request", "neither token_ids nor block_hashes"},
		{"no workers", "route", `{"token_ids":[1],"allowed_worker_ids":[99]}`, "no_workers", "no decode worker among allowed_worker_ids"},
		{"no prefill workers", "route", `{"token_ids":[1],"worker_type":"prefill"}`, "no_workers", "no prefill workers registered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertError(t, rt.request(t, tt.endpoint, tt.body), tt.code, tt.message)
		})
	}

	// The queue's errors: make worker 7 busy, fill the queue.
	rt.request(t, "route", `{"request_id":"busy","token_ids":[1,2,3,4]}`)
	assertError(t, rt.request(t, "route", `{"token_ids":[5,6,7,8],"do_not_queue":true}`), "queue_rejected", "asked not to wait")
	waiting := make(chan string)
	go func() {
		msg, err := rt.client.Request(Subject("dynamo", "router", "route"), []byte(`{"request_id":"w","token_ids":[9,10,11,12]}`), 10*time.Second)
		if err != nil {
			waiting <- err.Error()
			return
		}
		waiting <- string(msg.Data)
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return rt.r.Pending().Requests == 1 }, "a request waiting")
	assertError(t, rt.request(t, "route", `{"token_ids":[13,14,15,16]}`), "queue_full", "queue full")
	assertError(t, <-waiting, "timeout", "waited 300ms")
	if n := rt.r.Active(); n != 1 {
		t.Errorf("%d requests active after the errors, want 1 (busy)", n)
	}
	// A reply is counted just after it is sent: poll for the last ones.
	for code, want := range map[string]float64{"bad_request": 5, "no_workers": 2, "queue_rejected": 1, "queue_full": 1, "timeout": 1} {
		c := rt.svc.h.m.Route.Errors.WithLabelValues(code)
		testutil.Eventually(t, 5*time.Second, func() bool { return promtest.ToFloat64(c) == want },
			"route errors_total{error_type=%q} = %v", code, want)
	}
	for reason, want := range map[string]float64{metrics.BadRequestMalformed: 2, metrics.BadRequestNoTokens: 1, metrics.BadRequestWorkerType: 1, metrics.BadRequestOutOfRange: 1} {
		if got := promtest.ToFloat64(rt.svc.h.m.Route.BadRequests.WithLabelValues(reason)); got != want {
			t.Errorf("route bad_requests_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
}

func TestOverloadedReply(t *testing.T) {
	srv := startServers(t)
	cfg := testConfig()
	cfg.ActivePrefillTokensThreshold = ptr(3)
	rt := startRouter(t, srv, 42, cfg)
	srv.register(t, worker{id: 7, totalKVBlocks: 1000, maxBatched: 100})
	waitWorkers(t, 1, rt)
	rt.request(t, "route", `{"request_id":"a","token_ids":[1,2,3,4]}`)
	assertError(t, rt.request(t, "route", `{"token_ids":[5,6,7,8]}`), "overloaded", "over a busy threshold")
}

func TestShutdownAnswersWaitingRequests(t *testing.T) {
	srv := startServers(t)
	cfg := testConfig()
	cfg.QueueThreshold = ptr(0.0)
	rt := startRouter(t, srv, 42, cfg)
	srv.register(t, worker{id: 7, totalKVBlocks: 1000, maxBatched: 100})
	waitWorkers(t, 1, rt)
	rt.request(t, "route", `{"request_id":"busy","token_ids":[1,2,3,4]}`)
	reply := make(chan string)
	go func() {
		msg, err := rt.client.Request(Subject("dynamo", "router", "route"), []byte(`{"request_id":"w","token_ids":[5,6,7,8]}`), 10*time.Second)
		if err != nil {
			reply <- err.Error()
			return
		}
		reply <- string(msg.Data)
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return rt.r.Pending().Requests == 1 }, "a request waiting")
	rt.stop()
	// The leaving replica routes what waits rather than failing it.
	jsonEqual(t, `{"request_id":"w","worker_id":7,"dp_rank":0,"overlap_blocks":0,"num_blocks":1,"worker_type":"aggregated","router_id":42}`, <-reply)
}

// assertError checks an error reply.
func assertError(t *testing.T, reply, code, message string) {
	t.Helper()
	var e struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(reply), &e); err != nil || e.Error == nil {
		t.Fatalf("reply %s is not an error (%v)", reply, err)
	}
	if e.Error.Code != code || !strings.Contains(e.Error.Message, message) {
		t.Errorf("error %s: %q; want %s containing %q", e.Error.Code, e.Error.Message, code, message)
	}
}

func TestDisaggregatedOverNATS(t *testing.T) {
	srv := startServers(t)
	rt := startRouter(t, srv, 42, testConfig())
	srv.register(t, worker{id: 7, totalKVBlocks: 1000, maxBatched: 64})
	srv.register(t, worker{id: 8, totalKVBlocks: 1000, maxBatched: 64})
	srv.register(t, worker{id: 11, component: "prefill", totalKVBlocks: 1000, maxBatched: 64})
	srv.register(t, worker{id: 12, component: "prefill", totalKVBlocks: 1000, maxBatched: 64})
	waitWorkers(t, 4, rt)
	prompt := seq(0, 12)
	rt.store(t, 12, prompt)
	rt.store(t, 8, prompt) // decode workers are chosen by load only
	rt.request(t, "route", `{"request_id":"load","token_ids":[50,51,52,53],"worker_type":"decode","allowed_worker_ids":[8]}`)
	got := rt.request(t, "route", `{"request_id":"d","token_ids":`+tokensJSON(prompt)+`}`)
	jsonEqual(t, `{"request_id":"d","worker_id":12,"dp_rank":0,"overlap_blocks":3,"num_blocks":3,"worker_type":"disaggregated",
		"prefill":{"worker_id":12,"dp_rank":0,"overlap_blocks":3},"decode":{"worker_id":7,"dp_rank":0},"router_id":42}`, got)
	got = rt.request(t, "overlap_scores", `{"token_ids":`+tokensJSON(prompt)+`}`)
	jsonEqual(t, `{"block_size":4,"num_blocks":3,"workers":[
		{"worker_id":8,"dp_rank":0,"overlap_blocks":3,"worker_type":"decode"},
		{"worker_id":12,"dp_rank":0,"overlap_blocks":3,"worker_type":"prefill"}]}`, got)
}

func TestBlockSizeMismatchIsNotTrusted(t *testing.T) {
	srv := startServers(t)
	rt := startRouter(t, srv, 42, testConfig())
	srv.register(t, worker{id: 7, totalKVBlocks: 1000, maxBatched: 64, blockSize: 16})
	srv.register(t, worker{id: 9, totalKVBlocks: 1000, maxBatched: 64})
	waitWorkers(t, 2, rt)
	prompt := seq(0, 16)
	rt.store(t, 7, prompt)
	got := rt.request(t, "overlap_scores", `{"token_ids":`+tokensJSON(prompt)+`}`)
	jsonEqual(t, `{"block_size":4,"num_blocks":4,"workers":[]}`, got)
}

func TestWorkerLeaves(t *testing.T) {
	srv := startServers(t)
	rt := startRouter(t, srv, 42, testConfig())
	lease := srv.register(t, worker{id: 7, totalKVBlocks: 1000, maxBatched: 64})
	waitWorkers(t, 1, rt)
	rt.request(t, "route", `{"request_id":"r","token_ids":[1,2,3,4]}`)
	if got := promtest.ToFloat64(rt.sm.WorkerActivePrefillTokens.WithLabelValues("7", "0", "decode")); got != 4 {
		t.Fatalf("active prefill tokens of worker 7 = %v, want 4", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := srv.etcd.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	waitWorkers(t, 0, rt)
	if n := rt.r.Active(); n != 0 {
		t.Errorf("%d requests active on a worker that left", n)
	}
	if n := promtest.CollectAndCount(rt.sm.WorkerActivePrefillTokens); n != 0 {
		t.Errorf("%d active prefill series left after the worker left", n)
	}
	assertError(t, rt.request(t, "route", `{"token_ids":[1,2,3,4]}`), "no_workers", "no decode workers registered")
	jsonEqual(t, `{"success":false}`, rt.request(t, "mark_free", `{"request_id":"r"}`))
}

func TestReplicaSyncConverges(t *testing.T) {
	srv := startServers(t)
	cfg := testConfig()
	cfg.ReplicaSync = true
	a := startRouter(t, srv, 1001, cfg)
	b := startRouter(t, srv, 1002, cfg)
	for _, id := range []uint64{7, 8, 9} {
		srv.register(t, worker{id: id, totalKVBlocks: 1000, maxBatched: 64})
	}
	srv.register(t, worker{id: 11, component: "prefill", totalKVBlocks: 1000, maxBatched: 64})
	waitWorkers(t, 4, a, b)

	// Requests go to the queue group: each lands on either replica, and so
	// do its marks, often not the one that routed it.
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			id := fmt.Sprintf("r%d", i)
			typ := "aggregated"
			if i%3 == 0 {
				typ = "auto"
			}
			a.request(t, "route", fmt.Sprintf(`{"request_id":%q,"token_ids":%s,"worker_type":%q}`, id, tokensJSON(seq(i*100, 8+i%3*4)), typ))
			if i%2 == 0 {
				a.request(t, "mark_prefill", `{"request_id":"`+id+`"}`)
			}
			if i%4 == 0 {
				a.request(t, "mark_free", `{"request_id":"`+id+`","output_tokens":5}`)
			}
		})
	}
	wg.Wait()
	want := 40 - 10
	testutil.Eventually(t, 10*time.Second, func() bool {
		return a.r.Active() == want && b.r.Active() == want && cmp.Equal(busy(a), busy(b))
	}, "replicas converge on %d requests", want)
	if diff := cmp.Diff(busy(a), busy(b)); diff != "" {
		t.Errorf("loads (-a +b):\n%s", diff)
	}
	routedA := promtest.ToFloat64(a.sm.RequestsTotal)
	routedB := promtest.ToFloat64(b.sm.RequestsTotal)
	if routedA+routedB != 40 || routedA == 0 || routedB == 0 {
		t.Errorf("requests_total: a %v, b %v; want 40 split between both", routedA, routedB)
	}
}

// busy returns a replica's non-empty loads, sorted by worker.
func busy(rt *router) map[indexer.Worker]scheduler.RankLoad {
	out := map[indexer.Worker]scheduler.RankLoad{}
	for _, l := range rt.r.Loads() {
		if l.Requests != 0 || l.PrefillTokens != 0 || l.DecodeBlocks != 0 {
			out[l.Worker] = l
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// TestNewWantsThePublisherOfReplicaSync: the router publishes through the
// SyncPublisher it was built with, so the service is given the same one
// exactly when replica sync is on; a mismatch is refused, naming the flag.
func TestNewWantsThePublisherOfReplicaSync(t *testing.T) {
	srv := testutil.NATS(t)
	nc := testutil.NATSConn(t, srv.URL())
	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	pub := NewSyncPublisher(nc, DefaultConfig(), nil)
	for _, tc := range []struct {
		name    string
		sync    bool
		pub     *SyncPublisher
		wantErr bool
	}{
		{"sync with its publisher", true, pub, false},
		{"sync without a publisher", true, nil, true},
		{"no sync, no publisher", false, nil, false},
		{"a publisher without sync", false, pub, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.ReplicaSync = tc.sync
			opts := scheduler.Options{}
			if tc.pub != nil {
				opts.Publisher = tc.pub
			}
			r, err := scheduler.New(cfg, indexer.NewIndex(indexer.Config{}), nil, m, opts)
			if err != nil {
				t.Fatal(err)
			}
			_, err = New(DefaultConfig(), nc, r, nil, tc.pub, m, nil)
			if tc.wantErr != (err != nil) {
				t.Fatalf("New = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "--router-replica-sync") {
				t.Errorf("error %q does not name --router-replica-sync", err)
			}
		})
	}
}
