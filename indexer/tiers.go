package indexer

// Storage tiers.
//
// A rank holds a block while any tier holds a copy of it: the tree, the
// holder sets and the reverse maps know nothing of tiers. The tiers a rank
// holds a block on are the union of the tiers of the engine hashes naming
// it, because a rank may name one block by several hashes (aliases) and
// each is stored and removed on its own: a device removal of one alias must
// not take the device copy that another alias still names. Almost every
// block of almost every fleet is on the device alone, so that case is
// stored as nothing at all: a slot that never saw another tier has no
// tierState (tiers is nil), and a slot that did lists only the nodes that
// have a copy off the device, with per-hash tiers only for those it names
// by several hashes. The cost of tiers for a device-only fleet is a nil
// check per stored block and per removed event, and in FindMatches a check
// of Tree.tiered wherever ranks stop matching.

// tierMask is a set of tiers, bit t for Tier t.
type tierMask uint8

// deviceOnly is the mask of a hash held on the device alone: every hash of a
// node that tierState.node does not list.
const deviceOnly tierMask = 1 << TierDevice

// bit returns the mask of tier t alone.
func bit(t Tier) tierMask { return 1 << t }

// fastest returns the fastest tier of a non-empty mask.
func (m tierMask) fastest() Tier {
	for t := range NumTiers {
		if m&bit(t) != 0 {
			return t
		}
	}
	return NumTiers
}

// tierCounts counts, for one aliased (slot, node), the slot's engine hashes
// naming the node that hold a copy on each tier. The node's copies are the
// tiers with a count above zero.
type tierCounts [NumTiers]uint32

// add counts the tiers of m once more.
func (c *tierCounts) add(m tierMask) {
	for t := range NumTiers {
		if m&bit(t) != 0 {
			c[t]++
		}
	}
}

// sub counts the tiers of m once less; c counts them.
func (c *tierCounts) sub(m tierMask) {
	for t := range NumTiers {
		if m&bit(t) != 0 {
			c[t]--
		}
	}
}

// union returns the tiers counted.
func (c *tierCounts) union() tierMask {
	var m tierMask
	for t := range NumTiers {
		if c[t] != 0 {
			m |= bit(t)
		}
	}
	return m
}

// tierState is a slot's record of its copies on tiers other than the device.
// Invariants (checked by Tree.check in the tests):
//
//   - node lists exactly the nodes the slot holds a copy of on a tier other
//     than the device, with the union of the tiers of the hashes naming
//     them; every hash naming a node not listed is on the device alone;
//   - alias lists exactly the listed nodes that the slot names by more
//     than one hash (sl.aliased[n] > 0), with each hash's tiers;
//   - slow counts the listed nodes with no device copy;
//   - the slot's tiers is nil rather than an empty tierState.
//
// A node named by one hash, the usual case, costs one map entry with a
// one-byte value.
type tierState struct {
	node  map[uint32]tierMask
	alias map[uint32]*aliasTiers
	// slow is 0 while every block of the slot has a device copy: the
	// slot's matches then need no per-tier count.
	slow int
}

// aliasTiers are the tiers of the hashes naming one node of a slot that
// names it by several. The hashes are not listed in the tree anywhere by
// node, so the ones that named the node when it got its first copy off the
// device, or its second hash, are not known by name: they all have the
// tiers def until one of them changes, which lists it in hash.
type aliasTiers struct {
	hash   map[BlockHash]tierMask
	def    tierMask
	counts tierCounts
}

// maskOf returns the tiers that hash h of slot sl, naming node n, is held on.
func (sl *slot) maskOf(h BlockHash, n uint32) tierMask {
	ts := sl.tiers
	if ts == nil {
		return deviceOnly
	}
	if a := ts.alias[n]; a != nil {
		if m, ok := a.hash[h]; ok {
			return m
		}
		return a.def
	}
	if m, ok := ts.node[n]; ok {
		return m
	}
	return deviceOnly
}

// setNode records that the slot of ts holds node n on the tiers m (0: no
// longer).
func (t *Tree) setNode(ts *tierState, n uint32, m tierMask) {
	old, listed := ts.node[n]
	wasSlow := listed && old&deviceOnly == 0
	isSlow := m&^deviceOnly != 0 && m&deviceOnly == 0
	if m&^deviceOnly == 0 {
		delete(ts.node, n)
	} else {
		ts.node[n] = m
	}
	switch {
	case isSlow && !wasSlow:
		ts.slow++
		t.markSlow(n, 1)
	case wasSlow && !isSlow:
		ts.slow--
		t.markSlow(n, -1)
	}
}

// markSlow counts one slot more (d 1) or less (d -1) that holds node n with
// no device copy, keeping slowBits in step.
func (t *Tree) markSlow(n uint32, d int) {
	if int(n) >= len(t.slowCount) {
		// Grown to the node slice, which holds every node there is.
		t.slowCount = append(t.slowCount, make([]uint32, len(t.nodes)-len(t.slowCount))...)
		t.slowBits = append(t.slowBits, make([]uint64, (len(t.nodes)+63)/64-len(t.slowBits))...)
	}
	t.slowCount[n] = uint32(int(t.slowCount[n]) + d)
	w, b := n>>6, uint64(1)<<(n&63)
	if t.slowCount[n] == 0 {
		t.slowBits[w] &^= b
	} else {
		t.slowBits[w] |= b
	}
}

// isSlow reports whether some slot holds node n with no device copy.
func (t *Tree) isSlow(n uint32) bool {
	w := n >> 6
	return int(w) < len(t.slowBits) && t.slowBits[w]&(1<<(n&63)) != 0
}

