package events

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// chain returns the stored event of block n of a rank's chain: block n
// under block n−1 (none for n = 1), hashes n + base.
func chain(rank indexer.Worker, base, n uint64) indexer.Event {
	var parent *indexer.BlockHash
	if n > 1 {
		parent = ptr(indexer.BlockHash(base + n - 1))
	}
	return stored(rank, parent, indexer.Block{Hash: indexer.BlockHash(base + n), Tokens: indexer.LocalHash(base + n)})
}

// offerID submits ev with event_id id, as the subscriber does.
func (h *writerHarness) offerID(ev indexer.Event, id uint64) {
	h.w.offer(item{kind: itemEvent, ev: ev, id: id, recv: h.w.now()})
}

// peerSnapshot builds a snapshot as a peer would serve it: the events of
// evs (with their event_ids) applied to a fresh index, encoded with the
// ranks' last event_ids.
func peerSnapshot(t *testing.T, evs []indexer.Event, ids []uint64) (data []byte, dump []indexer.Event) {
	t.Helper()
	idx := indexer.NewIndex(indexer.Config{})
	base := map[indexer.Worker]uint64{}
	res := make([]indexer.Result, len(evs))
	idx.ApplyBatch(evs, res)
	for i, ev := range evs {
		if res[i].Status != indexer.StatusOK {
			t.Fatalf("peer event %d: %v", i, res[i].Status)
		}
		base[ev.Worker] = ids[i]
	}
	data, _ = encodeSnapshot(idx.Dump(), base, nil)
	return data, idx.Dump()
}

func (h *writerHarness) load(data []byte) int {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := h.w.LoadSnapshot(ctx, data)
	if err != nil {
		h.t.Fatalf("LoadSnapshot: %v", err)
	}
	return n
}

func (h *writerHarness) release() int {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := h.w.Release(ctx)
	if err != nil {
		h.t.Fatalf("Release: %v", err)
	}
	return n
}

