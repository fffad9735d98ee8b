package service

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/embedded"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/workers"
)

func TestMain(m *testing.M) {
	testutil.VerifyTestMain(m)
}

// servers are the embedded NATS and etcd a test's routers share.
type servers struct {
	nats *embedded.NATS
	etcd *clientv3.Client
}

func startServers(t testing.TB) *servers {
	t.Helper()
	e := testutil.Etcd(t)
	return &servers{nats: testutil.NATS(t), etcd: testutil.EtcdClient(t, e.Endpoint())}
}

// router is one router replica built as cmd/ builds it: real index,
// metrics, worker registry with etcd discovery, scheduler and service.
type router struct {
	idx  *indexer.Index
	m    *metrics.Router
	sm   *scheduler.Metrics // the scheduler's families, for reading
	prom *prometheus.Registry
	reg  *workers.Registry
	w    *events.Writer
	r    *scheduler.Router
	svc  *Service
	// eventID numbers the events store submits.
	eventID uint64
	// client is a separate connection for the test's requests.
	client *nats.Conn
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// testBlockSize keeps prompts short.
const testBlockSize = 4

// testClock fixes the uptime gauge for golden files.
func testClock() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

// startRouter starts a router replica on srv. id is its router id.
func startRouter(t testing.TB, srv *servers, id uint64, cfg scheduler.Config) *router {
	t.Helper()
	rt := &router{idx: indexer.NewIndex(indexer.Config{}), prom: prometheus.NewRegistry()}
	var err error
	if rt.m, err = metrics.New(rt.prom, metrics.Config{Namespace: "dynamo", Component: "router", RouterID: id, Now: testClock}); err != nil {
		t.Fatal(err)
	}
	if rt.sm, err = scheduler.NewMetrics(rt.m); err != nil {
		t.Fatal(err)
	}
	wcfg := workers.DefaultConfig()
	wcfg.BlockSize = cfg.BlockSize
	wcfg.EtcdTimeout = 2 * time.Second
	wcfg.EtcdProbeInterval = 200 * time.Millisecond
	ecfg := events.DefaultConfig()
	w, err := events.NewWriter(ecfg, rt.idx, rt.m, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt.w = w
	scfg := DefaultConfig()
	scfg.RouterID = id
	scfg.Handlers = benchHandlers
	opts := scheduler.Options{Rand: rand.New(rand.NewPCG(id, 1))}
	nc := testutil.NATSConn(t, srv.nats.URL())
	var pub *SyncPublisher
	if cfg.ReplicaSync {
		pub = NewSyncPublisher(nc, scfg, nil)
		opts.Publisher = pub
	}
	if rt.r, err = scheduler.New(cfg, rt.idx, w, rt.m, opts); err != nil {
		t.Fatal(err)
	}
	if rt.reg, err = workers.NewRegistry(wcfg, workers.Sinks{Index: w, Fleet: rt.r}, rt.m, nil); err != nil {
		t.Fatal(err)
	}
	disc, err := workers.NewDiscovery(wcfg, srv.etcd, rt.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rt.svc, err = New(scfg, nc, rt.r, rt.reg, pub, rt.m, nil); err != nil {
		t.Fatal(err)
	}
	rt.client = testutil.NATSConn(t, srv.nats.URL())
	ctx, cancel := context.WithCancel(context.Background())
	rt.cancel = cancel
	errs := make(chan error, 5)
	regRun := func(ctx context.Context) error { return rt.reg.Run(ctx, w.Notices()) }
	for _, run := range []func(context.Context) error{w.Run, regRun, disc.Run, rt.svc.Run, rt.r.Run} {
		rt.done.Go(func() {
			if err := run(ctx); err != nil {
				errs <- err
			}
		})
	}
	t.Cleanup(func() {
		rt.stop()
		close(errs)
		for err := range errs {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case <-rt.svc.ready:
	case err := <-errs:
		t.Fatalf("service: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("service not listening within 10s")
	}
	return rt
}

// stop ends the replica's goroutines and waits for them; idempotent.
func (rt *router) stop() {
	rt.cancel()
	rt.done.Wait()
}

// testConfig is the scheduler's default configuration at the test block
// size.
func testConfig() scheduler.Config {
	cfg := scheduler.DefaultConfig()
	cfg.BlockSize = testBlockSize
	return cfg
}

// worker is a worker to register in etcd.
type worker struct {
	id                        uint64
	component                 string // "backend" or "prefill"
	blockSize                 int
	totalKVBlocks, maxBatched int
}

// register puts the worker's instance (on a lease) and model card in etcd,
// as a Dynamo worker does, and returns the lease.
func (srv *servers) register(t testing.TB, w worker) clientv3.LeaseID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := srv.etcd.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if w.component == "" {
		w.component = "backend"
	}
	if w.blockSize == 0 {
		w.blockSize = testBlockSize
	}
	inst := fmt.Sprintf(`{"type":"Endpoint","namespace":"dynamo","component":%q,"endpoint":"generate","instance_id":%d,"transport":{"nats_tcp":"x"}}`, w.component, w.id)
	card, err := json.Marshal(map[string]any{
		"type": "Model", "namespace": "dynamo", "component": w.component, "endpoint": "generate", "instance_id": w.id,
		"card_json": map[string]any{"display_name": "test-model", "kv_cache_block_size": w.blockSize, "runtime_config": map[string]any{
			"total_kv_blocks": w.totalKVBlocks, "max_num_seqs": 256, "max_num_batched_tokens": w.maxBatched,
			"data_parallel_start_rank": 0, "data_parallel_size": 1,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	key := func(kind string) string { return fmt.Sprintf("v1/%s/dynamo/%s/generate/%x", kind, w.component, w.id) }
	if _, err := srv.etcd.Put(ctx, key("mdc"), string(card), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.etcd.Put(ctx, key("instances"), inst, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	return lease.ID
}

// waitWorkers waits until every replica has n registered workers.
func waitWorkers(t testing.TB, n int, rts ...*router) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() bool {
		for _, rt := range rts {
			if rt.reg.Snapshot().Len() != n {
				return false
			}
		}
		return true
	}, "%d workers registered", n)
}

// store indexes the full blocks of toks for worker id, as its KV events
// would.
func (rt *router) store(t testing.TB, id uint64, toks []uint32) {
	t.Helper()
	h, err := blockhash.NewHasher(rt.r.Config().BlockSize, blockhash.Options{})
	if err != nil {
		t.Fatal(err)
	}
	locals := h.LocalHashes(nil, toks)
	seq := h.SequenceHashes(nil, locals)
	blocks := make([]indexer.Block, len(locals))
	for i := range locals {
		blocks[i] = indexer.Block{Hash: indexer.BlockHash(seq[i]), Tokens: indexer.LocalHash(locals[i])}
	}
	// Through the index's one writer, as a KV event would come.
	rt.eventID++
	rt.w.Submit(indexer.Event{Worker: indexer.Worker{ID: indexer.WorkerID(id)}, Kind: indexer.KindStored, Blocks: blocks}, rt.eventID)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.w.Sync(ctx); err != nil {
		t.Fatalf("store: %v", err)
	}
	if got := rt.idx.Size(indexer.Worker{ID: indexer.WorkerID(id)}); got < len(blocks) {
		t.Fatalf("store: worker %d holds %d blocks, want %d", id, got, len(blocks))
	}
}

// request sends body to endpoint and returns the reply.
func (rt *router) request(t testing.TB, endpoint, body string) string {
	t.Helper()
	msg, err := rt.client.Request(Subject("dynamo", "router", endpoint), []byte(body), 10*time.Second)
	if err != nil {
		t.Fatalf("%s %s: %v", endpoint, body, err)
	}
	return string(msg.Data)
}

// seq returns n tokens from base.
func seq(base, n int) []uint32 {
	t := make([]uint32, n)
	for i := range t {
		t[i] = uint32(base + i)
	}
	return t
}

// tokensJSON renders tokens as a JSON array.
func tokensJSON(toks []uint32) string {
	b, _ := json.Marshal(toks)
	return string(b)
}

// hasher hashes blocks of the test block size.
func hasher(t testing.TB) *blockhash.Hasher {
	t.Helper()
	h, err := blockhash.NewHasher(testBlockSize, blockhash.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// hasherOf hashes blocks of bs tokens.
func hasherOf(t testing.TB, bs int) *blockhash.Hasher {
	t.Helper()
	h, err := blockhash.NewHasher(bs, blockhash.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// benchHandlers is the subscriptions per endpoint of test routers.
var benchHandlers = 2
