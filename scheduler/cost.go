package scheduler

import (
	"math"
	"math/rand/v2"

	"github.com/kvrouter/router/indexer"
)

// This file is the cost function of docs/compat.md §5 and the choice
// among costs: pure functions, table-tested against hand-computed cases.

// kvCost is the cost, lower wins, of routing a prompt to a rank, KV-aware:
//
//	scale × max(0, (activePrefill + isl) / blockSize − credit × overlap) + decodeBlocks
//
// where decodeBlocks are the rank's active blocks after adding the prompt's
// blocks it does not already have active. With credit 1 and no clamping it
// equals Dynamo's classic weight × (activePrefill + isl − overlap ×
// blockSize) / blockSize + decodeBlocks, the legacy weight being the scale.
//
// It is computed with the scale distributed, (perToken × activePrefill +
// perToken × isl − scale × credit × overlap) + decodeBlocks, in the order
// the Router's dense scoring pass uses for ranks without overlap, so that
// equal costs compare equal whichever path computed them.
func kvCost(p costParams, blockSize, activePrefill, isl, overlap, decodeBlocks int) float64 {
	perToken := p.scale / float64(blockSize)
	return kvCostOf(perToken, perToken*float64(isl), p.scale*p.credit, float64(activePrefill), float64(overlap), float64(decodeBlocks))
}

// kvCostOf is kvCost with the per-decision factors precomputed: perToken
// = scale / blockSize, islCost = perToken × isl, scaleCredit = scale ×
// credit.
func kvCostOf(perToken, islCost, scaleCredit, activePrefill, overlap, decodeBlocks float64) float64 {
	prefill := perToken*activePrefill + islCost - scaleCredit*overlap
	if prefill < 0 { // not max(): its NaN and signed-zero rules cost a third of a scoring loop
		prefill = 0
	}
	return prefill + decodeBlocks
}

// tieredCostOf is kvCostOf for a rank whose matched blocks are not all on
// the device, with Dynamo's credit by tier:
//
//	scale × max(0, (activePrefill + isl) / blockSize − credit × device − lowerCredit) + decodeBlocks
//
// device being the rank's matched blocks on the device and scaledLower
// scale × lowerCredit, the credit of its blocks on lower tiers
// (tierShare). The device term is computed as kvCostOf computes it and
// the lower tiers' is subtracted after it, so that with scaledLower 0 the
// cost is kvCostOf's to the bit (x − 0 is x) and a device-only fleet is
// scored as before.
func tieredCostOf(perToken, islCost, scaleCredit, activePrefill, device, scaledLower, decodeBlocks float64) float64 {
	prefill := perToken*activePrefill + islCost - scaleCredit*device - scaledLower
	if prefill < 0 {
		prefill = 0
	}
	return prefill + decodeBlocks
}

// tieredCost is kvCost for a match whose blocks may lie on several tiers,
// weighed by tw: tieredCostOf with the per-decision factors computed.
func tieredCost(p costParams, tw tierWeights, blockSize, activePrefill, isl int, m indexer.Match, decodeBlocks int) float64 {
	perToken := p.scale / float64(blockSize)
	sh := tw.share(m)
	return tieredCostOf(perToken, perToken*float64(isl), p.scale*p.credit, float64(activePrefill),
		float64(m.Blocks-sh.lower), p.scale*sh.credit, float64(decodeBlocks))
}

// tierWeights are the credits, in blocks of prefill, of a cached block
// whose fastest copy is below the device: in host memory
// (--router-host-cache-hit-weight), or on disk or external storage
// (--router-disk-cache-hit-weight; Dynamo credits external storage as
// disk). A block on the device is credited the overlap score credit. As in
// Dynamo, the lower tiers' credits are not multiplied by the overlap score
// credit, nor faded by dynamo-current's credit decay: they are the share
// of a block's prefill its transfer saves, whatever weight the device's
// blocks are given.
type tierWeights struct{ host, disk float64 }

// tierShare is what a match's lower tiers contribute: how many of its
// blocks are below the device, and their credit in blocks, host × Host +
// disk × (Disk + External).
type tierShare struct {
	lower  uint32
	credit float64
}

// cached is an overlap of blocks, whose lower tiers' share is sh, with
// those tiers' blocks at their weights (tierWeights.cached).
func (sh tierShare) cached(blocks uint32) float64 {
	return float64(blocks-sh.lower) + sh.credit
}

