package indexer

import "sync/atomic"

// FindMatches scores a query: for every worker rank that holds the query's
// first block, how many leading blocks of the query it holds, on any tier,
// and how many of those have their fastest copy on each tier other than the
// device. The scores are appended to dst[:0] in no particular order;
// FindMatches allocates nothing when dst has room for every matching rank.
//
// The per-tier counts cost nothing while no rank of the tree has a copy off
// the device; then, one map lookup per matched block of each matching rank
// that holds some block with no device copy.
//
// With earlyExit the walk stops as soon as a single rank is left, as Dynamo's
// early exit does: that rank's score is then the depth reached, a lower
// bound.
//
// FindMatches may run concurrently with other FindMatches calls on the same
// tree, but not with anything that changes it.
func (t *Tree) FindMatches(query []LocalHash, earlyExit bool, dst []Match) []Match {
	dst = dst[:0]
	now := atomic.LoadUint32(&t.clock)
	cur := root
	var prev uint32 // holders of the node at depth-1
	prevCount := 0
	depth := 0
	for _, h := range query {
		c := t.child(cur, h)
		if c == none {
			break
		}
		nd := &t.nodes[c]
		if atomic.LoadUint32(&nd.stamp) != now {
			atomic.StoreUint32(&nd.stamp, now)
		}
		tag := nd.holders
		count := t.count(tag)
		// The holders of a node are a subset of its parent's: equal counts
		// mean equal sets, so nobody dropped out.
		if depth > 0 && count != prevCount {
			dst = t.appendDropped(dst, prev, tag, uint32(depth), cur)
		}
		prev, prevCount = tag, count
		depth++
		cur = c
		if earlyExit && count == 1 {
			break
		}
	}
	if depth == 0 {
		return dst
	}
	return t.appendAll(dst, prev, uint32(depth), cur)
}

// appendDropped appends, with the given score, the matches of the slots of
// holders tag prev that are not in tag cur (a subset of prev); last is the
// node of tag prev. Each match counts its tiers, unless no slot has a copy
// off the device (Tree.tiered is 0).
func (t *Tree) appendDropped(dst []Match, prev, cur uint32, score, last uint32) []Match {
	if prev&setFlag == 0 {
		// A single holder that dropped out: cur is empty.
		dst = append(dst, Match{Worker: t.workers[prev-1], Blocks: score})
		if t.tiered > 0 {
			t.countTiers(&dst[len(dst)-1], prev-1, last)
		}
		return dst
	}
	tiered := t.tiered > 0
	ps := t.sets[prev&^setFlag]
	if cur&setFlag == 0 {
		keep := cur - 1
		for _, s := range ps {
			if s != keep || cur == 0 {
				dst = append(dst, Match{Worker: t.workers[s], Blocks: score})
				if tiered {
					t.countTiers(&dst[len(dst)-1], s, last)
				}
			}
		}
		return dst
	}
	cs := t.sets[cur&^setFlag]
	j := 0
	for _, s := range ps {
		if j < len(cs) && cs[j] == s {
			j++
			continue
		}
		dst = append(dst, Match{Worker: t.workers[s], Blocks: score})
		if tiered {
			t.countTiers(&dst[len(dst)-1], s, last)
		}
	}
	return dst
}

// appendAll appends the matches of every slot of holders tag, the holders of
// node last, with the given score.
func (t *Tree) appendAll(dst []Match, tag uint32, score, last uint32) []Match {
	switch {
	case tag == 0:
	case tag&setFlag == 0:
		dst = append(dst, Match{Worker: t.workers[tag-1], Blocks: score})
		if t.tiered > 0 {
			t.countTiers(&dst[len(dst)-1], tag-1, last)
		}
	default:
		tiered := t.tiered > 0
		for _, s := range t.sets[tag&^setFlag] {
			dst = append(dst, Match{Worker: t.workers[s], Blocks: score})
			if tiered {
				t.countTiers(&dst[len(dst)-1], s, last)
			}
		}
	}
	return dst
}
