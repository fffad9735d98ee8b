// Package stacktest runs whole routers for the tests of the packages that
// the router's stack serves (client, httpapi): a router built by stack.New,
// the stack `router serve` runs, on an embedded NATS and etcd
// (internal/testutil), with helpers that play its workers: registering
// them in etcd and publishing their KV events. Only tests import it;
// stack's own tests cannot (stack would import itself).
package stacktest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
	"github.com/kvrouter/router/stack"
	"github.com/kvrouter/router/workers"
)

// Config returns the configuration of a test router: router id id, KV
// events on, every component's defaults, and block size blockSize for the
// registry and the scheduler.
func Config(id uint64, blockSize int) stack.Config {
	cfg := stack.Config{RouterID: id, KVEvents: true, Events: events.DefaultConfig(), Workers: workers.DefaultConfig(),
		Scheduler: scheduler.DefaultConfig(), Service: service.DefaultConfig()}
	cfg.Workers.BlockSize, cfg.Scheduler.BlockSize = blockSize, blockSize
	return cfg
}

// Router is a running router.
type Router struct {
	*stack.Stack
	t      testing.TB
	cancel context.CancelFunc
	done   chan error
}

// Start builds a router of cfg on its own connections to the NATS at
// natsURL and the etcd at etcdURL, recording in m and logging to log (nil
// discards), runs it until the test ends (or Stop) and returns once it has
// subscribed to KV events.
func Start(t testing.TB, cfg stack.Config, natsURL, etcdURL string, m *metrics.Router, log *slog.Logger) *Router {
	t.Helper()
	st, err := stack.New(cfg, testutil.NATSConn(t, natsURL), testutil.EtcdClient(t, etcdURL), m, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Router{Stack: st, t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- st.Run(ctx) }()
	t.Cleanup(r.Stop)
	testutil.Eventually(t, 10*time.Second, st.EventsReady, "kv events subscribed")
	return r
}

// Stop ends the router and waits for Run, failing the test if Run fails
// or takes more than 30 s; it may be called again.
func (r *Router) Stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		r.t.Error("Run did not return within 30s")
	}
}

// Register puts w's instance and model card in etcd, lease-less, as a
// worker with a fixed id would.
func Register(t testing.TB, etcd *clientv3.Client, w testutil.WorkerRecord) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := etcd.Txn(ctx).Then(w.Puts(0)...).Commit(); err != nil {
		t.Fatal(err)
	}
}

// KVEvents publishes workers' KV events on NATS as the workers would,
// numbering each rank's events from 1. It is not safe for concurrent use.
type KVEvents struct {
	t   testing.TB
	nc  *nats.Conn
	h   *blockhash.Hasher
	ids map[indexer.Worker]uint64 // the last event_id per rank
}

// NewKVEvents returns a publisher on nc of events at block size
// blockSize.
func NewKVEvents(t testing.TB, nc *nats.Conn, blockSize int) *KVEvents {
	t.Helper()
	h, err := blockhash.NewHasher(blockSize, blockhash.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &KVEvents{t: t, nc: nc, h: h, ids: map[indexer.Worker]uint64{}}
}

// Stored publishes, in namespace ns, the event that worker id (rank 0)
// stores the full blocks of toks, and returns how many blocks that is. It
// does not wait for the router to index them.
func (k *KVEvents) Stored(ns string, id uint64, toks []uint32) int {
	k.t.Helper()
	return k.Extended(ns, id, toks, 0)
}

// Extended publishes, in namespace ns, the event that worker id (rank 0)
// stores the full blocks of toks from block from on, under block from−1,
// which it stored before (from 0: from the root), as an engine does when a
// conversation grows; it returns how many blocks it stores.
func (k *KVEvents) Extended(ns string, id uint64, toks []uint32, from int) int {
	k.t.Helper()
	locals := k.h.LocalHashes(nil, toks)
	seqs := k.h.SequenceHashes(nil, locals)
	rank := indexer.Worker{ID: indexer.WorkerID(id)}
	ev := indexer.Event{Worker: rank, Kind: indexer.KindStored}
	if from > 0 {
		ev.HasParent, ev.Parent = true, indexer.BlockHash(seqs[from-1])
	}
	for i := from; i < len(locals); i++ {
		ev.Blocks = append(ev.Blocks, indexer.Block{Hash: indexer.BlockHash(seqs[i]), Tokens: indexer.LocalHash(locals[i])})
	}
	k.ids[rank]++
	if err := k.nc.Publish(events.Subjects(ns, events.DefaultComponent)[0], codec.AppendJSON(nil, ev, codec.Meta{EventID: k.ids[rank]})); err != nil {
		k.t.Fatal(err)
	}
	return len(ev.Blocks)
}
