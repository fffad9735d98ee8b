package workers

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/embedded"
	"github.com/kvrouter/router/internal/testutil"
)

// These tests run discovery against an embedded etcd (data in a temporary
// directory, random ports) and write the keys as Dynamo's workers do.

const within = 15 * time.Second

// startDiscovery runs a discovery of e's registry against endpoint, with
// its own client, until the test ends. hook, if not nil, runs after each
// listing.
func startDiscovery(t *testing.T, e *env, endpoint string, hook func(rev int64)) *Discovery {
	t.Helper()
	cli := testutil.EtcdClient(t, endpoint)
	d, err := NewDiscovery(e.reg.cfg, cli, e.reg, e.log.logger())
	if err != nil {
		t.Fatal(err)
	}
	d.backoffMax = 500 * time.Millisecond
	d.afterList = hook
	testutil.RunUntilCleanup(t, d.Run)
	return d
}

func put(t testing.TB, cli *clientv3.Client, k, v string, opts ...clientv3.OpOption) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if _, err := cli.Put(ctx, k, v, opts...); err != nil {
		t.Fatalf("put %s: %v", k, err)
	}
}

func del(t testing.TB, cli *clientv3.Client, k string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if _, err := cli.Delete(ctx, k); err != nil {
		t.Fatalf("delete %s: %v", k, err)
	}
}

// register writes a worker's instance and card, as a Dynamo worker does.
func register(t testing.TB, cli *clientv3.Client, component string, id uint64, c cardSpec, opts ...clientv3.OpOption) {
	t.Helper()
	put(t, cli, instanceKey("dynamo", component, id), instanceValue("dynamo", component, id), opts...)
	put(t, cli, cardKey("dynamo", component, id), cardValue("dynamo", component, id, c), opts...)
}

func waitWorkers(t testing.TB, e *env, want ...uint64) {
	t.Helper()
	testutil.Eventually(t, within, func() bool { return slices.Equal(ids(e.reg.Snapshot()), want) },
		"workers %v, want %v", func() []uint64 { return ids(e.reg.Snapshot()) }(), want)
}

func TestDiscoveryRegisterUpdateDelete(t *testing.T) {
	etcd := testutil.Etcd(t)
	cli := testutil.EtcdClient(t, etcd.Endpoint())
	e := newEnv(t, testConfig())

	// Listed at start: a decode worker with two ranks and a prefill worker.
	register(t, cli, "backend", 0x1a, cardSpec{blockSize: 128, totalKVBlocks: 1000, maxNumSeqs: 64, maxNumBatchedTokens: 4096, dpSize: 2})
	register(t, cli, "prefill", 0x2b, cardSpec{blockSize: 128, totalKVBlocks: 3000})
	startDiscovery(t, e, etcd.Endpoint(), nil)
	waitWorkers(t, e, 0x1a, 0x2b)
	testutil.Eventually(t, within, e.reg.Ready, "not ready: %+v", e.reg.Status())
	w, _ := e.reg.Snapshot().Get(0x1a)
	want := Worker{ID: 0x1a, Type: TypeDecode, Namespace: "dynamo", Component: "backend", DPSize: 2, BlockSize: 128,
		TotalKVBlocks: 1000, MaxNumSeqs: 64, MaxNumBatchedTokens: 4096, HasCard: true, Model: "Qwen/Qwen3-0.6B"}
	if diff := cmp.Diff(want, w); diff != "" {
		t.Errorf("worker 0x1a (-want +got):\n%s", diff)
	}
	if got := len(e.reg.Snapshot().Candidates(TypeDecode)); got != 2 {
		t.Errorf("%d decode candidates, want 2", got)
	}
	for _, w := range []indexer.Worker{{ID: 0x1a}, {ID: 0x1a, DPRank: 1}, {ID: 0x2b}} {
		e.store(t, w, 3)
	}

	// Watched: a new worker, a card update, a delete.
	register(t, cli, "backend", 0x3c, cardSpec{blockSize: 128})
	waitWorkers(t, e, 0x1a, 0x2b, 0x3c)

	e.store(t, indexer.Worker{ID: 0x3c}, 3)

	// The prefill worker's card moves it to ranks 4 and 5: rank 0 is gone,
	// with its blocks.
	put(t, cli, cardKey("dynamo", "prefill", 0x2b), cardValue("dynamo", "prefill", 0x2b, cardSpec{blockSize: 128, totalKVBlocks: 5000, dpStart: 4, dpSize: 2}))
	testutil.Eventually(t, within, func() bool {
		w, _ := e.reg.Snapshot().Get(0x2b)
		return w.TotalKVBlocks == 5000 && w.DPStart == 4 && w.DPSize == 2
	}, "card update not applied")
	if diff := cmp.Diff([]indexer.Worker{{ID: 0x2b, DPRank: 4}, {ID: 0x2b, DPRank: 5}},
		[]indexer.Worker{e.reg.Snapshot().Candidates(TypePrefill)[0].Worker, e.reg.Snapshot().Candidates(TypePrefill)[1].Worker}); diff != "" {
		t.Errorf("prefill candidates after the update (-want +got):\n%s", diff)
	}

	del(t, cli, instanceKey("dynamo", "backend", 0x1a))
	waitWorkers(t, e, 0x2b, 0x3c)
	for _, w := range []indexer.Worker{{ID: 0x1a}, {ID: 0x1a, DPRank: 1}} {
		if n := e.size(t, w); n != 0 {
			t.Errorf("index holds %d blocks of deleted rank %v", n, w)
		}
	}
	if n := e.size(t, indexer.Worker{ID: 0x2b}); n != 0 {
		t.Errorf("index holds %d blocks of rank 0x2b/0, which the card update removed", n)
	}
	if n := e.size(t, indexer.Worker{ID: 0x3c}); n != 3 {
		t.Errorf("worker 0x3c lost blocks: %d left, want 3", n)
	}
	wantSeries := map[string]float64{
		registeredLabels(0x2b, 4, "prefill"): 1,
		registeredLabels(0x2b, 5, "prefill"): 1,
		registeredLabels(0x3c, 0, "decode"):  1,
	}
	if diff := cmp.Diff(wantSeries, e.series(t, nameRegistered)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", nameRegistered, diff)
	}
	if st := e.reg.Status(); !st.Ready || !st.EtcdReachable || st.Workers != 2 {
		t.Errorf("Status() = %+v", st)
	}
}