// TestWarmStartReleaseSkipsWhatTheSnapshotHolds: the peer applied events
// 1..3 of rank a; the joiner held 2..5 (it subscribed late). After the
// snapshot, 2 is skipped and counted as a duplicate, 3 (equal to the
// baseline) and 4..5 apply, and the index is the one a router that saw
// everything holds, with no loss counted. Rank b, unknown to the snapshot,
// starts its baseline from its first held event (40), and a later gap of b
// is still caught.
func TestWarmStartReleaseSkipsWhatTheSnapshotHolds(t *testing.T) {
	h := newWriterHarness(t, testConfig())
	a, b := indexer.Worker{ID: 1}, indexer.Worker{ID: 2, DPRank: 1}
	if err := h.w.Hold(); err != nil {
		t.Fatal(err)
	}
	for id := uint64(2); id <= 5; id++ {
		h.offerID(chain(a, 100, id), id)
	}
	h.offerID(chain(b, 200, 1), 40)
	h.offerID(chain(b, 200, 2), 41)
	h.sync()
	if st := h.idx.Stats(); st.Entries != 0 {
		t.Fatalf("held events reached the index: %+v", st)
	}

	data, _ := peerSnapshot(t, []indexer.Event{chain(a, 100, 1), chain(a, 100, 2), chain(a, 100, 3)}, []uint64{1, 2, 3})
	if n := h.load(data); n != 4 { // a cleared event and three stored
		t.Errorf("LoadSnapshot loaded %d events, want 4", n)
	}
	if n := h.release(); n != 6 {
		t.Errorf("Release released %d events, want 6", n)
	}
	if h.w.Holding() {
		t.Error("still holding after Release")
	}
	h.sync()

	want := map[indexer.Worker]uint32{a: 5}
	if diff := cmp.Diff(want, matches(h.idx, 101, 102, 103, 104, 105)); diff != "" {
		t.Errorf("rank a after the release (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[indexer.Worker]uint32{b: 2}, matches(h.idx, 201, 202)); diff != "" {
		t.Errorf("rank b after the release (-want +got):\n%s", diff)
	}
	if n := promtest.ToFloat64(h.em.Dropped.WithLabelValues(metrics.DropDuplicate)); n != 1 {
		t.Errorf("dropped{duplicate} = %v, want 1 (event 2 of rank a)", n)
	}
	if n := promtest.ToFloat64(h.em.Missed); n != 0 {
		t.Errorf("missed = %v, want 0", n)
	}
	if n := applied(h.em, metrics.EventStored, metrics.StatusParentBlockNotFound); n != 0 {
		t.Errorf("stored events rejected for an unknown parent: %v", n)
	}

	// Rank c's publisher restarts after the cut: its held ids go back
	// below the last skipped one, which is a reset, not a duplicate.
	c := indexer.Worker{ID: 3}
	h2 := newWriterHarness(t, testConfig())
	if err := h2.w.Hold(); err != nil {
		t.Fatal(err)
	}
	h2.offerID(chain(c, 300, 8), 8) // before the cut, in the snapshot
	h2.offerID(chain(c, 300, 9), 9)
	h2.offerID(indexer.Event{Worker: c, Kind: indexer.KindStored, Blocks: []indexer.Block{{Hash: 999, Tokens: 999}}}, 1) // restarted
	snapC, _ := peerSnapshot(t, []indexer.Event{chain(c, 300, 1), chain(c, 300, 2)}, []uint64{9, 10})
	h2.load(snapC)
	h2.release()
	h2.sync()
	if n := promtest.ToFloat64(h2.em.IDResets); n != 1 {
		t.Errorf("resets after the publisher restarted during the warm start = %v, want 1", n)
	}
	if diff := cmp.Diff(map[indexer.Worker]uint32{c: 1}, matches(h2.idx, 999)); diff != "" {
		t.Errorf("the restarted publisher's first block (-want +got):\n%s", diff)
	}
	if got := matches(h2.idx, 301); len(got) != 0 {
		t.Errorf("the old incarnation's blocks survived the reset: %v", got)
	}

	// Live again: a's next id is checked against 5, b's against 41.
	h.offerID(chain(a, 100, 6), 6)
	h.offerID(chain(b, 200, 3), 43)
	h.sync()
	if n := promtest.ToFloat64(h.em.Missed); n != 1 {
		t.Errorf("missed after b jumped from 41 to 43 = %v, want 1", n)
	}
	if got := matches(h.idx, 101, 102, 103, 104, 105, 106)[a]; got != 6 {
		t.Errorf("rank a holds %d blocks after a live event, want 6", got)
	}
}

// TestWarmStartTiers: a peer's index with blocks on the host (stored with
// tokens, and copied by hash) reaches the joiner whole, tier counts
// included; a host event held during the warm start is applied, not
// skipped against the device's event_id baseline, since the host numbers
// its own events.
func TestWarmStartTiers(t *testing.T) {
	h := newWriterHarness(t, testConfig())
	a := indexer.Worker{ID: 1}
	if err := h.w.Hold(); err != nil {
		t.Fatal(err)
	}
	onHost := func(ev indexer.Event) indexer.Event { ev.Tier = indexer.TierHost; return ev }
	// Held: the host drops block 103 (host event_id 2, below the device
	// baseline of 5), and the device stores block 105 (event_id 5).
	h.offerID(onHost(indexer.Event{Worker: a, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{103}}), 2)
	h.offerID(chain(a, 100, 5), 5)

	peer := []indexer.Event{
		chain(a, 100, 1), chain(a, 100, 2), chain(a, 100, 3), chain(a, 100, 4),
		onHost(chain(a, 100, 1)), // host event_id 1
		{Worker: a, Kind: indexer.KindStored, ByHash: true, Tier: indexer.TierHost, Blocks: []indexer.Block{{Hash: 102}, {Hash: 103}}},
		{Worker: a, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{102, 103, 104}},
	}
	data, dump := peerSnapshot(t, peer, []uint64{1, 2, 3, 4, 1, 1, 4})
	var tiers []indexer.Tier
	for _, ev := range dump {
		tiers = append(tiers, ev.Tier)
	}
	if diff := cmp.Diff([]indexer.Tier{indexer.TierDevice, indexer.TierHost, indexer.TierHost, indexer.TierHost}, tiers); diff != "" {
		t.Fatalf("tiers of the peer's dump (-want +got):\n%s", diff)
	}
	h.load(data)
	h.release()
	h.sync()

	got := h.idx.FindMatches([]indexer.LocalHash{101, 102, 103, 104, 105}, false, nil)
	want := []indexer.Match{{Worker: a, Blocks: 2, TierBlocks: indexer.TierBlocks{Host: 1}}} // 103 went with the held host removal
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("matches after the warm start (-want +got):\n%s", diff)
	}
	if n := promtest.ToFloat64(h.em.Dropped.WithLabelValues(metrics.DropDuplicate)); n != 0 {
		t.Errorf("dropped{duplicate} = %v, want 0: the held host event is not the device's", n)
	}
	if n := applied(h.em, metrics.EventRemoved, metrics.StatusOK); n != 1 {
		t.Errorf("removed events applied ok = %v, want 1 (the held host removal)", n)
	}
}

