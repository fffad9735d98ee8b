package workers

import (
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// The grace timers run on synctest's fake clock: time.Sleep below advances
// it, synctest.Wait lets the timers' callbacks finish.

const dropped = "reason=" + metrics.DropUnknownWorker

// forgetter records the ids the registry forgets, as the KV events
// subscriber would.
type forgetter struct {
	mu  sync.Mutex
	ids []indexer.WorkerID
}

func (f *forgetter) Forget(id indexer.WorkerID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = append(f.ids, id)
}

func (f *forgetter) forgotten() []indexer.WorkerID {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ids)
}

// The registry is the KV events subscriber's observer, and the subscriber
// its forgetter.
var (
	_ events.WorkerObserver = (*Registry)(nil)
	_ Forgetter             = (*events.Subscriber)(nil)
)

func TestGraceDropsBlocksOfUnregisteredWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.UnknownWorkerGrace = 30 * time.Second
		e := newEnv(t, cfg)
		var f forgetter
		e.reg.SetForgetter(&f)
		e.reg.replace(puts(instanceKey("dynamo", "backend", 1), instanceValue("dynamo", "backend", 1)))
		known, unknown := indexer.Worker{ID: 1}, indexer.Worker{ID: 99, DPRank: 2}

		for range 3 {
			e.store(t, unknown, 5)
			if e.reg.WorkerSeen(unknown.ID) {
				t.Fatal("WorkerSeen reports an unregistered worker registered")
			}
		}
		e.store(t, known, 5)
		if !e.reg.WorkerSeen(known.ID) {
			t.Fatal("WorkerSeen reports a registered worker unregistered")
		}
		if _, ok := e.reg.Snapshot().Get(unknown.ID); ok {
			t.Fatal("an unregistered worker is in the snapshot")
		}

		time.Sleep(29 * time.Second)
		synctest.Wait()
		if n := e.idx.Size(unknown); n != 5 {
			t.Fatalf("within the grace period: %d blocks of the unregistered worker, want 5", n)
		}

		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := e.idx.Size(unknown); n != 0 {
			t.Errorf("after the grace period: %d blocks of the unregistered worker, want 0", n)
		}
		if n := e.idx.Size(known); n != 5 {
			t.Errorf("the registered worker lost blocks: %d, want 5", n)
		}
		if got := e.counter(t, metrics.NameKVEventsDroppedTotal, dropped); got != 3 {
			t.Errorf("dropped events = %v, want 3", got)
		}
		if got := f.forgotten(); !slices.Equal(got, []indexer.WorkerID{99}) {
			t.Errorf("forgotten = %v, want [99]", got)
		}

		// An event applied just after the removal, whose WorkerSeen fell in
		// the first period, is caught by the second one.
		e.store(t, unknown, 2)
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if n := e.idx.Size(unknown); n != 0 {
			t.Errorf("late blocks kept: %d", n)
		}
		e.reg.mu.Lock()
		left := len(e.reg.pending)
		e.reg.mu.Unlock()
		if left != 0 {
			t.Errorf("%d grace timers left after a quiet period", left)
		}
		if got := e.counter(t, metrics.NameKVEventsDroppedTotal, dropped); got != 3 {
			t.Errorf("dropped events = %v, want still 3", got)
		}

		// Events again: a new grace period, a new drop.
		e.store(t, unknown, 1)
		e.reg.WorkerSeen(unknown.ID)
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if n := e.idx.Size(unknown); n != 0 {
			t.Errorf("blocks of a second burst kept: %d", n)
		}
		if got := e.counter(t, metrics.NameKVEventsDroppedTotal, dropped); got != 4 {
			t.Errorf("dropped events = %v, want 4", got)
		}
	})
}

func TestGraceSweepsAfterAWorkerLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, DefaultConfig())
		var f forgetter
		e.reg.SetForgetter(&f)
		e.reg.replace(puts(instanceKey("dynamo", "backend", 5), instanceValue("dynamo", "backend", 5)))
		w := indexer.Worker{ID: 5}
		e.store(t, w, 4)

		e.reg.apply([]change{{key: instanceKey("dynamo", "backend", 5), deleted: true}})
		if n := e.idx.Size(w); n != 0 {
			t.Fatalf("%d blocks left at removal", n)
		}
		if got := f.forgotten(); !slices.Equal(got, []indexer.WorkerID{5}) {
			t.Errorf("forgotten = %v, want [5]", got)
		}
		// An event in flight when the worker left lands afterwards, with no
		// WorkerSeen (the subscriber had seen the worker): the sweep takes it.
		e.store(t, w, 2)
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if n := e.idx.Size(w); n != 0 {
			t.Errorf("late blocks of a removed worker kept: %d", n)
		}
		if got := e.counter(t, metrics.NameKVEventsDroppedTotal, dropped); got != 0 {
			t.Errorf("dropped events = %v, want 0 (a sweep counts no events)", got)
		}

		// Events after that are a worker unknown to discovery: a grace
		// period, then a drop.
		e.store(t, w, 1)
		e.reg.WorkerSeen(w.ID)
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if n := e.idx.Size(w); n != 0 {
			t.Errorf("blocks kept: %d", n)
		}
		if got := e.counter(t, metrics.NameKVEventsDroppedTotal, dropped); got != 1 {
			t.Errorf("dropped events = %v, want 1", got)
		}
	})
}

func TestGraceSweepCancelledByReRegistration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, DefaultConfig())
		inst := puts(instanceKey("dynamo", "backend", 5), instanceValue("dynamo", "backend", 5))
		e.reg.replace(inst)
		e.reg.apply([]change{{key: instanceKey("dynamo", "backend", 5), deleted: true}})
		e.reg.apply(inst)
		w := indexer.Worker{ID: 5}
		e.store(t, w, 3)
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := e.idx.Size(w); n != 3 {
			t.Errorf("a re-registered worker lost blocks to the sweep: %d left, want 3", n)
		}
	})
}

func TestGraceEndsWhenTheWorkerRegisters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, DefaultConfig())
		e.reg.replace(nil)
		w := indexer.Worker{ID: 7}
		e.store(t, w, 3)
		e.reg.WorkerSeen(w.ID)

		time.Sleep(10 * time.Second)
		e.reg.apply([]change{{key: instanceKey("dynamo", "backend", 7), value: []byte(instanceValue("dynamo", "backend", 7)), modRev: 2}})
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := e.idx.Size(w); n != 3 {
			t.Errorf("a worker that registered in time lost its blocks: %d left, want 3", n)
		}
		if got := e.counter(t, metrics.NameKVEventsDroppedTotal, dropped); got != 0 {
			t.Errorf("dropped events = %v, want 0", got)
		}
	})
}

func TestGraceWaitsForDiscovery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, DefaultConfig())
		w := indexer.Worker{ID: 7}
		e.store(t, w, 3)
		e.reg.WorkerSeen(w.ID)

		// Not listed yet: the worker may be registered, so nothing is dropped.
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if n := e.idx.Size(w); n != 3 {
			t.Fatalf("blocks dropped before discovery listed etcd: %d left", n)
		}
		// Listed, and still not registered: dropped within one more period.
		e.reg.replace(nil)
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if n := e.idx.Size(w); n != 0 {
			t.Errorf("blocks kept after discovery listed etcd: %d", n)
		}
	})
}

func TestGraceStopsOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, DefaultConfig())
		e.reg.replace(nil)
		w := indexer.Worker{ID: 7}
		e.store(t, w, 3)
		e.reg.WorkerSeen(w.ID)
		e.reg.Close()
		e.reg.WorkerSeen(w.ID)
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := e.idx.Size(w); n != 3 {
			t.Errorf("a closed registry dropped blocks: %d left", n)
		}
	})
}

func BenchmarkWorkerSeenRegistered(b *testing.B) {
	e := newEnv(b, DefaultConfig())
	var cs []change
	for id := range uint64(64) {
		cs = append(cs, puts(instanceKey("dynamo", "backend", id), instanceValue("dynamo", "backend", id))...)
	}
	e.reg.replace(cs)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var id indexer.WorkerID
		for pb.Next() {
			e.reg.WorkerSeen(id % 64)
			id++
		}
	})
}
