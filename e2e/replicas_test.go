package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/replay"
)

// TestReplicasUnderLoad runs three routers in one queue group on Debian's
// nats-server and etcd, with simulated workers (`router sim`) and a
// replayed chat workload as the frontend, and checks what issue 18 asks of
// replicas (README, "Running several routers"), with and without replica
// sync:
//
//   - a router restarted mid-load is, within 5 s of turning ready, at 99% or
//     more of another's index entries and answers overlap_scores alike (it
//     loaded the index from a peer);
//   - a router killed mid-load (SIGKILL) costs the frontend no failed
//     route: routes retried after no reply land on the survivors;
//   - after the drain, every surviving router holds no load on any worker
//     (each mark reached the router that booked its request, or a survivor
//     that knew the booking), and the survivors agree on the index and on
//     overlap_scores.
func TestReplicasUnderLoad(t *testing.T) {
	bins := need(t, natsServer, etcdServer)
	for _, replicaSync := range []bool{false, true} {
		t.Run("replica_sync="+strconv.FormatBool(replicaSync), func(t *testing.T) {
			testReplicasUnderLoad(t, bins, replicaSync)
		})
	}
}

// groupRouter is one replica: its process and its HTTP API.
type groupRouter struct {
	*routerProc
	statusPort int
	httpBase   string
	args       []string
}

func testReplicasUnderLoad(t *testing.T, bins installed, replicaSync bool) {
	const blockSize = 16
	s := newServers(t, bins)
	simArgs := []string{"sim", "--nats-url", s.natsURL(), "--etcd-endpoints", s.etcdURL,
		"--workers", "4", "--block-size", strconv.Itoa(blockSize), "--num-gpu-blocks", "2048", "--log-format", "json"}
	sim := testutil.Start(t, routerBinary(t), simArgs...)

	routers := make([]*groupRouter, 3)
	for i := range routers {
		httpPort := testutil.FreePort(t)
		r := &groupRouter{statusPort: testutil.FreePort(t), httpBase: "http://" + testutil.Addr(httpPort),
			args: []string{"--router-block-size", strconv.Itoa(blockSize), "--http-host", "127.0.0.1", "--http-port", strconv.Itoa(httpPort)}}
		if replicaSync {
			r.args = append(r.args, "--router-replica-sync")
		}
		r.routerProc = s.startRouter(r.statusPort, r.args...)
		routers[i] = r
	}
	for _, r := range routers {
		r.waitHealth(200, 60*time.Second)
	}
	a, b, c := routers[0], routers[1], routers[2]
	testutil.Eventually(t, 30*time.Second, func() bool {
		return total(a.mustScrape(), "dynamo_component_router_worker_registered") == 4
	}, "the routers never saw the 4 simulated workers; sim output:\n%s", sim.Output())

	syn := replay.DefaultSyntheticConfig()
	syn.Seed, syn.Requests, syn.Rate, syn.Users = 7, 900, 36, 24
	syn.SystemPrompts, syn.SystemBlocks, syn.TurnBlocks, syn.MaxBlocks = 4, 8, 4, 64
	syn.OutputTokens, syn.BlockTokens = 24, blockSize
	wl, err := replay.Synthetic(syn)
	if err != nil {
		t.Fatal(err)
	}
	cfg := replay.DefaultConfig()
	cfg.ProgressInterval = 0
	cfg.RouterTimeout = 20 * time.Second
	cfg.RouteRetry = 5 * time.Second
	nc := testutil.NATSConn(t, s.natsURL())
	rp, err := replay.New(cfg, nc, wl, replay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		res *replay.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := rp.Run(context.Background())
		done <- outcome{res, err}
	}()
	routed := func() float64 {
		var n float64
		for _, r := range []*groupRouter{a, b, c} {
			if _, fams, err := r.scrape(); err == nil {
				n += total(fams, "dynamo_component_router_requests_total")
			}
		}
		return n
	}
	testutil.Eventually(t, 60*time.Second, func() bool { return routed() >= 150 }, "the load never got going")

	// Restart b mid-load: once ready it must hold what a holds.
	b.router.Signal(syscall.SIGTERM)
	if code := b.router.Wait(30 * time.Second); code != 0 {
		t.Fatalf("router b exited %d on SIGTERM:\n%s", code, b.router.Output())
	}
	b.routerProc = s.startRouter(b.statusPort, b.args...)
	b.waitHealth(200, 60*time.Second)
	ready := time.Now()
	var entriesA, entriesB float64
	testutil.Eventually(t, 5*time.Second, func() bool {
		entriesA = total(a.mustScrape(), "dynamo_component_kv_index_entries")
		entriesB = total(b.mustScrape(), "dynamo_component_kv_index_entries")
		return entriesA > 0 && entriesB >= 0.99*entriesA
	}, "restarted router b, 5 s after it turned ready: %v; b's output:\n%s",
		testutil.Later(func() string { return fmt.Sprintf("%v index entries against a's %v", entriesB, entriesA) }), testutil.Later(b.router.Output))
	// The same overlap_scores for the prompts seen so far (an answer pair
	// may straddle an event, so the pair is asked again until it agrees).
	for i := 0; i < 200; i += 25 {
		tokens := wl.Tokens(&wl.Requests[i], nil)
		var oa, ob []client.WorkerOverlap
		testutil.Eventually(t, time.Until(ready.Add(5*time.Second)), func() bool {
			oa, ob = overlapScores(t, a, tokens), overlapScores(t, b, tokens)
			return slices.Equal(oa, ob)
		}, "restarted router b: overlap_scores of prompt %d: %v", i,
			testutil.Later(func() string { return fmt.Sprintf("a %v, b %v", oa, ob) }))
	}
	t.Logf("restarted router: %v entries against %v, same overlap_scores, %v after ready", entriesB, entriesA, time.Since(ready).Round(time.Millisecond))
	if d := total(b.mustScrape(), "dynamo_router_index_diverging"); d != 0 {
		t.Errorf("restarted router b says its index diverges (%v)", d)
	}

	// Kill c mid-load: the frontend must not lose a route.
	before := routed()
	testutil.Eventually(t, 60*time.Second, func() bool { return routed() >= before+100 }, "the load stopped after the restart")
	c.router.Kill()

	var out outcome
	select {
	case out = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("the replay did not end within 3 minutes")
	}
	if out.err != nil {
		t.Fatalf("replay: %v", out.err)
	}
	failed := map[string]int{}
	for _, rec := range out.res.Records {
		if rec.Err != "" {
			failed[rec.Reason]++
		}
	}
	if len(failed) > 0 {
		t.Errorf("requests failed at the frontend, by reason: %v", failed)
	}

	// After the drain, no survivor holds load, and they agree on the index.
	for _, r := range []*groupRouter{a, b} {
		testutil.Eventually(t, 30*time.Second, func() bool {
			fams := r.mustScrape()
			return nonZero(fams, "dynamo_frontend_worker_active_decode_blocks") == 0 &&
				nonZero(fams, "dynamo_frontend_worker_active_prefill_tokens") == 0
		}, "router %s still holds load after the drain:\n%s", r.statusBase, activeLoad(r.mustScrape()))
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		entriesA = total(a.mustScrape(), "dynamo_component_kv_index_entries")
		entriesB = total(b.mustScrape(), "dynamo_component_kv_index_entries")
		return entriesA == entriesB
	}, "after the drain, %v; b's output:\n%s",
		testutil.Later(func() string { return fmt.Sprintf("a holds %v index entries and b %v", entriesA, entriesB) }), testutil.Later(b.router.Output))
	for i := 0; i < len(wl.Requests); i += 45 {
		tokens := wl.Tokens(&wl.Requests[i], nil)
		oa, ob := overlapScores(t, a, tokens), overlapScores(t, b, tokens)
		if !slices.Equal(oa, ob) {
			t.Errorf("prompt %d: overlap_scores differ: a %v, b %v", i, oa, ob)
		}
	}
	sim.Signal(syscall.SIGTERM)
	sim.Wait(30 * time.Second)
}