func TestDiscoveryLeaseExpiry(t *testing.T) {
	etcd := testutil.Etcd(t)
	cli := testutil.EtcdClient(t, etcd.Endpoint())
	e := newEnv(t, testConfig())
	startDiscovery(t, e, etcd.Endpoint(), nil)

	// As in Dynamo, the instance id is the lease id; the worker never
	// renews it.
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	lease, err := cli.Grant(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	id := uint64(lease.ID)
	register(t, cli, "backend", id, cardSpec{blockSize: 128}, clientv3.WithLease(lease.ID))
	register(t, cli, "backend", 0x99, cardSpec{blockSize: 128})
	waitWorkers(t, e, min(id, 0x99), max(id, 0x99))
	e.store(t, indexer.Worker{ID: indexer.WorkerID(id)}, 4)

	// The lease expires after its TTL (etcd rounds 1 s up to its minimum).
	waitWorkers(t, e, 0x99)
	if n := e.size(t, indexer.Worker{ID: indexer.WorkerID(id)}); n != 0 {
		t.Errorf("index holds %d blocks of the expired worker", n)
	}
	if got := e.series(t, nameRegistered); len(got) != 1 {
		t.Errorf("%s = %v, want only worker 0x99", nameRegistered, got)
	}
}

func TestDiscoveryRelistsAfterCompaction(t *testing.T) {
	etcd := testutil.Etcd(t)
	cli := testutil.EtcdClient(t, etcd.Endpoint())
	e := newEnv(t, testConfig())
	register(t, cli, "backend", 1, cardSpec{blockSize: 128})
	register(t, cli, "backend", 2, cardSpec{blockSize: 128})

	// Between the first listing and its watch, worker 2 leaves, worker 3
	// arrives, and etcd compacts its history: the watch from the listing's
	// revision fails, and only a new listing can tell that 2 is gone.
	var lists atomic.Int32
	hook := func(rev int64) {
		if lists.Add(1) != 1 {
			return
		}
		e.w.Submit(indexer.Event{Worker: indexer.Worker{ID: 2}, Kind: indexer.KindStored, Blocks: []indexer.Block{{Hash: 1, Tokens: 1}}}, 1)
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		if _, err := cli.Delete(ctx, instanceKey("dynamo", "backend", 2)); err != nil {
			t.Error(err)
			return
		}
		if _, err := cli.Put(ctx, instanceKey("dynamo", "backend", 3), instanceValue("dynamo", "backend", 3)); err != nil {
			t.Error(err)
			return
		}
		resp, err := cli.Put(ctx, "unrelated", "x")
		if err != nil {
			t.Error(err)
			return
		}
		if resp.Header.Revision <= rev+1 {
			t.Errorf("revision %d: no history to compact past %d", resp.Header.Revision, rev+1)
		}
		if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
			t.Error(err)
		}
	}
	startDiscovery(t, e, etcd.Endpoint(), hook)
	waitWorkers(t, e, 1, 3)
	// The registry shows the relisted workers before afterList counts the
	// listing, so the count is polled.
	testutil.Eventually(t, within, func() bool { return lists.Load() >= 2 }, "no relist after the compacted watch")
	if n := e.log.count("discovery watch fell behind etcd's compaction; listing again"); n < 1 {
		t.Error("compaction not logged")
	}
	if n := e.size(t, indexer.Worker{ID: 2}); n != 0 {
		t.Errorf("index holds %d blocks of worker 2, deleted while the watch was behind", n)
	}
	// The new watch works.
	register(t, cli, "prefill", 4, cardSpec{blockSize: 128})
	waitWorkers(t, e, 1, 3, 4)
}

