package zmqevents

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/internal/zmqtest"
	"github.com/kvrouter/router/metrics"
)

const blockSize = 4

// harness is a real index, its writer and a Source feeding it, with fake
// engines (go-zeromq publishers) to play against.
type harness struct {
	t   testing.TB
	idx *indexer.Index
	w   *events.Writer
	src *Source
	m   *metrics.Router
	zm  *Metrics
	log *testutil.Buffer
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessWith(t, nil)
}

// newHarnessWith is newHarness with the writer's configuration changed by
// set.
func newHarnessWith(t testing.TB, set func(*events.Config)) *harness {
	t.Helper()
	h := &harness{t: t, idx: indexer.NewIndex(indexer.Config{}), log: &testutil.Buffer{}}
	var err error
	if h.m, err = metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ecfg := events.DefaultConfig()
	if set != nil {
		set(&ecfg)
	}
	if h.w, err = events.NewWriter(ecfg, h.idx, h.m, log); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(blockSize)
	cfg.ReconnectMin, cfg.ReconnectMax = 10*time.Millisecond, 100*time.Millisecond
	cfg.ReplayTimeout = time.Second
	if h.src, err = New(cfg, h.w, h.m, log); err != nil {
		t.Fatal(err)
	}
	if h.zm, err = NewMetrics(h.m); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wdone, sdone := make(chan error, 1), make(chan error, 1)
	go func() { wdone <- h.w.Run(ctx) }()
	go func() { sdone <- h.src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for _, ch := range []chan error{sdone, wdone} {
			if err := <-ch; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	})
	return h
}

// engine starts a fake engine and subscribes the source to it as rank.
func (h *harness) engine(rank indexer.Worker, opts zmqtest.Options) *zmqtest.Engine {
	h.t.Helper()
	e, err := zmqtest.NewEngine(opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(e.Close)
	h.src.Set("test", []Endpoint{{Rank: rank, Addr: e.Addr(), Replay: e.ReplayAddr(), Topic: opts.Topic, Engine: EngineVLLM}})
	testutil.Eventually(h.t, 10*time.Second, e.Subscribed, "router subscribed to %v", e)
	if opts.Replay {
		// The connection's catch-up request comes in after the
		// subscription; a batch published before it is served would be
		// replayed as well as received live.
		testutil.Eventually(h.t, 10*time.Second, func() bool { return e.Served() > 0 }, "catch-up of %v served", e)
	}
	return e
}

// publish sends a batch and waits until the writer has applied it.
func (h *harness) publish(e *zmqtest.Engine, batch []byte) {
	h.t.Helper()
	delivered := func() (n, last uint64) {
		for _, st := range h.src.Status() {
			if st.Endpoint.Addr == e.Addr() {
				return st.Delivered, st.LastSeq
			}
		}
		return 0, 0
	}
	before, _ := delivered()
	seq, err := e.Publish(batch)
	if err != nil {
		h.t.Fatal(err)
	}
	testutil.Eventually(h.t, 10*time.Second, func() bool {
		n, last := delivered()
		return n > before && last == seq
	}, "batch %d delivered", seq)
	h.sync()
}

func (h *harness) sync() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.w.Sync(ctx); err != nil {
		h.t.Fatal(err)
	}
}

// overlap is how many leading blocks of tokens rank holds.
func (h *harness) overlap(rank indexer.Worker, tokens []uint32) int {
	h.t.Helper()
	var q []indexer.LocalHash
	for _, l := range mustHasher(h.t).LocalHashes(nil, tokens) {
		q = append(q, indexer.LocalHash(l))
	}
	for _, m := range h.idx.FindMatches(q, false, nil) {
		if m.Worker == rank {
			return int(m.Blocks)
		}
	}
	return 0
}

