package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/embedded"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/status"
	"github.com/kvrouter/router/workers"
)

func TestMain(m *testing.M) {
	testutil.VerifyTestMain(m)
}

// blockSize keeps prompts short.
const blockSize = 4

// cluster is a router built by New on embedded NATS and etcd, with a
// client connection that plays the workers and the frontend.
type cluster struct {
	t      *testing.T
	st     *Stack
	nc     *nats.Conn
	etcd   *clientv3.Client
	ids    map[indexer.Worker]uint64 // next event_id per rank
	cancel context.CancelFunc
	done   chan error
}

func startCluster(t *testing.T, opts ...func(*Config)) *cluster {
	t.Helper()
	ns := testutil.NATS(t)
	// A short raft log: TestJoinLeaveCyclesStayFlat measures the heap that
	// this etcd shares with the router.
	es, err := embedded.StartEtcd(embedded.EtcdConfig{ClientURL: "http://127.0.0.1:0", PeerURL: "http://127.0.0.1:0", Dir: t.TempDir(), SnapshotCount: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(es.Close)
	c := &cluster{t: t, nc: testutil.NATSConn(t, ns.URL()), etcd: testutil.EtcdClient(t, es.Endpoint()), ids: map[indexer.Worker]uint64{}}
	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{RouterID: 1, KVEvents: true, Events: events.DefaultConfig(), Workers: workers.DefaultConfig(),
		Scheduler: scheduler.DefaultConfig(), Service: service.DefaultConfig()}
	cfg.Workers.BlockSize, cfg.Scheduler.BlockSize = blockSize, blockSize
	cfg.Workers.EtcdTimeout, cfg.Workers.EtcdProbeInterval = 2*time.Second, 200*time.Millisecond
	for _, o := range opts {
		o(&cfg)
	}
	if c.st, err = New(cfg, testutil.NATSConn(t, ns.URL()), testutil.EtcdClient(t, es.Endpoint()), m, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan error, 1)
	go func() { c.done <- c.st.Run(ctx) }()
	t.Cleanup(c.stop)
	testutil.Eventually(t, 10*time.Second, c.st.EventsReady, "kv events subscribed")
	// The service answers once it is subscribed.
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := c.nc.Request(service.Subject("dynamo", "router", "overlap_scores"), []byte(`{"token_ids":[]}`), time.Second)
		return err == nil
	}, "routing service answering")
	return c
}

func (c *cluster) stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	c.cancel = nil
	select {
	case err := <-c.done:
		if err != nil {
			c.t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		c.t.Error("Run did not return within 30s")
	}
}

// register puts worker id's instance and a card with dp data-parallel ranks
// in etcd, lease-less, as a restarted worker with a fixed id would.
func (c *cluster) register(id uint64, dp int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	inst := fmt.Sprintf(`{"type":"Endpoint","namespace":"dynamo","component":"backend","endpoint":"generate","instance_id":%d}`, id)
	card, _ := json.Marshal(map[string]any{
		"type": "Model", "namespace": "dynamo", "component": "backend", "endpoint": "generate", "instance_id": id,
		"card_json": map[string]any{"display_name": "m", "kv_cache_block_size": blockSize, "runtime_config": map[string]any{
			"total_kv_blocks": 1000, "max_num_seqs": 16, "max_num_batched_tokens": 256,
			"data_parallel_start_rank": 0, "data_parallel_size": dp,
		}},
	})
	for _, kv := range [][2]string{{c.key("mdc", id), string(card)}, {c.key("instances", id), inst}} {
		if _, err := c.etcd.Put(ctx, kv[0], kv[1]); err != nil {
			c.t.Fatal(err)
		}
	}
}

// deregister deletes worker id's instance key, as its lease expiring would.
func (c *cluster) deregister(id uint64) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.etcd.Delete(ctx, c.key("instances", id)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) key(kind string, id uint64) string {
	return fmt.Sprintf("v1/%s/dynamo/backend/generate/%x", kind, id)
}

// waitRanks waits until the registry lists worker id with n ranks (0: not
// at all).
func (c *cluster) waitRanks(id uint64, n int) {
	c.t.Helper()
	testutil.Eventually(c.t, 10*time.Second, func() bool {
		w, ok := c.st.Registry().Snapshot().Get(indexer.WorkerID(id))
		return (n == 0 && !ok) || (ok && int(w.DPSize) == n)
	}, "worker %d registered with %d ranks", id, n)
}

// store publishes the KV event that rank stores the full blocks of toks.
func (c *cluster) store(rank indexer.Worker, toks []uint32) {
	c.t.Helper()
	h, err := blockhash.NewHasher(blockSize, blockhash.Options{})
	if err != nil {
		c.t.Fatal(err)
	}
	locals := h.LocalHashes(nil, toks)
	seqs := h.SequenceHashes(nil, locals)
	ev := indexer.Event{Worker: rank, Kind: indexer.KindStored}
	for i := range locals {
		ev.Blocks = append(ev.Blocks, indexer.Block{Hash: indexer.BlockHash(seqs[i]), Tokens: indexer.LocalHash(locals[i])})
	}
	c.ids[rank]++
	if err := c.nc.Publish(events.Subjects("dynamo", events.DefaultComponent)[0], codec.AppendJSON(nil, ev, codec.Meta{EventID: c.ids[rank]})); err != nil {
		c.t.Fatal(err)
	}
}

