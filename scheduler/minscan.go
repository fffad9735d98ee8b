package scheduler

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
)

// This file is the fast path of the common-case choice: the plain
// candidates (no overlap, no active prefix) are ordered by integer keys
// the view keeps up to date, instead of by costs computed at every
// decision.
//
// It rests on exactness. Let perToken be 0 or 2^e with |e| ≤ exactExp, and
// the loads, the prompt's length and its block count be integers below
// exactBound in magnitude. Then every product and partial sum of a plain
// cost, (perToken × prefill + perToken × isl) + (blocks + newBlocks), is a
// multiple of 2^g, g = min(e, 0), below 2^(max(e, 0)+34) ≤ 2^(53+g) in
// magnitude, which a float64 holds exactly; whether or not the compiler
// fuses a multiply and an add, as the Go spec allows, since the exact
// result rounded once is itself. So the cost is exactly 2^g × key +
// (perToken × isl + newBlocks), with the integer key = prefill × 2^(e−g)
// + blocks × 2^(−g) (key = blocks when perToken is 0 or by load, g = 0),
// and ordering by key is ordering by cost, ties included. The default
// scale over a power-of-two block size qualifies, so the fast path is the
// rule; any other configuration falls back to fusedMin, unchanged.
const (
	exactBound = 1 << 32
	exactExp   = 19
)

// exactLoad reports whether a load of x keeps plain costs exact.
func exactLoad(x float64) bool { return math.Abs(x) < exactBound }

// keyMuls returns the multipliers of prefill tokens and of blocks that
// make keys for perToken, if it keeps plain costs exact.
func keyMuls(perToken float64) ([2]int64, bool) {
	if perToken == 0 {
		return [2]int64{0, 1}, true
	}
	frac, exp := math.Frexp(perToken)
	switch e := exp - 1; {
	case frac != 0.5 || e < -exactExp || e > exactExp:
		return [2]int64{}, false
	case e >= 0:
		return [2]int64{1 << e, 1}, true
	default:
		return [2]int64{1, 1 << -e}, true
	}
}

// initKeys allocates the keys of n candidates.
func (v *view) initKeys(n int) {
	v.loadKey = newMinTree(n)
	if m, ok := keyMuls(v.perToken); ok {
		v.keyMul, v.key = m, newMinTree(n)
	}
}

// initSaturation allocates the adaptive weight's trees of n candidates:
// the keys at satPerToken if it keeps plain costs exact, and, if
// minPrefill, the least active prefill tokens.
func (v *view) initSaturation(n int, satPerToken float64, minPrefill bool) {
	v.satPerToken = satPerToken
	if minPrefill {
		v.minPrefill = newMinTree(n)
	}
	if m, ok := keyMuls(satPerToken); ok {
		v.satKeyMul, v.satKey = m, newMinTree(n)
	}
}

// keys returns the keys that order the plain costs of pc exactly, or nil
// when none do. isl and newBlocks are the prompt's length and the blocks
// it adds.
func (v *view) keys(pc plainCost, isl, newBlocks int) *minTree {
	switch {
	case v.wide > 0 || !exactLoad(float64(isl)) || !exactLoad(float64(newBlocks)):
		return nil
	case pc.byLoad:
		return v.loadKey
	case pc.perToken == v.perToken:
		return v.key
	case v.satKey != nil && pc.perToken == v.satPerToken:
		return v.satKey // a saturated decision
	}
	return nil // a request's override
}

// minTree holds keys by position and keeps their least up to date, so
// that a decision reads it instead of scanning a thousand keys, and finds
// the positions that have it by descending into the subtrees that do. A
// load change costs an update of a dozen nodes; there are a few per
// request. The leaves are blocks of keyBlock keys, which a short scan
// reduces: three levels fewer to update and to descend. node[1] is the
// least key, node[k] the lesser of node[2k] and node[2k+1], and node[size
// + b] the least of block b (MaxInt64 past the last block).
type minTree struct {
	keys []int64
	node []int64
	size int
}

// keyBlock is how many keys a minTree leaf holds.
const keyBlock = 8

// newMinTree returns the tree of n keys, all 0.
func newMinTree(n int) *minTree {
	blocks := (n + keyBlock - 1) / keyBlock
	size := 1
	for size < blocks {
		size *= 2
	}
	t := &minTree{keys: make([]int64, n), node: make([]int64, 2*size), size: size}
	for k := size + blocks; k < 2*size; k++ {
		t.node[k] = math.MaxInt64
	}
	for k := size - 1; k >= 1; k-- {
		t.node[k] = min(t.node[2*k], t.node[2*k+1])
	}
	return t
}

// set sets key i to k.
func (t *minTree) set(i int, k int64) {
	t.keys[i] = k
	b := i / keyBlock
	m := slices.Min(t.keys[b*keyBlock : min((b+1)*keyBlock, len(t.keys))])
	for j := t.size + b; t.node[j] != m; j /= 2 { // else the ancestors hold
		t.node[j] = m
		if j == 1 {
			return
		}
		m = min(m, t.node[j^1])
	}
}

// least returns the least key (MaxInt64 for a tree of no key).
func (t *minTree) least() int64 { return t.node[1] }

// first returns the first position whose key is least.
func (t *minTree) first() int {
	least, k := t.node[1], 1
	for k < t.size {
		k *= 2
		if t.node[k] != least {
			k++
		}
	}
	b := k - t.size
	return b*keyBlock + slices.Index(t.keys[b*keyBlock:], least)
}

