package indexer

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// on returns ev about tier tr.
func on(tr Tier, ev Event) Event { ev.Tier = tr; return ev }

// copied is an offload connector's stored event by hash: a copy on tier tr of
// blocks w holds.
func copied(w Worker, tr Tier, hs ...BlockHash) Event {
	ev := Event{Worker: w, Kind: KindStored, ByHash: true, Tier: tr}
	for _, h := range hs {
		ev.Blocks = append(ev.Blocks, Block{Hash: h})
	}
	return ev
}

// TestTiers works through the tier semantics by hand: each case says what
// the rank holds where, and what a query of blocks 1..4 scores. blk(n) has
// engine hash 100+n.
func TestTiers(t *testing.T) {
	tests := []struct {
		name        string
		events      []Event
		wantResults []Result // nil: all ok
		removeID    WorkerID
		earlyExit   bool
		want        []Match
		wantStats   Stats
	}{
		{
			name:      "a device store matches on the device",
			events:    []Event{stored(w1, nil, blk(1), blk(2), blk(3))},
			want:      matches(Match{Worker: w1, Blocks: 3}),
			wantStats: Stats{Entries: 3, Nodes: 3, Workers: 1},
		},
		{
			name: "a host copy by hash adds no entry, and the device copy stays the fastest",
			events: []Event{
				stored(w1, nil, blk(1), blk(2), blk(3)),
				copied(w1, TierHost, 101, 102, 103),
			},
			want:      matches(Match{Worker: w1, Blocks: 3}),
			wantStats: Stats{Entries: 3, Nodes: 3, Workers: 1},
		},
		{
			name: "evicting the device copy keeps the block on the host",
			events: []Event{
				stored(w1, nil, blk(1), blk(2), blk(3)),
				copied(w1, TierHost, 101, 102),
				removed(w1, 101, 102, 103),
			},
			// 103 had no host copy: it goes. 101 and 102 stay, on the host.
			want:      matches(Match{Worker: w1, Blocks: 2, TierBlocks: TierBlocks{Host: 2}}),
			wantStats: Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name: "removing the host copy last drops the block, and the blocks below it",
			events: []Event{
				stored(w1, nil, blk(1), blk(2), blk(3)),
				copied(w1, TierHost, 101, 102, 103),
				removed(w1, 101, 102, 103),
				on(TierHost, removed(w1, 101)),
			},
			want:      nil,
			wantStats: Stats{Entries: 0, Nodes: 0, Workers: 1},
		},
		{
			name: "a host removal while the device holds the block keeps it on the device",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				copied(w1, TierHost, 101, 102),
				on(TierHost, removed(w1, 101, 102)),
				removed(w1, 102),
			},
			want:      matches(Match{Worker: w1, Blocks: 1}),
			wantStats: Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
		{
			name: "each matched block counts on its fastest tier",
			events: []Event{
				on(TierExternal, stored(w1, nil, blk(1), blk(2), blk(3), blk(4))),
				copied(w1, TierDisk, 101, 102, 103),
				copied(w1, TierHost, 101, 102),
				copied(w1, TierDevice, 101),
			},
			// 1: device; 2: host; 3: disk; 4: external.
			want:      matches(Match{Worker: w1, Blocks: 4, TierBlocks: TierBlocks{Host: 1, Disk: 1, External: 1}}),
			wantStats: Stats{Entries: 4, Nodes: 4, Workers: 1},
		},
		{
			name: "a stored event on another tier with tokens adds that tier to the blocks held, and holds the new ones there alone",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				on(TierHost, stored(w1, nil, blk(1), blk(2), blk(3))),
				removed(w1, 101, 102),
			},
			want:      matches(Match{Worker: w1, Blocks: 3, TierBlocks: TierBlocks{Host: 3}}),
			wantStats: Stats{Entries: 3, Nodes: 3, Workers: 1},
		},
		{
			name: "a device store under a parent held on the host alone",
			events: []Event{
				on(TierHost, stored(w1, nil, blk(1))),
				stored(w1, parent(101), blk(2)),
			},
			want:      matches(Match{Worker: w1, Blocks: 2, TierBlocks: TierBlocks{Host: 1}}),
			wantStats: Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name: "copies by hash skip and count the hashes the rank does not hold",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				copied(w1, TierHost, 101, 555, 102, 666),
				removed(w1, 101, 102),
			},
			wantResults: []Result{{}, {Status: StatusBlockNotFound, Missing: 2}, {}},
			want:        matches(Match{Worker: w1, Blocks: 2, TierBlocks: TierBlocks{Host: 2}}),
			wantStats:   Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name:        "copies by hash for an unknown rank miss every hash and make no rank",
			events:      []Event{copied(w2, TierHost, 101, 102)},
			wantResults: []Result{{Status: StatusBlockNotFound, Missing: 2}},
			wantStats:   Stats{},
		},
		{
			name: "a copy by hash ignores tokens and parent",
			events: []Event{
				stored(w1, nil, blk(1)),
				{Worker: w1, Kind: KindStored, ByHash: true, Tier: TierDisk, HasParent: true, Parent: 999,
					Blocks: []Block{{Hash: 101, Tokens: 77}}},
				removed(w1, 101),
			},
			want:      matches(Match{Worker: w1, Blocks: 1, TierBlocks: TierBlocks{Disk: 1}}),
			wantStats: Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
		{
			name: "a removal on a tier that does not hold the block is missing and changes nothing",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				on(TierDisk, removed(w1, 101, 102, 999)),
			},
			wantResults: []Result{{}, {Status: StatusBlockNotFound, Missing: 3}},
			want:        matches(Match{Worker: w1, Blocks: 2}),
			wantStats:   Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name: "a removal on one tier of a slot with copies elsewhere counts the hashes not on it",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				copied(w1, TierHost, 101),
				on(TierHost, removed(w1, 101, 102)),
			},
			wantResults: []Result{{}, {}, {Status: StatusBlockNotFound, Missing: 1}},
			want:        matches(Match{Worker: w1, Blocks: 2}),
			wantStats:   Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name: "a block cascaded away earlier in the event is not missing on any tier",
			events: []Event{
				on(TierHost, stored(w1, nil, blk(1), blk(2))),
				on(TierHost, removed(w1, 101, 102)),
			},
			want:      nil,
			wantStats: Stats{Entries: 0, Nodes: 0, Workers: 1},
		},
		{
			name: "a hash stored at a new place moves there with the event's tier alone",
			events: []Event{
				stored(w1, nil, Block{50, 1}, Block{51, 2}),
				copied(w1, TierHost, 50, 51),
				on(TierDisk, stored(w1, nil, Block{51, 3})),
				removed(w1, 50),
			},
			// 50 stays on the host; 51 left its block 2 (the host copy
			// with it) for a block 3 held on disk only.
			want:      matches(Match{Worker: w1, Blocks: 1, TierBlocks: TierBlocks{Host: 1}}),
			wantStats: Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name: "aliases keep their own tiers: a device removal of one leaves the other's device copy",
			events: []Event{
				stored(w1, nil, Block{50, 1}),
				stored(w1, nil, Block{60, 1}),
				copied(w1, TierHost, 50),
				removed(w1, 50),
			},
			want:      matches(Match{Worker: w1, Blocks: 1}),
			wantStats: Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
		{
			name: "aliases: the block is on the host once its last device alias goes",
			events: []Event{
				stored(w1, nil, Block{50, 1}),
				stored(w1, nil, Block{60, 1}),
				copied(w1, TierHost, 50),
				removed(w1, 50, 60),
			},
			want:      matches(Match{Worker: w1, Blocks: 1, TierBlocks: TierBlocks{Host: 1}}),
			wantStats: Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
		{
			name: "cleared drops every tier",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				copied(w1, TierHost, 101, 102),
				on(TierDisk, stored(w1, nil, blk(3))),
				cleared(w1),
				copied(w1, TierHost, 101),
			},
			wantResults: []Result{{}, {}, {}, {}, {Status: StatusBlockNotFound, Missing: 1}},
			want:        nil,
			wantStats:   Stats{Entries: 0, Nodes: 0, Workers: 1},
		},
		{
			name: "remove worker drops every tier of every rank",
			events: []Event{
				on(TierHost, stored(w1, nil, blk(1), blk(2))),
				on(TierDisk, stored(w1b, nil, blk(1))),
				stored(w2, nil, blk(1)),
			},
			removeID:  1,
			want:      matches(Match{Worker: w2, Blocks: 1}),
			wantStats: Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
		{
			name: "ranks with and without other tiers share nodes",
			events: []Event{
				stored(w1, nil, blk(1), blk(2), blk(3)),
				on(TierHost, stored(w2, nil, blk(1), blk(2))),
				copied(w2, TierDevice, 101),
			},
			want:      matches(Match{Worker: w1, Blocks: 3}, Match{Worker: w2, Blocks: 2, TierBlocks: TierBlocks{Host: 1}}),
			wantStats: Stats{Entries: 5, Nodes: 3, Workers: 2},
		},
		{
			name: "early exit counts the tiers of the blocks it reached",
			events: []Event{
				on(TierHost, stored(w1, nil, blk(1), blk(2), blk(3))),
				stored(w2, nil, blk(1)),
			},
			earlyExit: true,
			want:      matches(Match{Worker: w1, Blocks: 2, TierBlocks: TierBlocks{Host: 2}}, Match{Worker: w2, Blocks: 1}),
			wantStats: Stats{Entries: 4, Nodes: 3, Workers: 2},
		},
		{
			name: "an event about a tier past the last is invalid and changes nothing",
			events: []Event{
				stored(w1, nil, blk(1)),
				on(NumTiers, stored(w1, nil, blk(1), blk(2))),
				on(NumTiers, removed(w1, 101)),
				copied(w1, NumTiers, 101),
			},
			wantResults: []Result{{}, {Status: StatusInvalidBlock}, {Status: StatusInvalidBlock}, {Status: StatusInvalidBlock}},
			want:        matches(Match{Worker: w1, Blocks: 1}),
			wantStats:   Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, m := New(Config{}), newModel()
			applyChecked(t, tr, m, tc.events, tc.wantResults, tc.removeID)
			query := q(1, 2, 3, 4)
			got := tr.FindMatches(query, tc.earlyExit, nil)
			sortMatches(got)
			if len(got) == 0 {
				got = nil
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("FindMatches (-want +got):\n%s", diff)
			}
			if !tc.earlyExit {
				if diff := cmp.Diff(m.findMatches(query), got); diff != "" {
					t.Errorf("FindMatches against the model (-model +tree):\n%s", diff)
				}
			}
			if diff := cmp.Diff(tc.wantStats, tr.Stats()); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(m.ranks, canonical(tr)); diff != "" {
				t.Errorf("state against the model (-model +tree):\n%s", diff)
			}
			dumpEqual(t, tr)
		})
	}
}

