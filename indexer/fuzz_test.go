package indexer

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// ops reads fuzz bytes one at a time (steps).
type ops struct {
	data []byte
}

func (o *ops) next() (byte, bool) {
	if len(o.data) == 0 {
		return 0, false
	}
	b := o.data[0]
	o.data = o.data[1:]
	return b, true
}

func (o *ops) worker(b byte) Worker {
	return Worker{ID: WorkerID(1 + b%3), DPRank: DPRank(b / 3 % 2)}
}

// tier decodes the tier of an operation from its op byte: the device for
// the op bytes below 8 (the seeds of before tiers), one of the tiers
// otherwise, now and then one past them (an invalid event).
func (o *ops) tier(op byte) Tier { return Tier(op / 8 % 5) }

// step is one operation decoded from fuzz bytes: an event, the removal of
// a worker (Event.Worker's id), or a query.
type step struct {
	ev     Event
	remove bool
	query  []LocalHash
	ask    bool // a query, query may be empty
}

// steps decodes fuzz bytes into operations over a small alphabet of
// workers, token hashes and engine hashes, so that collisions, aliases,
// moves and cascades are frequent: stores with tokens or by hash on every
// tier, removals on every tier, clears, worker removals and queries.
func steps(data []byte) []step {
	o := &ops{data: data}
	var out []step
	for {
		op, ok := o.next()
		if !ok {
			return out
		}
		arg, _ := o.next()
		w := o.worker(arg)
		switch op % 8 {
		case 0, 1: // stored
			n, _ := o.next()
			ev := Event{Worker: w, Kind: KindStored, Tier: o.tier(op)}
			if arg&0x40 != 0 {
				p, _ := o.next()
				ev.HasParent, ev.Parent = true, BlockHash(p%8)
			}
			for range n % 4 {
				b, _ := o.next()
				ev.Blocks = append(ev.Blocks, Block{Hash: BlockHash(b % 8), Tokens: LocalHash(b / 8 % 4)})
			}
			out = append(out, step{ev: ev})
		case 2, 7: // removed
			n, _ := o.next()
			ev := Event{Worker: w, Kind: KindRemoved, Tier: o.tier(op)}
			for range n%3 + 1 {
				b, _ := o.next()
				ev.Removed = append(ev.Removed, BlockHash(b%8))
			}
			out = append(out, step{ev: ev})
		case 3: // cleared
			out = append(out, step{ev: Event{Worker: w, Kind: KindCleared}})
		case 4: // remove worker
			out = append(out, step{ev: Event{Worker: w}, remove: true})
		case 6: // stored by hash: a copy on another tier
			n, _ := o.next()
			ev := Event{Worker: w, Kind: KindStored, ByHash: true, Tier: o.tier(op)}
			if arg&0x40 != 0 {
				ev.HasParent, ev.Parent = true, 999 // ignored
			}
			for range n%3 + 1 {
				b, _ := o.next()
				ev.Blocks = append(ev.Blocks, Block{Hash: BlockHash(b % 8), Tokens: LocalHash(b)})
			}
			out = append(out, step{ev: ev})
		case 5: // query
			n, _ := o.next()
			var query []LocalHash
			for range n % 6 {
				b, _ := o.next()
				query = append(query, LocalHash(b%4))
			}
			out = append(out, step{query: query, ask: true})
		}
	}
}