func mustHasher(t testing.TB) *blockhash.Hasher {
	t.Helper()
	hs, err := blockhash.NewHasher(blockSize, blockhash.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

func seq(from, to uint32) []uint32 {
	var out []uint32
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

var w26 = indexer.Worker{ID: 26}

func TestStoreRemoveClear(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(map[bool]string{false: "map", true: "legacy"}[legacy], func(t *testing.T) {
			h := newHarness(t)
			e := h.engine(w26, zmqtest.Options{Topic: "kv-events"})
			batch := zmqtest.Batch
			if legacy {
				batch = zmqtest.LegacyBatch
			}
			h.publish(e, batch(0, zmqtest.Stored(nil, []uint64{101, 102}, seq(1, 8), blockSize)))
			if got := h.overlap(w26, seq(1, 12)); got != 2 {
				t.Fatalf("after store: overlap %d, want 2", got)
			}
			h.publish(e, batch(0, zmqtest.Stored(zmqtest.Parent(102), []uint64{103}, seq(9, 12), blockSize)))
			if got := h.overlap(w26, seq(1, 12)); got != 3 {
				t.Fatalf("after chained store: overlap %d, want 3", got)
			}
			h.publish(e, batch(0, zmqtest.Removed(102)))
			if got := h.overlap(w26, seq(1, 12)); got != 1 {
				t.Fatalf("after remove: overlap %d, want 1", got)
			}
			h.publish(e, batch(0, zmqtest.Cleared()))
			if got := h.overlap(w26, seq(1, 12)); got != 0 {
				t.Fatalf("after clear: overlap %d, want 0", got)
			}
		})
	}
}

func TestGapHealedByReplay(t *testing.T) {
	for _, old := range []bool{false, true} {
		t.Run(map[bool]string{false: "topic-frame", true: "old-replay"}[old], func(t *testing.T) {
			h := newHarness(t)
			e := h.engine(w26, zmqtest.Options{Replay: true, OldReplay: old})
			h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{101}, seq(1, 4), blockSize)))
			// Two batches the subscriber never saw live.
			e.Skip(zmqtest.Batch(0, zmqtest.Stored(zmqtest.Parent(101), []uint64{102}, seq(5, 8), blockSize)),
				zmqtest.Batch(0, zmqtest.Stored(zmqtest.Parent(102), []uint64{103}, seq(9, 12), blockSize)))
			h.publish(e, zmqtest.Batch(0, zmqtest.Stored(zmqtest.Parent(103), []uint64{104}, seq(13, 16), blockSize)))
			if got := h.overlap(w26, seq(1, 16)); got != 4 {
				t.Fatalf("overlap %d, want 4: the replay should have filled the gap", got)
			}
			if got := promtest.ToFloat64(h.zm.Gaps.WithLabelValues(metrics.GapReplayed)); got != 1 {
				t.Errorf("gaps replayed = %v, want 1", got)
			}
			if got := promtest.ToFloat64(h.zm.Replayed); got != 2 {
				t.Errorf("replayed batches = %v, want 2", got)
			}
			if got := promtest.ToFloat64(h.zm.Events.Missed); got != 0 {
				t.Errorf("missed = %v, want 0", got)
			}
		})
	}
}

func TestGapReplayCannotHeal(t *testing.T) {
	for _, replay := range []bool{false, true} {
		t.Run(map[bool]string{false: "no-replay", true: "rolled-over"}[replay], func(t *testing.T) {
			h := newHarness(t)
			e := h.engine(w26, zmqtest.Options{Replay: replay})
			h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{101}, seq(1, 4), blockSize)))
			e.Skip(zmqtest.Batch(0, zmqtest.Removed(101)))
			e.Forget()
			// After the lost removal the engine stores a new chain; the
			// router must not keep claiming block 101.
			h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{201}, seq(21, 24), blockSize)))
			if got := h.overlap(w26, seq(1, 4)); got != 0 {
				t.Errorf("overlap of the lost removal's block %d, want 0 (rank cleared)", got)
			}
			if got := h.overlap(w26, seq(21, 24)); got != 1 {
				t.Errorf("overlap of the block stored after the gap %d, want 1", got)
			}
			if got := promtest.ToFloat64(h.zm.Gaps.WithLabelValues(metrics.GapCleared)); got != 1 {
				t.Errorf("gaps cleared = %v, want 1", got)
			}
			if got := promtest.ToFloat64(h.zm.Events.Missed); got != 1 {
				t.Errorf("missed = %v, want 1", got)
			}
		})
	}
}

