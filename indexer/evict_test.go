package indexer

import (
	"testing"
)

// chain stores a path of n blocks for w whose tokens start at base.
func chain(w Worker, base LocalHash, n int) Event {
	ev := Event{Worker: w, Kind: KindStored}
	for i := range n {
		tok := base + LocalHash(i)
		ev.Blocks = append(ev.Blocks, Block{Hash: BlockHash(uint64(w.ID)<<32 | uint64(tok)), Tokens: tok})
	}
	return ev
}

func path(base LocalHash, n int) []LocalHash {
	out := make([]LocalHash, n)
	for i := range out {
		out[i] = base + LocalHash(i)
	}
	return out
}

func TestEvictionKeepsRecentlyMatchedPrefixes(t *testing.T) {
	tr := New(Config{MaxEntries: 100, EvictTo: 0.5})
	// A hot prefix, matched all along, and cold prompts that churn.
	tr.Apply(chain(w1, 1_000, 20))
	evicted := 0
	for i := range 50 {
		tr.FindMatches(path(1_000, 20), false, nil)
		r := tr.Apply(chain(w2, LocalHash(10_000*(i+1)), 10))
		if r.Status != StatusOK {
			t.Fatalf("store %d: %v", i, r.Status)
		}
		evicted += r.Evicted
		if got := tr.Stats().Entries; got > 100 {
			t.Fatalf("after store %d: %d entries over the cap of 100", i, got)
		}
		if err := tr.check(); err != nil {
			t.Fatalf("after store %d: %v", i, err)
		}
	}
	got := tr.FindMatches(path(1_000, 20), false, nil)
	if len(got) != 1 || got[0] != (Match{Worker: w1, Blocks: 20}) {
		t.Fatalf("hot prefix after churn: %v, want w1 holding all 20 blocks", got)
	}
	st := tr.Stats()
	if evicted == 0 || st.Evicted != uint64(evicted) {
		t.Fatalf("evicted %d by results, %d by stats; want equal and positive", evicted, st.Evicted)
	}
	// 20 hot + 50×10 cold stored, the rest evicted.
	if want := 20 + 500 - evicted; st.Entries != want {
		t.Fatalf("entries %d, want %d", st.Entries, want)
	}
	// The newest cold prompt survives whole: eviction took the oldest.
	if got := tr.FindMatches(path(500_000, 10), false, nil); len(got) != 1 || got[0].Blocks != 10 {
		t.Fatalf("newest prompt after churn: %v", got)
	}
	// The oldest cold prompt is gone.
	if got := tr.FindMatches(path(10_000, 10), false, nil); len(got) != 0 {
		t.Fatalf("oldest prompt after churn: %v, want evicted", got)
	}
}

// Eviction takes the tails of a shared prefix before the prefix itself.
func TestEvictionTakesLeavesFirst(t *testing.T) {
	// Stamps are per applied event: a query stamps with the clock of the
	// last event, so the cap leaves room for the newest two prompts.
	tr := New(Config{MaxEntries: 30, EvictTo: 0.7})
	tr.Apply(chain(w1, 1, 10))
	tr.Apply(Event{Worker: w1, Kind: KindStored, HasParent: true, Parent: BlockHash(1<<32 | 10),
		Blocks: []Block{{Hash: 7_000, Tokens: 7_000}}})
	for i := range 5 {
		base := LocalHash(100 * (i + 1))
		tr.FindMatches(path(1, 10), false, nil) // keep the prefix warm
		tr.Apply(chain(w2, base, 5))
	}
	if err := tr.check(); err != nil {
		t.Fatal(err)
	}
	if got := tr.FindMatches(path(1, 10), false, nil); len(got) != 1 || got[0].Blocks != 10 {
		t.Fatalf("warm prefix: %v, want all 10 blocks kept", got)
	}
	if got := tr.FindMatches(append(path(1, 10), 7_000), false, nil); len(got) != 1 || got[0].Blocks != 10 {
		t.Fatalf("cold tail of the warm prefix: %v, want evicted (10 blocks matched)", got)
	}
	if tr.Stats().Evicted == 0 {
		t.Fatal("nothing evicted")
	}
}

func TestNoCapNeverEvicts(t *testing.T) {
	tr := New(Config{})
	for i := range 100 {
		if r := tr.Apply(chain(w1, LocalHash(1000*i), 50)); r.Evicted != 0 {
			t.Fatalf("evicted %d with no cap", r.Evicted)
		}
	}
	if got := tr.Stats().Entries; got != 5000 {
		t.Fatalf("entries %d, want 5000", got)
	}
}

// The clock wrapping must not make old nodes look young.
func TestEvictionAcrossClockWrap(t *testing.T) {
	tr := New(Config{MaxEntries: 20, EvictTo: 0.5})
	tr.clock = ^uint32(0) - 5
	tr.Apply(chain(w1, 1, 10)) // old
	for range 10 {
		tr.Apply(cleared(w2)) // let the clock wrap past zero
	}
	tr.Apply(chain(w2, 100, 10)) // new; entries 20
	tr.Apply(chain(w2, 200, 5))  // over the cap: the old path must go
	if err := tr.check(); err != nil {
		t.Fatal(err)
	}
	if got := tr.FindMatches(path(1, 10), false, nil); len(got) != 0 {
		t.Fatalf("old path after wrap: %v, want evicted", got)
	}
	if got := tr.FindMatches(path(200, 5), false, nil); len(got) != 1 {
		t.Fatalf("new path after wrap: %v, want kept", got)
	}
}

func TestRebaseClampsAges(t *testing.T) {
	tr := New(Config{})
	tr.Apply(chain(w1, 1, 3))
	tr.clock += maxAge + 100
	tr.rebase()
	for i := 1; i < len(tr.nodes); i++ {
		if age := tr.clock - tr.nodes[i].stamp; age > maxAge {
			t.Fatalf("node %d age %d after rebase, want ≤ %d", i, age, maxAge)
		}
	}
}
