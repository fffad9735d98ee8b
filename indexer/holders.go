package indexer

import "slices"

// Holder sets: a node held by one rank stores the rank's slot inline; a node
// held by several points at a sorted slot list in Tree.sets.

// count returns how many ranks a holders tag names.
func (t *Tree) count(tag uint32) int {
	switch {
	case tag == 0:
		return 0
	case tag&setFlag == 0:
		return 1
	default:
		return len(t.sets[tag&^setFlag])
	}
}

// holds reports whether node n is held by slot s.
func (t *Tree) holds(n, s uint32) bool {
	tag := t.nodes[n].holders
	switch {
	case tag == 0:
		return false
	case tag&setFlag == 0:
		return tag-1 == s
	default:
		_, ok := slices.BinarySearch(t.sets[tag&^setFlag], s)
		return ok
	}
}

// addHolder adds slot s to node n and reports whether it was new.
func (t *Tree) addHolder(n, s uint32) bool {
	nd := &t.nodes[n]
	tag := nd.holders
	switch {
	case tag == 0:
		nd.holders = s + 1
	case tag&setFlag == 0:
		o := tag - 1
		if o == s {
			return false
		}
		i := t.newSet()
		set := append(t.sets[i][:0], min(o, s), max(o, s))
		t.sets[i] = set
		t.nodes[n].holders = setFlag | i
	default:
		i := tag &^ setFlag
		set := t.sets[i]
		at, ok := slices.BinarySearch(set, s)
		if ok {
			return false
		}
		t.sets[i] = slices.Insert(set, at, s)
	}
	return true
}

// removeHolder removes slot s from node n and reports whether it was there.
func (t *Tree) removeHolder(n, s uint32) bool {
	nd := &t.nodes[n]
	tag := nd.holders
	switch {
	case tag == 0:
		return false
	case tag&setFlag == 0:
		if tag-1 != s {
			return false
		}
		nd.holders = 0
	default:
		i := tag &^ setFlag
		set := t.sets[i]
		at, ok := slices.BinarySearch(set, s)
		if !ok {
			return false
		}
		set = slices.Delete(set, at, at+1)
		t.sets[i] = set
		if len(set) == 1 {
			nd.holders = set[0] + 1
			t.releaseSet(i)
		}
	}
	return true
}

// forHolders calls fn for each slot holding node n, in slot order.
func (t *Tree) forHolders(n uint32, fn func(s uint32)) {
	tag := t.nodes[n].holders
	switch {
	case tag == 0:
	case tag&setFlag == 0:
		fn(tag - 1)
	default:
		for _, s := range t.sets[tag&^setFlag] {
			fn(s)
		}
	}
}

func (t *Tree) newSet() uint32 {
	if n := len(t.freeSets); n > 0 {
		i := t.freeSets[n-1]
		t.freeSets = t.freeSets[:n-1]
		return i
	}
	t.sets = append(t.sets, make([]uint32, 0, 4))
	return uint32(len(t.sets) - 1)
}

func (t *Tree) releaseSet(i uint32) {
	t.sets[i] = t.sets[i][:0]
	t.freeSets = append(t.freeSets, i)
}

// hold adds slot s to node c, counting an entry, or an alias if the slot
// holds c already under another hash.
func (t *Tree) hold(s, c uint32) {
	sl := t.slots[s]
	if t.addHolder(c, s) {
		sl.entries++
		t.entries++
		return
	}
	if sl.aliased == nil {
		sl.aliased = make(map[uint32]int)
	}
	sl.aliased[c]++
}