// total adds up the samples of a counter or gauge family.
func total(fams map[string]*dto.MetricFamily, name string) float64 {
	return sum(samples(fams, name, nil))
}

// nonZero counts the series of a family whose value is not 0.
func nonZero(fams map[string]*dto.MetricFamily, name string) int {
	n := 0
	for _, v := range samples(fams, name, nil) {
		if v != 0 {
			n++
		}
	}
	return n
}

// activeLoad prints the per-worker load series, for a failure message.
func activeLoad(fams map[string]*dto.MetricFamily) string {
	var b bytes.Buffer
	for _, name := range []string{"dynamo_frontend_worker_active_decode_blocks", "dynamo_frontend_worker_active_prefill_tokens"} {
		for _, m := range fams[name].GetMetric() {
			fmt.Fprintf(&b, "%s%v %v\n", name, m.GetLabel(), m.GetGauge().GetValue())
		}
	}
	return b.String()
}

// overlapScores asks one router, through its HTTP API, which ranks hold
// the prompt, sorted by rank.
func overlapScores(t *testing.T, r *groupRouter, tokens []uint32) []client.WorkerOverlap {
	t.Helper()
	body, err := json.Marshal(client.Prompt{TokenIDs: tokens})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(r.httpBase+"/v1/overlap_scores", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("overlap_scores on %s: %v", r.httpBase, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("overlap_scores on %s: %d %s", r.httpBase, resp.StatusCode, data)
	}
	var o client.Overlaps
	if err := json.Unmarshal(data, &o); err != nil {
		t.Fatalf("overlap_scores on %s: %v: %s", r.httpBase, err, data)
	}
	slices.SortFunc(o.Workers, func(x, y client.WorkerOverlap) int {
		return cmp.Or(cmp.Compare(x.WorkerID, y.WorkerID), cmp.Compare(x.DPRank, y.DPRank))
	})
	return o.Workers
}
