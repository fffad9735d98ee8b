package service

import (
	"sync/atomic"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/workers"
)

// Fleet adapts the worker registry to scheduler.Fleet: each (worker,
// dp_rank) of a registered worker is a candidate; prefill workers are
// KindPrefill, the others KindDecode; a worker whose block size differs
// from the router's is scored as if it held nothing.
//
// The candidates are converted once per registry snapshot and the same
// slices returned until the snapshot changes, which is what lets the
// scheduler keep per-fleet data keyed by slice identity. Candidates never
// blocks and is safe for concurrent use.
type Fleet struct {
	reg   *workers.Registry
	cache atomic.Pointer[fleetCache]
}

// fleetCache is the candidates of one registry snapshot.
type fleetCache struct {
	snap  *workers.Snapshot
	kinds [3][]scheduler.Candidate
}

var _ scheduler.Fleet = (*Fleet)(nil)

// NewFleet returns the registry's candidates as a scheduler.Fleet.
func NewFleet(reg *workers.Registry) *Fleet { return &Fleet{reg: reg} }

// Candidates returns the candidates of kind in the registry's current
// snapshot.
func (f *Fleet) Candidates(kind scheduler.Kind) []scheduler.Candidate {
	if kind != scheduler.KindDecode && kind != scheduler.KindPrefill {
		return nil
	}
	snap := f.reg.Snapshot()
	c := f.cache.Load()
	if c == nil || c.snap != snap {
		// Two goroutines may convert one snapshot at once; either result is
		// right, and the scheduler merely rebuilds its data once more.
		c = &fleetCache{snap: snap}
		for k, t := range map[scheduler.Kind]workers.Type{scheduler.KindDecode: workers.TypeDecode, scheduler.KindPrefill: workers.TypePrefill} {
			for _, wc := range snap.Candidates(t) {
				c.kinds[k] = append(c.kinds[k], scheduler.Candidate{
					Worker:              wc.Worker,
					TotalKVBlocks:       wc.TotalKVBlocks,
					MaxNumBatchedTokens: wc.MaxNumBatchedTokens,
					OverlapTrusted:      !wc.BlockSizeMismatch,
				})
			}
		}
		f.cache.Store(c)
	}
	return c.kinds[kind]
}

// Remover is the workers.IndexRemover to give the registry: when a worker
// leaves, it drops the worker's blocks from the index and its requests from
// the router's bookkeeping. The registry is built before the router (the
// router's Fleet reads the registry), so the router is attached after:
//
//	rm := service.NewRemover(idx)
//	reg, _ := workers.NewRegistry(wcfg, rm, m, log)
//	r, _ := scheduler.New(scfg, service.NewFleet(reg), idx, m, opts)
//	rm.Attach(r)
//
// Workers removed before Attach are dropped from the index only, which is
// all there is of them then.
type Remover struct {
	idx    *indexer.Index
	router atomic.Pointer[scheduler.Router]
}

var _ workers.IndexRemover = (*Remover)(nil)

// NewRemover returns a Remover for idx.
func NewRemover(idx *indexer.Index) *Remover { return &Remover{idx: idx} }

// Attach makes r forget the workers removed from now on.
func (rm *Remover) Attach(r *scheduler.Router) { rm.router.Store(r) }

// RemoveWorker drops worker id from the index and the router and returns
// the index entries dropped. The registry calls it under its lock; the
// router takes its own (lock order: registry, router, index).
func (rm *Remover) RemoveWorker(id indexer.WorkerID) int {
	if r := rm.router.Load(); r != nil {
		r.RemoveWorker(id)
	}
	return rm.idx.RemoveWorker(id)
}