// TestWarmStartOverflowClearsRanks: past the buffer's capacity events are
// dropped, counted, and their rank cleared in order after release, unless
// the snapshot holds everything the rank lost; the rank's next event starts
// a new baseline without a gap counted.
func TestWarmStartOverflowClearsRanks(t *testing.T) {
	h := newWriterHarness(t, testConfig())
	h.w.hold.capacity = 4
	a, b := indexer.Worker{ID: 1}, indexer.Worker{ID: 2}
	if err := h.w.Hold(); err != nil {
		t.Fatal(err)
	}
	for id := uint64(1); id <= 3; id++ {
		h.offerID(chain(a, 100, id), id)
	}
	h.offerID(chain(b, 200, 1), 1)
	// Full: these three are dropped.
	h.offerID(chain(a, 100, 4), 4)
	h.offerID(chain(a, 100, 5), 5)
	h.offerID(chain(b, 200, 2), 2)

	// The peer had a up to 2 (the loss of 4 and 5 is not covered) and b
	// up to 5 (the loss of 2 is).
	data, _ := peerSnapshot(t, []indexer.Event{chain(a, 100, 1), chain(a, 100, 2),
		chain(b, 200, 1), chain(b, 200, 2), chain(b, 200, 3)}, []uint64{1, 2, 1, 2, 5})
	h.load(data)
	if n := h.release(); n != 4 {
		t.Errorf("released %d events, want 4", n)
	}
	h.sync()
	if got := matches(h.idx, 101, 102, 103); len(got) != 0 {
		t.Errorf("rank a holds blocks after losing events: %v", got)
	}
	if diff := cmp.Diff(map[indexer.Worker]uint32{b: 3}, matches(h.idx, 201, 202, 203)); diff != "" {
		t.Errorf("rank b, whose loss the snapshot covers (-want +got):\n%s", diff)
	}
	if n := promtest.ToFloat64(h.em.Dropped.WithLabelValues(metrics.DropWarmStartOverflow)); n != 3 {
		t.Errorf("dropped{warm_start_overflow} = %v, want 3", n)
	}
	h.offerID(indexer.Event{Worker: a, Kind: indexer.KindStored, Blocks: []indexer.Block{{Hash: 900, Tokens: 900}}}, 9)
	h.sync()
	if got := matches(h.idx, 900)[a]; got != 1 {
		t.Errorf("rank a's first event after the clear not applied")
	}
	if n := promtest.ToFloat64(h.em.Missed); n != 0 {
		t.Errorf("missed = %v, want 0 (the loss was counted as dropped)", n)
	}
	if st := h.w.stats.clears.Load(); st != 1 {
		t.Errorf("ranks cleared = %d, want 1 (a only)", st)
	}
	if !strings.Contains(h.log.String(), "buffer of held events full") {
		t.Errorf("no warning about the overflow:\n%s", h.log.String())
	}
}

