package scheduler

import "math"

// This file holds the peers' policies: what llm-d's precise-prefix
// scheduling profile and Dynamo's current KV router would choose, fed by
// this router's index and load prediction, so that `router compare` can
// set ours against the policies users would pick instead (docs/replay.md,
// "Against the peers' policies", gives the sources and the mappings).
// They are scored here, apart from kv's path (choose.go and minscan.go),
// which pays one mode comparison for them.

// The weights of llm-d's precise-prefix-cache scheduling profile
// (llm-d-inference-scheduler deploy/config/epp-precise-prefix-cache-config.yaml
// and llm-d guides/precise-prefix-cache-aware).
const (
	llmdPrefixWeight = 2.0
	llmdKVUtilWeight = 1.0
	llmdQueueWeight  = 1.0
)

// llmdPrefixScore is the precise-prefix-cache scorer's score: the prompt
// blocks the rank holds over the prompt's blocks, in [0, 1]; 0 for a
// prompt of no full block.
func llmdPrefixScore(overlap, promptBlocks int) float64 {
	if promptBlocks <= 0 || overlap <= 0 {
		return 0
	}
	return min(1, float64(overlap)/float64(promptBlocks))
}

// llmdKVUtilScore is the KV-cache utilisation scorer's score: 1 − the
// share of the rank's KV blocks in use, clamped to [0, 1] as the profile
// clamps every score. A rank whose card states no total_kv_blocks scores 1
// (nothing known in use).
func llmdKVUtilScore(activeBlocks float64, totalKVBlocks int) float64 {
	if totalKVBlocks <= 0 {
		return 1
	}
	return clamp01(1 - activeBlocks/float64(totalKVBlocks))
}

// llmdQueueScore is the queue scorer's score: (max − q) / (max − min) over
// the eligible ranks' queue depths, 1 for every rank when they are all
// equal.
func llmdQueueScore(q, qMin, qMax int) float64 {
	if qMax == qMin {
		return 1
	}
	return float64(qMax-q) / float64(qMax-qMin)
}

// llmdScore is the profile's weighted sum of the three scores, higher
// wins.
func llmdScore(prefix, kvUtil, queue float64) float64 {
	return llmdPrefixWeight*prefix + llmdKVUtilWeight*kvUtil + llmdQueueWeight*queue
}

func clamp01(x float64) float64 { return min(1, max(0, x)) }

// dynamoCreditDecay is current Dynamo's factor on a rank's overlap credit:
//
//	1 / (1 + decay × ((activePrefill − minPrefill) / blockSize) / promptBlocks)
//
// minPrefill being the least active prefill tokens among the eligible
// ranks and promptBlocks ⌈isl / blockSize⌉; exactly 1 when decay is 0 (off)
// or the prompt has no tokens.
func dynamoCreditDecay(decay float64, blockSize, activePrefill, minPrefill, isl int) float64 {
	promptBlocks := (isl + blockSize - 1) / blockSize
	if decay <= 0 || promptBlocks == 0 {
		return 1
	}
	excess := float64(max(0, activePrefill-minPrefill)) / float64(blockSize)
	return 1 / (1 + decay*excess/float64(promptBlocks))
}

// dynamoCurrentCost is current Dynamo's cost of a rank whose overlap is
// all on the device, lower wins:
//
//	scale × max(0, (activePrefill + isl) / blockSize − credit × creditDecay × overlap)
//	  + decodeBlocks + requestWeight × requests
//
// computed as kvCost is, so that with creditDecay 1 and requestWeight 0
// (Dynamo's defaults) it equals kvCost to the bit and the two modes make
// the same decisions.
func dynamoCurrentCost(p costParams, blockSize, activePrefill, isl, overlap, decodeBlocks int, creditDecay, requestWeight float64, requests int) float64 {
	return dynamoCurrentTieredCost(p, blockSize, activePrefill, isl, overlap, 0, decodeBlocks, creditDecay, requestWeight, requests)
}

// dynamoCurrentTieredCost is dynamoCurrentCost with Dynamo's credit by
// tier: device is the rank's overlap on the device, lowerCredit its lower
// tiers' credit (tierShare), which the decay does not fade, as in Dynamo:
//
//	scale × max(0, (activePrefill + isl) / blockSize − credit × creditDecay × device − lowerCredit)
//	  + decodeBlocks + requestWeight × requests
//
// With lowerCredit 0 it is dynamoCurrentCost to the bit.
func dynamoCurrentTieredCost(p costParams, blockSize, activePrefill, isl, device int, lowerCredit float64, decodeBlocks int, creditDecay, requestWeight float64, requests int) float64 {
	perToken := p.scale / float64(blockSize)
	c := tieredCostOf(perToken, perToken*float64(isl), p.scale*p.credit*creditDecay, float64(activePrefill), float64(device), p.scale*lowerCredit, float64(decodeBlocks))
	if requestWeight != 0 {
		c += requestWeight * float64(requests)
	}
	return c
}

