package events

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

func durableConfig(id string) Config {
	cfg := testConfig()
	cfg.Durable = true
	cfg.RouterID = id
	cfg.SnapshotThreshold = 1 << 40
	cfg.SnapshotInterval = 20 * time.Millisecond
	return cfg
}

// streamOf opens the backend component's stream.
func streamOf(t testing.TB, nc *nats.Conn) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), StreamName("test", DefaultComponent))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func streamState(t testing.TB, s jetstream.Stream) jetstream.StreamState {
	t.Helper()
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

// workload is the random event streams of some ranks, published in a random
// interleaving that keeps each rank's order, half the ranks on the core
// subject, half on Dynamo's JetStream subject ({stream}.queue).
type workload struct {
	msgs     [][]byte
	subjects []string
}

func newWorkload(seed uint64, firstWorker, ranks, perRank int) *workload {
	rng := rand.New(rand.NewPCG(seed, 11))
	core := Subjects("test", DefaultComponent)[0]
	queue := StreamName("test", DefaultComponent) + ".queue"
	streams := make([][]indexer.Event, ranks)
	for r := range streams {
		streams[r] = randomStream(rng, indexer.Worker{ID: indexer.WorkerID(firstWorker + r), DPRank: indexer.DPRank(r % 3)}, perRank)
	}
	wl := &workload{}
	next := make([]int, ranks)
	for left := ranks * perRank; left > 0; left-- {
		r := rng.IntN(ranks)
		for next[r] == perRank {
			r = (r + 1) % ranks
		}
		ev := streams[r][next[r]]
		next[r]++
		subject := core
		if r%2 == 1 {
			subject = queue
		}
		wl.msgs = append(wl.msgs, jsonEvent(ev, uint64(next[r])))
		wl.subjects = append(wl.subjects, subject)
	}
	return wl
}

// publish sends the workload's messages [from, to).
func (wl *workload) publish(t testing.TB, nc *nats.Conn, from, to int) {
	for i := from; i < to; i++ {
		if err := nc.Publish(wl.subjects[i], wl.msgs[i]); err != nil {
			t.Error(err)
			return
		}
	}
	if err := nc.Flush(); err != nil {
		t.Error(err)
	}
}

// waitStored waits until the stream's last sequence reaches n.
func waitStored(t testing.TB, s jetstream.Stream, n uint64) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() bool { return streamState(t, s).LastSeq >= n }, "%d messages stored", n)
}

// TestDurableRestart stops a durable subscriber while events are still being
// published, starts a new one with an empty index, and checks that once ready
// it holds exactly what a never-stopped subscriber holds.
func TestDurableRestart(t *testing.T) {
	srv := testutil.NATS(t)
	a := newHarness(t, srv.URL(), durableConfig("router-a")).start()
	ref := newHarness(t, srv.URL(), durableConfig("router-ref")).start()
	pub := testutil.NATSConn(t, srv.URL())
	wl := newWorkload(1, 1000, 24, 400)
	total := len(wl.msgs)

	var wg sync.WaitGroup
	wg.Go(func() { wl.publish(t, pub, 0, total) })
	a.waitApplied(uint64(total / 4))
	if err := a.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	stopped := a.sub.Stats().Applied
	wg.Wait()
	waitStored(t, streamOf(t, pub), uint64(total))
	if stopped >= uint64(total) {
		t.Fatalf("the first subscriber applied all %d events before it stopped; nothing was in flight", total)
	}

	b := newHarness(t, srv.URL(), durableConfig("router-a")).start() // Ready: replayed
	ref.waitApplied(uint64(total))
	if diff := cmp.Diff(testutil.Canonical(ref.idx.Dump()), testutil.Canonical(b.idx.Dump())); diff != "" {
		t.Errorf("restarted index differs from the never-stopped one (-want +got):\n%s", diff)
	}
	if n := len(ref.idx.Dump()); n == 0 {
		t.Error("the reference index is empty; the workload proves nothing")
	}
	if st := b.sub.Stats(); st.Applied != uint64(total) || st.Dropped != 0 || st.Missed != 0 {
		t.Errorf("restarted subscriber stats %+v, want %d applied and no loss", st, total)
	}
	t.Logf("first subscriber stopped after %d of %d events", stopped, total)
}

