package client_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/client"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/stacktest"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/stack"
)

// blockSize keeps prompts short: 8 tokens are 2 blocks.
const blockSize = 4

// cluster is an embedded NATS and etcd on which tests start real routers
// (internal/stacktest) and register workers.
type cluster struct {
	t        *testing.T
	natsURL  string
	etcdURL  string
	etcd     *clientv3.Client
	kv       *stacktest.KVEvents
	routerID uint64
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	ns, es := testutil.NATS(t), testutil.Etcd(t)
	return &cluster{
		t: t, natsURL: ns.URL(), etcdURL: es.Endpoint(),
		etcd: testutil.EtcdClient(t, es.Endpoint()), kv: stacktest.NewKVEvents(t, testutil.NATSConn(t, ns.URL()), blockSize),
	}
}

// withWorker starts a cluster and a router in namespace dynamo that lists
// decode worker 7.
func withWorker(t *testing.T) (*cluster, *router) {
	t.Helper()
	c := newCluster(t)
	r := c.start("dynamo")
	c.register("dynamo", "backend", 7)
	r.waitWorker(7)
	return c, r
}

// router is one running router.
type router struct {
	t   *testing.T
	st  *stacktest.Router
	reg *prometheus.Registry
}

// start runs a router in namespace ns with the test's block size, changed
// by opts, and returns once it answers on NATS.
func (c *cluster) start(ns string, opts ...func(*stack.Config)) *router {
	c.t.Helper()
	reg := prometheus.NewRegistry()
	mc := metrics.DefaultConfig()
	mc.Namespace = ns
	m, err := metrics.New(reg, mc)
	if err != nil {
		c.t.Fatal(err)
	}
	c.routerID++
	cfg := stacktest.Config(c.routerID, blockSize)
	cfg.Events.Namespace, cfg.Workers.Namespace, cfg.Service.Namespace = ns, ns, ns
	cfg.Service.Handlers = 2
	for _, o := range opts {
		o(&cfg)
	}
	r := &router{t: c.t, st: stacktest.Start(c.t, cfg, c.natsURL, c.etcdURL, m, slog.New(slog.DiscardHandler)), reg: reg}
	// Answering overlap_scores: this replica, not another in the group.
	rc := c.client(client.WithNamespace(ns), client.WithTimeout(time.Second))
	testutil.Eventually(c.t, 10*time.Second, func() bool {
		_, _ = rc.OverlapScores(context.Background(), client.Prompt{TokenIDs: []uint32{}})
		return r.handled(client.EndpointOverlapScores) > 0
	}, "router answering on NATS")
	return r
}

// stop stops the router and waits for it; it may be called again.
func (r *router) stop() { r.st.Stop() }

// handled returns how many requests of endpoint e the router answered.
func (r *router) handled(e client.Endpoint) int {
	return r.counter(metrics.NameRequestsTotal, metrics.LabelEndpoint, string(e))
}

// counter sums the series of counter family name with label = value.
func (r *router) counter(name, label, value string) int {
	r.t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if label == "" || (l.GetName() == label && l.GetValue() == value) {
					n += m.GetCounter().GetValue()
					break
				}
			}
		}
	}
	return int(n)
}

// waitWorker waits until the router lists worker id.
func (r *router) waitWorker(id uint64) {
	r.t.Helper()
	testutil.Eventually(r.t, 10*time.Second, func() bool {
		_, ok := r.st.Registry().Snapshot().Get(indexer.WorkerID(id))
		return ok
	}, "worker %d registered", id)
}

// active returns how many requests the router holds booked on worker id.
func (r *router) active(id uint64) int {
	l, _ := r.st.Router().Load(indexer.Worker{ID: indexer.WorkerID(id)})
	return l.Requests
}

// register puts worker id's instance and model card in etcd under
// namespace ns and component (backend, or prefill), lease-less, as a
// worker with a fixed id would.
func (c *cluster) register(ns, component string, id uint64) {
	c.t.Helper()
	stacktest.Register(c.t, c.etcd, testutil.WorkerRecord{Namespace: ns, Component: component, ID: id, BlockSize: blockSize, TotalKVBlocks: 1000, MaxNumSeqs: 16, MaxBatchedTokens: 256})
}

// store publishes the KV event that worker id stores the full blocks of
// toks, in namespace ns.
func (c *cluster) store(ns string, id uint64, toks []uint32) {
	c.t.Helper()
	c.kv.Stored(ns, id, toks)
}

// client returns a client on a connection of its own.
func (c *cluster) client(opts ...client.Option) *client.Client {
	c.t.Helper()
	rc, err := client.New(testutil.NATSConn(c.t, c.natsURL), opts...)
	if err != nil {
		c.t.Fatal(err)
	}
	return rc
}

// spy counts what clients publish to routers' endpoints, for checks that
// something was sent once, or not at all.
type spy struct {
	t      *testing.T
	mu     sync.Mutex
	counts map[string]int // by subject
	marks  chan string
}

// spySubjects are every router endpoint and the spy's own markers.
const spySubjects = "namespace.*.component.*.>"

func (c *cluster) spy() *spy {
	c.t.Helper()
	s := &spy{t: c.t, counts: map[string]int{}, marks: make(chan string, 16)}
	nc := testutil.NATSConn(c.t, c.natsURL)
	if _, err := nc.Subscribe(spySubjects, func(m *nats.Msg) {
		if strings.HasPrefix(m.Subject, "namespace.spy.") {
			s.marks <- m.Subject
			return
		}
		s.mu.Lock()
		s.counts[m.Subject]++
		s.mu.Unlock()
	}); err != nil {
		c.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		c.t.Fatal(err)
	}
	return s
}

// count returns how many messages from nc the spy saw on subject so far.
// NATS delivers one connection's messages to one subscription in order,
// so once a marker published after them has arrived, they all have.
func (s *spy) count(nc *nats.Conn, subject string) int {
	s.t.Helper()
	marker := "namespace.spy.component.spy." + nats.NewInbox()[len("_INBOX."):]
	if err := nc.Publish(marker, nil); err != nil {
		s.t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-s.marks:
			if m != marker {
				continue
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.counts[subject]
		case <-timeout:
			s.t.Fatal("the spy's marker did not arrive within 10s")
		}
	}
}

// tokens returns n consecutive token ids from base.
func tokens(base, n int) []uint32 {
	t := make([]uint32, n)
	for i := range t {
		t[i] = uint32(base + i)
	}
	return t
}