// share returns m's lower-tier share; it is zero for a match whose blocks
// are all on the device.
func (tw tierWeights) share(m indexer.Match) tierShare {
	host, disk, ext := tierCounts(m)
	return tierShare{lower: host + disk + ext, credit: tw.host*float64(host) + tw.disk*(float64(disk)+float64(ext))}
}

// cached is m's overlap with its lower-tier blocks at their weights, in
// blocks: the device blocks plus the lower tiers' credit. It is what the
// prompt's prefill tokens on the rank are estimated from
// (creditedPrefillTokens), as Dynamo estimates its cached tokens: without
// the overlap score credit, which weighs the device's blocks in the cost
// only.
func (tw tierWeights) cached(m indexer.Match) float64 {
	return tw.share(m).cached(m.Blocks)
}

// tierCounts returns m's blocks on the host, disk and external tiers,
// each clamped so that together they never exceed m.Blocks: a count past
// the matched blocks would make the device's negative.
func tierCounts(m indexer.Match) (host, disk, external uint32) {
	host = min(m.Host, m.Blocks)
	disk = min(m.Disk, m.Blocks-host)
	external = min(m.External, m.Blocks-host-disk)
	return host, disk, external
}

// plainCost is the cost of a candidate with neither overlap nor active
// prefix, which most candidates are: kvCostOf, or loadCost when by load,
// reduced to a multiply and three adds, in kvCostOf's order so that equal
// costs compare equal whichever computed them. perToken is scale /
// blockSize, islCost is perToken × isl, and newF is the number of blocks
// the prompt adds.
type plainCost struct {
	perToken, islCost, newF float64
	byLoad                  bool
}

// of is the cost of a candidate with the given active prefill tokens and
// active blocks.
func (pc plainCost) of(prefill, blocks float64) float64 {
	if pc.byLoad {
		return blocks + pc.newF
	}
	return (pc.perToken*prefill + pc.islCost) + (blocks + pc.newF)
}

// loadCost is the cost of a rank chosen by load only (the decode half of
// disaggregated serving): its active blocks after adding the prompt's,
// without overlap credit or prefill tokens.
func loadCost(decodeBlocks float64) float64 { return decodeBlocks }

// prefillTokens is what a prompt adds to a rank's active prefill tokens:
// the tokens not covered by the overlap, never below 0.
func prefillTokens(isl, overlap, blockSize int) int {
	return max(0, isl-overlap*blockSize)
}

// creditedPrefillTokens is prefillTokens for an overlap credited by tier
// (tierWeights.cached), which need not be a whole number of blocks: the
// cached tokens are cached × blockSize rounded to the nearest, as Dynamo
// rounds its cached_tokens. For a whole overlap it equals prefillTokens.
func creditedPrefillTokens(isl int, cached float64, blockSize int) int {
	return max(0, isl-int(math.Round(cached*float64(blockSize))))
}

// pickMin returns the index of the least cost, uniformly at random among
// exact ties: one pass keeps the least cost and the positions that have
// it (ties, scratch of cap ≥ len(costs), returned for reuse), then one draw
// picks among them. costs must not be empty.
func pickMin(costs []float64, ties []int32, rng *rand.Rand) (int, []int32) {
	best := costs[0]
	ties = append(ties[:0], 0)
	for i := 1; i < len(costs); i++ {
		switch c := costs[i]; {
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

// pickTie draws one of ties, without a draw when there is one.
func pickTie(ties []int32, rng *rand.Rand) int {
	if len(ties) == 1 {
		return int(ties[0])
	}
	return int(ties[rng.IntN(len(ties))])
}

// pickSoftmax samples an index with probability
//
//	p_i ∝ exp(−(c_i − c_min) / ((c_max − c_min) × temperature))
//
// uniform when every cost is equal. weights is scratch of len(costs).
// temperature must be > 0; costs must not be empty.
func pickSoftmax(costs, weights []float64, temperature float64, rng *rand.Rand) int {
	lo, hi := costs[0], costs[0]
	for _, c := range costs[1:] {
		lo, hi = min(lo, c), max(hi, c)
	}
	if hi == lo {
		return rng.IntN(len(costs))
	}
	scale := (hi - lo) * temperature
	var sum float64
	for i, c := range costs {
		w := math.Exp(-(c - lo) / scale)
		weights[i] = w
		sum += w
	}
	u := rng.Float64() * sum
	for i, w := range weights {
		u -= w
		if u < 0 {
			return i
		}
	}
	// Rounding left u ≥ 0 after the last weight: the last positive one.
	for i := len(weights) - 1; i > 0; i-- {
		if weights[i] > 0 {
			return i
		}
	}
	return 0
}