// replay applies the operations to a tree and the model, comparing them after
// every step.
func replay(t *testing.T, data []byte, cfg Config) *Tree {
	t.Helper()
	tr := New(cfg)
	m := newModel()
	for i, st := range steps(data) {
		switch {
		case st.ask:
			got := tr.FindMatches(st.query, false, nil)
			sortMatches(got)
			if len(got) == 0 {
				got = nil
			}
			if diff := cmp.Diff(m.findMatches(st.query), got); diff != "" {
				t.Fatalf("step %d: FindMatches(%v) (-model +tree):\n%s", i, st.query, diff)
			}
		case st.remove:
			id := st.ev.Worker.ID
			if got, want := tr.RemoveWorker(id), m.removeWorker(id); got != want {
				t.Fatalf("step %d: RemoveWorker(%d) = %d, model %d", i, id, got, want)
			}
		default:
			compareApply(t, i, tr, m, st.ev)
		}
		if err := tr.check(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if diff := cmp.Diff(m.ranks, canonical(tr)); diff != "" {
			t.Fatalf("step %d: state (-model +tree):\n%s", i, diff)
		}
		if diff := cmp.Diff(m.stats(), tr.Stats()); diff != "" {
			t.Fatalf("step %d: stats (-model +tree):\n%s", i, diff)
		}
	}
	return tr
}

func compareApply(t *testing.T, step int, tr *Tree, m *model, ev Event) {
	t.Helper()
	if got, want := tr.Apply(ev), m.apply(ev); got != want {
		t.Fatalf("step %d: Apply(%+v) = %+v, model %+v", step, ev, got, want)
	}
}

// FuzzTree compares the tree with the brute-force model on random sequences
// of store (with tokens or by hash, on every tier), remove (on every tier),
// clear, remove-worker and query, and checks that a dump rebuilds the same
// tree, tiers included.
func FuzzTree(f *testing.F) {
	f.Add([]byte{0, 0, 3, 1, 9, 17, 5, 0, 3, 1, 9, 17})
	f.Add([]byte{0, 0, 2, 8, 16, 0, 64, 0, 1, 24, 2, 0, 0, 1, 5, 0, 3, 0, 8, 16})
	f.Add([]byte{0, 1, 3, 0, 9, 18, 0, 2, 3, 0, 9, 19, 2, 1, 0, 1, 5, 2, 3, 0, 8})
	f.Add([]byte{1, 0, 1, 5, 1, 0, 1, 6, 2, 0, 0, 5, 5, 0, 2, 0, 0, 3, 1, 4, 2})
	// Blocks 1, 10, 19 are hashes 1, 2, 3 with tokens 0, 1, 2. Device store
	// of the three; host copy of the first two by hash; device removal of
	// all three; query; host removal of the first (the second goes with
	// it); query.
	f.Add([]byte{0, 0, 3, 1, 10, 19, 14, 0, 1, 1, 10, 2, 0, 2, 1, 10, 19, 5, 0, 3, 0, 1, 2, 10, 0, 0, 1, 5, 0, 3, 0, 1, 2})
	// Disk store of two blocks, the same on the device, an alias of the
	// first on the host (hash 5, tokens 0); removals of hash 1 on the
	// device and the disk, of hash 5 on the host, with queries between.
	f.Add([]byte{16, 0, 2, 1, 10, 0, 0, 2, 1, 10, 8, 0, 1, 5, 2, 0, 0, 1, 5, 0, 2, 0, 1, 18, 0, 0, 1, 5, 0, 2, 0, 1,
		10, 0, 0, 5, 5, 0, 2, 0, 1})
	// External store for worker 2, a host copy of two blocks by hash,
	// query, cleared, store again, an invalid tier, remove worker, query.
	f.Add([]byte{24, 1, 3, 1, 10, 19, 14, 1, 1, 1, 10, 5, 1, 3, 0, 1, 2, 3, 1, 5, 1, 3, 0, 1, 2, 24, 1, 3, 1, 10, 19,
		32, 1, 1, 1, 4, 1, 5, 1, 3, 0, 1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		tr := replay(t, data, Config{})
		dumpEqual(t, tr)
	})
}

// dumpEqual replays tr's dump into a new tree and compares the two.
func dumpEqual(t *testing.T, tr *Tree) {
	t.Helper()
	re := New(Config{})
	for i, ev := range tr.Dump() {
		if r := re.Apply(ev); r.Status != StatusOK {
			t.Fatalf("dump event %d %+v: %v", i, ev, r.Status)
		}
	}
	want := canonical(tr)
	// A rank that holds nothing is known to tr but not in the dump.
	for w, hs := range want {
		if len(hs) == 0 {
			delete(want, w)
		}
	}
	if diff := cmp.Diff(want, canonical(re)); diff != "" {
		t.Fatalf("replayed dump differs (-original +replayed):\n%s", diff)
	}
	if err := re.check(); err != nil {
		t.Fatal(err)
	}
}