// Batches published while a connection's catch-up runs arrive live after
// it. Those the replay delivered are duplicates; those that had left a
// small replay buffer before the catch-up read it are lost, and counted so.
func TestCatchUpSkipsLiveBatches(t *testing.T) {
	h := newHarness(t)
	asked, release := make(chan struct{}, 1), make(chan struct{})
	e, err := zmqtest.NewEngine(zmqtest.Options{Replay: true, Keep: 2, BeforeAnswer: func() {
		select {
		case asked <- struct{}{}:
			<-release // the catch-up's request only
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	h.src.Set("test", []Endpoint{{Rank: w26, Addr: e.Addr(), Replay: e.ReplayAddr(), Engine: EngineVLLM}})
	testutil.Eventually(t, 10*time.Second, e.Subscribed, "router subscribed to %v", e)
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection's catch-up request never came")
	}
	// Five batches, each a block of its own, while the catch-up waits: the
	// replay buffer keeps the last two (3 and 4).
	for k := range uint32(5) {
		if _, err := e.Publish(zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{uint64(100 + k)}, seq(1+4*k, 4+4*k), blockSize))); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	testutil.Eventually(t, 10*time.Second, func() bool { return e.Served() > 0 }, "catch-up of %v served", e)
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{105}, seq(21, 24), blockSize)))
	for k := range uint32(6) {
		want := 1
		if k < 3 {
			want = 0 // lost: neither replayed nor applied live
		}
		if got := h.overlap(w26, seq(1+4*k, 4+4*k)); got != want {
			t.Errorf("overlap of batch %d's block = %d, want %d", k, got, want)
		}
	}
	if got := promtest.ToFloat64(h.zm.Events.Missed); got != 3 {
		t.Errorf("missed = %v, want 3 (batches 0-2, gone from the replay buffer)", got)
	}
	if got := promtest.ToFloat64(h.zm.Events.Dropped.WithLabelValues(metrics.DropDuplicate)); got != 2 {
		t.Errorf("duplicates = %v, want 2 (batches 3 and 4, replayed and then received live)", got)
	}
	if got := promtest.ToFloat64(h.zm.Replayed); got != 2 {
		t.Errorf("replayed batches = %v, want 2", got)
	}
	if n := strings.Count(h.log.String(), "had left the replay buffer"); n != 1 {
		t.Errorf("the loss was logged %d times, want once for the three batches", n)
	}
}

func TestEngineRestart(t *testing.T) {
	h := newHarness(t)
	e := h.engine(w26, zmqtest.Options{Replay: true})
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{101}, seq(1, 4), blockSize)))
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(zmqtest.Parent(101), []uint64{102}, seq(5, 8), blockSize)))
	e.Restart()
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{301}, seq(31, 34), blockSize)))
	if got := h.overlap(w26, seq(1, 8)); got != 0 {
		t.Errorf("overlap of the old engine's blocks %d, want 0", got)
	}
	if got := h.overlap(w26, seq(31, 34)); got != 1 {
		t.Errorf("overlap of the new engine's block %d, want 1", got)
	}
	if got := promtest.ToFloat64(h.zm.Restarts); got != 1 {
		t.Errorf("restarts = %v, want 1", got)
	}
}

func TestJoinMidStreamReplaysHistory(t *testing.T) {
	h := newHarness(t)
	e, err := zmqtest.NewEngine(zmqtest.Options{Replay: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	// Published before any subscriber: lost live, kept for replay.
	for _, b := range [][]byte{
		zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{101}, seq(1, 4), blockSize)),
		zmqtest.Batch(0, zmqtest.Stored(zmqtest.Parent(101), []uint64{102}, seq(5, 8), blockSize)),
	} {
		if _, err := e.Publish(b); err != nil {
			t.Fatal(err)
		}
	}
	h.src.Set("test", []Endpoint{{Rank: w26, Addr: e.Addr(), Replay: e.ReplayAddr(), Engine: EngineVLLM}})
	testutil.Eventually(t, 10*time.Second, e.Subscribed, "subscribed")
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(zmqtest.Parent(102), []uint64{103}, seq(9, 12), blockSize)))
	if got := h.overlap(w26, seq(1, 12)); got != 3 {
		t.Errorf("overlap %d, want 3 (two replayed, one live)", got)
	}
}

