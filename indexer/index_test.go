package indexer

import (
	"math/rand/v2"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Queries run on many goroutines while one goroutine applies events. Under
// -race this checks the locking; the assertions check that a reader only
// ever sees whole events: every prompt is stored in one event, so a worker
// matches all of it or none of it.
func TestIndexConcurrentQueriesSeeWholeEvents(t *testing.T) {
	const prompts, blocks = 200, 16
	x := NewIndex(Config{})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 8)
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			dst := make([]Match, 0, 8)
			for {
				select {
				case <-stop:
					return
				default:
				}
				p := r.IntN(prompts)
				dst = x.FindMatches(path(LocalHash(p*1000), blocks), false, dst)
				for _, m := range dst {
					if m.Blocks != blocks {
						select {
						case errs <- "saw a partial prompt":
						default:
						}
					}
				}
				_ = x.Stats()
			}
		})
	}
	workers := []Worker{w1, w2, w1b}
	for i := range prompts * 3 {
		w := workers[i%3]
		p := (i * 7) % prompts
		x.Apply(chain(w, LocalHash(p*1000), blocks))
		if i%5 == 0 {
			x.Apply(Event{Worker: w, Kind: KindRemoved, Removed: []BlockHash{BlockHash(uint64(w.ID)<<32 | uint64(p*1000))}})
		}
		if i%97 == 0 {
			x.RemoveWorker(w.ID)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.tree.check(); err != nil {
		t.Fatal(err)
	}
}

func TestIndexMatchesTree(t *testing.T) {
	x := NewIndex(Config{})
	results := make([]Result, 3)
	x.ApplyBatch([]Event{
		chain(w1, 1, 4),
		chain(w2, 1, 2),
		{Worker: w2, Kind: KindStored, HasParent: true, Parent: 999, Blocks: []Block{{1, 1}}},
	}, results)
	if results[0].Status != StatusOK || results[1].Status != StatusOK || results[2].Status != StatusParentNotFound {
		t.Fatalf("results %+v", results)
	}
	got := x.FindMatches(path(1, 4), false, nil)
	sortMatches(got)
	if len(got) != 2 || got[0] != (Match{Worker: w1, Blocks: 4}) || got[1] != (Match{Worker: w2, Blocks: 2}) {
		t.Fatalf("FindMatches = %v", got)
	}
	if st := x.Stats(); st != (Stats{Entries: 6, Nodes: 4, Workers: 2}) {
		t.Fatalf("Stats = %+v", st)
	}
	if x.Size(w1) != 4 || len(x.Workers()) != 2 || len(x.Dump()) != 6 {
		t.Fatalf("Size %d Workers %v Dump %d", x.Size(w1), x.Workers(), len(x.Dump()))
	}
	if n := x.RemoveWorker(1); n != 4 || x.Stats().Entries != 2 {
		t.Fatalf("RemoveWorker dropped %d, entries now %d", n, x.Stats().Entries)
	}
}

// find_matches allocates nothing for up to 128 matching workers when the
// caller's buffer has room.
func TestFindMatchesAllocatesNothing(t *testing.T) {
	tr := New(Config{})
	for id := range 128 {
		tr.Apply(chain(Worker{ID: WorkerID(id + 1)}, 1, 32-id%16))
	}
	query := path(1, 32)
	dst := make([]Match, 0, 128)
	allocs := testing.AllocsPerRun(200, func() {
		dst = tr.FindMatches(query, false, dst)
	})
	if allocs != 0 {
		t.Fatalf("FindMatches allocated %v times per call, want 0", allocs)
	}
	if len(dst) != 128 {
		t.Fatalf("matched %d workers, want 128", len(dst))
	}
	x := NewIndex(Config{})
	for _, ev := range tr.Dump() {
		x.Apply(ev)
	}
	allocs = testing.AllocsPerRun(200, func() {
		dst = x.FindMatches(query, false, dst)
	})
	if allocs != 0 {
		t.Fatalf("Index.FindMatches allocated %v times per call, want 0", allocs)
	}
}

func TestDumpReplayAfterChurn(t *testing.T) {
	tr := New(Config{MaxEntries: 400})
	r := rand.New(rand.NewPCG(7, 7))
	for i := range 2000 {
		w := Worker{ID: WorkerID(1 + r.IntN(4)), DPRank: DPRank(r.IntN(2))}
		switch r.IntN(10) {
		case 0:
			tr.Apply(Event{Worker: w, Kind: KindRemoved, Removed: []BlockHash{BlockHash(uint64(w.ID)<<32 | uint64(r.IntN(50)*10))}})
		case 1:
			if i%50 == 0 {
				tr.Apply(cleared(w))
			}
		default:
			tr.Apply(chain(w, LocalHash(r.IntN(50)*10), 1+r.IntN(8)))
		}
	}
	if err := tr.check(); err != nil {
		t.Fatal(err)
	}
	dumpEqual(t, tr)
}
