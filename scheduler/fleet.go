package scheduler

import "github.com/kvrouter/router/workers"

// The router learns its fleet from the worker registry, the one owner of
// each worker's life.
var _ workers.FleetListener = (*Router)(nil)

// FleetChanged makes the workers of a registry snapshot the router's
// candidates (SetCandidates): each (worker, dp_rank) of a registered worker
// is one, prefill workers are the prefill candidates and the others the
// decode ones, and a worker whose block size differs from the router's is
// scored as if it held nothing. The registry calls it under its lock, in
// order, each time its set of workers changes.
func (r *Router) FleetChanged(s *workers.Snapshot) {
	r.SetCandidates(candidatesOf(s, workers.TypeDecode), candidatesOf(s, workers.TypePrefill))
}

// candidatesOf converts the snapshot's candidates of type t.
func candidatesOf(s *workers.Snapshot, t workers.Type) []Candidate {
	wcs := s.Candidates(t)
	out := make([]Candidate, 0, len(wcs))
	for _, wc := range wcs {
		out = append(out, Candidate{
			Worker:              wc.Worker,
			TotalKVBlocks:       wc.TotalKVBlocks,
			MaxNumBatchedTokens: wc.MaxNumBatchedTokens,
			OverlapTrusted:      !wc.BlockSizeMismatch,
		})
	}
	return out
}
