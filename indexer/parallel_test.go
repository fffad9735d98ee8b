package indexer

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// parallelEqual applies the writes ws to an Index from one goroutine per
// worker id (so each worker's writes keep their order, as the router's
// event shards keep them), with a goroutine querying beside them, and
// checks every outcome and the final state against a Tree that applied
// the same writes one by one. A rank's blocks depend on its own events
// alone, so the orders of different workers' writes must not matter.
func parallelEqual(t *testing.T, ws []step) {
	t.Helper()
	seq := New(Config{})
	want := make([]Result, len(ws))
	wantDropped := make([]int, len(ws))
	for i, w := range ws {
		if w.remove {
			wantDropped[i] = seq.RemoveWorker(w.ev.Worker.ID)
		} else {
			want[i] = seq.Apply(w.ev)
		}
	}

	x := NewIndex(Config{})
	got := make([]Result, len(ws))
	gotDropped := make([]int, len(ws))
	byID := map[WorkerID][]int{}
	for i, w := range ws {
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
				case ws[i].remove:
					gotDropped[i] = x.RemoveWorker(ws[i].ev.Worker.ID)
				case i%2 == 0:
					got[i] = x.Apply(ws[i].ev)
				default:
					x.ApplyBatch([]Event{ws[i].ev}, one[:])
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

// writes keeps the steps that change the index.
func writes(all []step) []step {
	out := all[:0]
	for _, st := range all {
		if !st.ask {
			out = append(out, st)
		}
	}
	return out
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
		parallelEqual(t, writes(steps(data)))
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
		ws := writes(steps(data))
		for i := range ws {
			if r.IntN(10) > 0 {
				// Mostly device events, the fast paths' shape.
				ws[i].ev.Tier = TierDevice
			}
		}
		parallelEqual(t, ws)
	}
}
