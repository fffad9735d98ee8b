package workers

import (
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// The grace timers run on synctest's fake clock: time.Sleep below advances
// it, synctest.Wait lets the writer, the registry and the timers' callbacks
// finish.

const dropped = "reason=" + metrics.DropUnknownWorker

// settle lets every goroutine of the bubble finish what it was given.
func (e *env) settle(t *testing.T) {
	t.Helper()
	e.sync(t)
	synctest.Wait()
}

// pendingLen returns how many grace periods run.
func (e *env) pendingLen() int {
	e.reg.mu.Lock()
	defer e.reg.mu.Unlock()
	return len(e.reg.pending)
}

func TestGraceDropsBlocksOfUnregisteredWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.UnknownWorkerGrace = 30 * time.Second
		e := newEnv(t, cfg)
		e.reg.replace(puts(instanceKey("dynamo", "backend", 1), instanceValue("dynamo", "backend", 1)))
		known, unknown := indexer.Worker{ID: 1}, indexer.Worker{ID: 99, DPRank: 2}
		for range 3 {
			e.store(t, unknown, 5)
		}
		e.store(t, known, 5)
		e.settle(t)
		if _, ok := e.reg.Snapshot().Get(unknown.ID); ok {
			t.Fatal("an unregistered worker is in the snapshot")
		}
		if n := e.pendingLen(); n != 1 {
			t.Fatalf("%d grace periods, want 1 (the unregistered worker's)", n)
		}

		time.Sleep(29 * time.Second)
		e.settle(t)
		if n := e.size(t, unknown); n != 5 {
			t.Fatalf("within the grace period: %d blocks of the unregistered worker, want 5", n)
		}

		time.Sleep(2 * time.Second)
		e.settle(t)
		if n := e.size(t, unknown); n != 0 {
			t.Errorf("after the grace period: %d blocks of the unregistered worker, want 0", n)
		}
		if n := e.size(t, known); n != 5 {
			t.Errorf("the registered worker lost blocks: %d, want 5", n)
		}
		if got := e.counter(t, metrics.NameKVEventsDroppedTotal, dropped); got != 3 {
			t.Errorf("dropped events = %v, want 3", got)
		}
		if n := e.pendingLen(); n != 0 {
			t.Errorf("%d grace periods left after the drop", n)
		}

		// Events again: a new grace period, a new drop, each event counted.
		e.store(t, unknown, 2)
		e.settle(t)
		time.Sleep(31 * time.Second)
		e.settle(t)
		if n := e.size(t, unknown); n != 0 {
			t.Errorf("blocks of a second burst kept: %d", n)
		}
		if got := e.counter(t, metrics.NameKVEventsDroppedTotal, dropped); got != 4 {
			t.Errorf("dropped events = %v, want 4", got)
		}
	})
}

// TestLateEventsOfALeftWorker: events on their way when a worker leaves are
// applied after its removal and dropped at the end of a grace period, with
// no sweep timer of the registry's own.
func TestLateEventsOfALeftWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, DefaultConfig())
		e.reg.replace(puts(instanceKey("dynamo", "backend", 5), instanceValue("dynamo", "backend", 5)))
		w := indexer.Worker{ID: 5}
		e.store(t, w, 4)

		e.reg.apply([]change{{key: instanceKey("dynamo", "backend", 5), deleted: true}})
		if n := e.size(t, w); n != 0 {
			t.Fatalf("%d blocks left at removal", n)
		}
		e.store(t, w, 2) // late
		e.settle(t)
		if n := e.pendingLen(); n != 1 {
			t.Fatalf("%d grace periods after a late event, want 1", n)
		}
		time.Sleep(31 * time.Second)
		e.settle(t)
		if n := e.size(t, w); n != 0 {
			t.Errorf("late blocks of a removed worker kept: %d", n)
		}
		if got := e.counter(t, metrics.NameKVEventsDroppedTotal, dropped); got != 1 {
			t.Errorf("dropped events = %v, want 1", got)
		}
	})
}

// TestReRegisteredWorkerKeepsItsNewBlocks: a worker that leaves and comes
// back with the same id starts empty and keeps what it stores afterwards.
func TestReRegisteredWorkerKeepsItsNewBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, DefaultConfig())
		inst := puts(instanceKey("dynamo", "backend", 5), instanceValue("dynamo", "backend", 5))
		w := indexer.Worker{ID: 5}
		e.reg.replace(inst)
		e.store(t, w, 6)
		e.reg.apply([]change{{key: instanceKey("dynamo", "backend", 5), deleted: true}})
		e.reg.apply(inst)
		if n := e.size(t, w); n != 0 {
			t.Fatalf("a returning worker holds %d blocks of its former life", n)
		}
		e.store(t, w, 3)
		time.Sleep(time.Minute)
		e.settle(t)
		if n := e.size(t, w); n != 3 {
			t.Errorf("a re-registered worker lost blocks: %d left, want 3", n)
		}
		if s := e.fleet.last(); s == nil || s.Len() != 1 {
			t.Errorf("the fleet listener's last snapshot = %v, want the returned worker", s)
		}
	})
}

