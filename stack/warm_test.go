package stack_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/stacktest"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/stack"
	"github.com/kvrouter/router/status"
	"github.com/kvrouter/router/warmstart"
)

const warmBlockSize = 4

// group is one NATS and etcd with workers registered and a publisher of
// their KV events: conversations that grow, each new turn stored under the
// blocks of the turns before, as engines store them.
type group struct {
	t                *testing.T
	natsURL, etcdURL string
	pub              *stacktest.KVEvents
	convs            [][]uint32 // each conversation's tokens so far
	workers          []uint64
}

func newGroup(t *testing.T) *group {
	t.Helper()
	g := &group{t: t, natsURL: testutil.NATS(t).URL(), etcdURL: testutil.Etcd(t).Endpoint(), workers: []uint64{11, 12, 13}}
	etcd := testutil.EtcdClient(t, g.etcdURL)
	for _, id := range g.workers {
		stacktest.Register(t, etcd, testutil.WorkerRecord{Namespace: "dynamo", Component: "backend", ID: id, BlockSize: warmBlockSize,
			TotalKVBlocks: 10000, MaxNumSeqs: 16, MaxBatchedTokens: 1024})
	}
	g.pub = stacktest.NewKVEvents(t, testutil.NATSConn(t, g.natsURL), warmBlockSize)
	return g
}

// open starts n conversations of two blocks, spread over the workers.
func (g *group) open(n int) (blocks int) {
	for range n {
		c := len(g.convs)
		toks := make([]uint32, 2*warmBlockSize)
		for i := range toks {
			toks[i] = uint32(c*100000 + i)
		}
		g.convs = append(g.convs, toks)
		blocks += g.pub.Stored("dynamo", g.worker(c), toks)
	}
	return blocks
}

// turn adds one block to conversation c, stored under its last block.
func (g *group) turn(c int) int {
	toks := g.convs[c]
	from := len(toks) / warmBlockSize
	for i := range warmBlockSize {
		toks = append(toks, uint32(c*100000+len(toks)+i))
	}
	g.convs[c] = toks
	return g.pub.Extended("dynamo", g.worker(c), toks, from)
}

func (g *group) worker(c int) uint64 { return g.workers[c%len(g.workers)] }

// router is a running stack with its metric families.
type router struct {
	*stacktest.Router
	m *metrics.Router
}

func (g *group) start(id uint64, warmTimeout time.Duration, opts ...func(*stack.Config)) *router {
	g.t.Helper()
	r := &router{}
	var err error
	if r.m, err = metrics.New(prometheus.NewRegistry(), metrics.Config{Namespace: "dynamo", Component: "router", RouterID: id}); err != nil {
		g.t.Fatal(err)
	}
	cfg := stacktest.Config(id, warmBlockSize)
	cfg.Events.WarmStartTimeout = warmTimeout
	cfg.WarmStartChunkSize = 512 // many chunks
	for _, o := range opts {
		o(&cfg)
	}
	r.Router = stacktest.Start(g.t, cfg, g.natsURL, g.etcdURL, r.m, slog.New(slog.DiscardHandler))
	testutil.Eventually(g.t, 10*time.Second, func() bool { return r.Registry().Snapshot().Len() == len(g.workers) },
		"router %d lists the %d workers", id, len(g.workers))
	return r
}

// dump is the index as sorted lines.
func (r *router) dump() []string { return testutil.Canonical(r.Index().Dump()) }

// overlaps are the router's overlap scores of toks, by rank.
func (r *router) overlaps(t *testing.T, toks []uint32) map[indexer.Worker]int {
	t.Helper()
	_, scores, err := r.Router.Router().OverlapScores(&scheduler.Request{Tokens: toks})
	if err != nil {
		t.Fatal(err)
	}
	out := map[indexer.Worker]int{}
	for _, s := range scores {
		out[s.Worker] = s.OverlapBlocks
	}
	return out
}