// freeURL returns a loopback URL on a port that was free a moment ago.
func freeURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

// hold listens on the addresses of urls and closes every connection at
// once, until release is called.
func hold(t *testing.T, urls ...string) (release func()) {
	t.Helper()
	var wg sync.WaitGroup
	var ls []net.Listener
	for _, u := range urls {
		l, err := net.Listen("tcp", strings.TrimPrefix(u, "http://"))
		if err != nil {
			t.Errorf("hold %s: %v", u, err) // not Fatal: hooks call hold off the test goroutine
			continue
		}
		ls = append(ls, l)
		wg.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		})
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, l := range ls {
				_ = l.Close()
			}
			wg.Wait()
		})
	}
	t.Cleanup(release)
	return release
}

func TestDiscoveryEtcdStoppedAndRestarted(t *testing.T) {
	// Fixed ports and directory, so that the restarted etcd is the same
	// member at the same address.
	ecfg := embedded.EtcdConfig{ClientURL: freeURL(t), PeerURL: freeURL(t), Dir: t.TempDir()}
	var mu sync.Mutex
	srv, err := embedded.StartEtcd(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if srv != nil {
			srv.Close()
		}
	})
	cli := testutil.EtcdClient(t, ecfg.ClientURL)
	e := newEnv(t, testConfig())
	register(t, cli, "backend", 1, cardSpec{blockSize: 128})
	register(t, cli, "backend", 2, cardSpec{blockSize: 128})
	startDiscovery(t, e, ecfg.ClientURL, nil)
	waitWorkers(t, e, 1, 2)
	testutil.Eventually(t, within, e.reg.Ready, "not ready: %+v", e.reg.Status())
	e.store(t, indexer.Worker{ID: 2}, 3)

	mu.Lock()
	srv.Close()
	srv = nil
	mu.Unlock()
	// While etcd is down its ports stay taken, so that no server of a test
	// running elsewhere on this machine takes them and answers in its
	// place.
	release := hold(t, ecfg.ClientURL, ecfg.PeerURL)
	testutil.Eventually(t, within, func() bool { return !e.reg.Status().EtcdReachable }, "etcd still reachable after it stopped; log:\n%s", e.log)
	// Ready still: the router goes on routing from the last known workers.
	if st := e.reg.Status(); !st.Ready || !strings.Contains(st.EtcdError, "etcd unreachable") {
		t.Errorf("Status() with etcd stopped = %+v", st)
	}
	// The last known workers are still served.
	if got := ids(e.reg.Snapshot()); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("workers with etcd stopped = %v, want [1 2]", got)
	}
	if n := e.size(t, indexer.Worker{ID: 2}); n != 3 {
		t.Errorf("blocks of worker 2 with etcd stopped: %d, want 3", n)
	}

	release()
	restarted, err := embedded.StartEtcd(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	srv = restarted
	mu.Unlock()
	// Worker 2 leaves and worker 3 arrives right after the restart.
	del(t, cli, instanceKey("dynamo", "backend", 2))
	register(t, cli, "backend", 3, cardSpec{blockSize: 128})
	waitWorkers(t, e, 1, 3)
	testutil.Eventually(t, within, e.reg.Ready, "not ready after the restart: %+v", e.reg.Status())
	if n := e.size(t, indexer.Worker{ID: 2}); n != 0 {
		t.Errorf("index holds %d blocks of worker 2", n)
	}
	// Each outage is logged once, however many listings fail during it,
	// and so is each recovery. (A loaded machine may see a second, short
	// outage while the restarted member elects itself.)
	down, up := e.log.count("etcd unreachable; serving the last known workers"), e.log.count("etcd reachable again")
	if down < 1 || up != down {
		t.Errorf("outages logged %d times, recoveries %d times; want the same count, at least one", down, up)
	}
	if n := e.log.count("discovery watch ended; listing again"); n > down {
		t.Errorf("%d watch ends logged for %d outages: every failed attempt was logged", n, down)
	}
}