// retier records that hash h of slot s, naming node n, goes from the tiers
// old to the tiers now. old is 0 for a hash just added, now is 0 for a hash
// about to go. h must name n in the slot's map when it is called (added
// already, or not yet removed), so that sl.aliased[n] counts the slot's other
// hashes naming n.
func (t *Tree) retier(s uint32, h BlockHash, n uint32, old, now tierMask) {
	if old == now {
		return
	}
	sl := t.slots[s]
	ts := sl.tiers
	if ts == nil {
		if (old|now)&^deviceOnly == 0 {
			return // device-only before and after: nothing recorded
		}
		ts = &tierState{node: make(map[uint32]tierMask)}
		sl.tiers = ts
		t.tiered++
	}
	others := sl.aliased[n] // the slot's hashes naming n besides h
	a := ts.alias[n]
	switch m, listed := ts.node[n]; {
	case a != nil:
		a.counts.sub(old)
		a.counts.add(now)
		if now == 0 {
			delete(a.hash, h)
		} else {
			a.hash[h] = now
		}
		u := a.counts.union()
		t.setNode(ts, n, u)
		left := others // the hashes naming n after the change
		if now != 0 {
			left++
		}
		if left <= 1 || u&^deviceOnly == 0 {
			// One hash left, whose tiers are the node's; or every hash
			// on the device alone.
			delete(ts.alias, n)
		}
	case !listed && now&^deviceOnly == 0:
		// Every hash naming n, h too, is on the device alone.
	case others == 0:
		t.setNode(ts, n, now)
	default:
		// n gets its second hash while it has a copy off the device, or
		// its first copy off the device while it has several hashes: the
		// others, unnamed, all have the node's tiers so far.
		if !listed {
			m = deviceOnly
		}
		a = &aliasTiers{hash: map[BlockHash]tierMask{h: now}, def: m}
		for range others {
			a.counts.add(m)
		}
		a.counts.add(now)
		if ts.alias == nil {
			ts.alias = make(map[uint32]*aliasTiers)
		}
		ts.alias[n] = a
		t.setNode(ts, n, a.counts.union())
	}
	t.trimTiers(s)
}

// forgetNode drops the tiers of node n, which slot s no longer holds.
func (t *Tree) forgetNode(s, n uint32) {
	if ts := t.slots[s].tiers; ts != nil {
		t.setNode(ts, n, 0)
		delete(ts.alias, n)
	}
}

// trimTiers returns slot s, if its hashes are all device-only, to having no
// tierState, so that it takes the device-only paths again.
func (t *Tree) trimTiers(s uint32) {
	if ts := t.slots[s].tiers; ts != nil && len(ts.node) == 0 {
		t.dropTiers(s)
	}
}

// dropTiers forgets every copy of slot s off the device.
func (t *Tree) dropTiers(s uint32) {
	ts := t.slots[s].tiers
	if ts == nil {
		return
	}
	for n, m := range ts.node {
		if m&deviceOnly == 0 {
			t.markSlow(n, -1)
		}
	}
	t.slots[s].tiers = nil
	t.tiered--
}

// addTier adds tier tr to hash h of slot s, which names node n.
func (t *Tree) addTier(s uint32, h BlockHash, n uint32, tr Tier) {
	sl := t.slots[s]
	if sl.tiers == nil && tr == TierDevice {
		return
	}
	m := sl.maskOf(h, n)
	t.retier(s, h, n, m, m|bit(tr))
}

// storeByHash applies a stored event whose blocks are named by engine hash
// only: each hash the rank holds gains the event's tier; the others are
// skipped and counted. Nothing else changes: no block is added, moved or
// refreshed, so the event needs no validation and never evicts.
func (t *Tree) storeByHash(o *op) (missing int) {
	ev, s := &o.ev, o.s
	if o.sl == nil {
		return len(ev.Blocks)
	}
	for _, b := range ev.Blocks {
		n, ok := t.slots[s].blocks.Get(b.Hash)
		if !ok {
			missing++
			continue
		}
		t.addTier(s, b.Hash, n, ev.Tier)
	}
	return missing
}

// removeTier applies a removed event about tier tr, for a slot that has
// copies on other tiers or an event about another tier than the device: each
// named hash held on tr loses that copy, and the rank loses the hash (as
// remove does) once no tier is left. A hash held, but not on tr, is missing.
func (t *Tree) removeTier(s uint32, hashes []BlockHash, tr Tier) (missing int) {
	for _, h := range hashes {
		sl := t.slots[s]
		n, ok := sl.blocks.Get(h)
		if !ok {
			if !t.purgedInEvent(h) {
				missing++
			}
			continue
		}
		m := sl.maskOf(h, n)
		if m&bit(tr) == 0 {
			missing++
			continue
		}
		rest := m &^ bit(tr)
		t.retier(s, h, n, m, rest)
		if rest != 0 {
			continue
		}
		sl.blocks.Delete(h)
		t.release(s, n)
		t.purged = append(t.purged, h)
	}
	return missing
}

// countTiers fills the per-tier counts of m, slot s's match of the m.Blocks
// blocks on the path from the root to node last: each block counts on its
// fastest tier.
func (t *Tree) countTiers(m *Match, s, last uint32) {
	ts := t.slots[s].tiers
	if ts == nil || ts.slow == 0 {
		return // every block has a device copy
	}
	n := last
	for range m.Blocks {
		// Most nodes, those no rank holds without a device copy, need no
		// lookup.
		if t.isSlow(n) {
			if tiers, ok := ts.node[n]; ok && tiers&deviceOnly == 0 {
				switch tiers.fastest() {
				case TierHost:
					m.Host++
				case TierDisk:
					m.Disk++
				case TierExternal:
					m.External++
				}
			}
		}
		n = t.nodes[n].parent
	}
}