// diverging is the router's dynamo_router_index_diverging: events.NewMetrics
// returns the collectors the router registered on m.
func (r *router) diverging(t *testing.T) float64 {
	t.Helper()
	em, err := events.NewMetrics(r.m)
	if err != nil {
		t.Fatal(err)
	}
	return promtest.ToFloat64(em.IndexDiverging)
}

// warmMetrics returns the warm-start families a router registered on m.
func warmMetrics(t *testing.T, m *metrics.Router) *warmstart.Metrics {
	t.Helper()
	wm, err := warmstart.NewMetrics(m)
	if err != nil {
		t.Fatal(err)
	}
	return wm
}

// getHealth returns the status code and body of the /health of the status
// server at addr.
func getHealth(t *testing.T, addr string) (int, status.Health) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h status.Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, h
}

// TestReplicaJoinsWarm: a router joining a running group while its workers
// publish ends with its peer's index, scores prompts as its peer does, and
// is not diverging.
func TestReplicaJoinsWarm(t *testing.T) {
	g := newGroup(t)
	first := g.start(1, 10*time.Second)
	entries := g.open(30)
	for range 3 {
		for c := range g.convs {
			entries += g.turn(c)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return first.Index().Stats().Entries == entries },
		"first router indexed %d entries", entries)

	// The workers keep storing under their hot prefixes while the second
	// router starts.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var during int
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for c := 0; ; c = (c + 1) % len(g.convs) {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			during += g.turn(c)
		}
	})
	second := g.start(2, 10*time.Second)
	close(stop)
	wg.Wait()
	entries += during
	for c := range g.convs {
		entries += g.turn(c)
	}
	for _, r := range []*router{first, second} {
		testutil.Eventually(t, 10*time.Second, func() bool { return r.Index().Stats().Entries == entries },
			"both routers index %d entries (first %d, second %d)", entries, first.Index().Stats().Entries, second.Index().Stats().Entries)
	}
	if diff := cmp.Diff(first.dump(), second.dump()); diff != "" {
		t.Fatalf("the second router's index differs from the first's (-first +second):\n%s", diff)
	}
	for _, c := range []int{0, 7, 29} {
		if diff := cmp.Diff(first.overlaps(t, g.convs[c]), second.overlaps(t, g.convs[c])); diff != "" {
			t.Errorf("overlap scores of conversation %d (-first +second):\n%s", c, diff)
		}
	}
	if got := second.overlaps(t, g.convs[7])[indexer.Worker{ID: indexer.WorkerID(g.worker(7))}]; got != len(g.convs[7])/warmBlockSize {
		t.Errorf("second router scores conversation 7 at %d blocks, want all %d", got, len(g.convs[7])/warmBlockSize)
	}
	if d := second.Divergence(); d.Diverging || d.UnknownParent != 0 {
		t.Errorf("second router: %+v, want no stored event rejected", d)
	}
	if v := second.diverging(t); v != 0 {
		t.Errorf("%s = %v, want 0", metrics.NameIndexDiverging, v)
	}
	wm := warmMetrics(t, second.m)
	if n := promtest.ToFloat64(wm.Total.WithLabelValues(metrics.WarmStartLoaded)); n != 1 {
		t.Errorf("second router: warm_start_total{loaded} = %v, want 1", n)
	}
	t.Logf("loaded %v events; %d entries in all, %d stored while the second started", promtest.ToFloat64(wm.Events), entries, during)
}

