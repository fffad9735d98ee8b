package warmstart

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

// testNS is the namespace of the tests' subjects.
const testNS = "test"

// node is one router's KV-event path on its own NATS connection: an index,
// its writer and a subscriber, running until the test ends.
type node struct {
	t   testing.TB
	nc  *nats.Conn
	idx *indexer.Index
	m   *metrics.Router
	reg *prometheus.Registry
	w   *events.Writer
	sub *events.Subscriber
	log *testutil.Buffer
}

// newNode starts a node on the server at url; with hold, its writer holds
// the events from the start, as a joiner's does.
func newNode(t testing.TB, url string, hold bool) *node {
	t.Helper()
	n := &node{t: t, nc: testutil.NATSConn(t, url), idx: indexer.NewIndex(indexer.Config{}), reg: prometheus.NewRegistry(), log: &testutil.Buffer{}}
	var err error
	if n.m, err = metrics.New(n.reg, metrics.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	cfg := events.DefaultConfig()
	cfg.Namespace = testNS
	logger := slog.New(slog.NewTextHandler(n.log, nil))
	if n.w, err = events.NewWriter(cfg, n.idx, n.m, logger); err != nil {
		t.Fatal(err)
	}
	if n.sub, err = events.NewSubscriber(cfg, n.nc, n.w, n.m, logger); err != nil {
		t.Fatal(err)
	}
	if hold {
		if err := n.w.Hold(); err != nil {
			t.Fatal(err)
		}
	}
	wctx, stopWriter := context.WithCancel(context.Background())
	wdone := make(chan error, 1)
	go func() { wdone <- n.w.Run(wctx) }()
	sctx, stopSub := context.WithCancel(context.Background())
	sdone := make(chan error, 1)
	go func() { sdone <- n.sub.Run(sctx) }()
	t.Cleanup(func() {
		stopSub()
		if err := <-sdone; err != nil {
			t.Errorf("subscriber: %v", err)
		}
		stopWriter()
		if err := <-wdone; err != nil {
			t.Errorf("writer: %v", err)
		}
	})
	select {
	case <-n.sub.Subscribed():
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber not live within 10s")
	}
	return n
}

// config is the warm-start configuration of router id in the tests.
func config(id uint64) Config {
	return Config{Namespace: testNS, Component: "router", RouterID: id, Timeout: 10 * time.Second}
}

// serve runs a snapshot server of n with chunks of chunkSize bytes until
// the test ends.
func (n *node) serve(id uint64, chunkSize int) {
	n.t.Helper()
	cfg := config(id)
	cfg.ChunkSize = chunkSize
	srv, err := NewServer(cfg, n.nc, n.sub, slog.New(slog.NewTextHandler(n.log, nil)))
	if err != nil {
		n.t.Fatal(err)
	}
	testutil.RunUntilCleanup(n.t, srv.Run)
	select {
	case <-srv.Ready():
	case <-time.After(10 * time.Second):
		n.t.Fatal("snapshot server not subscribed within 10s")
	}
}

// dump renders the index as sorted lines, equal for equal indexes.
func (n *node) dump() []string { return testutil.Canonical(n.idx.Dump()) }

// publisher plays the workers: each rank stores one chain of blocks, one
// block per event, each under the previous one, with event_ids from 1.
type publisher struct {
	t     testing.TB
	nc    *nats.Conn
	ranks []indexer.Worker
	next  []uint64 // next block (and event_id) per rank
}

func newPublisher(t testing.TB, url string, ranks ...indexer.Worker) *publisher {
	return &publisher{t: t, nc: testutil.NATSConn(t, url), ranks: ranks, next: make([]uint64, len(ranks))}
}

// publish sends n more events of every rank, and returns the total per
// rank. It may run on another goroutine than the test's.
func (p *publisher) publish(n int) uint64 {
	subject := events.Subjects(testNS, events.DefaultComponent)[0]
	for range n {
		for i, r := range p.ranks {
			p.next[i]++
			b := p.next[i]
			base := uint64(r.ID) << 32
			ev := indexer.Event{Worker: r, Kind: indexer.KindStored, Blocks: []indexer.Block{{Hash: indexer.BlockHash(base + b), Tokens: indexer.LocalHash(base + b)}}}
			if b > 1 {
				ev.HasParent, ev.Parent = true, indexer.BlockHash(base+b-1)
			}
			if err := p.nc.Publish(subject, codec.AppendJSON(nil, ev, codec.Meta{EventID: b})); err != nil {
				p.t.Error(err)
				return 0
			}
		}
	}
	if err := p.nc.Flush(); err != nil {
		p.t.Error(err)
	}
	return p.next[0]
}

// waitEntries waits until n's index holds want entries.
func (n *node) waitEntries(want int) {
	n.t.Helper()
	testutil.Eventually(n.t, 20*time.Second, func() bool { return n.idx.Stats().Entries == want },
		"%d index entries (have %d)", want, n.idx.Stats().Entries)
}
