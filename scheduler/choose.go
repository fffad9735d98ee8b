package scheduler

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/kvrouter/router/indexer"
)

// pick is a choice and what booking it needs besides.
type pick struct {
	Choice
	// cached is the chosen rank's overlap with its lower-tier blocks at
	// their weights (tierWeights.cached), which its prefill tokens are
	// estimated from; the overlap itself on a device-only fleet.
	cached float64
}

// pickAt returns the pick of candidate i, whose overlap is in s.overlap
// and, when tiered, its lower tiers' share in s.shares.
func (s *scratch) pickAt(cands []Candidate, i int, tiered bool) pick {
	o := s.overlap[i]
	p := pick{Choice: Choice{Worker: cands[i].Worker, OverlapBlocks: int(o)}, cached: float64(o)}
	if tiered {
		p.cached = s.shares[i].cached(o)
	}
	return p
}

// shareTiers sets s.shares to the lower tiers' share of each candidate of v
// whose overlap s.overlap took from matches (zero for the others). It is
// called only when some match has blocks below the device, so that a
// device-only fleet never pays for it.
func (s *scratch) shareTiers(matches []indexer.Match, v *view, tw tierWeights) {
	n := len(v.cands)
	if cap(s.shares) < n {
		s.shares = make([]tierShare, n)
	}
	s.shares = s.shares[:n]
	clear(s.shares)
	for _, m := range matches {
		if i := v.table.get(m.Worker); i >= 0 && v.cands[i].OverlapTrusted && m.Blocks > 0 {
			s.shares[i] = tw.share(m)
		}
	}
}

// overlapsOf sets s.overlap of each candidate of v that holds blocks of
// the prompt (matches) to their number, appends their positions to
// sparse, and reports whether any of those blocks is below the device.
// Candidates whose overlaps mean nothing (OverlapTrusted false) are
// skipped. It is a function of its own, compiled apart from chooseLocked,
// because its loop runs once a match (a thousand for a common system
// prompt): written inline there, the tier test made the compiler spill
// registers and a decision over a thousand matches some 5 % slower.
func (s *scratch) overlapsOf(matches []indexer.Match, v *view, sparse []int32) ([]int32, bool) {
	cands := v.cands
	var lower uint32
	for j := range matches {
		m := &matches[j] // not a copy: the loop has no registers to spare for one
		if i := v.table.get(m.Worker); i >= 0 && cands[i].OverlapTrusted && m.Blocks > 0 {
			sparse = append(sparse, i)
			s.overlap[i] = m.Blocks
			lower |= m.Host | m.Disk | m.External
		}
	}
	return sparse, lower != 0
}