// request asks the router and decodes its reply into out; it returns the
// error code of an error reply.
func (c *cluster) request(endpoint string, body any, out any) (code string) {
	c.t.Helper()
	b, _ := json.Marshal(body)
	msg, err := c.nc.Request(service.Subject("dynamo", "router", endpoint), b, 10*time.Second)
	if err != nil {
		c.t.Fatalf("%s: %v", endpoint, err)
	}
	var e struct {
		Error *struct{ Code string } `json:"error"`
	}
	if json.Unmarshal(msg.Data, &e) == nil && e.Error != nil {
		return e.Error.Code
	}
	if out != nil {
		if err := json.Unmarshal(msg.Data, out); err != nil {
			c.t.Fatalf("%s reply %s: %v", endpoint, msg.Data, err)
		}
	}
	return ""
}

// overlaps returns each rank's overlap with toks, from overlap_scores.
func (c *cluster) overlaps(toks []uint32) map[indexer.Worker]int {
	c.t.Helper()
	var r struct {
		Workers []struct {
			WorkerID      uint64 `json:"worker_id"`
			DPRank        uint32 `json:"dp_rank"`
			OverlapBlocks int    `json:"overlap_blocks"`
		} `json:"workers"`
	}
	if code := c.request("overlap_scores", map[string]any{"token_ids": toks}, &r); code != "" {
		c.t.Fatalf("overlap_scores: %s", code)
	}
	out := map[indexer.Worker]int{}
	for _, w := range r.Workers {
		out[indexer.Worker{ID: indexer.WorkerID(w.WorkerID), DPRank: indexer.DPRank(w.DPRank)}] = w.OverlapBlocks
	}
	return out
}

func tokens(base, n int) []uint32 {
	t := make([]uint32, n)
	for i := range t {
		t[i] = uint32(base + i)
	}
	return t
}

// TestWorkerLifecycleEndToEnd follows one worker id through its life over
// NATS and etcd, as a frontend and an operator would see it: a rank its card
// drops loses its blocks, and after the worker is deleted and registered
// again with the same id it is routable and holds none of its old blocks.
func TestWorkerLifecycleEndToEnd(t *testing.T) {
	c := startCluster(t)
	const id = 7
	r0, r1 := indexer.Worker{ID: id}, indexer.Worker{ID: id, DPRank: 1}
	prompt := tokens(100, 3*blockSize)
	c.register(id, 2)
	c.waitRanks(id, 2)
	c.store(r0, prompt)
	c.store(r1, prompt[:2*blockSize])
	testutil.Eventually(t, 10*time.Second, func() bool {
		o := c.overlaps(prompt)
		return o[r0] == 3 && o[r1] == 2
	}, "both ranks' blocks indexed (last %v)", c.overlaps(prompt))

	// The card drops rank 1: its blocks go, rank 0's stay.
	c.register(id, 1)
	c.waitRanks(id, 1)
	testutil.Eventually(t, 10*time.Second, func() bool {
		o := c.overlaps(prompt)
		return o[r0] == 3 && o[r1] == 0
	}, "rank 1's blocks dropped with the rank (last %v)", c.overlaps(prompt))

	// Route and keep the booking, then delete the worker.
	only := map[string]any{"token_ids": prompt, "allowed_worker_ids": []uint64{id}}
	if code := c.request("route", map[string]any{"request_id": "a", "token_ids": prompt, "allowed_worker_ids": []uint64{id}}, nil); code != "" {
		t.Fatalf("route to the registered worker: %s", code)
	}
	c.deregister(id)
	c.waitRanks(id, 0)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(c.overlaps(prompt)) == 0 }, "blocks of the deleted worker dropped")
	if code := c.request("route", only, nil); code != "no_workers" {
		t.Fatalf("route to a deleted worker: %q, want no_workers", code)
	}

	// The same id registers again: routable at once, with no old blocks
	// and no old load.
	c.register(id, 1)
	c.waitRanks(id, 1)
	var d struct {
		WorkerID      uint64 `json:"worker_id"`
		OverlapBlocks int    `json:"overlap_blocks"`
	}
	if code := c.request("route", map[string]any{"request_id": "b", "token_ids": prompt, "allowed_worker_ids": []uint64{id}}, &d); code != "" {
		t.Fatalf("route to the re-registered worker: %s, want a decision", code)
	}
	if d.WorkerID != id || d.OverlapBlocks != 0 {
		t.Errorf("decision %+v: want worker %d with no overlap (its old blocks are gone)", d, id)
	}
	if l, ok := c.st.Router().Load(r0); !ok || l.Requests != 1 {
		t.Errorf("load of the returned rank = %+v (known %v), want just the new request", l, ok)
	}
	// Its new events count again.
	c.store(r0, prompt)
	testutil.Eventually(t, 10*time.Second, func() bool { return c.overlaps(prompt)[r0] == 3 }, "new blocks indexed after the return")
}