func TestBadBatchClearsRank(t *testing.T) {
	h := newHarness(t)
	e := h.engine(w26, zmqtest.Options{})
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{101}, seq(1, 4), blockSize)))
	h.publish(e, []byte{0x93, 0xc1}) // 0xc1 is never valid MessagePack
	if got := h.overlap(w26, seq(1, 4)); got != 0 {
		t.Errorf("overlap after a lost batch %d, want 0", got)
	}
	if got := promtest.ToFloat64(h.zm.Events.DecodeErrors.WithLabelValues(metrics.DecodeMsgpack)); got != 1 {
		t.Errorf("decode errors{msgpack} = %v, want 1", got)
	}
}

func TestBlockSizeMismatchNotIndexed(t *testing.T) {
	h := newHarness(t)
	e := h.engine(w26, zmqtest.Options{})
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{101, 102}, seq(1, 16), 8)))
	if got := h.overlap(w26, seq(1, 16)); got != 0 {
		t.Errorf("overlap %d, want 0: blocks of another size are not indexed", got)
	}
	_, mm := Health(h.src.Status(), blockSize)
	if !strings.Contains(mm, "blocks of 8 tokens") {
		t.Errorf("health mismatch %q, want it to name the engine's block size", mm)
	}
}

func TestReconnectAfterPublisherRestart(t *testing.T) {
	h := newHarness(t)
	e := h.engine(w26, zmqtest.Options{})
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{101}, seq(1, 4), blockSize)))
	port := e.Port()
	e.Close()
	testutil.Eventually(t, 10*time.Second, func() bool { return !h.src.Status()[0].Connected }, "publisher seen gone")
	down, _ := Health(h.src.Status(), blockSize)
	if !strings.Contains(down, "1 of 1 publisher(s) not connected") {
		t.Errorf("health %q", down)
	}
	// The engine comes back on the same port.
	e2, err := zmqtest.NewEngineAt(port, zmqtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e2.Close)
	testutil.Eventually(t, 10*time.Second, e2.Subscribed, "subscribed again")
	h.publish(e2, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{401}, seq(41, 44), blockSize)))
	if got := h.overlap(w26, seq(1, 4)); got != 0 {
		t.Errorf("overlap of the old engine's block %d, want 0 (sequence restarted)", got)
	}
	if got := h.overlap(w26, seq(41, 44)); got != 1 {
		t.Errorf("overlap of the new engine's block %d, want 1", got)
	}
	if got := promtest.ToFloat64(h.zm.Reconnects); got < 1 {
		t.Errorf("reconnects = %v, want >= 1", got)
	}
}

// TestHugeFrameRefused: a peer announcing a frame over MaxMessageBytes is
// refused before anything is allocated for it.
func TestHugeFrameRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			greeting := make([]byte, 64)
			greeting[0], greeting[9], greeting[10] = 0xff, 0x7f, 3
			copy(greeting[12:], "NULL")
			huge := []byte{0x06, 0, 0, 0x10, 0, 0, 0, 0, 0} // a command frame of 2^44 bytes
			_, _ = c.Write(append(greeting, huge...))
			defer c.Close()
		}
	}()
	h := newHarness(t)
	h.src.Set("test", []Endpoint{{Rank: w26, Addr: "tcp://" + ln.Addr().String(), Engine: EngineVLLM}})
	testutil.Eventually(t, 10*time.Second, func() bool {
		st := h.src.Status()
		return len(st) == 1 && strings.Contains(st[0].LastError, "zmq message over")
	}, "the connection refused with the frame limit")
}

// TestBackpressureLosesNothing: a publisher far faster than the index (a
// writer queue of 4 events) is held back, not answered by loss.
func TestBackpressureLosesNothing(t *testing.T) {
	h := newHarnessWith(t, func(c *events.Config) { c.QueueCapacity = 4 })
	e := h.engine(w26, zmqtest.Options{})
	const n = 2000
	for i := range n {
		var parent *uint64
		if i > 0 {
			parent = zmqtest.Parent(uint64(1000 + i - 1))
		}
		if _, err := e.Publish(zmqtest.Batch(0, zmqtest.Stored(parent, []uint64{uint64(1000 + i)}, seq(uint32(4*i+1), uint32(4*i+4)), blockSize))); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		st := h.src.Status()
		return len(st) == 1 && st[0].LastSeq == n-1
	}, "every batch delivered")
	h.sync()
	if got := h.idx.Size(w26); got != n {
		t.Errorf("rank holds %d blocks, want %d", got, n)
	}
	if got := promtest.ToFloat64(h.zm.Events.Dropped.WithLabelValues(metrics.DropQueueFull)); got != 0 {
		t.Errorf("dropped for a full queue: %v, want 0", got)
	}
}