// A rank that had a copy on another tier and lost it is device-only again:
// it takes the device-only paths, with nothing recorded.
func TestTiersTrimBackToDeviceOnly(t *testing.T) {
	tr := New(Config{})
	tr.Apply(stored(w1, nil, blk(1), blk(2)))
	tr.Apply(copied(w1, TierHost, 101, 102))
	if tr.rankMap()[w1].sl.tiers == nil {
		t.Fatal("no tiers recorded after a host copy")
	}
	tr.Apply(on(TierHost, removed(w1, 101, 102)))
	if ts := tr.rankMap()[w1].sl.tiers; ts != nil {
		t.Fatalf("tiers still recorded after the host copies went: %+v", ts)
	}
	// The same after the cap evicts the host-only blocks, the oldest.
	tr = New(Config{MaxEntries: 3, EvictTo: 0.67})
	tr.Apply(on(TierHost, stored(w1, nil, blk(1), blk(2))))
	tr.Apply(stored(w1, nil, blk(7), blk(8)))
	if err := tr.check(); err != nil {
		t.Fatal(err)
	}
	if got := tr.FindMatches(q(1, 2), false, nil); len(got) != 0 {
		t.Fatalf("host blocks after eviction: %v, want evicted", got)
	}
	if got := tr.FindMatches(q(7, 8), false, nil); len(got) != 1 || got[0] != (Match{Worker: w1, Blocks: 2}) {
		t.Fatalf("device blocks after eviction: %v, want both kept", got)
	}
	if ts := tr.rankMap()[w1].sl.tiers; ts != nil {
		t.Fatalf("tiers still recorded after eviction took every host block: %+v", ts)
	}
}

