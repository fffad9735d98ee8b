package active

// childTable maps (node, hash) to the node's child whose blocks start with
// that hash: the edges of the active-block tree (activeTree), one entry a
// node.
//
// Why not a Go map: nodes come and go with every request (a request's own
// blocks are a node), and a Go map under that churn fills its groups with
// tombstones, so that lookups probe long chains. This table is open
// addressing with linear probing and backward-shift deletion: a delete
// leaves no tombstone, so a lookup scans only the run its key hashes into,
// and the slots hold no pointer, so the garbage collector never scans
// them.
//
// The table is not safe for concurrent use (the owner of the Sequences locks
// around it).
type childTable struct {
	slots []childSlot
	// mask is len(slots)−1; len(slots) is a power of two.
	mask uint64
	// shift turns the 64-bit mixed hash into a slot index (its top bits).
	shift uint
	n     int
}

// childSlot is one slot; child 0 (the root, never a child) marks it empty.
type childSlot struct {
	hash   uint64
	parent int32
	child  int32
}

// minChildSlots is the table's smallest size.
const minChildSlots = 1 << 10

func (t *childTable) used(i uint64) bool { return t.slots[i].child != 0 }

// home returns the slot (parent, hash) hashes to. Sequence hashes are
// already hashes, but tests and replicas may send small or patterned ones:
// Fibonacci hashing spreads them anyway, at the cost of a multiply.
func (t *childTable) home(parent int32, hash uint64) uint64 {
	return ((hash ^ uint64(uint32(parent))*0xC2B2AE3D27D4EB4F) * 0x9E3779B97F4A7C15) >> t.shift
}

// find returns the slot index of (parent, hash), or −1.
func (t *childTable) find(parent int32, hash uint64) int {
	if t.n == 0 {
		return -1
	}
	for i := t.home(parent, hash); ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.child == 0 {
			return -1
		}
		if s.hash == hash && s.parent == parent {
			return int(i)
		}
	}
}

// get returns the child of parent starting with hash, or 0.
func (t *childTable) get(parent int32, hash uint64) int32 {
	i := t.find(parent, hash)
	if i < 0 {
		return 0
	}
	return t.slots[i].child
}

// set makes child, which must not be 0, the child of parent starting with
// hash.
func (t *childTable) set(parent int32, hash uint64, child int32) {
	if (t.n+1)*2 > len(t.slots) {
		t.resize(max(len(t.slots)*2, minChildSlots))
	}
	i := t.home(parent, hash)
	for ; t.used(i); i = (i + 1) & t.mask {
		if s := &t.slots[i]; s.hash == hash && s.parent == parent {
			s.child = child
			return
		}
	}
	t.slots[i] = childSlot{hash: hash, parent: parent, child: child}
	t.n++
}

// remove deletes (parent, hash), if present. Backward-shift deletion: the
// entries of the run after the hole move back into it when the hole is on
// their probe path, so every entry stays reachable from its home without
// tombstones.
func (t *childTable) remove(parent int32, hash uint64) {
	j := t.find(parent, hash)
	if j < 0 {
		return
	}
	hole := uint64(j)
	for i := (hole + 1) & t.mask; t.used(i); i = (i + 1) & t.mask {
		// The entry at i may fill the hole if its home is not in (hole, i]
		// (cyclically): then the hole lies on its probe path.
		s := &t.slots[i]
		h := t.home(s.parent, s.hash)
		if (i-h)&t.mask >= (i-hole)&t.mask {
			t.slots[hole] = *s
			hole = i
		}
	}
	t.slots[hole] = childSlot{}
	t.n--
	if len(t.slots) > minChildSlots && t.n*8 < len(t.slots) {
		// Give back the memory of a burst once it is mostly gone; the
		// hysteresis (grow at ½, shrink at ⅛) keeps resizes amortised.
		t.resize(len(t.slots) / 2)
	}
}

// resize rehashes into size slots, a power of two.
func (t *childTable) resize(size int) {
	old := t.slots
	t.slots = make([]childSlot, size)
	t.mask = uint64(size - 1)
	t.shift = 64
	for s := size; s > 1; s >>= 1 {
		t.shift--
	}
	t.n = 0
	for i := range old {
		if s := &old[i]; s.child != 0 {
			j := t.home(s.parent, s.hash)
			for t.used(j) {
				j = (j + 1) & t.mask
			}
			t.slots[j] = *s
			t.n++
		}
	}
}

// len returns the number of entries.
func (t *childTable) len() int { return t.n }