// TestReplayFloodBounded: a replay socket that answers every request with
// an endless stream of one batch is cut off at the replay timeout, both at
// the connection's catch-up and at a gap, and the gap clears the rank.
func TestReplayFloodBounded(t *testing.T) {
	h := newHarnessWith(t, nil)
	e := h.engine(w26, zmqtest.Options{})
	flood := zmqtest.NewFlood(t)
	// Point the subscription at the flooding replay socket: the new
	// connection's catch-up gets its batch 0 (a clear) and then its flood.
	start := time.Now()
	h.src.Set("test", []Endpoint{{Rank: w26, Addr: e.Addr(), Replay: flood.Addr(), Engine: EngineVLLM}})
	testutil.Eventually(t, 10*time.Second, func() bool {
		st := h.src.Status()
		return len(st) == 1 && st[0].Endpoint.Replay == flood.Addr() && st[0].Delivered == 1
	}, "the catch-up delivered the flood's one batch")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("catch-up took %v, past the 1 s replay timeout", d)
	}
	testutil.Eventually(t, 10*time.Second, e.Subscribed, "subscribed")
	// The engine's batch 0 is the one the catch-up delivered: skipped.
	dups := h.zm.Events.Dropped.WithLabelValues(metrics.DropDuplicate)
	if _, err := e.Publish(zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{100}, seq(1, 4), blockSize))); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return promtest.ToFloat64(dups) == 1 }, "batch 0 skipped as a duplicate")
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{101}, seq(5, 8), blockSize)))
	e.Skip(zmqtest.Batch(0, zmqtest.Removed(101)))
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{201}, seq(21, 24), blockSize)))
	if got := h.overlap(w26, seq(5, 8)); got != 0 {
		t.Errorf("overlap of the lost removal's block %d, want 0", got)
	}
	if got := h.overlap(w26, seq(21, 24)); got != 1 {
		t.Errorf("overlap of the block after the gap %d, want 1", got)
	}
	if got := promtest.ToFloat64(h.zm.Gaps.WithLabelValues(metrics.GapCleared)); got != 1 {
		t.Errorf("gaps cleared = %v, want 1", got)
	}
	if flood.Sent() < 2 {
		t.Errorf("the flood sent %d batches: the replays were not asked for", flood.Sent())
	}
}

// TestGapPartlyReplayed: the replay socket still holds the last batches of
// a gap but not the first: the rank is cleared, then those last batches and
// the live one are applied.
func TestGapPartlyReplayed(t *testing.T) {
	h := newHarness(t)
	e := h.engine(w26, zmqtest.Options{Replay: true, Keep: 2})
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{101}, seq(1, 4), blockSize)))
	e.Skip(zmqtest.Batch(0, zmqtest.Removed(101)), // lost for good: the buffer keeps 2
		zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{201}, seq(21, 24), blockSize)))
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(zmqtest.Parent(201), []uint64{202}, seq(25, 28), blockSize)))
	if got := h.overlap(w26, seq(1, 4)); got != 0 {
		t.Errorf("overlap of the block whose removal was lost %d, want 0", got)
	}
	if got := h.overlap(w26, seq(21, 28)); got != 2 {
		t.Errorf("overlap of the replayed and live blocks %d, want 2", got)
	}
	if got := promtest.ToFloat64(h.zm.Events.Missed); got != 1 {
		t.Errorf("missed = %v, want 1", got)
	}
}

func TestContiguousTail(t *testing.T) {
	b := func(seqs ...uint64) []replayed {
		out := make([]replayed, len(seqs))
		for i, s := range seqs {
			out[i] = replayed{seq: s}
		}
		return out
	}
	for _, tc := range []struct {
		got  []replayed
		seq  uint64
		want int
	}{
		{b(), 5, 0}, {b(1, 2, 3, 4), 5, 4}, {b(2, 4), 5, 1}, {b(1, 2), 5, 0}, {b(3, 4), 5, 2},
	} {
		if got := contiguousTail(tc.got, tc.seq); len(got) != tc.want {
			t.Errorf("contiguousTail(%v, %d) has %d batches, want %d", tc.got, tc.seq, len(got), tc.want)
		}
	}
}