// TestDurableSnapshotRestart snapshots and purges the stream with a small
// threshold, stops the subscriber with events in flight, and restarts from
// the snapshot and the rest of the stream. A rank whose last events the
// snapshot holds then skips event_ids: the restarted router must detect the
// gap as the never-stopped one does, from the baseline in the snapshot.
func TestDurableSnapshotRestart(t *testing.T) {
	srv := testutil.NATS(t)
	cfgA := durableConfig("router-a")
	cfgA.SnapshotThreshold = 500
	a := newHarness(t, srv.URL(), cfgA).start()
	ref := newHarness(t, srv.URL(), durableConfig("router-ref")).start()
	pub := testutil.NATSConn(t, srv.URL())
	stream := streamOf(t, pub)
	core := Subjects("test", DefaultComponent)[0]

	// Rank g publishes first, then falls silent until after the restart.
	g := indexer.Worker{ID: 7, DPRank: 1}
	for i := range 5 {
		var parent *indexer.BlockHash
		if i > 0 {
			parent = ptr(indexer.BlockHash(i))
		}
		publish(t, pub, core, jsonEvent(stored(g, parent, indexer.Block{Hash: indexer.BlockHash(i + 1), Tokens: indexer.LocalHash(i + 1)}), uint64(i+1)))
	}
	wl := newWorkload(2, 2000, 16, 250)
	half := len(wl.msgs) / 2
	wl.publish(t, pub, 0, half)
	a.waitApplied(uint64(5 + half))
	testutil.Eventually(t, 30*time.Second, func() bool {
		return a.sub.Stats().Snapshots > 0 && streamState(t, stream).FirstSeq > 1
	}, "a snapshot and a purge")

	var wg sync.WaitGroup
	wg.Go(func() { wl.publish(t, pub, half, len(wl.msgs)) })
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	publish(t, pub, core, jsonEvent(stored(g, nil, indexer.Block{Hash: 100, Tokens: 100}), 9)) // ids 6..8 lost
	total := uint64(5 + len(wl.msgs) + 1)
	waitStored(t, stream, total)
	first := streamState(t, stream).FirstSeq

	b := newHarness(t, srv.URL(), durableConfig("router-a")).start()
	ref.waitApplied(total)
	if diff := cmp.Diff(testutil.Canonical(ref.idx.Dump()), testutil.Canonical(b.idx.Dump())); diff != "" {
		t.Errorf("restarted index differs from the never-stopped one (-want +got):\n%s", diff)
	}
	if got := matches(b.idx, 1); got[g] != 0 {
		t.Errorf("rank %v kept blocks from before its event_id gap: %v", g, got)
	}
	if got := promtest.ToFloat64(b.em.Missed); got != 3 {
		t.Errorf("restarted router missed = %v, want 3 (the gap of rank %v)", got, g)
	}
	if !strings.Contains(b.log.String(), "snapshot restored") {
		t.Errorf("the restarted router did not restore a snapshot:\n%s", b.log)
	}
	t.Logf("stream first sequence at restart %d of %d; restarted router applied %d events", first, total, b.sub.Stats().Applied)

	// The snapshot is Dynamo's shape: a JSON list of RouterEvents.
	js, err := jetstream.New(pub)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(context.Background(), BucketName("test", DefaultComponent))
	if err != nil {
		t.Fatal(err)
	}
	info, err := obs.GetInfo(context.Background(), SnapshotObject)
	if err != nil {
		t.Fatal(err)
	}
	if seq, err := strconv.ParseUint(info.Metadata[metaSequence], 10, 64); err != nil || seq == 0 {
		t.Errorf("snapshot metadata %v lacks the stream sequence", info.Metadata)
	}
	data, err := obs.GetBytes(context.Background(), SnapshotObject)
	if err != nil {
		t.Fatal(err)
	}
	var list []struct {
		WorkerID uint64 `json:"worker_id"`
		Event    struct {
			EventID uint64          `json:"event_id"`
			DPRank  uint32          `json:"dp_rank"`
			Data    json.RawMessage `json:"data"`
		} `json:"event"`
	}
	if err := json.Unmarshal(data, &list); err != nil || len(list) == 0 {
		t.Fatalf("snapshot is not a JSON list of RouterEvents (%d entries): %v", len(list), err)
	}
}

