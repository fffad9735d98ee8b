package events

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

// writerHarness is a running Writer of a fresh index, fed directly (no
// transport).
type writerHarness struct {
	t   *testing.T
	idx *indexer.Index
	m   *metrics.Router
	em  *Metrics // the families the writer counts in
	w   *Writer
	log *testutil.Buffer
	ids map[indexer.Worker]uint64 // next event_id per rank
}

func newWriterHarness(t *testing.T, cfg Config) *writerHarness {
	t.Helper()
	h := &writerHarness{t: t, idx: indexer.NewIndex(indexer.Config{}), log: &testutil.Buffer{}, ids: map[indexer.Worker]uint64{}}
	var err error
	if h.m, err = metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if h.em, err = NewMetrics(h.m); err != nil {
		t.Fatal(err)
	}
	if h.w, err = NewWriter(cfg, h.idx, h.m, slog.New(slog.NewTextHandler(h.log, nil))); err != nil {
		t.Fatal(err)
	}
	runWriter(t, h.w)
	return h
}

// event submits a KV event of rank as a transport would, with the rank's
// next event_id.
func (h *writerHarness) event(ev indexer.Event) {
	h.ids[ev.Worker]++
	h.w.offer(item{kind: itemEvent, ev: ev, id: h.ids[ev.Worker], recv: h.w.now()})
}

// store submits a stored event of one block of rank, chained under parent
// when parent is not 0.
func (h *writerHarness) store(rank indexer.Worker, parent, hash uint64) {
	var p *indexer.BlockHash
	if parent != 0 {
		p = ptr(indexer.BlockHash(parent))
	}
	h.event(stored(rank, p, indexer.Block{Hash: indexer.BlockHash(hash), Tokens: indexer.LocalHash(hash)}))
}

// sync waits until everything submitted is applied.
func (h *writerHarness) sync() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.w.Sync(ctx); err != nil {
		h.t.Fatalf("writer sync: %v", err)
	}
}

// notices takes the noticed workers, sorted.
func (h *writerHarness) notices() []indexer.WorkerID {
	ids := h.w.Notices().Take()
	slices.Sort(ids)
	return ids
}

// TestNoticesOnceAndCountedDrop: a worker the registry never announced is
// noticed once, however many events and ranks it sends; dropping it removes
// its blocks only and counts every one of its events; its next event makes
// it noticed again. A joined worker is never noticed, and a drop that comes
// after its join changes nothing.
func TestNoticesOnceAndCountedDrop(t *testing.T) {
	h := newWriterHarness(t, testConfig())
	known, stranger := indexer.WorkerID(8), indexer.WorkerID(7)
	h.w.WorkerJoined(known)
	for rank := range indexer.DPRank(2) {
		h.store(indexer.Worker{ID: stranger, DPRank: rank}, 0, 1)
		h.store(indexer.Worker{ID: stranger, DPRank: rank}, 1, 2)
		h.store(indexer.Worker{ID: stranger, DPRank: rank}, 2, 3)
	}
	h.store(indexer.Worker{ID: known}, 0, 1)
	h.sync()
	select {
	case <-h.w.Notices().Ready():
	default:
		t.Fatal("Notices not ready after an unregistered worker's events")
	}
	if diff := cmp.Diff([]indexer.WorkerID{stranger}, h.notices()); diff != "" {
		t.Fatalf("noticed (-want +got):\n%s", diff)
	}

	h.w.DropUnregistered(known) // joined: nothing happens
	h.w.DropUnregistered(stranger)
	h.sync()
	got := matches(h.idx, 1, 2, 3)
	want := map[indexer.Worker]uint32{{ID: known}: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("index after the drop (-want +got):\n%s", diff)
	}
	if n := promtest.ToFloat64(h.em.Dropped.WithLabelValues(metrics.DropUnknownWorker)); n != 6 {
		t.Errorf("dropped{unknown_worker} = %v, want 6 (every event of the stranger)", n)
	}
	if ids := h.notices(); len(ids) != 0 {
		t.Errorf("noticed again without a new event: %v", ids)
	}

	h.store(indexer.Worker{ID: stranger}, 0, 1)
	h.sync()
	if diff := cmp.Diff([]indexer.WorkerID{stranger}, h.notices()); diff != "" {
		t.Errorf("noticed after a new event (-want +got):\n%s", diff)
	}
}

