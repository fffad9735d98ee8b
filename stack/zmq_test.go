package stack_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/internal/zmqtest"
	"github.com/kvrouter/router/stack"
)

// TestReplicasOverZMQ: routers that index an engine's own ZMQ events, one
// after the other, agree. The engine keeps only its last 2 batches for
// replay, so a router that joins late cannot rebuild the index from the
// engine: it gets it from its peer's warm start, and the events it holds
// meanwhile (replayed or live) apply behind the snapshot. A router killed
// and started again does the same.
func TestReplicasOverZMQ(t *testing.T) {
	g := &group{t: t, natsURL: testutil.NATS(t).URL(), etcdURL: testutil.Etcd(t).Endpoint()}
	eng, err := zmqtest.NewEngine(zmqtest.Options{Replay: true, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	path := filepath.Join(t.TempDir(), "workers.json")
	file := fmt.Sprintf(`{"workers": [{"worker_id": 21, "component": "backend", "block_size": %d, "total_kv_blocks": 10000,
		"kv_events": {"endpoint": %q, "replay_endpoint": %q, "engine": "vllm"}}]}`, warmBlockSize, eng.Addr(), eng.ReplayAddr())
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	g.workers = []uint64{21}
	withFile := func(c *stack.Config) { c.Workers.WorkersFile = path }
	rank := indexer.Worker{ID: 21}

	// publish stores block n of one chain, under block n-1.
	next := 0
	publish := func(n int) {
		for range n {
			var parent *uint64
			if next > 0 {
				parent = zmqtest.Parent(uint64(1000 + next - 1))
			}
			toks := make([]uint32, warmBlockSize)
			for i := range toks {
				toks[i] = uint32(next*warmBlockSize + i)
			}
			if _, err := eng.Publish(zmqtest.Batch(0, zmqtest.Stored(parent, []uint64{uint64(1000 + next)}, toks, warmBlockSize))); err != nil {
				t.Fatal(err)
			}
			next++
		}
	}
	// caughtUp waits until r's connection to the engine has applied what
	// the engine's replay socket keeps: from then on it is subscribed.
	caughtUp := func(r *router) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, func() bool {
			st := r.Publishers()
			return len(st) == 1 && st[0].Connected && st[0].Delivered > 0
		}, "the router's connection to the engine caught up")
	}
	holds := func(r *router, n int) func() bool {
		return func() bool { return r.Index().Size(rank) == n }
	}

	a := g.start(1, 2*time.Second, withFile)
	testutil.Eventually(t, 10*time.Second, eng.Subscribed, "router 1 subscribed to the engine")
	// Its catch-up request must be served before the first batch: an
	// answer that came later would be a replay tail of the 2 batches kept,
	// behind which the live batches before it count as delivered.
	testutil.Eventually(t, 10*time.Second, func() bool { return eng.Served() > 0 }, "router 1's catch-up served")
	publish(10)
	testutil.Eventually(t, 10*time.Second, holds(a, 10), "router 1 holds the 10 blocks (has %v)", lazySize(a, rank))

	b := g.start(2, 10*time.Second, withFile)
	caughtUp(b)
	publish(1)
	testutil.Eventually(t, 10*time.Second, holds(b, 11), "router 2 holds the 11 blocks (has %v)", lazySize(b, rank))
	testutil.Eventually(t, 10*time.Second, holds(a, 11), "router 1 holds the 11 blocks")
	if diff := cmp.Diff(a.dump(), b.dump()); diff != "" {
		t.Fatalf("indexes differ (-router 1 +router 2):\n%s", diff)
	}

	// Router 1 dies and a new one takes its place.
	a.Stop()
	c := g.start(3, 10*time.Second, withFile)
	caughtUp(c)
	publish(1)
	testutil.Eventually(t, 10*time.Second, holds(c, 12), "router 3 holds the 12 blocks (has %v)", lazySize(c, rank))
	testutil.Eventually(t, 10*time.Second, holds(b, 12), "router 2 holds the 12 blocks")
	if diff := cmp.Diff(b.dump(), c.dump()); diff != "" {
		t.Fatalf("indexes differ (-router 2 +router 3):\n%s", diff)
	}
}

type sizeOf func() int

func (s sizeOf) String() string { return fmt.Sprint(s()) }

func lazySize(r *router, rank indexer.Worker) sizeOf {
	return func() int { return r.Index().Size(rank) }
}