func TestGraceEndsWhenTheWorkerRegisters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, DefaultConfig())
		e.reg.replace(nil)
		w := indexer.Worker{ID: 7}
		e.store(t, w, 3)
		e.settle(t)

		time.Sleep(10 * time.Second)
		e.reg.apply([]change{{key: instanceKey("dynamo", "backend", 7), value: []byte(instanceValue("dynamo", "backend", 7)), modRev: 2}})
		time.Sleep(time.Minute)
		e.settle(t)
		if n := e.size(t, w); n != 3 {
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
		e.settle(t)

		// Not listed yet: the worker may be registered, so nothing is dropped.
		time.Sleep(2 * time.Minute)
		e.settle(t)
		if n := e.size(t, w); n != 3 {
			t.Fatalf("blocks dropped before discovery listed etcd: %d left", n)
		}
		// Listed, and still not registered: dropped within one more period.
		e.reg.replace(nil)
		time.Sleep(31 * time.Second)
		e.settle(t)
		if n := e.size(t, w); n != 0 {
			t.Errorf("blocks kept after discovery listed etcd: %d", n)
		}
	})
}

func TestGraceStopsWithRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, DefaultConfig())
		e.reg.replace(nil)
		w := indexer.Worker{ID: 7}
		e.store(t, w, 3)
		e.settle(t)
		e.stopReg()
		time.Sleep(time.Minute)
		e.settle(t)
		if n := e.size(t, w); n != 3 {
			t.Errorf("a stopped registry dropped blocks: %d left", n)
		}
	})
}

// TestRankDropClearsItsBlocks: a worker whose card drops a data-parallel
// rank loses that rank's blocks through the index writer, the other rank's
// stay.
func TestRankDropClearsItsBlocks(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	card := func(dp int, rev int64) change {
		return change{key: cardKey("dynamo", "backend", 7), value: []byte(cardValue("dynamo", "backend", 7, cardSpec{blockSize: 128, dpSize: dp})), modRev: rev}
	}
	e.reg.replace(append(puts(instanceKey("dynamo", "backend", 7), instanceValue("dynamo", "backend", 7)), card(2, 1)))
	r0, r1 := indexer.Worker{ID: 7}, indexer.Worker{ID: 7, DPRank: 1}
	e.store(t, r0, 2)
	e.store(t, r1, 3)
	e.reg.apply([]change{card(1, 2)})
	if n0, n1 := e.size(t, r0), e.size(t, r1); n0 != 2 || n1 != 0 {
		t.Errorf("blocks of ranks 0 and 1 after the card dropped rank 1: %d, %d; want 2, 0", n0, n1)
	}
}

// TestJoinLeaveCyclesLeaveMemoryFlat: one worker id registering, storing and
// leaving a thousand times leaves the registry, the writer and the index as
// they were, and no goroutine behind (TestMain checks goroutines).
func TestJoinLeaveCyclesLeaveMemoryFlat(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.log.discard.Store(true) // the test's log would grow with every cycle
	inst := puts(instanceKey("dynamo", "backend", 9), instanceValue("dynamo", "backend", 9))
	e.reg.replace(nil)
	cycle := func() {
		e.reg.apply(inst)
		e.ids = map[indexer.Worker]uint64{}
		e.store(t, indexer.Worker{ID: 9}, 8)
		e.reg.apply([]change{{key: instanceKey("dynamo", "backend", 9), deleted: true}})
	}
	heap := func() uint64 {
		e.sync(t)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for range 100 { // warm up every pool and table
		cycle()
	}
	before := heap()
	for range 1000 {
		cycle()
	}
	after := heap()
	if st := e.idx.Stats(); st.Entries != 0 || st.Workers != 0 {
		t.Errorf("index after the cycles: %+v, want empty", st)
	}
	e.reg.mu.Lock()
	maps := len(e.reg.pending) + len(e.reg.mismatchCounted) + len(e.reg.dupWarned)
	e.reg.mu.Unlock()
	if maps != 0 {
		t.Errorf("registry keeps %d entries of a departed worker", maps)
	}
	// A thousand tombstones of even 100 bytes would be 100 kB; allow for
	// the runtime's own noise below that.
	if after > before+64<<10 {
		t.Errorf("live heap grew from %d to %d bytes over 1,000 join/leave cycles", before, after)
	}
}