// TestDurableSnapshotWaitsForTheLock: while another router holds the
// component's snapshot lock, the router neither writes a snapshot nor
// purges; once the lock is free it does both, and releases the lock.
func TestDurableSnapshotWaitsForTheLock(t *testing.T) {
	srv := testutil.NATS(t)
	pub := testutil.NATSConn(t, srv.URL())
	js, err := jetstream.New(pub)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lock, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: LockBucketName("test", DefaultComponent), TTL: SnapshotLockTTL})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := lock.Create(ctx, SnapshotLockKey, []byte("router-other"))
	if err != nil {
		t.Fatal(err)
	}

	cfg := durableConfig("router-a")
	cfg.SnapshotThreshold = 100
	a := newHarness(t, srv.URL(), cfg).start()
	wl := newWorkload(3, 2000, 4, 100)
	wl.publish(t, pub, 0, len(wl.msgs))
	a.waitApplied(uint64(len(wl.msgs)))
	testutil.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(a.log.String(), "another router holds the snapshot lock")
	}, "the router to find the lock held")
	stream := streamOf(t, pub)
	if st := a.sub.Stats(); st.Snapshots != 0 {
		t.Fatalf("%d snapshots written while another router held the lock", st.Snapshots)
	}
	if first := streamState(t, stream).FirstSeq; first != 1 {
		t.Fatalf("stream purged to %d while another router held the lock", first)
	}

	if err := lock.Delete(ctx, SnapshotLockKey, jetstream.LastRevision(rev)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		return a.sub.Stats().Snapshots > 0 && streamState(t, stream).FirstSeq > 1
	}, "a snapshot and a purge once the lock is free")
	testutil.Eventually(t, 30*time.Second, func() bool {
		_, err := lock.Get(ctx, SnapshotLockKey)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}, "the router to release the lock")
}

// TestDurableResetStates: --router-reset-states empties the stream and drops
// the snapshot, and the router starts with an empty index.
func TestDurableResetStates(t *testing.T) {
	srv := testutil.NATS(t)
	cfg := durableConfig("router-a")
	cfg.SnapshotThreshold = 50
	a := newHarness(t, srv.URL(), cfg).start()
	pub := testutil.NATSConn(t, srv.URL())
	wl := newWorkload(3, 3000, 4, 50)
	wl.publish(t, pub, 0, len(wl.msgs))
	a.waitApplied(uint64(len(wl.msgs)))
	testutil.Eventually(t, 30*time.Second, func() bool { return a.sub.Stats().Snapshots > 0 }, "a snapshot")
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	cfg.ResetStates = true
	b := newHarness(t, srv.URL(), cfg).start()
	if n := len(b.idx.Dump()); n != 0 || b.sub.Stats().Applied != 0 {
		t.Errorf("index after reset holds %d entries, applied %d", n, b.sub.Stats().Applied)
	}
	if st := streamState(t, streamOf(t, pub)); st.Msgs != 0 {
		t.Errorf("stream holds %d messages after reset", st.Msgs)
	}
	js, err := jetstream.New(pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.ObjectStore(context.Background(), BucketName("test", DefaultComponent)); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("snapshot bucket after reset: %v, want ErrBucketNotFound", err)
	}
	publish(t, pub, Subjects("test", DefaultComponent)[0], jsonEvent(stored(indexer.Worker{ID: 1}, nil, indexer.Block{Hash: 1, Tokens: 1}), 1))
	b.waitApplied(1)
}

// TestDurableBackpressure: with a one-event queue nothing is dropped in
// durable mode; the fetcher waits.
func TestDurableBackpressure(t *testing.T) {
	srv := testutil.NATS(t)
	cfg := durableConfig("router-a")
	cfg.EventThreads, cfg.QueueCapacity = 1, 1
	h := newHarness(t, srv.URL(), cfg).start()
	pub := testutil.NATSConn(t, srv.URL())
	wl := newWorkload(4, 4000, 8, 250)
	wl.publish(t, pub, 0, len(wl.msgs))
	h.waitApplied(uint64(len(wl.msgs)))
	if got := promtest.ToFloat64(h.em.Dropped.WithLabelValues(metrics.DropQueueFull)); got != 0 {
		t.Errorf("dropped{queue_full} = %v in durable mode", got)
	}
	if st := h.sub.Stats(); st.Dropped != 0 || st.Clears != 0 {
		t.Errorf("stats %+v: losses in durable mode", st)
	}
}

// TestDurableStartFails: when JetStream cannot be reached at start, Run
// returns the error with nothing left running.
func TestDurableStartFails(t *testing.T) {
	srv := testutil.NATS(t)
	h := newHarness(t, srv.URL(), durableConfig("router-a"))
	h.nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.sub.Run(ctx); err == nil || !strings.Contains(err.Error(), "stream") {
		t.Fatalf("Run on a closed connection = %v, want a stream error", err)
	}
}