// TestJoinLeaveCyclesStayFlat: one worker id registering, storing, taking
// a route and leaving a thousand times through etcd and NATS is routable
// every time and leaves the router's live heap and goroutines as they were.
func TestJoinLeaveCyclesStayFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 etcd round trips")
	}
	c := startCluster(t)
	const id = 9
	prompt := tokens(500, 2*blockSize)
	cycle := func() {
		c.register(id, 1)
		c.waitRanks(id, 1)
		c.ids = map[indexer.Worker]uint64{} // a new incarnation, a new stream
		c.store(indexer.Worker{ID: id}, prompt)
		// Each incarnation is routable, and its booking goes with it.
		if code := c.request("route", map[string]any{"token_ids": prompt, "allowed_worker_ids": []uint64{id}}, nil); code != "" {
			t.Fatalf("route to incarnation of worker %d: %s", id, code)
		}
		c.deregister(id)
		c.waitRanks(id, 0)
	}
	settle := func() (heap uint64, goroutines int) {
		testutil.Eventually(t, 10*time.Second, func() bool { return c.st.Index().Stats().Entries == 0 }, "index empty")
		// The embedded etcd shares this heap and keeps every revision until
		// compacted: compact, so that only the router's memory is compared.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.etcd.Get(ctx, "compact")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.etcd.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc, runtime.NumGoroutine()
	}
	for range 50 {
		cycle()
	}
	heap0, g0 := settle()
	for range 1000 {
		cycle()
	}
	heap1, g1 := settle()
	t.Logf("live heap %d → %d bytes, goroutines %d → %d", heap0, heap1, g0, g1)
	// The servers share this heap: a profile of the growth (MemProfileRate
	// 1) shows the NATS server's subject cache and etcd's key index, and of
	// the router only the scheduler's lazily compacted order list (about
	// 23 kB, compacted past 1,024 dead entries). A leak of even 512 bytes a
	// cycle would exceed this bound.
	if heap1 > heap0+512<<10 {
		t.Errorf("live heap grew from %d to %d bytes over 1,000 cycles", heap0, heap1)
	}
	if g1 > g0+2 {
		t.Errorf("goroutines grew from %d to %d over 1,000 cycles", g0, g1)
	}
}

// TestStatusServer: the stack serves /health with every readiness check,
// ready once workers are listed and the KV events live, and a block-size
// mismatch degrades it without making it notready.
func TestStatusServer(t *testing.T) {
	c := startCluster(t, func(cfg *Config) {
		cfg.Status = &status.Config{Host: "127.0.0.1", Port: 0, HealthPath: "/health", LivePath: "/live", StartingStatus: "notready"}
		cfg.Gatherer = prometheus.NewRegistry()
	})
	get := func() (int, healthBody) { return getHealth(t, c.st) }
	testutil.Eventually(t, 10*time.Second, func() bool { code, _ := get(); return code == http.StatusOK }, "/health ready")
	_, h := get()
	for _, name := range []string{"nats", "etcd", "workers", "block_size", "kv_events"} {
		if h.Endpoints[name] != "ready" {
			t.Errorf("check %s = %q, want ready (%+v)", name, h.Endpoints[name], h)
		}
	}

	// A worker whose card states another block size: degraded, still 200.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	card := `{"type":"Model","namespace":"dynamo","component":"backend","endpoint":"generate","instance_id":3,"card_json":{"display_name":"m","kv_cache_block_size":64}}`
	inst := `{"type":"Endpoint","namespace":"dynamo","component":"backend","endpoint":"generate","instance_id":3}`
	for _, kv := range [][2]string{{c.key("mdc", 3), card}, {c.key("instances", 3), inst}} {
		if _, err := c.etcd.Put(ctx, kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { _, h := get(); return len(h.Degraded) > 0 }, "block size mismatch shown as degraded")
	code, h := get()
	if code != http.StatusOK || h.Status != "ready" {
		t.Errorf("/health with a mismatch = %d %q, want 200 ready", code, h.Status)
	}
	if want := "decode worker 3 has block size 64"; len(h.Degraded) != 1 || !strings.Contains(h.Degraded[0], want) {
		t.Errorf("degraded = %q, want one line naming %q", h.Degraded, want)
	}
}

// healthBody is the JSON of /health.
type healthBody struct {
	Status    string            `json:"status"`
	Endpoints map[string]string `json:"endpoints"`
	Degraded  []string          `json:"degraded"`
}

// getHealth fetches st's /health.
func getHealth(t *testing.T, st *Stack) (int, healthBody) {
	t.Helper()
	resp, err := http.Get("http://" + st.StatusAddr() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h healthBody
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, h
}