// choosePeerLocked is chooseLocked for the peers' modes: it reads the
// overlaps, with their tiers (and, for dynamo-current, the active
// prefixes) as kv does, removes the candidates the request may not have,
// scores the others, and takes the best, uniformly at random among exact
// ties. byLoad drops the overlap from the score, as for kv. mu is held.
func (r *Router) choosePeerLocked(s *scratch, p *prompt, v *view, kind Kind, byLoad bool, cp costParams, ignoreQueue bool) (pick, bool, error) {
	cands := v.cands
	n := len(cands)
	s.overlap = zeroed(s.overlap, n)
	s.prefix = zeroed(s.prefix, n)
	tiered := false
	if !byLoad {
		s.sparse, tiered = s.overlapsOf(p.matches, v, s.sparse[:0])
	}
	if tiered {
		s.shareTiers(p.matches, v, r.tiers)
	}
	costs := grownFloats(s.costs, n)
	s.costs = costs
	clear(costs)
	queue := r.queue != nil && !ignoreQueue
	if s.allowed != nil || r.thresholds || queue {
		if busy, err := r.filterLocked(s, v, kind, costs, queue); busy || err != nil {
			return pick{}, busy, err
		}
	}
	temperature := 0.0
	switch r.cfg.Mode {
	case ModeLLMDPrecisePrefix:
		r.scoreLLMDLocked(s, p, v, costs)
	case ModeDynamoCurrent:
		s.sparse = r.seqs.ActivePrefix(p.seqHashes, v.posOf, s.prefix, s.sparse[:0])
		r.scoreDynamoCurrentLocked(s, p, v, byLoad, tiered, cp, costs)
		temperature = cp.temperature
	}
	i := r.pickLocked(s, costs, temperature)
	return s.pickAt(cands, i, tiered), false, nil
}

// scoreLLMDLocked writes, for every candidate whose cost is finite (not
// filtered out), the negated llm-d profile score, so that the least cost
// is the highest score; s.overlap holds the overlaps, blocks on every tier
// counted whole (llm-d's own per-medium weights are not modelled). The
// queue depth is the rank's active requests as the router predicts them,
// min-max normalised over those candidates; the KV utilisation is its
// active blocks over its total_kv_blocks. mu is held.
func (r *Router) scoreLLMDLocked(s *scratch, p *prompt, v *view, costs []float64) {
	qMin, qMax := math.MaxInt, math.MinInt
	for i, c := range costs {
		if math.IsInf(c, 1) {
			continue
		}
		q := r.seqs.Load(v.rank[i]).Requests
		qMin, qMax = min(qMin, q), max(qMax, q)
	}
	for i, c := range costs {
		if math.IsInf(c, 1) {
			continue
		}
		q := r.seqs.Load(v.rank[i]).Requests
		costs[i] = -llmdScore(
			llmdPrefixScore(int(s.overlap[i]), p.numBlocks),
			llmdKVUtilScore(v.blocks[i], v.cands[i].TotalKVBlocks),
			llmdQueueScore(q, qMin, qMax),
		)
	}
}

// scoreDynamoCurrentLocked writes current Dynamo's cost of every candidate
// whose cost is finite; s.overlap and s.prefix hold the overlaps and
// active prefixes, and, when tiered, s.shares the overlaps' lower tiers.
// mu is held.
func (r *Router) scoreDynamoCurrentLocked(s *scratch, p *prompt, v *view, byLoad, tiered bool, cp costParams, costs []float64) {
	newBlocks := 0
	if r.seqs.TracksBlocks() {
		newBlocks = p.numBlocks
	}
	decay, weight := r.cfg.OverlapScoreCreditDecay, r.cfg.DecodeActiveRequestWeight
	minPrefill := math.MaxInt
	if decay > 0 && !byLoad {
		for i, c := range costs {
			if !math.IsInf(c, 1) {
				minPrefill = min(minPrefill, int(v.prefill[i]))
			}
		}
	}
	for i, c := range costs {
		if math.IsInf(c, 1) {
			continue
		}
		decode := int(v.blocks[i]) + newBlocks - int(s.prefix[i])
		requests := 0
		if weight != 0 {
			requests = r.seqs.Load(v.rank[i]).Requests
		}
		if byLoad {
			costs[i] = loadCost(float64(decode)) + weight*float64(requests)
			continue
		}
		f := dynamoCreditDecay(decay, r.cfg.BlockSize, int(v.prefill[i]), minPrefill, p.isl)
		var sh tierShare
		if tiered {
			sh = s.shares[i]
		}
		costs[i] = dynamoCurrentTieredCost(cp, r.cfg.BlockSize, int(v.prefill[i]), p.isl, int(s.overlap[i]-sh.lower), sh.credit, decode, f, weight, requests)
	}
}