// TestHostTier: an offloading connector's CPU copy (hashes only) between
// GPU events shares the engine's sequence (no false gap), and keeps the
// block held on the host tier once the GPU evicts it.
func TestHostTier(t *testing.T) {
	h := newHarness(t)
	e := h.engine(w26, zmqtest.Options{})
	h.publish(e, zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{101, 102}, seq(1, 8), blockSize)))
	h.publish(e, zmqtest.Batch(0, zmqtest.Event{Type: "BlockStored", BlockHashes: []uint64{102}, Medium: "CPU"}))
	h.publish(e, zmqtest.Batch(0, zmqtest.Removed(102)))
	var q []indexer.LocalHash
	for _, l := range mustHasher(t).LocalHashes(nil, seq(1, 8)) {
		q = append(q, indexer.LocalHash(l))
	}
	ms := h.idx.FindMatches(q, false, nil)
	if len(ms) != 1 || ms[0].Blocks != 2 || ms[0].Host != 1 {
		t.Fatalf("matches %+v, want 2 blocks, 1 of them on the host", ms)
	}
	if got := promtest.ToFloat64(h.zm.Events.Missed); got != 0 {
		t.Errorf("missed = %v, want 0", got)
	}
}

// TestUnreachablePublisher: /health names a publisher nobody listens on,
// with the dial's cause.
func TestUnreachablePublisher(t *testing.T) {
	h := newHarness(t)
	addr := "tcp://" + testutil.Addr(testutil.FreePort(t))
	h.src.Set("test", []Endpoint{{Rank: w26, Addr: addr, Engine: EngineVLLM}})
	var down string
	testutil.Eventually(t, 10*time.Second, func() bool {
		down, _ = Health(h.src.Status(), blockSize)
		return strings.Contains(down, "connection refused")
	}, "health names the refused dial")
	want := "1 of 1 publisher(s) not connected: vllm worker 26 rank 0 at " + addr + " (dial tcp "
	if !strings.HasPrefix(down, want) {
		t.Errorf("health %q, want it to start %q", down, want)
	}
}

// A catch-up that is being answered has the whole replay timeout for the
// answer: only a request that hears nothing at all is given up after a
// fifth of it (and sent again). An engine that pauses 150 ms after each of
// three kept batches answers in about 450 ms, past a fifth of the
// harness's 1 s timeout.
func TestSlowCatchUpGetsTheWholeTimeout(t *testing.T) {
	h := newHarness(t)
	e, err := zmqtest.NewEngine(zmqtest.Options{Replay: true, ReplyPause: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	// Kept before the router connects: its catch-up replays them.
	for k := range uint32(3) {
		if _, err := e.Publish(zmqtest.Batch(0, zmqtest.Stored(nil, []uint64{uint64(100 + k)}, seq(1+4*k, 4+4*k), blockSize))); err != nil {
			t.Fatal(err)
		}
	}
	h.src.Set("test", []Endpoint{{Rank: w26, Addr: e.Addr(), Replay: e.ReplayAddr(), Engine: EngineVLLM}})
	testutil.Eventually(t, 10*time.Second, func() bool {
		for _, st := range h.src.Status() {
			if st.Endpoint.Addr == e.Addr() && st.Delivered >= 3 {
				return true
			}
		}
		return false
	}, "three batches delivered")
	h.sync()
	if got := promtest.ToFloat64(h.zm.Replayed); got != 3 {
		t.Errorf("replayed batches = %v, want 3", got)
	}
	for k := range uint32(3) {
		if got := h.overlap(w26, seq(1+4*k, 4+4*k)); got != 1 {
			t.Errorf("overlap of batch %d's block = %d, want 1", k, got)
		}
	}
	if strings.Contains(h.log.String(), "catch-up replay failed") {
		t.Errorf("the slow catch-up failed:\n%s", h.log.String())
	}
}