// TestWarmStartReleaseRacesArrivals: events submitted while Release queues
// the held ones land after them. Each event stores the next block of one
// chain under the previous one, so an event applied before one held ahead
// of it would be rejected (parent unknown) or its event_id would go
// backwards; neither happens. Run with -race.
func TestWarmStartReleaseRacesArrivals(t *testing.T) {
	cfg := testConfig()
	cfg.QueueCapacity = 64 // Release waits for room often
	h := newWriterHarness(t, cfg)
	ranks := []indexer.Worker{{ID: 1}, {ID: 2}, {ID: 3, DPRank: 2}}
	const held, live = 1000, 1000
	if err := h.w.Hold(); err != nil {
		t.Fatal(err)
	}
	for n := uint64(1); n <= held; n++ {
		for i, r := range ranks {
			h.offerID(chain(r, uint64(i+1)<<32, n), n)
		}
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	wg.Go(func() {
		<-start
		for n := uint64(held + 1); n <= held+live; n++ {
			for i, r := range ranks {
				h.offerID(chain(r, uint64(i+1)<<32, n), n)
			}
		}
	})
	close(start)
	h.release()
	wg.Wait()
	h.sync()
	if h.w.Holding() {
		t.Error("still holding")
	}
	for i, r := range ranks {
		base := uint64(i+1) << 32
		toks := make([]indexer.LocalHash, 0, held+live)
		for n := uint64(1); n <= held+live; n++ {
			toks = append(toks, indexer.LocalHash(base+n))
		}
		if got := matches(h.idx, toks...)[r]; got != held+live {
			t.Errorf("rank %v holds %d of %d blocks", r, got, held+live)
		}
	}
	if n := applied(h.em, metrics.EventStored, metrics.StatusParentBlockNotFound); n != 0 {
		t.Errorf("%v events applied before their parent", n)
	}
	if n := promtest.ToFloat64(h.em.IDResets) + promtest.ToFloat64(h.em.Missed); n != 0 {
		t.Errorf("event_id resets and gaps = %v, want 0", n)
	}
	if n := promtest.ToFloat64(h.em.Dropped.WithLabelValues(metrics.DropQueueFull)); n != 0 {
		t.Errorf("dropped{queue_full} = %v: the test must not overflow the queues", n)
	}
}

// LoadSnapshot refuses without Hold, and a snapshot that does not decode
// changes nothing.
func TestLoadSnapshotRefuses(t *testing.T) {
	h := newWriterHarness(t, testConfig())
	data, _ := peerSnapshot(t, []indexer.Event{chain(indexer.Worker{ID: 1}, 0, 1)}, []uint64{1})
	if _, err := h.w.LoadSnapshot(context.Background(), data); !errors.Is(err, ErrNotHolding) {
		t.Errorf("LoadSnapshot without Hold: %v, want ErrNotHolding", err)
	}
	if err := h.w.Hold(); err != nil {
		t.Fatal(err)
	}
	if err := h.w.Hold(); err == nil {
		t.Error("Hold twice: no error")
	}
	broken := append(append([]byte{}, data[:len(data)-1]...), ',', '{', ']')
	if _, err := h.w.LoadSnapshot(context.Background(), broken); !errors.Is(err, codec.ErrMalformedJSON) {
		t.Errorf("LoadSnapshot of a truncated snapshot: %v, want ErrMalformedJSON", err)
	}
	h.release()
	h.sync()
	if st := h.idx.Stats(); st.Entries != 0 {
		t.Errorf("a snapshot that did not decode left %d entries", st.Entries)
	}
}

// TestDivergence: stored events rejected for an unknown parent make the
// index diverging (gauge, figures, one warning) once they reach the share
// and the minimum; the episode ends when the window has moved past them.
func TestDivergence(t *testing.T) {
	h := newWriterHarness(t, testConfig())
	a := indexer.Worker{ID: 1}
	for n := uint64(2); n < 2+DivergenceMinStored-1; n++ {
		h.offerID(chain(a, 0, n), n) // every parent unknown
	}
	h.sync()
	if d := h.w.Divergence(); d.Diverging || d.Stored != DivergenceMinStored-1 {
		t.Fatalf("below the minimum: %+v", d)
	}
	h.offerID(chain(a, 0, 50), 50)
	h.sync()
	d := h.w.Divergence()
	if !d.Diverging || d.UnknownParent != DivergenceMinStored || d.Stored != DivergenceMinStored {
		t.Fatalf("at the minimum, all rejected: %+v", d)
	}
	if g := promtest.ToFloat64(h.em.IndexDiverging); g != 1 {
		t.Errorf("gauge = %v, want 1", g)
	}
	if n := strings.Count(h.log.String(), "kv index diverging"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, h.log.String())
	}
	if s := d.String(); !strings.Contains(s, "20 of 20 stored KV events (100%)") {
		t.Errorf("figures %q", s)
	}

	// The window itself, on its own clock: healthy events dilute the
	// share; time moving past the window ends the episode.
	div := divergence{gauge: h.em.IndexDiverging}
	sec := int64(time.Second)
	if st, changed := div.add(5*sec, 100, 10); !st.Diverging || !changed {
		t.Errorf("10%% of 100: %+v changed %v, want diverging", st, changed)
	}
	if st, changed := div.add(6*sec, 1, 1); !st.Diverging || changed {
		t.Errorf("a second later: %+v changed %v, want still diverging", st, changed)
	}
	if st, changed := div.add(7*sec, 100, 0); st.Diverging || !changed {
		t.Errorf("diluted to 5%%: %+v changed %v, want recovered", st, changed)
	}
	if st, _ := div.add(8*sec, 0, 30); !st.Diverging {
		t.Errorf("41 of 231: %+v, want diverging", st)
	}
	if st, changed := div.evaluate(5*sec + int64(DivergenceWindow) + 3*sec + 1); st.Diverging || !changed || st.Stored != 0 {
		t.Errorf("past the window: %+v changed %v, want empty and recovered", st, changed)
	}
	if g := promtest.ToFloat64(h.em.IndexDiverging); g != 0 {
		t.Errorf("gauge = %v after the recovery, want 0", g)
	}
}
