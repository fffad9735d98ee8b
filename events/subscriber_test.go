package events

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

func publish(t testing.TB, nc *nats.Conn, subject string, msgs ...[]byte) {
	t.Helper()
	for _, m := range msgs {
		if err := nc.Publish(subject, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func stored(w indexer.Worker, parent *indexer.BlockHash, blocks ...indexer.Block) indexer.Event {
	ev := indexer.Event{Worker: w, Kind: indexer.KindStored, Blocks: blocks}
	if parent != nil {
		ev.HasParent, ev.Parent = true, *parent
	}
	return ev
}

func ptr[T any](v T) *T { return &v }

func applied(m *Metrics, kind, status string) float64 {
	return promtest.ToFloat64(m.Applied.WithLabelValues(kind, status))
}

func histogramCount(t testing.TB, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// gathered returns the value of the one series of a counter family.
func gathered(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("family %s not registered", name)
	return 0
}

// matches scores a query on the index as a map.
func matches(idx *indexer.Index, tokens ...indexer.LocalHash) map[indexer.Worker]uint32 {
	out := map[indexer.Worker]uint32{}
	for _, m := range idx.FindMatches(tokens, false, nil) {
		out[m.Worker] = m.Blocks
	}
	return out
}

// TestIngestBothEncodings sends JSON and MessagePack events on both subjects
// of both components and checks the index and the metrics.
func TestIngestBothEncodings(t *testing.T) {
	srv := testutil.NATS(t)
	h := newHarness(t, srv.URL(), testConfig()).start()
	pub := testutil.NATSConn(t, srv.URL())
	backend, prefill := Subjects("test", DefaultComponent), Subjects("test", DefaultPrefillComponent)

	w1, w2, w3 := indexer.Worker{ID: 1}, indexer.Worker{ID: 2}, indexer.Worker{ID: 3, DPRank: 1}
	publish(t, pub, backend[0],
		jsonEvent(stored(w1, nil, indexer.Block{Hash: 10, Tokens: 100}), 1),
		jsonEvent(stored(w1, ptr[indexer.BlockHash](10), indexer.Block{Hash: 11, Tokens: 101}), 2))
	publish(t, pub, prefill[0],
		msgpackEvent(t, stored(w2, nil, indexer.Block{Hash: 20, Tokens: 100}, indexer.Block{Hash: 21, Tokens: 101}), 1),
		msgpackEvent(t, indexer.Event{Worker: w2, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{21}}, 2))
	publish(t, pub, backend[1], // the older kv_events subject
		msgpackEvent(t, stored(w3, nil, indexer.Block{Hash: 30, Tokens: 100}), 7),
		jsonEvent(indexer.Event{Worker: w3, Kind: indexer.KindCleared}, 8))
	h.waitApplied(6)

	want := map[indexer.Worker]uint32{w1: 2, w2: 1}
	if diff := cmp.Diff(want, matches(h.idx, 100, 101)); diff != "" {
		t.Errorf("matches (-want +got):\n%s", diff)
	}
	for _, c := range []struct {
		kind, status string
		want         float64
	}{{"stored", "ok", 4}, {"removed", "ok", 1}, {"cleared", "ok", 1}, {"stored", "parent_block_not_found", 0}} {
		if got := applied(h.em, c.kind, c.status); got != c.want {
			t.Errorf("applied{%s,%s} = %v, want %v", c.kind, c.status, got, c.want)
		}
	}
	if got := histogramCount(t, h.em.ApplyLag); got != 6 {
		t.Errorf("apply lag observations = %d, want 6", got)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return promtest.ToFloat64(h.em.IndexEntries) == 3 }, "index entries gauge = 3")
	if got := promtest.ToFloat64(h.em.QueueDepth); got != 0 {
		t.Errorf("queue depth = %v, want 0", got)
	}
	if err := h.stop(); err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	if h.sub.Ready() {
		t.Error("Ready after Run returned")
	}
}

// TestOrderingUnderConcurrency publishes random event streams of many worker
// ranks from several connections at once, in both encodings, and checks that
// the index equals one built by applying each rank's events in order.
func TestOrderingUnderConcurrency(t *testing.T) {
	srv := testutil.NATS(t)
	cfg := testConfig()
	cfg.EventThreads = 4
	h := newHarness(t, srv.URL(), cfg).start()
	subject := Subjects("test", DefaultComponent)[0]

	const publishers, ranksPer, perRank = 6, 8, 300
	ref := indexer.NewIndex(indexer.Config{})
	var wg sync.WaitGroup
	for p := range publishers {
		nc := testutil.NATSConn(t, srv.URL())
		rng := rand.New(rand.NewPCG(uint64(p), 7))
		streams := make([][]indexer.Event, ranksPer)
		for r := range streams {
			w := indexer.Worker{ID: indexer.WorkerID(100 + p*ranksPer + r), DPRank: indexer.DPRank(r % 2)}
			streams[r] = randomStream(rng, w, perRank)
		}
		wg.Go(func() {
			next := make([]int, ranksPer)
			for left := ranksPer * perRank; left > 0; left-- {
				r := rng.IntN(ranksPer)
				for next[r] == perRank {
					r = (r + 1) % ranksPer
				}
				ev := streams[r][next[r]]
				next[r]++
				var msg []byte
				if rng.IntN(2) == 0 {
					msg = jsonEvent(ev, uint64(next[r]))
				} else {
					msg = msgpackEvent(t, ev, uint64(next[r]))
				}
				if err := nc.Publish(subject, msg); err != nil {
					t.Error(err)
					return
				}
			}
			if err := nc.Flush(); err != nil {
				t.Error(err)
			}
		})
		for _, s := range streams {
			res := make([]indexer.Result, len(s))
			ref.ApplyBatch(s, res)
		}
	}
	wg.Wait()
	h.waitApplied(publishers * ranksPer * perRank)

	if st := h.sub.Stats(); st.Missed != 0 || st.Dropped != 0 || st.DecodeErrors != 0 || st.Clears != 0 {
		t.Fatalf("losses in a clean run: %+v", st)
	}
	if diff := cmp.Diff(testutil.Canonical(ref.Dump()), testutil.Canonical(h.idx.Dump())); diff != "" {
		t.Errorf("index differs from the sequential reference (-want +got):\n%s", diff)
	}
	if r, g := ref.Stats(), h.idx.Stats(); r.Entries != g.Entries || r.Nodes != g.Nodes {
		t.Errorf("index stats %+v, reference %+v", g, r)
	}
}

// randomStream makes n events of one rank: stores under roots or earlier
// blocks, removals and the odd clear, over a small token alphabet so that
// ranks share tree nodes.
func randomStream(rng *rand.Rand, w indexer.Worker, n int) []indexer.Event {
	var (
		out  []indexer.Event
		held []indexer.BlockHash
		next = indexer.BlockHash(uint64(w.ID) << 32)
	)
	for len(out) < n {
		switch x := rng.IntN(20); {
		case x == 0:
			out = append(out, indexer.Event{Worker: w, Kind: indexer.KindCleared})
			held = held[:0]
		case x < 5 && len(held) > 0:
			out = append(out, indexer.Event{Worker: w, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{held[rng.IntN(len(held))]}})
		default:
			ev := indexer.Event{Worker: w, Kind: indexer.KindStored}
			if len(held) > 0 && rng.IntN(3) > 0 {
				ev.HasParent, ev.Parent = true, held[rng.IntN(len(held))]
			}
			for range 1 + rng.IntN(3) {
				next++
				ev.Blocks = append(ev.Blocks, indexer.Block{Hash: next, Tokens: indexer.LocalHash(rng.IntN(4))})
				held = append(held, next)
			}
			out = append(out, ev)
		}
	}
	return out
}

// TestEventIDTracking checks gaps and resets, with and without clearing.
func TestEventIDTracking(t *testing.T) {
	for _, clearOnLoss := range []bool{true, false} {
		t.Run(fmt.Sprintf("clear_on_loss=%v", clearOnLoss), func(t *testing.T) {
			srv := testutil.NATS(t)
			cfg := testConfig()
			cfg.ClearOnLoss = clearOnLoss
			h := newHarness(t, srv.URL(), cfg).start()
			pub := testutil.NATSConn(t, srv.URL())
			subject := Subjects("test", DefaultComponent)[0]
			w := indexer.Worker{ID: 5, DPRank: 1}
			root := func(h indexer.BlockHash, tok indexer.LocalHash) indexer.Event {
				return stored(w, nil, indexer.Block{Hash: h, Tokens: tok})
			}

			publish(t, pub, subject,
				jsonEvent(root(1, 1), 1),
				jsonEvent(stored(w, ptr[indexer.BlockHash](1), indexer.Block{Hash: 2, Tokens: 2}), 2),
				jsonEvent(root(9, 9), 2), // same id: one engine batch, in order
				jsonEvent(root(3, 3), 6), // ids 3, 4, 5 lost
			)
			h.waitApplied(4)
			if got := promtest.ToFloat64(h.em.Missed); got != 3 {
				t.Errorf("missed = %v, want 3", got)
			}
			wantAfterGap := map[indexer.LocalHash]bool{1: !clearOnLoss, 9: !clearOnLoss, 3: true}
			for tok, want := range wantAfterGap {
				if got := len(matches(h.idx, tok)) == 1; got != want {
					t.Errorf("after the gap, block with tokens %d held = %v, want %v", tok, got, want)
				}
			}

			publish(t, pub, subject, jsonEvent(root(4, 4), 1)) // the publisher restarted
			h.waitApplied(5)
			if got := gathered(t, h.reg, metrics.NameKVEventIDResetsTotal); got != 1 {
				t.Errorf("resets = %v, want 1", got)
			}
			if got := len(matches(h.idx, 3)) == 1; got != !clearOnLoss {
				t.Errorf("after the reset, the block before it held = %v, want %v", got, !clearOnLoss)
			}
			wantClears := uint64(0)
			if clearOnLoss {
				wantClears = 2
			}
			if st := h.sub.Stats(); st.Missed != 3 || st.Resets != 1 || st.Clears != wantClears {
				t.Errorf("stats = %+v, want 3 missed, 1 reset, %d clears", st, wantClears)
			}
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			log := h.log.String()
			for _, want := range []string{"event_id jumped", "worker_id=5", "dp_rank=1"} {
				if !strings.Contains(log, want) {
					t.Errorf("log lacks %q:\n%s", want, log)
				}
			}
			// The reset came within a second of the gap (unless the machine
			// stalled): rate-limited to the one warning.
			if n := strings.Count(log, "level=WARN"); n != 1 && (n != 2 || !strings.Contains(log, "went backwards")) {
				t.Errorf("%d warnings about one rank, want 1:\n%s", n, log)
			}
		})
	}
}

// TestBadInputIsolated sends malformed, mistyped, unknown and oversized
// messages between good ones: the bad are counted by reason and change
// nothing, the good all apply.
func TestBadInputIsolated(t *testing.T) {
	srv := testutil.NATS(t)
	h := newHarness(t, srv.URL(), testConfig()).start()
	pub := testutil.NATSConn(t, srv.URL())
	subject := Subjects("test", DefaultComponent)[0]
	w := indexer.Worker{ID: 9}
	chain := func(i int) []byte {
		var parent *indexer.BlockHash
		if i > 0 {
			parent = ptr(indexer.BlockHash(i - 1))
		}
		return jsonEvent(stored(w, parent, indexer.Block{Hash: indexer.BlockHash(i), Tokens: indexer.LocalHash(i)}), uint64(i+1))
	}
	var huge strings.Builder
	huge.WriteString(`{"worker_id":77,"event":{"event_id":1,"data":{"removed":{"block_hashes":[0`)
	huge.WriteString(strings.Repeat(",1", codec.MaxBlocksPerEvent))
	huge.WriteString(`]}}}}`)
	shared := stored(indexer.Worker{ID: 78}, nil, indexer.Block{Hash: 1, Tokens: 1000})
	shared.Tier = indexer.TierHost
	cacheOwner := codec.AppendJSON(nil, shared, codec.Meta{EventID: 1, CacheOwner: true})

	publish(t, pub, subject,
		chain(0),
		[]byte(`{"worker_id":77,"event":{`),
		chain(1),
		[]byte{0x85, 0xc1},
		[]byte(`{"worker_id":77,"event":{"event_id":1,"data":{"evicted":{}}}}`),
		chain(2),
		[]byte(huge.String()),
		[]byte(`{"worker_id":"77","event":{"event_id":1,"data":"cleared"}}`),
		cacheOwner,
		chain(3),
	)
	h.waitApplied(4)
	testutil.Eventually(t, 5*time.Second, func() bool { return h.sub.Stats().Received == 10 }, "10 messages received")

	if got := matches(h.idx, 0, 1, 2, 3); got[w] != 4 || len(got) != 1 {
		t.Errorf("matches = %v, want only %v with 4 blocks", got, w)
	}
	if got := matches(h.idx, 1000); len(got) != 0 {
		t.Errorf("a block of the cache_owner residency domain counts as the worker's: %v", got)
	}
	for reason, want := range map[string]float64{metrics.DecodeJSON: 1, metrics.DecodeMsgpack: 1, metrics.DecodeSchema: 2, ReasonTooLarge: 1} {
		if got := promtest.ToFloat64(h.em.DecodeErrors.WithLabelValues(reason)); got != want {
			t.Errorf("decode errors{%s} = %v, want %v", reason, got, want)
		}
	}
	if got := promtest.ToFloat64(h.em.Dropped.WithLabelValues(metrics.DropStorageTier)); got != 1 {
		t.Errorf("dropped{storage_tier} = %v, want 1", got)
	}
	if st := h.sub.Stats(); st.Applied != 4 || st.DecodeErrors != 5 || st.Dropped != 1 {
		t.Errorf("stats = %+v", st)
	}
	if !h.sub.Ready() {
		t.Error("not ready after bad input")
	}
}

// TestStorageTiersIndexed sends a rank's events on several tiers, each tier
// numbering its own event_ids: the index holds every tier, a block whose
// device copy is evicted stays on the host, and the other tiers' event_ids
// neither count as gaps nor reset the device's.
func TestStorageTiersIndexed(t *testing.T) {
	srv := testutil.NATS(t)
	h := newHarness(t, srv.URL(), testConfig()).start()
	pub := testutil.NATSConn(t, srv.URL())
	subject := Subjects("test", DefaultComponent)[0]
	w := indexer.Worker{ID: 5}
	blocks := []indexer.Block{{Hash: 1, Tokens: 100}, {Hash: 2, Tokens: 101}, {Hash: 3, Tokens: 102}, {Hash: 4, Tokens: 103}}
	on := func(tier indexer.Tier, ev indexer.Event) indexer.Event { ev.Tier = tier; return ev }
	removed := func(hs ...indexer.BlockHash) indexer.Event {
		return indexer.Event{Worker: w, Kind: indexer.KindRemoved, Removed: hs}
	}
	publish(t, pub, subject,
		jsonEvent(stored(w, nil, blocks...), 10),
		// The host's own numbering, far below and then above the device's.
		jsonEvent(on(indexer.TierHost, stored(w, nil, blocks[:3]...)), 1),
		msgpackTierEvent(t, on(indexer.TierDisk, stored(w, nil, blocks[:1]...)), 500, "disk"),
		jsonEvent(removed(2, 3, 4), 11),
		jsonEvent(on(indexer.TierHost, removed(3)), 2),
		jsonEvent(on(indexer.TierExternal, removed(1)), 7), // not on that tier
	)
	h.waitApplied(6)

	got := h.idx.FindMatches([]indexer.LocalHash{100, 101, 102, 103}, false, nil)
	want := []indexer.Match{{Worker: w, Blocks: 2, TierBlocks: indexer.TierBlocks{Host: 1}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("matches (-want +got):\n%s", diff)
	}
	for _, c := range []struct {
		kind, status string
		want         float64
	}{{"stored", "ok", 3}, {"removed", "ok", 2}, {"removed", "block_not_found", 1}} {
		if got := applied(h.em, c.kind, c.status); got != c.want {
			t.Errorf("applied{%s,%s} = %v, want %v", c.kind, c.status, got, c.want)
		}
	}
	if missed, resets := promtest.ToFloat64(h.em.Missed), promtest.ToFloat64(h.em.IDResets); missed != 0 || resets != 0 {
		t.Errorf("missed %v, resets %v: other tiers' event_ids were checked against the device's", missed, resets)
	}
	if st := h.sub.Stats(); st.Dropped != 0 || st.Clears != 0 {
		t.Errorf("stats %+v: want nothing dropped or cleared", st)
	}
	// The device's own numbering goes on from 11.
	publish(t, pub, subject, jsonEvent(removed(1), 12))
	h.waitApplied(7)
	if got := promtest.ToFloat64(h.em.Missed); got != 0 {
		t.Errorf("missed %v after the device's next event_id", got)
	}
	got = h.idx.FindMatches([]indexer.LocalHash{100, 101}, false, nil)
	want = []indexer.Match{{Worker: w, Blocks: 2, TierBlocks: indexer.TierBlocks{Host: 2}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("matches after the device evicted block 1 (-want +got):\n%s", diff)
	}
}

// TestQueueFullClearsRank fills a shard's queue while its goroutine is not
// running: the overflow is counted, the rank is cleared once what was queued
// before is applied, and its next event starts afresh without a gap.
func TestQueueFullClearsRank(t *testing.T) {
	srv := testutil.NATS(t)
	cfg := testConfig()
	cfg.EventThreads, cfg.QueueCapacity = 1, 2
	h := newHarness(t, srv.URL(), cfg)
	s := h.sub
	w1, w2 := indexer.Worker{ID: 1}, indexer.Worker{ID: 2}
	deliver := func(ev indexer.Event, id uint64) { s.onMsg(&nats.Msg{Data: jsonEvent(ev, id)}) }

	deliver(stored(w1, nil, indexer.Block{Hash: 1, Tokens: 1}), 1)
	deliver(stored(w1, ptr[indexer.BlockHash](1), indexer.Block{Hash: 2, Tokens: 2}), 2)
	deliver(stored(w1, ptr[indexer.BlockHash](2), indexer.Block{Hash: 3, Tokens: 3}), 3) // dropped
	deliver(stored(w2, nil, indexer.Block{Hash: 1, Tokens: 1}), 1)                       // dropped
	if got := promtest.ToFloat64(h.em.Dropped.WithLabelValues(metrics.DropQueueFull)); got != 2 {
		t.Fatalf("dropped{queue_full} = %v, want 2", got)
	}
	if got := promtest.ToFloat64(h.em.QueueDepth); got != 0 {
		t.Logf("queue depth gauge %v (set by the shard)", got)
	}

	sh := h.w.shards[0]
	var wg sync.WaitGroup
	wg.Go(sh.run)
	h.waitApplied(2)
	testutil.Eventually(t, 5*time.Second, func() bool { return s.Stats().Clears == 2 }, "both ranks cleared")
	if got := matches(h.idx, 1, 2); len(got) != 0 {
		t.Errorf("w1 still indexed after losing events: %v", got)
	}

	deliver(stored(w1, nil, indexer.Block{Hash: 4, Tokens: 4}), 4)
	h.waitApplied(3)
	sh.q.close()
	wg.Wait()
	if got := matches(h.idx, 4); got[w1] != 1 {
		t.Errorf("w1's event after the loss not applied: %v", got)
	}
	if st := s.Stats(); st.Missed != 0 || st.Dropped != 2 {
		t.Errorf("stats = %+v, want 0 missed (the drops are counted once), 2 dropped", st)
	}
}

func TestRunOnceAndArguments(t *testing.T) {
	srv := testutil.NATS(t)
	h := newHarness(t, srv.URL(), testConfig())
	if h.sub.Ready() {
		t.Error("ready before Run")
	}
	h.start()
	if err := h.sub.Run(context.Background()); err == nil {
		t.Error("a second Run succeeded")
	}
	if err := h.stop(); err != nil {
		t.Errorf("Run = %v after cancel", err)
	}

	bad := testConfig()
	bad.EventThreads = 0
	if _, err := NewSubscriber(bad, h.nc, h.w, h.m, nil); err == nil || !strings.Contains(err.Error(), "--router-event-threads") {
		t.Errorf("NewSubscriber with 0 threads: %v, want an error naming --router-event-threads", err)
	}
	if _, err := NewSubscriber(testConfig(), nil, h.w, h.m, nil); err == nil {
		t.Error("NewSubscriber without a connection succeeded")
	}
}

// TestRunFailsOnClosedConnection: Run returns the subscription error, with every
// goroutine stopped, when the connection is closed.
func TestRunFailsOnClosedConnection(t *testing.T) {
	srv := testutil.NATS(t)
	h := newHarness(t, srv.URL(), testConfig())
	h.nc.Close()
	err := h.sub.Run(context.Background())
	if err == nil || !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("Run on a closed connection = %v, want ErrConnectionClosed", err)
	}
}