// The dump writes each hash on its fastest tier, then once per other tier.
func TestDumpTiers(t *testing.T) {
	tr := New(Config{})
	tr.Apply(on(TierDisk, stored(w1, nil, blk(1))))
	tr.Apply(copied(w1, TierHost, 101))
	tr.Apply(copied(w1, TierExternal, 101))
	tr.Apply(stored(w1, parent(101), blk(2)))
	want := []Event{
		on(TierHost, stored(w1, nil, blk(1))),
		on(TierDisk, stored(w1, nil, blk(1))),
		on(TierExternal, stored(w1, nil, blk(1))),
		stored(w1, parent(101), blk(2)),
	}
	dump := tr.Dump()
	if diff := cmp.Diff(want, dump); diff != "" {
		t.Fatalf("Dump (-want +got):\n%s", diff)
	}
	dump[0].Blocks[0].Hash = 7
	if dump[1].Blocks[0].Hash != 101 || dump[2].Blocks[0].Hash != 101 {
		t.Fatal("the events of one block on several tiers share their blocks")
	}
}

// find_matches allocates nothing when ranks hold blocks on other tiers either.
func TestFindMatchesTieredAllocatesNothing(t *testing.T) {
	tr := New(Config{})
	for id := range 64 {
		w := Worker{ID: WorkerID(id + 1)}
		ev := chain(w, 1, 32-id%16)
		tr.Apply(ev)
		hs := make([]BlockHash, 0, len(ev.Blocks))
		for _, b := range ev.Blocks {
			hs = append(hs, b.Hash)
		}
		tr.Apply(copied(w, TierHost, hs...))
		tr.Apply(removed(w, hs[len(hs)/2:]...))
	}
	dst := make([]Match, 0, 64)
	query := path(1, 32)
	allocs := testing.AllocsPerRun(100, func() { dst = tr.FindMatches(query, false, dst) })
	if allocs != 0 {
		t.Fatalf("FindMatches allocated %v times per call, want 0", allocs)
	}
	for _, m := range dst {
		if m.Host == 0 || m.Host > m.Blocks {
			t.Fatalf("match %+v: want some, not all, blocks on the host", m)
		}
	}
}
