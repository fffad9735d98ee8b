package indexer

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// step is one write of a parallel test: an event, or a worker's removal.
type step struct {
	ev     Event
	remove bool
}

// steps decodes fuzz bytes into writes as FuzzTree's replay does (stores
// with tokens or by hash on every tier, removals, clears, worker removals),
// over the same small alphabet.
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
		case 0, 1, 5:
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
		case 2, 7:
			n, _ := o.next()
			ev := Event{Worker: w, Kind: KindRemoved, Tier: o.tier(op)}
			for range n%3 + 1 {
				b, _ := o.next()
				ev.Removed = append(ev.Removed, BlockHash(b%8))
			}
			out = append(out, step{ev: ev})
		case 3:
			out = append(out, step{ev: Event{Worker: w, Kind: KindCleared}})
		case 4:
			out = append(out, step{ev: Event{Worker: w}, remove: true})
		case 6:
			n, _ := o.next()
			ev := Event{Worker: w, Kind: KindStored, ByHash: true, Tier: o.tier(op)}
			for range n%3 + 1 {
				b, _ := o.next()
				ev.Blocks = append(ev.Blocks, Block{Hash: BlockHash(b % 8)})
			}
			out = append(out, step{ev: ev})
		}
	}
}

// parallelEqual applies the writes to an Index from one goroutine per
// worker id (so each worker's writes keep their order, as the router's
// event shards keep them), with a goroutine querying beside them, and
// checks every outcome and the final state against a Tree that applied
// the same writes one by one. A rank's blocks depend on its own events
// alone, so the orders of different workers' writes must not matter.
func parallelEqual(t *testing.T, writes []step) {
	t.Helper()
	seq := New(Config{})
	want := make([]Result, len(writes))
	wantDropped := make([]int, len(writes))
	for i, w := range writes {
		if w.remove {
			wantDropped[i] = seq.RemoveWorker(w.ev.Worker.ID)
		} else {
			want[i] = seq.Apply(w.ev)
		}
	}

	x := NewIndex(Config{})
	got := make([]Result, len(writes))
	gotDropped := make([]int, len(writes))
	byID := map[WorkerID][]int{}
	for i, w := range writes {
		byID[w.ev.Worker.ID] = append(byID[w.ev.Worker.ID], i)
	}
	var writers, querier sync.WaitGroup
	stop := make(chan struct{})
	querier.Go(func() {
		dst := make([]Match, 0, 8)
		for q := 0; ; q++ {
			select {
			case <-stop:
				return
			default:
			}
			dst = x.FindMatches([]LocalHash{LocalHash(q % 4), LocalHash(q / 4 % 4)}, false, dst)
			_ = x.Stats()
		}
	})
	for _, idx := range byID {
		writers.Go(func() {
			var one [1]Result
			for _, i := range idx {
				switch {
				case writes[i].remove:
					gotDropped[i] = x.RemoveWorker(writes[i].ev.Worker.ID)
				case i%2 == 0:
					got[i] = x.Apply(writes[i].ev)
				default:
					x.ApplyBatch([]Event{writes[i].ev}, one[:])
					got[i] = one[0]
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	querier.Wait()

	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("outcomes (-sequential +parallel):\n%s", diff)
	}
	if diff := cmp.Diff(wantDropped, gotDropped); diff != "" {
		t.Fatalf("RemoveWorker counts (-sequential +parallel):\n%s", diff)
	}
	if err := x.tree.check(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(canonical(seq), canonical(x.tree)); diff != "" {
		t.Fatalf("state (-sequential +parallel):\n%s", diff)
	}
	if diff := cmp.Diff(seq.Stats(), x.Stats()); diff != "" {
		t.Fatalf("stats (-sequential +parallel):\n%s", diff)
	}
}

// FuzzIndexParallel applies FuzzTree's writes to an Index from several
// goroutines at once and compares with a Tree that applied them in order.
func FuzzIndexParallel(f *testing.F) {
	f.Add([]byte{0, 0, 3, 1, 9, 17, 0, 1, 3, 1, 9, 17, 0, 2, 3, 1, 9, 17, 2, 0, 1, 1, 2, 1, 1, 9, 2, 2, 2, 17, 1})
	f.Add([]byte{0, 0, 2, 8, 16, 0, 64, 0, 1, 24, 2, 0, 0, 1, 5, 0, 3, 0, 8, 16})
	f.Add([]byte{0, 1, 3, 0, 9, 18, 0, 2, 3, 0, 9, 19, 2, 1, 0, 1, 5, 2, 3, 0, 8})
	f.Add([]byte{1, 0, 1, 5, 1, 0, 1, 6, 2, 0, 0, 5, 5, 0, 2, 0, 0, 3, 1, 4, 2})
	f.Add([]byte{16, 0, 2, 1, 10, 0, 0, 2, 1, 10, 8, 0, 1, 5, 2, 0, 0, 1, 5, 0, 2, 0, 1, 18, 0, 0, 1, 5, 0, 2, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		parallelEqual(t, steps(data))
	})
}

// Many random writes of several workers, applied in parallel, end as they
// do applied in order: longer runs than the fuzz seeds, so that the
// goroutines overlap.
func TestIndexParallelWritersMatchTree(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 17))
		data := make([]byte, 6000)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		writes := steps(data)
		for i := range writes {
			if r.IntN(10) > 0 {
				// Mostly device events, the fast paths' shape.
				writes[i].ev.Tier = TierDevice
			}
		}
		parallelEqual(t, writes)
	}
}