func TestDiscoveryEtcdDiesBeforeTheWatch(t *testing.T) {
	ecfg := embedded.EtcdConfig{ClientURL: freeURL(t), PeerURL: freeURL(t), Dir: t.TempDir()}
	srv, err := embedded.StartEtcd(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(srv.Close) }
	t.Cleanup(stop)
	cli := testutil.EtcdClient(t, ecfg.ClientURL)
	register(t, cli, "backend", 1, cardSpec{blockSize: 128})
	e := newEnv(t, testConfig())

	// etcd stops between the listing and the watch: the watch is never
	// confirmed, and only the probe can tell.
	var held sync.Once
	startDiscovery(t, e, ecfg.ClientURL, func(int64) {
		held.Do(func() {
			stop()
			hold(t, ecfg.ClientURL, ecfg.PeerURL)
		})
	})
	testutil.Eventually(t, within, func() bool { return e.reg.Status().Listed && !e.reg.Status().EtcdReachable }, "etcd still reachable; log:\n%s", e.log)
	if got := ids(e.reg.Snapshot()); !slices.Equal(got, []uint64{1}) {
		t.Errorf("workers = %v, want [1]", got)
	}
}

func TestDiscoveryBlockSizeMismatch(t *testing.T) {
	etcd := testutil.Etcd(t)
	cli := testutil.EtcdClient(t, etcd.Endpoint())
	cfg := testConfig()
	cfg.BlockSize = 64
	e := newEnv(t, cfg)
	startDiscovery(t, e, etcd.Endpoint(), nil)

	// vLLM's default block size is 16: a router left at 64 would match
	// nothing, silently, in Dynamo.
	register(t, cli, "backend", 1, cardSpec{blockSize: 16})
	register(t, cli, "backend", 2, cardSpec{blockSize: 64})
	waitWorkers(t, e, 1, 2)
	want := []Mismatch{{WorkerID: 1, WorkerType: TypeDecode, BlockSize: 16, RouterBlockSize: 64}}
	if diff := cmp.Diff(want, e.reg.Status().BlockSizeMismatches); diff != "" {
		t.Errorf("Status().BlockSizeMismatches (-want +got):\n%s", diff)
	}
	// Another card update of the same worker is not a new mismatch.
	put(t, cli, cardKey("dynamo", "backend", 1), cardValue("dynamo", "backend", 1, cardSpec{blockSize: 16, totalKVBlocks: 9}))
	testutil.Eventually(t, within, func() bool { w, _ := e.reg.Snapshot().Get(1); return w.TotalKVBlocks == 9 }, "update not applied")
	if got := e.counter(t, nameMismatches, ""); got != 1 {
		t.Errorf("%s = %v, want 1", nameMismatches, got)
	}
	if n := e.log.count("worker block size differs from the router's; its overlaps will not be trusted"); n != 1 {
		t.Errorf("mismatch logged %d times, want once", n)
	}
	for _, c := range e.reg.Snapshot().Candidates(TypeDecode) {
		if c.BlockSizeMismatch != (c.Worker.ID == 1) {
			t.Errorf("candidate %+v: BlockSizeMismatch wrong", c)
		}
	}
}

