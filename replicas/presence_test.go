package replicas

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

// replica is one running Presence with its log and gauge.
type replica struct {
	p    *Presence
	log  *testutil.Buffer
	stop func()
}

// start runs a presence on a fresh lease of cli.
func start(t *testing.T, cli *clientv3.Client, replicaSync bool) *replica {
	t.Helper()
	g, err := cli.Grant(t.Context(), 5)
	if err != nil {
		t.Fatal(err)
	}
	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	buf := &testutil.Buffer{}
	cfg := Config{Namespace: "dynamo", Component: "router", RouterID: uint64(g.ID), LeaseTTL: 5 * time.Second, ReplicaSync: replicaSync}
	p, err := New(cfg, cli, g.ID, m, slog.New(slog.NewTextHandler(buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := p.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	r := &replica{p: p, log: buf}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			// As the daemon does at its end: the key goes with the lease.
			_, _ = cli.Revoke(context.Background(), p.Lease())
		})
	}
	t.Cleanup(r.stop)
	return r
}

func (r *replica) id() uint64 { return r.p.cfg.RouterID }

func (r *replica) gauge() float64 { return promtest.ToFloat64(r.p.replicas) }

func TestReplicasFindEachOther(t *testing.T) {
	cli := testutil.EtcdClient(t, testutil.Etcd(t).Endpoint())
	a := start(t, cli, false)
	b := start(t, cli, false)
	c := start(t, cli, true)
	all := []*replica{a, b, c}
	for _, r := range all {
		var want []uint64
		for _, o := range all {
			if o != r {
				want = append(want, o.id())
			}
		}
		slices.Sort(want)
		testutil.Eventually(t, 10*time.Second, func() bool { return slices.Equal(r.p.Peers(), want) && r.gauge() == 3 },
			"replica %x sees peers %x (gauge %v), want %x", r.id(), r.p.Peers(), r.gauge(), want)
	}
	key := Key("dynamo", "router", a.id())
	resp, err := cli.Get(t.Context(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v, %d keys", key, err, len(resp.Kvs))
	}
	if v := string(resp.Kvs[0].Value); !strings.Contains(v, `"endpoint":"route"`) || !strings.Contains(v, `"type":"Endpoint"`) {
		t.Errorf("value of %s = %s, want an Endpoint record of endpoint route", key, v)
	}

	// Without replica sync, finding peers is warned about once; with it,
	// never.
	for _, r := range []*replica{a, b} {
		if n := strings.Count(r.log.String(), "--router-replica-sync is off"); n != 1 {
			t.Errorf("replica %x without sync warned %d times, want 1; log:\n%s", r.id(), n, r.log.String())
		}
	}
	if strings.Contains(c.log.String(), "--router-replica-sync is off") {
		t.Errorf("replica with sync warned:\n%s", c.log.String())
	}

	c.stop()
	testutil.Eventually(t, 10*time.Second, func() bool { return !slices.Contains(a.p.Peers(), c.id()) && a.gauge() == 2 },
		"replica %x still sees %x after it left: %x", a.id(), c.id(), a.p.Peers())
	if !strings.Contains(a.log.String(), "router replica left") {
		t.Errorf("no log of the replica that left:\n%s", a.log.String())
	}
}

func TestMalformedReplicaKey(t *testing.T) {
	cli := testutil.EtcdClient(t, testutil.Etcd(t).Endpoint())
	bad := Prefix("dynamo", "router") + "not-hex"
	if _, err := cli.Put(t.Context(), bad, "{}"); err != nil {
		t.Fatal(err)
	}
	a := start(t, cli, false)
	testutil.Eventually(t, 10*time.Second, func() bool { return promtest.ToFloat64(a.p.malformed) == 1 },
		"malformed key not counted")
	// A new revision of the key is counted again; a valid peer still shows.
	if _, err := cli.Put(t.Context(), bad, "{}"); err != nil {
		t.Fatal(err)
	}
	b := start(t, cli, false)
	testutil.Eventually(t, 10*time.Second, func() bool {
		return promtest.ToFloat64(a.p.malformed) == 2 && slices.Equal(a.p.Peers(), []uint64{b.id()})
	}, "after a second put of the malformed key and a valid peer: malformed %v, peers %x",
		promtest.ToFloat64(a.p.malformed), a.p.Peers())
	if !strings.Contains(a.log.String(), "not-hex") {
		t.Errorf("the malformed key is not logged:\n%s", a.log.String())
	}
}

// A lease that etcd lost (revoked here, as an expiry during an outage
// would) is replaced and the key put again under the new one, with the
// same id.
func TestLostLeaseIsReplaced(t *testing.T) {
	cli := testutil.EtcdClient(t, testutil.Etcd(t).Endpoint())
	a := start(t, cli, false)
	b := start(t, cli, false)
	testutil.Eventually(t, 10*time.Second, func() bool { return slices.Equal(b.p.Peers(), []uint64{a.id()}) }, "b does not see a")
	first := a.p.Lease()
	if _, err := cli.Revoke(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		return a.p.Lease() != first && slices.Equal(b.p.Peers(), []uint64{a.id()})
	}, "a's lease was not replaced (lease %x) or b lost it: %x", a.p.Lease(), b.p.Peers())
	resp, err := cli.Get(t.Context(), Key("dynamo", "router", a.id()))
	if err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != a.p.Lease() {
		t.Fatalf("a's key after the new lease: %v %v", err, resp.Kvs)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Component: "router", RouterID: 1, LeaseTTL: time.Second},
		{Namespace: "dynamo", Component: "router", LeaseTTL: time.Second},
		{Namespace: "dynamo", Component: "router", RouterID: 1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
}