// chooseLocked scores the candidates of kind for prompt p and chooses one
// as the configured mode says. byLoad scores by load only (no overlap
// credit, no prefill tokens). It fails with ErrNoWorkers when no candidate
// passes the request's filters and ErrOverloaded when every one is over a
// busy threshold; it reports busy when the queue is on and every remaining
// rank is over the queue threshold, unless ignoreQueue. mu is held.
//
// A rank's cached blocks are credited by the tier of their fastest copy
// (tieredCostOf); the tiers' shares are looked up only when some match
// has blocks below the device, so that a device-only fleet is scored
// exactly as before, at the same cost.
//
// Most candidates neither hold the prompt's first block nor have it
// active, and for them the cost reduces to
//
//	scale × (prefill_tokens + isl) / block_size + blocks + prompt_blocks
//
// a multiply and three adds, computed from the view's dense arrays. The
// few with an overlap or active blocks (the sparse set, from the index
// matches and the active hashes) are scored in full first. Then, in the
// common case (KV mode, temperature 0, no filter in force), the least
// cost is found without computing the others: the view keeps them
// ordered by a key, exactly when scale / block_size is a power of two,
// as it is by default (minScan); otherwise one pass computes them and
// keeps the least (fusedMin). With the adaptive weight on
// (SaturationPrefillTokens, SaturationDecodeBlocks), the scale is the
// saturated one when the view's least active prefill or least active
// blocks are above their thresholds, reads of kept minima; the view keeps
// keys for that scale too. The cache affinity (CacheAffinity) lowers the
// cost of candidates with an overlap only, which are in the sparse set and
// scored in full, so the plain costs and their keys do not change. Outside
// the common case a pass writes
// every cost, a filter pass marks excluded candidates +Inf, and the mode
// chooses among the finite costs.
func (r *Router) chooseLocked(s *scratch, p *prompt, kind Kind, byLoad bool, cp costParams, ignoreQueue bool) (pick, bool, error) {
	v := r.views[kind]
	if v == nil {
		return pick{}, false, fmt.Errorf("%w: no %s workers registered", ErrNoWorkers, kind)
	}
	if r.cfg.Mode.peer() {
		return r.choosePeerLocked(s, p, v, kind, byLoad, cp, ignoreQueue)
	}
	cands := v.cands
	n := len(cands)
	kv := r.cfg.Mode == ModeKV

	// The sparse set: overlaps from the index, active prefixes from the
	// bookkeeping.
	s.overlap = zeroed(s.overlap, n)
	s.prefix = zeroed(s.prefix, n)
	sparse := s.sparse[:0]
	tiered := false
	if kv && !byLoad {
		sparse, tiered = s.overlapsOf(p.matches, v, sparse)
	}
	if tiered {
		s.shareTiers(p.matches, v, r.tiers)
	}
	if kv {
		sparse = r.seqs.ActivePrefix(p.seqHashes, v.posOf, s.prefix, sparse)
	}
	s.sparse = sparse

	costs := grownFloats(s.costs, n)
	s.costs = costs
	queue := r.queue != nil && !ignoreQueue
	filtered := s.allowed != nil || r.thresholds || queue
	if kv {
		newBlocks := 0
		if r.seqs.TracksBlocks() {
			newBlocks = p.numBlocks
		}
		if cp.sat.on() && !byLoad && v.saturated(cp.sat) {
			cp.scale = cp.sat.scale // every rank has a backlog: the adaptive weight
		}
		perToken := cp.scale / float64(r.cfg.BlockSize)
		islCost := perToken * float64(p.isl)
		scaleCredit := cp.scale * cp.credit
		pc := plainCost{perToken: perToken, islCost: islCost, newF: float64(newBlocks), byLoad: byLoad}
		blocks, prefill := v.blocks[:n], v.prefill[:n]
		// One loop per case, so that none pays for the others' tests.
		switch {
		case byLoad:
			for _, i := range sparse {
				costs[i] = loadCost(blocks[i] + float64(newBlocks-int(s.prefix[i])))
			}
		case tiered:
			for _, i := range sparse {
				decode := blocks[i] + float64(newBlocks-int(s.prefix[i]))
				sh := s.shares[i]
				device := float64(s.overlap[i] - sh.lower)
				costs[i] = tieredCostOf(perToken, islCost, scaleCredit, prefill[i], device, cp.scale*sh.credit, decode) - cp.affinity*device
			}
		default:
			for _, i := range sparse {
				decode := blocks[i] + float64(newBlocks-int(s.prefix[i]))
				overlap := float64(s.overlap[i])
				costs[i] = kvCostOf(perToken, islCost, scaleCredit, prefill[i], overlap, decode) - cp.affinity*overlap
			}
		}
		if !filtered && cp.temperature == 0 {
			// The common case: minScan where the view's keys order the
			// plain costs exactly, else (or where it declines) fusedMin.
			i := -1
			if keys := v.keys(pc, p.isl, newBlocks); keys != nil {
				i = s.minScan(keys, prefill, blocks, sparse, costs, pc, r.rng)
			}
			if i < 0 {
				i, s.ties = fusedMin(prefill, blocks, s.marks(n, sparse), costs, pc, s.ties, r.rng)
			}
			return s.pickAt(cands, i, tiered), false, nil
		}
		mark := s.marks(n, sparse)
		for i, b := range blocks {
			if !mark[i] {
				costs[i] = pc.of(prefill[i], b)
			}
		}
	} else {
		clear(costs)
	}

	if filtered {
		if busy, err := r.filterLocked(s, v, kind, costs, queue); busy || err != nil {
			return pick{}, busy, err
		}
	}
	i := r.pickLocked(s, costs, cp.temperature)
	return s.pickAt(cands, i, tiered), false, nil
}

// filterLocked sets to +Inf the cost of every candidate the request may not
// have now: outside its allowed_worker_ids, over a busy threshold, or, with
// queue, busy for the queue. It fails with ErrNoWorkers when no candidate
// is allowed and ErrOverloaded when every allowed one is over a threshold,
// and reports busy when every remaining one is busy for the queue. mu is
// held.
func (r *Router) filterLocked(s *scratch, v *view, kind Kind, costs []float64, queue bool) (busy bool, err error) {
	n := len(v.cands)
	eligible, fit, free := n, n, n
	inf := math.Inf(1)
	for i := range v.cands {
		c := &v.cands[i]
		switch {
		case s.allowed != nil && !containsID(s.allowed, c.Worker.ID):
			eligible--
		case r.thresholds && r.overloaded(c, v.prefill[i], v.blocks[i]):
		case queue && r.queueBusy(c, v.prefill[i]):
			costs[i] = inf
			free--
			continue
		default:
			continue
		}
		costs[i] = inf
		fit--
		free--
	}
	switch {
	case eligible == 0:
		return false, fmt.Errorf("%w: no %s worker among allowed_worker_ids", ErrNoWorkers, kind)
	case fit == 0:
		return false, fmt.Errorf("%w: all %d %s workers are over a busy threshold", ErrOverloaded, eligible, kind)
	}
	return free == 0, nil
}