// plainAt appends to ties, in order, the unmarked positions whose key is
// least, descending only into the nodes whose least it is.
func (t *minTree) plainAt(ties []int32, mark []bool) []int32 {
	least := t.node[1]
	for k := 1; k > 0; {
		if t.node[k] == least {
			if k < t.size {
				k *= 2
				continue
			}
			lo := (k - t.size) * keyBlock
			for j := lo; j < min(lo+keyBlock, len(t.keys)); j++ {
				if t.keys[j] == least && !mark[j] {
					ties = append(ties, int32(j))
				}
			}
		}
		for k&1 == 1 { // after the last right child, up; the root ends
			k /= 2
		}
		if k > 0 {
			k++
		}
	}
	return ties
}

// minScan returns what fusedMin returns, the same position after the same
// draws from rng, given keys that order the plain costs exactly
// (view.keys). It returns −1, having drawn nothing, where a cost is NaN,
// whose comparisons it does not replicate. It leaves the ties in s.ties,
// and s.mark set only if it needed it.
//
// The plain cost at the least key, computed as fusedMin computes it from
// any position that has the key, bounds every plain cost from below. A
// pass over the sparse set keeps the costs up to that bound: when one is
// less, as it most often is, the plain positions are out and nothing
// more is read. Otherwise the plain positions of least key are collected
// from the tree and merged with the marked ties. Where fusedMin spends a
// multiply, three adds and an unpredictable branch on each of a thousand
// candidates, this reads the sparse set, mostly skipping it with a
// predictable branch, and a few blocks of keys.
func (s *scratch) minScan(keys *minTree, prefill, blocks []float64, sparse []int32, costs []float64, pc plainCost, rng *rand.Rand) int {
	p := keys.first()
	bound := pc.of(prefill[p], blocks[p])
	marked, best, ok := markedUpTo(s.markedTies[:0], sparse, costs, bound)
	s.markedTies = marked
	if !ok {
		return -1
	}
	ties := s.ties[:0]
	if best == bound {
		mark := s.marks(len(keys.keys), sparse)
		if ties = keys.plainAt(ties, mark); len(ties) == 0 {
			// Every position of least key is marked: the least plain
			// cost is higher, if there is a plain position, and the
			// marked costs up to it count.
			ties = leastPlain(ties, keys.keys, mark)
			bound = math.Inf(1)
			if len(ties) > 0 {
				bound = pc.of(prefill[ties[0]], blocks[ties[0]])
			}
			if marked, best, _ = markedUpTo(marked[:0], sparse, costs, bound); best < bound {
				ties = ties[:0]
			}
		}
	}
	s.markedTies = inOrder(marked, s.bitsFor(len(keys.keys)))
	s.ties = mergeSorted(ties, s.markedTies)
	return pickTie(s.ties, rng)
}

// markedUpTo returns the least of bound and the sparse set's costs, and
// appends to ties the positions of sparse (repeats included) whose cost
// that is; ok is false if a cost is NaN. Most costs exceed the bound and
// cost one predictable branch.
func markedUpTo(ties, sparse []int32, costs []float64, bound float64) (_ []int32, least float64, ok bool) {
	least = bound
	for _, j := range sparse {
		switch c := costs[j]; {
		case c > least:
		case c == least:
			ties = append(ties, j)
		case c < least:
			least, ties = c, append(ties[:0], j)
		default:
			return ties, least, false
		}
	}
	return ties, least, true
}

// inOrder returns positions sorted, without repeats, in positions' array:
// a pass through set, a clear bitset of the candidates, which takes time
// linear in the positions where sorting does not.
func inOrder(positions []int32, set []uint64) []int32 {
	if len(positions) < 2 {
		return positions
	}
	for _, j := range positions {
		set[j/64] |= 1 << (j % 64)
	}
	positions = positions[:0]
	for w, x := range set {
		for ; x != 0; x &= x - 1 {
			positions = append(positions, int32(w*64+bits.TrailingZeros64(x)))
		}
		set[w] = 0
	}
	return positions
}

// bitsFor returns s.bits resized to hold n bits, all clear (inOrder
// leaves them clear).
func (s *scratch) bitsFor(n int) []uint64 {
	words := (n + 63) / 64
	if cap(s.bits) < words {
		s.bits = make([]uint64, words)
	}
	return s.bits[:words]
}

// leastPlain appends to ties the unmarked positions of least key, in
// order: fusedMin's pass, over keys.
func leastPlain(ties []int32, keys []int64, mark []bool) []int32 {
	least := int64(math.MaxInt64)
	for i, k := range keys {
		if mark[i] || k > least {
			continue
		}
		if k < least {
			least, ties = k, ties[:0]
		}
		ties = append(ties, int32(i))
	}
	return ties
}

// mergeSorted returns a with b merged in, both sorted and disjoint, in a's
// array when it has room, from the back so that nothing is overwritten
// before it is moved.
func mergeSorted(a, b []int32) []int32 {
	i, j := len(a)-1, len(b)-1
	a = slices.Grow(a, len(b))[:len(a)+len(b)]
	for k := len(a) - 1; j >= 0; k-- {
		if i >= 0 && a[i] > b[j] {
			a[k] = a[i]
			i--
		} else {
			a[k] = b[j]
			j--
		}
	}
	return a
}