// TestReplicaJoinsCold: without a warm start the joiner rejects every new
// block under a prefix stored before it started; the index is diverging,
// the gauge says 1 and /health stays 200 and says why, under degraded.
func TestReplicaJoinsCold(t *testing.T) {
	g := newGroup(t)
	g.start(1, 10*time.Second)
	g.open(10)
	cold := g.start(2, 0, func(cfg *stack.Config) {
		cfg.Status = &status.Config{Host: "127.0.0.1", Port: 0, HealthPath: "/health", LivePath: "/live", StartingStatus: "notready"}
		cfg.Gatherer = prometheus.NewRegistry()
	})
	for range 3 {
		for c := range g.convs {
			g.turn(c)
		}
	}
	// Diverging turns on before the last events are in; the health line
	// below counts them all.
	testutil.Eventually(t, 10*time.Second, func() bool {
		d := cold.Divergence()
		return d.Diverging && d.Stored == 30
	}, "cold router diverging with the 30 stored events applied (%+v)", testutil.Later(func() string { return fmt.Sprintf("%+v", cold.Divergence()) }))
	if v := cold.diverging(t); v != 1 {
		t.Errorf("%s = %v, want 1", metrics.NameIndexDiverging, v)
	}
	code, h := getHealth(t, cold.StatusAddr())
	if code != http.StatusOK || h.Status != status.Ready {
		t.Errorf("/health = %d %q, want 200 ready (diverging is degraded)", code, h.Status)
	}
	want := "index: diverging: 30 of 30 stored KV events (100%)"
	if len(h.Degraded) != 1 || !strings.HasPrefix(h.Degraded[0], want) {
		t.Errorf("degraded = %q, want one line starting %q", h.Degraded, want)
	}
	if n := promtest.ToFloat64(warmMetrics(t, cold.m).Total.WithLabelValues(metrics.WarmStartDisabled)); n != 1 {
		t.Errorf("warm_start_total{disabled} = %v, want 1", n)
	}
}

// TestWarmStartingIsNotReady: while the warm start waits for a snapshot
// that does not come whole, /health is 503 and says so, the service does
// not answer, and when the timeout passes the router starts from the live
// events and is ready.
func TestWarmStartingIsNotReady(t *testing.T) {
	g := newGroup(t)
	stalled := testutil.NATSConn(t, g.natsURL)
	if _, err := stalled.QueueSubscribe(warmstart.Subject("dynamo", "router"), "router", func(req *nats.Msg) {
		m := nats.NewMsg(req.Reply)
		for k, v := range map[string]string{warmstart.HeaderChunk: "0", warmstart.HeaderChunks: "2", warmstart.HeaderBytes: "2", warmstart.HeaderEvents: "0"} {
			m.Header.Set(k, v)
		}
		m.Data = []byte("[")
		_ = stalled.PublishMsg(m)
	}); err != nil {
		t.Fatal(err)
	}
	if err := stalled.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := metrics.New(prometheus.NewRegistry(), metrics.Config{Namespace: "dynamo", Component: "router", RouterID: 2})
	if err != nil {
		t.Fatal(err)
	}
	cfg := stacktest.Config(2, warmBlockSize)
	cfg.Events.WarmStartTimeout = 3 * time.Second
	cfg.Status = &status.Config{Host: "127.0.0.1", Port: 0, HealthPath: "/health", LivePath: "/live", StartingStatus: "notready"}
	cfg.Gatherer = prometheus.NewRegistry()
	st, err := stack.New(cfg, testutil.NATSConn(t, g.natsURL), testutil.EtcdClient(t, g.etcdURL), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	health := func() (int, status.Health) { return getHealth(t, st.StatusAddr()) }
	testutil.Eventually(t, 2*time.Second, func() bool {
		_, h := health()
		return slices.Contains(h.Problems, "kv_events: warm start: loading the index from a peer")
	}, "/health says the warm start is loading (last %+v)", func() status.Health { _, h := health(); return h }())
	if code, _ := health(); code != http.StatusServiceUnavailable {
		t.Errorf("/health while warm starting = %d, want 503", code)
	}
	nc := testutil.NATSConn(t, g.natsURL)
	if _, err := nc.Request(service.Subject("dynamo", "router", "overlap_scores"), []byte(`{"token_ids":[]}`), 200*time.Millisecond); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("overlap_scores while warm starting: %v, want no responders", err)
	}
	testutil.Eventually(t, 10*time.Second, st.EventsReady, "ready after the warm start timed out")
	testutil.Eventually(t, 10*time.Second, func() bool { code, _ := health(); return code == http.StatusOK }, "/health 200 after the timeout")
	if n := promtest.ToFloat64(warmMetrics(t, m).Total.WithLabelValues(metrics.WarmStartTimeout)); n != 1 {
		t.Errorf("warm_start_total{timeout} = %v, want 1", n)
	}
}