// pickLocked chooses among the finite costs as the mode says: the least,
// uniformly at random among exact ties, for the modes that score at
// temperature 0; a softmax sample for those at a temperature above 0; the
// next in turn for round-robin; uniformly at random for random. At least
// one cost is finite. mu is held.
func (r *Router) pickLocked(s *scratch, costs []float64, temperature float64) int {
	if r.cfg.Mode.usesIndex() && temperature == 0 {
		i, ties := pickMin(costs, s.ties, r.rng)
		s.ties = ties
		return i
	}
	// Round-robin, random and softmax choose among the finite costs.
	elig, finite := s.elig[:0], s.finite[:0]
	for j, c := range costs {
		if !math.IsInf(c, 1) {
			elig = append(elig, int32(j))
			finite = append(finite, c)
		}
	}
	s.elig, s.finite = elig, finite
	var k int
	switch r.cfg.Mode {
	case ModeRoundRobin:
		k = int(r.rr % uint64(len(elig)))
		r.rr++
	case ModeRandom:
		k = r.rng.IntN(len(elig))
	default:
		s.weights = grownFloats(s.weights, len(finite))
		k = pickSoftmax(finite, s.weights, temperature, r.rng)
	}
	return int(elig[k])
}

// fusedMin returns the position of the least cost, ties broken as pickMin
// breaks them, computing the cost of each position not marked (no
// overlap, no active prefix) on the fly from the view's arrays, exactly as
// the dense pass would, and reading marked positions' costs from costs.
// Fusing the two passes halves what a decision reads from memory. It is
// minScan's reference, and its fallback where keys are not exact.
func fusedMin(prefill, blocks []float64, mark []bool, costs []float64, pc plainCost, ties []int32, rng *rand.Rand) (int, []int32) {
	best := math.Inf(1)
	ties = ties[:0]
	for i, b := range blocks {
		var c float64
		if mark[i] {
			c = costs[i]
		} else {
			c = pc.of(prefill[i], b)
		}
		switch {
		case c > best:
		case c == best:
			ties = append(ties, int32(i))
		default:
			best = c
			ties = append(ties[:0], int32(i))
		}
	}
	return pickTie(ties, rng), ties
}

// containsID reports whether sorted ids holds id.
func containsID(ids []indexer.WorkerID, id indexer.WorkerID) bool {
	_, ok := slices.BinarySearch(ids, id)
	return ok
}

// overloaded reports whether a rank is over a busy threshold
// (--active-decode-blocks-threshold, --active-prefill-tokens-threshold,
// --active-prefill-tokens-threshold-frac). A threshold relative to a limit
// the worker did not state does not apply.
func (r *Router) overloaded(c *Candidate, prefillTokens, blocks float64) bool {
	if t := r.cfg.ActiveDecodeBlocksThreshold; t != nil && c.TotalKVBlocks > 0 &&
		blocks > *t*float64(c.TotalKVBlocks) {
		return true
	}
	if t := r.cfg.ActivePrefillTokensThreshold; t != nil && prefillTokens > float64(*t) {
		return true
	}
	if t := r.cfg.ActivePrefillTokensThresholdFrac; t != nil && c.MaxNumBatchedTokens > 0 &&
		prefillTokens > *t*float64(c.MaxNumBatchedTokens) {
		return true
	}
	return false
}

// queueBusy reports whether a rank is busy for the queue: its active
// prefill tokens exceed --router-queue-threshold × max_num_batched_tokens.
// The comparison is strict, so a rank with no prefill work is never busy,
// however large the prompt that would go to it (see doc.go on starvation).
func (r *Router) queueBusy(c *Candidate, prefillTokens float64) bool {
	return c.MaxNumBatchedTokens > 0 &&
		prefillTokens > *r.cfg.QueueThreshold*float64(c.MaxNumBatchedTokens)
}

// kindOfLocked returns the kind of a candidate rank, and false if w is
// not a candidate. mu is held.
func (r *Router) kindOfLocked(w indexer.Worker) (Kind, bool) {
	ri, ok := r.seqs.Rank(w)
	if !ok {
		return 0, false
	}
	return r.kinds[ri], true
}

// zeroed returns buf resized to n and cleared.
func zeroed(buf []uint32, n int) []uint32 {
	if cap(buf) < n {
		return make([]uint32, n)
	}
	buf = buf[:n]
	clear(buf)
	return buf
}

// grownFloats returns buf resized to n, contents unspecified.
func grownFloats(buf []float64, n int) []float64 {
	if cap(buf) < n {
		return make([]float64, n)
	}
	return buf[:n]
}
