package scheduler

import (
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/overhead"
)

// This file answers the read-only questions about a prompt:
// OverlapScores and PotentialLoads. Neither books anything nor observes
// the routing overhead. Both look the prompt up in the index whatever the
// routing mode (in round-robin and random mode the index is empty when
// the daemon does not index KV events then).

// OverlapScores returns the number of full blocks of req's prompt and, for
// every registered rank (of either kind) holding at least its first block,
// the number of leading blocks it holds and how many of them are on each
// tier below the device, in candidate order, decode ranks first. Ranks
// whose block size differs from the router's are left out: their overlaps
// mean nothing.
func (r *Router) OverlapScores(req *Request) (numBlocks int, scores []Overlap, err error) {
	if err := r.check(req); err != nil {
		return 0, nil, err
	}
	s := r.pool.Get().(*scratch)
	defer r.pool.Put(s)
	var t overhead.Timer
	p := r.prepare(req, s, &t, true)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, kind := range []Kind{KindDecode, KindPrefill} {
		v := r.views[kind]
		if v == nil {
			continue
		}
		s.byPos = matchesByPos(s.byPos, p.matches, v)
		scores = appendOverlaps(scores, v.cands, kind, s.byPos)
	}
	return p.numBlocks, scores, nil
}

// PotentialLoads returns, for every registered rank, decode ranks first,
// the load it would have if req's prompt were routed to it KV-aware:
// active prefill tokens plus the prompt's tokens it does not hold (its
// blocks below the device credited at their tier's weight, as a booking
// credits them), active blocks plus the prompt's blocks not active on it.
// It also returns what waits in the queue.
func (r *Router) PotentialLoads(req *Request) ([]Load, Pending, error) {
	if err := r.check(req); err != nil {
		return nil, Pending{}, err
	}
	s := r.pool.Get().(*scratch)
	defer r.pool.Put(s)
	var t overhead.Timer
	p := r.prepare(req, s, &t, true)
	bs := r.cfg.BlockSize
	r.mu.Lock()
	defer r.mu.Unlock()
	var loads []Load
	for _, kind := range []Kind{KindDecode, KindPrefill} {
		v := r.views[kind]
		if v == nil {
			continue
		}
		cands := v.cands
		s.byPos = matchesByPos(s.byPos, p.matches, v)
		s.prefix = zeroed(s.prefix, len(cands))
		s.sparse = r.seqs.ActivePrefix(p.seqHashes, v.posOf, s.prefix, s.sparse[:0])
		for i, c := range cands {
			l := r.seqs.Load(v.rank[i])
			loads = append(loads, Load{
				Worker:                 c.Worker,
				Kind:                   kind,
				PotentialPrefillTokens: l.PrefillTokens + creditedPrefillTokens(p.isl, r.tiers.cached(s.byPos[i]), bs),
				PotentialDecodeBlocks:  l.Blocks + r.seqs.NewBlocks(p.numBlocks, s.prefix[i]),
				ActiveRequests:         l.Requests,
			})
		}
	}
	var pending Pending
	if r.queue != nil {
		pending = r.queue.Pending(0)
	}
	return loads, pending, nil
}

// appendOverlaps appends to scores the overlap of each candidate of kind
// whose match (byPos, by position) holds at least one block, with its
// blocks on each tier below the device.
func appendOverlaps(scores []Overlap, cands []Candidate, kind Kind, byPos []indexer.Match) []Overlap {
	for i, m := range byPos {
		if m.Blocks > 0 {
			host, disk, ext := tierCounts(m)
			scores = append(scores, Overlap{Worker: cands[i].Worker, Kind: kind, OverlapBlocks: int(m.Blocks),
				Host: int(host), Disk: int(disk), External: int(ext)})
		}
	}
	return scores
}

// matchesByPos returns buf resized to v's candidates, holding each
// candidate's match among matches, and a zero match for a candidate
// without one or whose overlaps mean nothing (OverlapTrusted false).
func matchesByPos(buf, matches []indexer.Match, v *view) []indexer.Match {
	n := len(v.cands)
	if cap(buf) < n {
		buf = make([]indexer.Match, n)
	}
	buf = buf[:n]
	clear(buf)
	for _, m := range matches {
		if i := v.table.get(m.Worker); i >= 0 && v.cands[i].OverlapTrusted {
			buf[i] = m
		}
	}
	return buf
}
