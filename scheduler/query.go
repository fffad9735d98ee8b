package scheduler

import "github.com/kvrouter/router/overhead"

// This file answers the read-only questions about a prompt:
// OverlapScores and PotentialLoads. Neither books anything nor observes
// the routing overhead. Both look the prompt up in the index whatever the
// routing mode (in round-robin and random mode the index is empty when
// the daemon does not index KV events then).

// OverlapScores returns the number of full blocks of req's prompt and, for
// every registered rank (of either kind) holding at least its first block,
// the number of leading blocks it holds, in candidate order, decode ranks
// first. Ranks whose block size differs from the router's are left out:
// their overlaps mean nothing.
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
		cands := v.cands
		s.overlap = zeroed(s.overlap, len(cands))
		for _, m := range p.matches {
			if i := v.table.get(m.Worker); i >= 0 && cands[i].OverlapTrusted {
				s.overlap[i] = m.Blocks
			}
		}
		for i, o := range s.overlap {
			if o > 0 {
				scores = append(scores, Overlap{Worker: cands[i].Worker, Kind: kind, OverlapBlocks: int(o)})
			}
		}
	}
	return p.numBlocks, scores, nil
}

// PotentialLoads returns, for every registered rank, decode ranks first,
// the load it would have if req's prompt were routed to it KV-aware:
// active prefill tokens plus the prompt's tokens it does not hold, active
// blocks plus the prompt's blocks not active on it. It also returns what
// waits in the queue.
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
		s.overlap = zeroed(s.overlap, len(cands))
		for _, m := range p.matches {
			if i := v.table.get(m.Worker); i >= 0 && cands[i].OverlapTrusted {
				s.overlap[i] = m.Blocks
			}
		}
		s.prefix = zeroed(s.prefix, len(cands))
		s.sparse = r.seqs.ActivePrefix(p.seqHashes, v.posOf, s.prefix, s.sparse[:0])
		for i, c := range cands {
			l := r.seqs.Load(v.rank[i])
			loads = append(loads, Load{
				Worker:                 c.Worker,
				Kind:                   kind,
				PotentialPrefillTokens: l.PrefillTokens + prefillTokens(p.isl, int(s.overlap[i]), bs),
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
