package scheduler

import (
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// scanCase is one least-cost choice: the candidates' loads, the sparse
// set (in any order, possibly with repeats) and its costs, and the
// request.
type scanCase struct {
	perToken        float64 // the view's and the request's
	byLoad          bool
	isl, newBlocks  int
	prefill, blocks []int
	sparse          []int32
	costs           []float64 // by position; read at sparse positions only
	// satPerToken, when above 0, turns the adaptive weight's trees on,
	// with keys at this saturated per-token weight.
	satPerToken float64
}

// view builds the view of c's loads as newView and syncLocked would,
// from other loads, so that the keys' trees see their loads rise and fall.
func (c *scanCase) view() *view {
	n := len(c.prefill)
	v := &view{perToken: c.perToken, prefill: make([]float64, n), blocks: make([]float64, n)}
	v.initKeys(n)
	if c.satPerToken > 0 {
		v.initSaturation(n, c.satPerToken, true)
	}
	for i := n - 1; i >= 0; i-- {
		v.setLoad(int32(i), c.prefill[(i*7)%n]+64, max(0, c.blocks[(i*3)%n]-1))
	}
	for i := range n {
		v.setLoad(int32(i), c.prefill[i], c.blocks[i])
	}
	return v
}

func (c *scanCase) plainCost() plainCost {
	return plainCost{perToken: c.perToken, islCost: c.perToken * float64(c.isl), newF: float64(c.newBlocks), byLoad: c.byLoad}
}

// checkMinScan fails t unless minScan chooses as fusedMin does, from the
// same ties and with the same draws, or declines, for a NaN cost only,
// without a draw. s is the scratch minScan uses, possibly used before.
func checkMinScan(t testing.TB, s *scratch, c *scanCase, seed uint64) {
	t.Helper()
	v, pc := c.view(), c.plainCost()
	keys := v.keys(pc, c.isl, c.newBlocks)
	if keys == nil {
		t.Fatalf("no exact keys for %+v", c)
	}
	gotRNG, wantRNG := rand.New(rand.NewPCG(seed, seed)), rand.New(rand.NewPCG(seed, seed))
	got := s.minScan(keys, v.prefill, v.blocks, c.sparse, c.costs, pc, gotRNG)
	mark := s.marks(len(c.prefill), c.sparse)
	if got < 0 {
		nan := false
		for _, j := range c.sparse {
			nan = nan || math.IsNaN(c.costs[j])
		}
		if !nan {
			t.Fatalf("minScan declined without a NaN cost: %+v", c)
		}
		if a, b := gotRNG.Uint64(), wantRNG.Uint64(); a != b {
			t.Fatalf("minScan declined after drawing: %+v", c)
		}
		return
	}
	want, wantTies := fusedMin(v.prefill, v.blocks, mark, c.costs, pc, nil, wantRNG)
	if got != want {
		t.Fatalf("minScan = %d, fusedMin = %d: %+v", got, want, c)
	}
	if diff := cmp.Diff(wantTies, s.ties); diff != "" {
		t.Fatalf("ties (-fusedMin +minScan):\n%s\n%+v", diff, c)
	}
	if a, b := gotRNG.Uint64(), wantRNG.Uint64(); a != b {
		t.Fatalf("minScan and fusedMin drew differently: %+v", c)
	}
}

// TestMinTree checks a minTree's least, first and plainAt against a scan
// of its keys, as keys change.
func TestMinTree(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, n := range []int{1, 2, 7, 8, 9, 16, 17, 63, 64, 65, 200, 1000} {
		tree := newMinTree(n)
		keys := make([]int64, n)
		mark := make([]bool, n)
		for range 300 {
			for range 1 + rng.IntN(4) {
				i := rng.IntN(n)
				keys[i] = int64(rng.IntN(4))
				tree.set(i, keys[i])
			}
			for i := range mark {
				mark[i] = rng.IntN(3) == 0
			}
			least := slices.Min(keys)
			var want []int32
			for i, k := range keys {
				if k == least && !mark[i] {
					want = append(want, int32(i))
				}
			}
			if tree.node[1] != least {
				t.Fatalf("n %d: least %d, want %d (keys %v)", n, tree.node[1], least, keys)
			}
			if got, want := tree.first(), slices.Index(keys, least); got != want {
				t.Fatalf("n %d: first %d, want %d (keys %v)", n, got, want, keys)
			}
			if diff := cmp.Diff(want, tree.plainAt(nil, mark)); diff != "" {
				t.Fatalf("n %d: plainAt (-want +got):\n%s", n, diff)
			}
		}
	}
}

// exactPerTokens are scales over block sizes for which keys are exact,
// from the default (1/128) to the extremes.
var exactPerTokens = []float64{1.0 / 128, 1.0 / 16, 1.0 / 65536, 0.5, 1, 2, 0, math.Ldexp(1, -exactExp), math.Ldexp(1, exactExp)}

// randomScanCase draws a case rich in ties: few distinct loads, marked
// costs equal to plain ones, to each other, below and above them.
func randomScanCase(rng *rand.Rand) *scanCase {
	n := 1 + rng.IntN(40)
	if rng.IntN(10) == 0 {
		n = 1 + rng.IntN(1000)
	}
	c := &scanCase{
		perToken:  exactPerTokens[rng.IntN(len(exactPerTokens))],
		byLoad:    rng.IntN(4) == 0,
		isl:       rng.IntN(3) * 64,
		newBlocks: rng.IntN(3),
		prefill:   make([]int, n),
		blocks:    make([]int, n),
		costs:     make([]float64, n),
	}
	huge := rng.IntN(8) == 0 // loads at the edge of exactness
	for i := range n {
		c.prefill[i], c.blocks[i] = 64*rng.IntN(3), rng.IntN(3)
		if huge {
			c.prefill[i], c.blocks[i] = exactBound-1-64*rng.IntN(2), exactBound-1-rng.IntN(2)
		}
	}
	if huge {
		c.isl, c.newBlocks = exactBound-1, exactBound-1
	}
	pc := c.plainCost()
	plainLeast := math.Inf(1)
	for i := range n {
		plainLeast = min(plainLeast, pc.of(float64(c.prefill[i]), float64(c.blocks[i])))
	}
	density := []float64{0, 0.05, 0.3, 0.7, 1}[rng.IntN(5)]
	for i := range n {
		if rng.Float64() >= density {
			continue
		}
		c.sparse = append(c.sparse, int32(i))
		if rng.IntN(4) == 0 {
			c.sparse = append(c.sparse, int32(i)) // an overlap and an active prefix
		}
		r := rng.IntN(n)
		switch rng.IntN(9) {
		case 0:
			c.costs[i] = pc.of(float64(c.prefill[r]), float64(c.blocks[r]))
		case 1, 2:
			c.costs[i] = plainLeast
		case 3:
			c.costs[i] = plainLeast - 0.5
		case 4:
			c.costs[i] = plainLeast - 1 // ties between marked
		case 5:
			c.costs[i] = math.Inf(1)
		case 6:
			c.costs[i] = math.Inf(-1)
		case 7:
			c.costs[i] = float64(rng.IntN(4))
		default:
			c.costs[i] = plainLeast + 0.25
		}
		if rng.IntN(200) == 0 {
			c.costs[i] = math.NaN()
		}
	}
	rng.Shuffle(len(c.sparse), func(a, b int) { c.sparse[a], c.sparse[b] = c.sparse[b], c.sparse[a] })
	return c
}

func TestMinScanMatchesFusedMin(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	iters := 50000
	if testing.Short() || raceEnabled {
		iters = 5000
	}
	var s scratch // reused, as the Router's pool reuses it
	for range iters {
		checkMinScan(t, &s, randomScanCase(rng), rng.Uint64())
	}
}

// manyMarkedTies is a case where k marked positions, in reverse order,
// tie for the least cost.
func manyMarkedTies(k int) scanCase {
	n := 2 * k
	c := scanCase{perToken: 1.0 / 128, prefill: make([]int, n), blocks: make([]int, n), costs: make([]float64, n)}
	for i := range n {
		c.blocks[i] = 5
	}
	for i := n - 1; i >= 0; i -= 2 {
		c.sparse = append(c.sparse, int32(i))
		c.costs[i] = 1
	}
	return c
}

func TestMinScanCases(t *testing.T) {
	loads := func(vals ...int) []int { return vals }
	const pt = 1.0 / 128
	tests := []struct {
		name string
		c    scanCase
	}{
		{name: "no sparse set, one least", c: scanCase{perToken: pt, isl: 128, newBlocks: 1,
			prefill: loads(128, 0, 0), blocks: loads(1, 2, 1), costs: make([]float64, 3)}},
		{name: "no sparse set, all tied", c: scanCase{perToken: pt, prefill: loads(0, 0, 0, 0), blocks: loads(3, 3, 3, 3),
			costs: make([]float64, 4)}},
		{name: "every position marked", c: scanCase{perToken: pt, prefill: loads(0, 0, 0), blocks: loads(0, 0, 0),
			sparse: []int32{2, 0, 1}, costs: []float64{4, 3, 3}}},
		{name: "every position marked, every cost +Inf", c: scanCase{perToken: pt, prefill: loads(0, 0), blocks: loads(0, 0),
			sparse: []int32{1, 0}, costs: []float64{math.Inf(1), math.Inf(1)}}},
		{name: "least keys all marked", c: scanCase{perToken: pt, prefill: loads(0, 0, 0, 0), blocks: loads(0, 5, 0, 6),
			sparse: []int32{2, 0}, costs: []float64{9, 0, 9, 0}}},
		{name: "marked ties merged with plain ties", c: scanCase{perToken: pt, isl: 64, newBlocks: 2,
			prefill: loads(0, 0, 0, 0, 0), blocks: loads(1, 1, 1, 1, 1), sparse: []int32{3, 1, 3}, costs: []float64{0, 3.5, 0, 3.5, 0}}},
		{name: "a marked cost below every plain one", c: scanCase{perToken: pt, prefill: loads(0, 0, 0), blocks: loads(1, 1, 1),
			sparse: []int32{2}, costs: []float64{0, 0, 0.5}}},
		{name: "a NaN cost declines", c: scanCase{perToken: pt, prefill: loads(0, 0), blocks: loads(0, 0),
			sparse: []int32{1}, costs: []float64{0, math.NaN()}}},
		{name: "a few marked ties", c: manyMarkedTies(5)},
		{name: "many marked ties", c: manyMarkedTies(500)},
		{name: "by load", c: scanCase{perToken: pt, byLoad: true, newBlocks: 3, prefill: loads(900, 0, 5), blocks: loads(1, 1, 2),
			costs: make([]float64, 3)}},
		{name: "scale 0", c: scanCase{perToken: 0, isl: 100, prefill: loads(900, 0, 5), blocks: loads(1, 1, 2),
			costs: make([]float64, 3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for seed := range uint64(20) {
				checkMinScan(t, &scratch{}, &tt.c, seed)
			}
		})
	}
}

func TestViewKeys(t *testing.T) {
	const pt = 1.0 / 128
	exact := scanCase{perToken: pt, prefill: []int{0, 128}, blocks: []int{1, 2}}
	tenth := exact
	tenth.perToken = 0.1
	tooSmall := exact
	tooSmall.perToken = math.Ldexp(1, -exactExp-1)
	tooLarge := exact
	tooLarge.perToken = math.Ldexp(1, exactExp+1)
	wide := exact
	wide.prefill = []int{0, exactBound}
	adaptive := exact
	adaptive.satPerToken = pt / 8
	adaptiveThird := exact
	adaptiveThird.satPerToken = pt / 3
	tests := []struct {
		name           string
		c              scanCase
		pc             plainCost
		isl, newBlocks int
		want           string // "key", "blocks" or "nil"
	}{
		{name: "default scale", c: exact, pc: plainCost{perToken: pt}, want: "key"},
		{name: "by load", c: exact, pc: plainCost{perToken: pt, byLoad: true}, want: "blocks"},
		{name: "override scale", c: exact, pc: plainCost{perToken: 2 * pt}, want: "nil"},
		{name: "not a power of two", c: tenth, pc: plainCost{perToken: 0.1}, want: "nil"},
		{name: "not a power of two, by load", c: tenth, pc: plainCost{perToken: 0.1, byLoad: true}, want: "blocks"},
		{name: "power of two too small", c: tooSmall, pc: plainCost{perToken: tooSmall.perToken}, want: "nil"},
		{name: "power of two too large", c: tooLarge, pc: plainCost{perToken: tooLarge.perToken}, want: "nil"},
		{name: "a load too large", c: wide, pc: plainCost{perToken: pt}, want: "nil"},
		{name: "a load too large, by load", c: wide, pc: plainCost{perToken: pt, byLoad: true}, want: "nil"},
		{name: "prompt too long", c: exact, pc: plainCost{perToken: pt}, isl: exactBound, want: "nil"},
		{name: "too many prompt blocks", c: exact, pc: plainCost{perToken: pt}, newBlocks: exactBound, want: "nil"},
		{name: "adaptive, configured scale", c: adaptive, pc: plainCost{perToken: pt}, want: "key"},
		{name: "adaptive, saturated scale", c: adaptive, pc: plainCost{perToken: pt / 8}, want: "saturated"},
		{name: "adaptive, saturated scale not exact", c: adaptiveThird, pc: plainCost{perToken: pt / 3}, want: "nil"},
		{name: "adaptive off, saturated scale", c: exact, pc: plainCost{perToken: pt / 8}, want: "nil"},
		{name: "adaptive, a load too large", c: func() scanCase { c := adaptive; c.prefill = wide.prefill; return c }(),
			pc: plainCost{perToken: pt / 8}, want: "nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.c.view()
			keys := v.keys(tt.pc, tt.isl, tt.newBlocks)
			got := "nil"
			switch {
			case keys == nil:
			case keys == v.loadKey:
				got = "blocks"
			case keys == v.key:
				got = "key"
			case keys == v.satKey:
				got = "saturated"
			default:
				got = "other"
			}
			if got != tt.want {
				t.Errorf("keys = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestViewWide checks that a load too large disables the keys only while
// some candidate has it.
func TestViewWide(t *testing.T) {
	c := scanCase{perToken: 1.0 / 128, prefill: []int{0, 0}, blocks: []int{0, 0}}
	v := c.view()
	pc := c.plainCost()
	for _, step := range []struct {
		pos             int32
		prefill, blocks int
		exact           bool
	}{
		{0, exactBound, 0, false},
		{1, 0, -exactBound, false},
		{0, 5, 0, false},
		{1, 0, exactBound - 1, true},
		{1, exactBound, exactBound, false},
		{1, 7, 8, true},
	} {
		v.setLoad(step.pos, step.prefill, step.blocks)
		if got := v.keys(pc, 0, 0) != nil; got != step.exact {
			t.Fatalf("after setting position %d to %d, %d: exact keys %v, want %v", step.pos, step.prefill, step.blocks, got, step.exact)
		}
		if want := int64(step.prefill) + 128*int64(step.blocks); v.key.keys[step.pos] != want {
			t.Fatalf("key %v, want %v", v.key.keys[step.pos], want)
		}
	}
}

// TestKeysExactAtBounds checks the claim minScan rests on at the edges of
// exactness: a plain cost is computed without rounding, and it is the key
// times 2^min(e, 0) plus the prompt's part.
func TestKeysExactAtBounds(t *testing.T) {
	exact := func(x float64) *big.Float { return new(big.Float).SetPrec(1024).SetFloat64(x) }
	loads := []int{0, 1, 1<<31 + 1, exactBound - 1, -(exactBound - 1)}
	for _, pt := range exactPerTokens {
		for _, isl := range []int{0, 1, exactBound - 1} {
			for _, newBlocks := range []int{0, 1, exactBound - 1} {
				c := scanCase{perToken: pt, isl: isl, newBlocks: newBlocks, prefill: []int{0}, blocks: []int{0}}
				v, pc := c.view(), c.plainCost()
				for _, p := range loads {
					for _, b := range loads {
						v.setLoad(0, p, b)
						got := pc.of(float64(p), float64(b))
						want := exact(pt)
						want.Mul(want, exact(float64(p))).Add(want, exact(float64(b)))
						prompt := exact(pt)
						prompt.Mul(prompt, exact(float64(isl))).Add(prompt, exact(float64(newBlocks)))
						want.Add(want, prompt)
						if exact(got).Cmp(want) != 0 {
							t.Fatalf("perToken %v, isl %d, new blocks %d, load %d, %d: cost %v, want %v", pt, isl, newBlocks, p, b, got, want)
						}
						fromKey := new(big.Float).SetPrec(1024).SetInt64(v.key.keys[0])
						fromKey.Quo(fromKey, exact(float64(v.keyMul[1]))).Add(fromKey, prompt)
						if fromKey.Cmp(want) != 0 {
							t.Fatalf("perToken %v, isl %d, new blocks %d, load %d, %d: key %d gives cost %v, want %v", pt, isl, newBlocks, p, b, v.key.keys[0], fromKey, want)
						}
					}
				}
			}
		}
	}
}

// TestKeysNeedExactness shows why view.keys refuses a scale over the block
// size that is not a power of two: rounding makes the key order two
// candidates that cost the same.
func TestKeysNeedExactness(t *testing.T) {
	pc := plainCost{perToken: 0.1, islCost: 0.1 * 1000, newF: 7}
	k1, k2 := pc.perToken*1+4, pc.perToken*41+0
	c1, c2 := pc.of(1, 4), pc.of(41, 0)
	if k1 == k2 || c1 != c2 {
		t.Fatalf("keys %v, %v and costs %v, %v: want distinct keys and equal costs", k1, k2, c1, c2)
	}
}

// FuzzMinScan checks minScan against fusedMin on cases decoded from the
// fuzzer's bytes: per candidate, its loads, whether it is marked (twice)
// and which cost it has.
func FuzzMinScan(f *testing.F) {
	f.Add([]byte{0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
	f.Add([]byte{3, 1, 0, 0, 0, 3, 4, 0, 1, 4, 0, 5, 4})
	rng := rand.New(rand.NewPCG(1, 2))
	for range 8 {
		b := make([]byte, 4+3*rng.IntN(30))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 || len(data) > 4+3*1024 {
			return
		}
		c := &scanCase{
			perToken:  exactPerTokens[int(data[0])%len(exactPerTokens)],
			byLoad:    data[1]&1 != 0,
			isl:       int(data[2]) * 16,
			newBlocks: int(data[3] % 8),
		}
		pc := c.plainCost()
		rest := data[4:]
		for pos := int32(0); len(rest) >= 3; pos, rest = pos+1, rest[3:] {
			load, flags, costSel := rest[0], rest[1], rest[2]
			c.prefill = append(c.prefill, 64*int(load&3))
			c.blocks = append(c.blocks, int(load>>2&3))
			cost := pc.of(float64(c.prefill[pos]), float64(c.blocks[pos])) + float64(int(costSel&7)-4)*0.5
			switch costSel >> 3 {
			case 1:
				cost = math.Inf(1)
			case 2:
				cost = math.Inf(-1)
			case 3:
				cost = math.NaN()
			}
			c.costs = append(c.costs, cost)
			if flags&1 != 0 {
				c.sparse = append(c.sparse, pos)
			}
			if flags&2 != 0 {
				c.sparse = append(c.sparse, pos)
			}
			if flags&4 != 0 && len(c.sparse) > 1 { // out of order
				k := len(c.sparse) - 1
				c.sparse[0], c.sparse[k] = c.sparse[k], c.sparse[0]
			}
		}
		if len(c.prefill) == 0 {
			return
		}
		checkMinScan(t, &scratch{}, c, uint64(data[0])<<8|uint64(data[1]))
	})
}

// TestViewKeysFollowLoads checks that the Router's views keep the keys of
// the loads its bookkeeping holds, as requests come and go, and that they
// serve the requests at the configured scale, not an override's.
func TestViewKeysFollowLoads(t *testing.T) {
	ids := make([]uint64, 20)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, ids...), nil))
	rng := rand.New(rand.NewPCG(9, 9))
	var active []string
	for i := range 200 {
		if len(active) > 0 && rng.IntN(3) == 0 {
			k := rng.IntN(len(active))
			e.r.Free(active[k], 1)
			active = slices.Delete(active, k, k+1)
		} else {
			d := route(t, e, &Request{Tokens: tokens(rng.IntN(4)*100, 1+rng.IntN(5), 4)})
			active = append(active, d.RequestID)
		}
		e.r.mu.Lock()
		v := e.r.views[KindDecode]
		perToken := e.r.cfg.params(nil).scale / float64(e.r.cfg.BlockSize)
		keys := v.keys(plainCost{perToken: perToken}, 0, 0)
		overridden := v.keys(plainCost{perToken: perToken * 0.3}, 0, 0)
		var want []int64
		for j := range v.prefill {
			want = append(want, int64(v.prefill[j])*v.keyMul[0]+int64(v.blocks[j])*v.keyMul[1])
		}
		e.r.mu.Unlock()
		if keys == nil || overridden != nil {
			t.Fatalf("step %d: keys %v at the configured scale, %v at another; want some, none", i, keys != nil, overridden != nil)
		}
		if diff := cmp.Diff(want, keys.keys); diff != "" {
			t.Fatalf("step %d: keys (-want +got):\n%s", i, diff)
		}
		if keys.node[1] != slices.Min(want) {
			t.Fatalf("step %d: least key %d, want %d", i, keys.node[1], slices.Min(want))
		}
	}
}

// TestOverrideScaleFallsBack checks decisions at a scale whose keys are
// not exact (a request's override, 0.3 / 4 per token) against the
// filtered path, as TestFastPathMatchesFilteredPath does at the default
// scale.
func TestOverrideScaleFallsBack(t *testing.T) {
	tw := newTwins(t, 30)
	rng := rand.New(rand.NewPCG(6, 6))
	o := &Override{PrefillLoadScale: ptr(0.3)}
	for i := range 300 {
		p := tw.prompt(t, rng, i)
		tw.sameChoice(t, i, rng.Uint64(), Request{Tokens: p, Override: o})
	}
}
