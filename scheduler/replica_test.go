package scheduler

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/metrics"
)

// pipe carries one router's sync events to another, in order, the way the
// NATS transport of the service package does (tested there on a real
// NATS): Publish queues, flush applies.
type pipe struct {
	mu  sync.Mutex
	evs []SyncEvent
	to  *Router
}

func (p *pipe) Publish(ev SyncEvent) {
	ev.SeqHashes = slices.Clone(ev.SeqHashes)
	p.mu.Lock()
	p.evs = append(p.evs, ev)
	p.mu.Unlock()
}

func (p *pipe) flush() {
	p.mu.Lock()
	evs := p.evs
	p.evs = nil
	p.mu.Unlock()
	for _, ev := range evs {
		p.to.ApplyRemote(ev)
	}
}

func TestReplicasConverge(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { replicasConverge(t, seed) })
	}
}

// replicasConverge routes, marks and frees at random on two replicas,
// delivering their events now and then, and compares their loads.
func replicasConverge(t *testing.T, seed uint64) {
	f := newFleet(cands(0, 0, 1, 2, 3), cands(0, 0, 10, 11))
	// Each pipe stands for the NATS subject between the two: made first,
	// given to its router, connected to the peer once the peer exists.
	ab, ba := &pipe{}, &pipe{}
	a, b := newEnvPublishing(t, testConfig(), f, ab), newEnvPublishing(t, testConfig(), f, ba)
	ab.to, ba.to = b.r, a.r
	rng := rand.New(rand.NewPCG(9, seed))
	var live []string
	for i := range 300 {
		x := a
		if rng.IntN(2) == 0 {
			x = b
		}
		switch op := rng.IntN(4); {
		case op < 2 || len(live) == 0:
			typ := WorkerTypeAggregated
			if rng.IntN(2) == 0 {
				typ = WorkerTypeAuto // disaggregated: two placements
			}
			d := route(t, x, &Request{Tokens: tokens(rng.IntN(5)*100, 1+rng.IntN(4), 4), Type: typ})
			live = append(live, d.RequestID)
		case op == 2:
			x.r.MarkPrefill(live[rng.IntN(len(live))])
		default:
			j := rng.IntN(len(live))
			x.r.Free(live[j], 5)
			live = slices.Delete(live, j, j+1)
		}
		// Deliver now and then, so that marks sometimes reach a replica
		// before the add they mark.
		if i%7 == 0 {
			ab.flush()
			ba.flush()
		}
	}
	ab.flush()
	ba.flush()
	if diff := cmp.Diff(busyLoads(a), busyLoads(b)); diff != "" {
		t.Fatalf("replicas disagree (-a +b):\n%s", diff)
	}
	if a.r.Active() != len(live) || b.r.Active() != len(live) {
		t.Errorf("active requests: a %d, b %d, want %d", a.r.Active(), b.r.Active(), len(live))
	}
}

func TestReplicaMarkBeforeAdd(t *testing.T) {
	f := newFleet(cands(0, 0, 1), nil)
	// Each pipe stands for the NATS subject between the two: made first,
	// given to its router, connected to the peer once the peer exists.
	ab, ba := &pipe{}, &pipe{}
	a, b := newEnvPublishing(t, testConfig(), f, ab), newEnvPublishing(t, testConfig(), f, ba)
	ab.to, ba.to = b.r, a.r
	route(t, a, &Request{ID: "r", Tokens: tokens(0, 2, 4)})
	// The free reaches b before a's add: b does not know the request, but
	// shares the free, and remembers it.
	if b.r.Free("r", 3) {
		t.Error("b freed a request it never heard of")
	}
	ba.flush()
	ab.flush()
	if a.r.Active() != 0 || b.r.Active() != 0 {
		t.Errorf("active after a late add: a %d, b %d; want 0 and 0", a.r.Active(), b.r.Active())
	}
}

func TestStaleRequestsExpire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.StaleTimeout = time.Minute
		cfg.PrefillTimeout = 0
		e := newEnv(t, cfg, newFleet(cands(0, 0, 1), nil))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- e.r.Run(ctx) }()
		route(t, e, &Request{ID: "leak", Tokens: tokens(0, 2, 4)})
		time.Sleep(30 * time.Second)
		route(t, e, &Request{ID: "later", Tokens: tokens(100, 2, 4)})
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if e.r.Active() != 1 {
			t.Errorf("at 61 s: %d active, want 1 (the first expired)", e.r.Active())
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if l, _ := e.r.Load(w(1)); l != (RankLoad{Worker: w(1), Kind: KindDecode}) {
			t.Errorf("at 91 s: load %+v, want none", l)
		}
		if got := promtest.ToFloat64(e.r.m.BookingsExpired.WithLabelValues(metrics.ExpiredStale)); got != 2 {
			t.Errorf("stale expiries = %v, want 2", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
