package workers

import (
	"slices"

	"github.com/kvrouter/router/indexer"
)

// Snapshot is the set of registered workers at one moment: an immutable
// value, published through an atomic pointer so that the routing hot path
// reads it without a lock. Its methods are safe for concurrent use; the
// slices they return are shared and must not be modified.
type Snapshot struct {
	version    uint64
	workers    []Worker
	byID       map[indexer.WorkerID]int
	candidates [numTypes][]Candidate
}

// newSnapshot builds a snapshot of workers, which must be sorted by id and
// are kept.
func newSnapshot(version uint64, workers []Worker) *Snapshot {
	s := &Snapshot{version: version, workers: slices.Clip(workers), byID: make(map[indexer.WorkerID]int, len(workers))}
	for i, w := range workers {
		s.byID[w.ID] = i
		for _, rank := range w.Ranks() {
			s.candidates[w.Type] = append(s.candidates[w.Type], Candidate{
				Worker:              rank,
				Type:                w.Type,
				BlockSize:           w.BlockSize,
				TotalKVBlocks:       w.TotalKVBlocks,
				MaxNumSeqs:          w.MaxNumSeqs,
				MaxNumBatchedTokens: w.MaxNumBatchedTokens,
				BlockSizeMismatch:   w.BlockSizeMismatch,
			})
		}
	}
	for t := range s.candidates {
		s.candidates[t] = slices.Clip(s.candidates[t])
	}
	return s
}

// Version increases with every change of the set; equal versions mean
// equal sets.
func (s *Snapshot) Version() uint64 { return s.version }

// Workers returns the registered workers sorted by id. The slice is shared:
// do not modify it.
func (s *Snapshot) Workers() []Worker { return s.workers }

// Len returns the number of registered workers.
func (s *Snapshot) Len() int { return len(s.workers) }

// Get returns the worker id, if registered.
func (s *Snapshot) Get(id indexer.WorkerID) (Worker, bool) {
	i, ok := s.byID[id]
	if !ok {
		return Worker{}, false
	}
	return s.workers[i], true
}

// Candidates returns one candidate per (worker, dp_rank) of the workers of
// type t, sorted by worker id then rank, computed when the snapshot was
// built. The slice is shared: do not modify it. An unknown type has none.
func (s *Snapshot) Candidates(t Type) []Candidate {
	if !t.valid() {
		return nil
	}
	return s.candidates[t]
}
