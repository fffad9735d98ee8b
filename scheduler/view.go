package scheduler

import (
	"math/bits"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/scheduler/active"
)

// view is what the scheduler derives once from one candidate slice pushed
// by SetCandidates: each candidate's rank slot in the bookkeeping, each
// slot's position among the candidates, and a table from worker to
// position. With it a
// decision maps index matches and active blocks to candidates by array
// indexing, without a map lookup per candidate: at a thousand candidates
// that is the difference between a few microseconds and tens.
//
// It also mirrors each candidate's load in dense arrays, by position:
// scoring streams through them (a multiply and two adds a candidate)
// instead of visiting a thousand rank records. Router.syncLocked copies
// every load change into them under the lock that guards both.
//
// And it keeps, in trees that track their least, an integer key per
// candidate that orders the candidates without overlap or active prefix
// by cost: a decision then finds the least of those costs without
// visiting them (see minScan), which a thousand candidates made the
// largest part of a decision.
//
// With the adaptive weight of prefill work on (SaturationPrefillTokens,
// SaturationDecodeBlocks), it keeps up to two more trees: the keys at the
// saturated scale, so that a saturated decision takes the fast path too,
// and, with a threshold of prefill tokens, the candidates' active prefill
// tokens. Their least, and the least active blocks loadKey keeps, tell a
// decision whether the fleet is saturated without a pass over the
// candidates.
//
// A view is rebuilt at every SetCandidates. It is built, read and updated
// under the Router's lock.
type view struct {
	cands []Candidate
	// rank is each candidate's rank slot in the bookkeeping.
	rank []int32
	// posOf is each rank slot's candidate position (−1: not a candidate
	// of this kind).
	posOf []int32
	table workerTable
	// prefill and blocks are each candidate's active prefill tokens and
	// active blocks.
	prefill, blocks []float64
	// key and loadKey hold the keys ordering the plain costs at the
	// configured scale and by load (see minScan). key is nil where the
	// configured perToken, the scale over the block size, keeps no cost
	// exact; keyMul holds its multipliers of prefill tokens and of
	// blocks. wide counts candidates whose load is too large for exact
	// costs: the keys are not used while there are any.
	key, loadKey *minTree
	perToken     float64
	keyMul       [2]int64
	wide         int
	// satKey holds the keys at satPerToken, the saturated scale over the
	// block size, with multipliers satKeyMul; nil when the adaptive weight
	// is off or satPerToken keeps no cost exact. minPrefill holds each
	// candidate's active prefill tokens, for their least; nil when the
	// adaptive weight tests no prefill tokens.
	satKey, minPrefill *minTree
	satPerToken        float64
	satKeyMul          [2]int64
}

// viewScales are the per-token weights of prefill work a view keeps keys
// for: the configured scale over the block size and, when saturated is
// true (the adaptive weight is on), the saturated scale over it; and
// whether it keeps the least active prefill (minPrefill: the adaptive
// weight tests prefill tokens).
type viewScales struct {
	perToken, satPerToken float64
	saturated, minPrefill bool
}

// newView builds the view of cands, whose ranks s holds, with keys for
// the scales of vs.
func newView(s *active.Sequences, cands []Candidate, vs viewScales) *view {
	v := &view{cands: cands, rank: make([]int32, len(cands)), perToken: vs.perToken}
	v.initKeys(len(cands))
	if vs.saturated {
		v.initSaturation(len(cands), vs.satPerToken, vs.minPrefill)
	}
	v.posOf = make([]int32, s.Slots())
	for i := range v.posOf {
		v.posOf[i] = -1
	}
	for i, c := range cands {
		r, _ := s.Rank(c.Worker) // SetCandidates added it
		v.rank[i] = r
		v.posOf[r] = int32(i)
	}
	v.table = newWorkerTable(cands)
	v.prefill = make([]float64, len(cands))
	v.blocks = make([]float64, len(cands))
	for i, r := range v.rank {
		l := s.Load(r)
		v.setLoad(int32(i), l.PrefillTokens, l.Blocks)
	}
	return v
}

// setLoad sets position i's load.
func (v *view) setLoad(i int32, prefillTokens, blocks int) {
	if !exactLoad(v.prefill[i]) || !exactLoad(v.blocks[i]) {
		v.wide--
	}
	p, b := float64(prefillTokens), float64(blocks)
	v.prefill[i], v.blocks[i] = p, b
	if !exactLoad(p) || !exactLoad(b) {
		v.wide++ // and the keys below may overflow
	}
	if v.key != nil {
		v.key.set(int(i), int64(prefillTokens)*v.keyMul[0]+int64(blocks)*v.keyMul[1])
	}
	v.loadKey.set(int(i), int64(blocks))
	if v.minPrefill != nil {
		v.minPrefill.set(int(i), int64(prefillTokens))
	}
	if v.satKey != nil {
		v.satKey.set(int(i), int64(prefillTokens)*v.satKeyMul[0]+int64(blocks)*v.satKeyMul[1])
	}
}

// saturated reports whether every candidate is over one of sat's
// thresholds: the least active prefill tokens, which minPrefill keeps,
// above sat.prefillTokens, or the least active blocks, which loadKey
// keeps, above sat.decodeBlocks. A threshold of 0 is not tested. The view
// must have been built with minPrefill if sat tests prefill tokens.
func (v *view) saturated(sat saturation) bool {
	if len(v.cands) == 0 {
		return false
	}
	return sat.prefillTokens > 0 && v.minPrefill.least() > int64(sat.prefillTokens) ||
		sat.decodeBlocks > 0 && v.loadKey.least() > int64(sat.decodeBlocks)
}

// workerTable maps a worker rank to its candidate position: open
// addressing with linear probing, at most half full, each slot holding its
// key and value side by side so that a lookup touches one cache line.
type workerTable struct {
	slots []tableSlot
	shift uint
}

type tableSlot struct {
	key indexer.Worker
	pos int32 // −1: empty
}

func newWorkerTable(cands []Candidate) workerTable {
	size := 1 << max(3, bits.Len(uint(2*len(cands))))
	t := workerTable{slots: make([]tableSlot, size), shift: uint(64 - bits.Len(uint(size-1)))}
	for i := range t.slots {
		t.slots[i].pos = -1
	}
	for i, c := range cands {
		j := t.slot(c.Worker)
		for t.slots[j].pos >= 0 && t.slots[j].key != c.Worker {
			j = (j + 1) & (size - 1)
		}
		t.slots[j] = tableSlot{key: c.Worker, pos: int32(i)}
	}
	return t
}

// slot is the home slot of w: Fibonacci hashing of the id mixed with the
// rank.
func (t *workerTable) slot(w indexer.Worker) int {
	h := (uint64(w.ID) ^ uint64(w.DPRank)<<40 ^ uint64(w.DPRank)) * 0x9E3779B97F4A7C15
	return int(h >> t.shift)
}

// get returns w's position, or −1.
func (t *workerTable) get(w indexer.Worker) int32 {
	mask := len(t.slots) - 1
	for j := t.slot(w); ; j = (j + 1) & mask {
		s := &t.slots[j]
		if s.pos < 0 || s.key == w {
			return s.pos
		}
	}
}