func TestDiscoverySkipsMalformedValues(t *testing.T) {
	etcd := testutil.Etcd(t)
	cli := testutil.EtcdClient(t, etcd.Endpoint())
	e := newEnv(t, testConfig())
	// At listing time.
	register(t, cli, "backend", 1, cardSpec{blockSize: 128, totalKVBlocks: 10})
	put(t, cli, "v1/instances/dynamo/backend/generate/xyz", instanceValue("dynamo", "backend", 2))
	put(t, cli, instanceKey("dynamo", "backend", 3), `{"type":"Endpoint",`)
	startDiscovery(t, e, etcd.Endpoint(), nil)
	waitWorkers(t, e, 1)
	testutil.Eventually(t, within, func() bool { return e.counter(t, nameMalformed, "kind=instance") == 2 }, "malformed instances not counted")

	// While watching: a broken card for a good worker, a broken instance,
	// and good workers around them.
	put(t, cli, instanceKey("dynamo", "backend", 4), instanceValue("dynamo", "backend", 4))
	put(t, cli, cardKey("dynamo", "backend", 4), `{"card_json":{"runtime_config":{"data_parallel_size":-2}}}`)
	put(t, cli, instanceKey("dynamo", "prefill", 5), `not json`)
	put(t, cli, cardKey("dynamo", "backend", 1), `{"card_json":null}`)
	register(t, cli, "prefill", 6, cardSpec{blockSize: 128})
	waitWorkers(t, e, 1, 4, 6)
	want := map[string]float64{"kind=instance": 3, "kind=model_card": 2}
	testutil.Eventually(t, within, func() bool { return cmp.Equal(want, e.series(t, nameMalformed)) },
		"%s = %v, want %v", nameMalformed, e.series(t, nameMalformed), want)
	if w, _ := e.reg.Snapshot().Get(4); w.HasCard {
		t.Errorf("worker 4 took its malformed card: %+v", w)
	}
	if w, _ := e.reg.Snapshot().Get(1); !w.HasCard || w.TotalKVBlocks != 10 {
		t.Errorf("worker 1 after a malformed card update = %+v, want its last good card", w)
	}
	if !e.reg.Ready() {
		t.Errorf("not ready: %+v", e.reg.Status())
	}
}

func TestDiscoveryIgnoresOtherNamespacesInTheWatchRange(t *testing.T) {
	etcd := testutil.Etcd(t)
	cli := testutil.EtcdClient(t, etcd.Endpoint())
	e := newEnv(t, testConfig())
	startDiscovery(t, e, etcd.Endpoint(), nil)
	testutil.Eventually(t, within, e.reg.Ready, "not ready: %+v", e.reg.Status())

	// "dynamo2" sorts inside the watched range; its keys are not ours.
	put(t, cli, "v1/instances/dynamo2/backend/generate/1", instanceValue("dynamo2", "backend", 1))
	put(t, cli, "v1/instances/dynamo2/backend/generate/zz", `garbage`)
	put(t, cli, "v1/kv_routers/dynamo/x", `garbage`)
	register(t, cli, "backend", 7, cardSpec{blockSize: 128})
	waitWorkers(t, e, 7)
	if got := e.series(t, nameMalformed); len(got) != 0 {
		t.Errorf("%s = %v, want nothing counted", nameMalformed, got)
	}
}

func TestDiscoveryMinInitialWorkers(t *testing.T) {
	etcd := testutil.Etcd(t)
	cli := testutil.EtcdClient(t, etcd.Endpoint())
	cfg := testConfig()
	cfg.MinInitialWorkers = 2
	e := newEnv(t, cfg)
	register(t, cli, "backend", 1, cardSpec{blockSize: 128})
	startDiscovery(t, e, etcd.Endpoint(), nil)
	testutil.Eventually(t, within, func() bool { return e.reg.Status().Listed }, "not listed")
	if st := e.reg.Status(); st.Ready || !strings.Contains(st.Reason, "1 of 2") {
		t.Errorf("Status() with 1 of 2 workers = %+v", st)
	}
	register(t, cli, "prefill", 2, cardSpec{blockSize: 128})
	testutil.Eventually(t, within, e.reg.Ready, "not ready with 2 workers: %+v", e.reg.Status())
}

func TestDiscoveryStopsWithItsContext(t *testing.T) {
	etcd := testutil.Etcd(t)
	e := newEnv(t, testConfig())
	cli := testutil.EtcdClient(t, etcd.Endpoint())
	d, err := NewDiscovery(e.reg.cfg, cli, e.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	testutil.Eventually(t, within, e.reg.Ready, "not ready")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(within):
		t.Fatal("Run did not return after cancel")
	}
}