// TestLeaveIsOrderedWithEvents: a worker's removal applies after the events
// it sent before leaving and before those sent after; a late event makes the
// worker an unregistered one, noticed for its grace period.
func TestLeaveIsOrderedWithEvents(t *testing.T) {
	h := newWriterHarness(t, testConfig())
	w := indexer.Worker{ID: 3}
	h.w.WorkerJoined(w.ID)
	h.store(w, 0, 1)
	h.store(w, 1, 2)
	h.w.WorkerLeft(w.ID) // queued behind the two stores
	h.store(w, 0, 10)    // late: after the removal
	h.sync()
	if got := matches(h.idx, 1, 2); len(got) != 0 {
		t.Errorf("blocks stored before the leave survived it: %v", got)
	}
	if got := matches(h.idx, 10); got[w] != 1 {
		t.Errorf("late event not applied after the leave: %v", got)
	}
	if diff := cmp.Diff([]indexer.WorkerID{w.ID}, h.notices()); diff != "" {
		t.Errorf("the late event's worker is not noticed (-want +got):\n%s", diff)
	}
}

// TestClearRank: a dropped rank loses its blocks and its event_id baseline;
// the worker's other ranks keep theirs.
func TestClearRank(t *testing.T) {
	h := newWriterHarness(t, testConfig())
	r0, r1 := indexer.Worker{ID: 4, DPRank: 0}, indexer.Worker{ID: 4, DPRank: 1}
	h.w.WorkerJoined(4)
	h.store(r0, 0, 1)
	h.store(r1, 0, 1)
	h.w.ClearRank(r1)
	h.sync()
	if diff := cmp.Diff(map[indexer.Worker]uint32{r0: 1}, matches(h.idx, 1)); diff != "" {
		t.Errorf("after ClearRank(%v) (-want +got):\n%s", r1, diff)
	}
	h.ids[r1] = 41 // the rank returns with another stream: no gap to count
	h.store(r1, 0, 5)
	h.sync()
	if st := h.w.stats.missed.Load(); st != 0 {
		t.Errorf("missed = %d after the rank came back; its old baseline was kept", st)
	}
	if st := h.w.stats.clears.Load(); st != 0 {
		t.Errorf("clears = %d, want 0: a lifecycle clear is not a loss", st)
	}
}

// TestWriteIsNotAKVEvent: approximate mode's changes reach the index in
// order and are not counted as KV events.
func TestWriteIsNotAKVEvent(t *testing.T) {
	h := newWriterHarness(t, testConfig())
	w := indexer.Worker{ID: 2}
	h.w.WorkerJoined(w.ID)
	h.w.Write(stored(w, nil, indexer.Block{Hash: 1, Tokens: 1}))
	h.w.Write(indexer.Event{Worker: w, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{1}})
	h.w.Write(stored(w, nil, indexer.Block{Hash: 2, Tokens: 2}))
	h.sync()
	if diff := cmp.Diff(map[indexer.Worker]uint32{w: 1}, matches(h.idx, 2)); diff != "" {
		t.Errorf("index (-want +got):\n%s", diff)
	}
	if got := matches(h.idx, 1); len(got) != 0 {
		t.Errorf("removed block still indexed: %v", got)
	}
	if n := h.w.stats.applied.Load(); n != 0 {
		t.Errorf("applied = %d, want 0: approximate mode's changes are not KV events", n)
	}
}

// TestJoinLeaveCyclesLeaveNothing: a worker id that joins, stores and leaves
// a thousand times leaves no state behind in the writer or the index.
func TestJoinLeaveCyclesLeaveNothing(t *testing.T) {
	cfg := testConfig()
	cfg.EventThreads = 2
	h := newWriterHarness(t, cfg)
	for i := range 1000 {
		id := indexer.WorkerID(9)
		h.w.WorkerJoined(id)
		for rank := range indexer.DPRank(2) {
			h.store(indexer.Worker{ID: id, DPRank: rank}, 0, uint64(i+1))
		}
		h.w.WorkerLeft(id)
		// The next incarnation starts a new event stream.
		clear(h.ids)
	}
	h.sync()
	if st := h.idx.Stats(); st.Entries != 0 || st.Workers != 0 {
		t.Errorf("index after the cycles: %+v, want empty", st)
	}
	for i, sh := range h.w.shards {
		// Read on the test goroutine after Sync: the shard is idle.
		if len(sh.workers) != 0 || len(sh.ranks) != 0 {
			t.Errorf("shard %d keeps %d workers and %d ranks", i, len(sh.workers), len(sh.ranks))
		}
	}
	if missed, resets := h.w.stats.missed.Load(), h.w.stats.resets.Load(); missed != 0 || resets != 0 {
		t.Errorf("missed %d, resets %d: a returning worker's new stream was taken for a gap", missed, resets)
	}
}
