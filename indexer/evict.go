package indexer

import (
	"slices"
	"sync/atomic"
)

// evict enforces Config.MaxEntries: when the entries exceed it, the least
// recently matched or stored nodes go, with everything below them, until
// EvictTo of the cap is left. Ancestors are never older than descendants
// (see touchUp), so whole subtrees of cold prefixes go first and hot shared
// prefixes stay. It returns the entries evicted.
func (t *Tree) evict() int {
	if !t.overCap() {
		return 0
	}
	target := int(float64(t.cfg.MaxEntries) * t.cfg.EvictTo)
	need := t.entries - target

	// Find the age above which enough entries lie. Ages are clock
	// differences, so they survive the clock wrapping (see rebase).
	now := t.clock
	type aged struct {
		age    uint32
		weight int
	}
	ages := make([]aged, 0, t.live)
	for i := 1; i < len(t.nodes); i++ {
		nd := &t.nodes[i]
		if nd.parent == dead {
			continue
		}
		ages = append(ages, aged{now - atomic.LoadUint32(&nd.stamp), t.count(nd.holders)})
	}
	// Oldest first.
	slices.SortFunc(ages, func(a, b aged) int { return int(int64(b.age) - int64(a.age)) })
	cutoff, sum := uint32(0), 0
	for _, a := range ages {
		cutoff = a.age
		sum += a.weight
		if sum >= need {
			break
		}
	}

	before := t.entries
	affected := make(map[uint32]struct{})
	for i := 1; i < len(t.nodes); i++ {
		n := uint32(i)
		nd := &t.nodes[n]
		if nd.parent == dead || now-atomic.LoadUint32(&nd.stamp) < cutoff {
			continue
		}
		t.evictSubtree(n, affected)
	}
	for s := range affected {
		t.purge(s)
	}
	evicted := before - t.entries
	t.evicted += uint64(evicted)
	return evicted
}

// overCap reports whether the entries exceed Config.MaxEntries.
func (t *Tree) overCap() bool {
	return t.cfg.MaxEntries > 0 && t.entries > t.cfg.MaxEntries
}

// evictSubtree drops n and everything below it, for every holder and on
// every tier, noting the slots whose maps must be purged.
func (t *Tree) evictSubtree(n uint32, affected map[uint32]struct{}) {
	for c := t.nodes[n].first; c != none; {
		next := t.nodes[c].next
		t.evictSubtree(c, affected)
		c = next
	}
	t.forHolders(n, func(s uint32) {
		affected[s] = struct{}{}
		t.slots[s].entries--
		t.entries--
		t.forgetNode(s, n)
	})
	t.freeNode(n)
}

// maxAge bounds node ages so that clock differences stay meaningful when the
// 32-bit clock wraps.
const maxAge = 1 << 30

// rebase clamps every node's age to maxAge. Apply calls it every maxAge
// events, so no age ever reaches 2^31 and wraps around.
func (t *Tree) rebase() {
	now := t.clock
	for i := 1; i < len(t.nodes); i++ {
		nd := &t.nodes[i]
		if nd.parent != dead && now-nd.stamp > maxAge {
			atomic.StoreUint32(&nd.stamp, now-maxAge)
		}
	}
}
