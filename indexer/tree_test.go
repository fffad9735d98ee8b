package indexer

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	w1  = Worker{ID: 1}
	w2  = Worker{ID: 2}
	w1b = Worker{ID: 1, DPRank: 1}
)

func stored(w Worker, parent *BlockHash, blocks ...Block) Event {
	ev := Event{Worker: w, Kind: KindStored, Blocks: blocks}
	if parent != nil {
		ev.HasParent, ev.Parent = true, *parent
	}
	return ev
}

func removed(w Worker, hs ...BlockHash) Event {
	return Event{Worker: w, Kind: KindRemoved, Removed: hs}
}

func cleared(w Worker) Event { return Event{Worker: w, Kind: KindCleared} }

func parent(h BlockHash) *BlockHash { return &h }

// blk makes a block whose engine hash is 100+tokens, a common convention in
// these tests.
func blk(tokens LocalHash) Block { return Block{Hash: BlockHash(100 + tokens), Tokens: tokens} }

func q(hs ...LocalHash) []LocalHash { return hs }

func matches(ms ...Match) []Match { sortMatches(ms); return ms }

func TestSemantics(t *testing.T) {
	tests := []struct {
		name        string
		events      []Event
		wantResults []Result // nil: all ok
		removeID    WorkerID // applied after the events when non-zero
		query       []LocalHash
		earlyExit   bool
		want        []Match
		wantStats   Stats
	}{
		{
			name:      "store from the root and match the prefix",
			events:    []Event{stored(w1, nil, blk(1), blk(2), blk(3))},
			query:     q(1, 2, 3, 4),
			want:      matches(Match{Worker: w1, Blocks: 3}),
			wantStats: Stats{Entries: 3, Nodes: 3, Workers: 1},
		},
		{
			name:      "query diverging at the first block matches nothing",
			events:    []Event{stored(w1, nil, blk(1), blk(2))},
			query:     q(9, 1, 2),
			want:      nil,
			wantStats: Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name:      "store under a parent extends the path",
			events:    []Event{stored(w1, nil, blk(1)), stored(w1, parent(101), blk(2))},
			query:     q(1, 2),
			want:      matches(Match{Worker: w1, Blocks: 2}),
			wantStats: Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name:        "unknown parent rejects the whole event",
			events:      []Event{stored(w1, nil, blk(1)), stored(w1, parent(999), blk(2), blk(3))},
			wantResults: []Result{{}, {Status: StatusParentNotFound}},
			query:       q(1, 2),
			want:        matches(Match{Worker: w1, Blocks: 1}),
			wantStats:   Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
		{
			name:        "parent held by another worker is unknown to this one",
			events:      []Event{stored(w1, nil, blk(1)), stored(w2, parent(101), blk(2))},
			wantResults: []Result{{}, {Status: StatusParentNotFound}},
			query:       q(1, 2),
			want:        matches(Match{Worker: w1, Blocks: 1}),
			wantStats:   Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
		{
			name:      "repeated store is harmless",
			events:    []Event{stored(w1, nil, blk(1), blk(2)), stored(w1, nil, blk(1), blk(2))},
			query:     q(1, 2),
			want:      matches(Match{Worker: w1, Blocks: 2}),
			wantStats: Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name:        "a block that is its own parent is invalid",
			events:      []Event{stored(w1, nil, blk(1)), stored(w1, parent(101), blk(1))},
			wantResults: []Result{{}, {Status: StatusInvalidBlock}},
			query:       q(1, 1),
			want:        matches(Match{Worker: w1, Blocks: 1}),
			wantStats:   Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
		{
			name: "a block naming its own ancestor is invalid",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				stored(w1, parent(102), Block{Hash: 101, Tokens: 3}),
			},
			wantResults: []Result{{}, {Status: StatusInvalidBlock}},
			query:       q(1, 2, 3),
			want:        matches(Match{Worker: w1, Blocks: 2}),
			wantStats:   Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name:        "a hash repeated inside one event is invalid",
			events:      []Event{stored(w1, nil, Block{7, 1}, Block{7, 2})},
			wantResults: []Result{{Status: StatusInvalidBlock}},
			query:       q(1, 2),
			want:        nil,
			wantStats:   Stats{},
		},
		{
			name: "two workers share a prefix and diverge",
			events: []Event{
				stored(w1, nil, blk(1), blk(2), blk(3)),
				stored(w2, nil, blk(1), blk(2), blk(4)),
			},
			query:     q(1, 2, 3),
			want:      matches(Match{Worker: w1, Blocks: 3}, Match{Worker: w2, Blocks: 2}),
			wantStats: Stats{Entries: 6, Nodes: 4, Workers: 2},
		},
		{
			name: "early exit stops once one worker is left",
			events: []Event{
				stored(w1, nil, blk(1), blk(2), blk(3)),
				stored(w2, nil, blk(1)),
			},
			query:     q(1, 2, 3),
			earlyExit: true,
			want:      matches(Match{Worker: w1, Blocks: 2}, Match{Worker: w2, Blocks: 1}),
			wantStats: Stats{Entries: 4, Nodes: 3, Workers: 2},
		},
		{
			name: "dp ranks of one worker score apart",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				stored(w1b, nil, blk(1)),
			},
			query:     q(1, 2),
			want:      matches(Match{Worker: w1, Blocks: 2}, Match{Worker: w1b, Blocks: 1}),
			wantStats: Stats{Entries: 3, Nodes: 2, Workers: 2},
		},
		{
			name: "remove a leaf",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				removed(w1, 102),
			},
			query:     q(1, 2),
			want:      matches(Match{Worker: w1, Blocks: 1}),
			wantStats: Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
		{
			name: "remove counts missing blocks and applies the rest",
			events: []Event{
				stored(w1, nil, blk(1), blk(2), blk(3)),
				removed(w1, 555, 103, 666),
			},
			wantResults: []Result{{}, {Status: StatusBlockNotFound, Missing: 2}},
			query:       q(1, 2, 3),
			want:        matches(Match{Worker: w1, Blocks: 2}),
			wantStats:   Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name:        "remove for an unknown worker misses every block",
			events:      []Event{removed(w2, 1, 2)},
			wantResults: []Result{{Status: StatusBlockNotFound, Missing: 2}},
			wantStats:   Stats{},
		},
		{
			name: "removing an inner block drops the worker's blocks below it",
			events: []Event{
				stored(w1, nil, blk(1), blk(2), blk(3)),
				stored(w2, nil, blk(1), blk(2), blk(3)),
				removed(w1, 102),
			},
			query:     q(1, 2, 3),
			want:      matches(Match{Worker: w1, Blocks: 1}, Match{Worker: w2, Blocks: 3}),
			wantStats: Stats{Entries: 4, Nodes: 3, Workers: 2},
		},
		{
			name: "removing a parent before its children in one event is ok",
			events: []Event{
				stored(w1, nil, blk(1), blk(2), blk(3)),
				removed(w1, 101, 102, 103),
			},
			wantResults: []Result{{}, {}},
			query:       q(1, 2, 3),
			want:        nil,
			wantStats:   Stats{Entries: 0, Nodes: 0, Workers: 1},
		},
		{
			name: "a child removed in a later event than its parent is missing",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				removed(w1, 101),
				removed(w1, 102),
			},
			wantResults: []Result{{}, {}, {Status: StatusBlockNotFound, Missing: 1}},
			query:       q(1, 2),
			want:        nil,
			wantStats:   Stats{Entries: 0, Nodes: 0, Workers: 1},
		},
		{
			name: "a node left with no worker goes with its subtree",
			events: []Event{
				stored(w1, nil, blk(1), blk(2), blk(3)),
				removed(w1, 101),
			},
			query:     q(1, 2, 3),
			want:      nil,
			wantStats: Stats{Entries: 0, Nodes: 0, Workers: 1},
		},
		{
			name: "cleared drops one rank only",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				stored(w1b, nil, blk(1), blk(2)),
				stored(w2, nil, blk(1)),
				cleared(w1),
			},
			query:     q(1, 2),
			want:      matches(Match{Worker: w1b, Blocks: 2}, Match{Worker: w2, Blocks: 1}),
			wantStats: Stats{Entries: 3, Nodes: 2, Workers: 3},
		},
		{
			name: "store after clear starts from nothing",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				cleared(w1),
				stored(w1, parent(101), blk(3)),
			},
			wantResults: []Result{{}, {}, {Status: StatusParentNotFound}},
			query:       q(1, 2),
			want:        nil,
			wantStats:   Stats{Entries: 0, Nodes: 0, Workers: 1},
		},
		{
			name: "remove worker drops every rank",
			events: []Event{
				stored(w1, nil, blk(1), blk(2)),
				stored(w1b, nil, blk(1)),
				stored(w2, nil, blk(1)),
			},
			removeID:  1,
			query:     q(1, 2),
			want:      matches(Match{Worker: w2, Blocks: 1}),
			wantStats: Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
		{
			name: "a hash stored at a new place moves there",
			events: []Event{
				stored(w1, nil, Block{50, 1}, Block{51, 2}),
				stored(w1, nil, Block{51, 3}),
			},
			query:     q(1, 2),
			want:      matches(Match{Worker: w1, Blocks: 1}),
			wantStats: Stats{Entries: 2, Nodes: 2, Workers: 1},
		},
		{
			name: "a block held under two hashes stays until both are removed",
			events: []Event{
				stored(w1, nil, Block{50, 1}),
				stored(w1, nil, Block{60, 1}),
				removed(w1, 50),
			},
			query:     q(1),
			want:      matches(Match{Worker: w1, Blocks: 1}),
			wantStats: Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
		{
			name:        "unknown event kind is invalid",
			events:      []Event{{Worker: w1, Kind: 9}},
			wantResults: []Result{{Status: StatusInvalidBlock}},
			wantStats:   Stats{},
		},
		{
			name:      "negative i64 hashes are just u64 bits",
			events:    []Event{stored(w1, nil, Block{Hash: 1 << 63, Tokens: 1<<63 + 5})},
			query:     q(1<<63 + 5),
			want:      matches(Match{Worker: w1, Blocks: 1}),
			wantStats: Stats{Entries: 1, Nodes: 1, Workers: 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, m := New(Config{}), newModel()
			applyChecked(t, tr, m, tc.events, tc.wantResults, tc.removeID)
			got := tr.FindMatches(tc.query, tc.earlyExit, nil)
			sortMatches(got)
			if len(got) == 0 {
				got = nil
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("FindMatches (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantStats, tr.Stats()); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(m.stats(), tr.Stats()); diff != "" {
				t.Errorf("Stats against the model (-model +tree):\n%s", diff)
			}
		})
	}
}

func TestSizes(t *testing.T) {
	tr := New(Config{})
	tr.Apply(stored(w1, nil, blk(1), blk(2), blk(3)))
	tr.Apply(stored(w2, nil, blk(1)))
	for _, tc := range []struct {
		w    Worker
		want int
	}{{w1, 3}, {w2, 1}, {w1b, 0}} {
		if got := tr.Size(tc.w); got != tc.want {
			t.Errorf("Size(%v) = %d, want %d", tc.w, got, tc.want)
		}
	}
}

func TestStatusNames(t *testing.T) {
	for s, want := range map[Status]string{
		StatusOK: "ok", StatusParentNotFound: "parent_block_not_found",
		StatusBlockNotFound: "block_not_found", StatusInvalidBlock: "invalid_block",
	} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
	for k, want := range map[Kind]string{KindStored: "stored", KindRemoved: "removed", KindCleared: "cleared"} {
		if k.String() != want {
			t.Errorf("%d.String() = %q, want %q", k, k.String(), want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		fail bool
	}{
		{Config{}, false},
		{Config{MaxEntries: 10, EvictTo: 0.5}, false},
		{Config{MaxEntries: -1}, true},
		{Config{EvictTo: 1}, true},
		{Config{EvictTo: -0.1}, true},
	} {
		if err := tc.cfg.Validate(); (err != nil) != tc.fail {
			t.Errorf("Validate(%+v) = %v, want failure %v", tc.cfg, err, tc.fail)
		}
	}
}

// applyChecked applies events to the tree and to the model, checking each
// result against want (nil: every one OK) and the model's, and the tree's
// invariants after each; then, unless removeID is 0, RemoveWorker alike.
func applyChecked(t *testing.T, tr *Tree, m *model, events []Event, want []Result, removeID WorkerID) {
	t.Helper()
	for i, ev := range events {
		got := tr.Apply(ev)
		w := Result{}
		if want != nil {
			w = want[i]
		}
		if got != w {
			t.Errorf("event %d: result %+v, want %+v", i, got, w)
		}
		if mr := m.apply(ev); mr != got {
			t.Errorf("event %d: model result %+v, tree %+v", i, mr, got)
		}
		if err := tr.check(); err != nil {
			t.Fatalf("after event %d: %v", i, err)
		}
	}
	if removeID != 0 {
		if got, w := tr.RemoveWorker(removeID), m.removeWorker(removeID); got != w {
			t.Errorf("RemoveWorker = %d, model %d", got, w)
		}
		if err := tr.check(); err != nil {
			t.Fatal(err)
		}
	}
}
