package scheduler

// holderTable maps a sequence hash to its holders: the Sequences'
// per-block index of active blocks, with an entry per distinct active
// block (hundreds of thousands at a few thousand requests a second).
//
// Why not a Go map: the bookkeeping inserts and deletes about sixty
// entries a request, and a Go map under that churn fills its groups with
// tombstones, so that lookups probe long chains (matchH2 was a quarter of
// the CPU of a steady-state route). This table is open addressing with
// linear probing and backward-shift deletion: a delete leaves no
// tombstone, so a lookup scans only the run its key hashes into, and the
// slots hold no pointer, so the garbage collector never scans them.
//
// The table is not safe for concurrent use (the Router's lock guards it).
type holderTable struct {
	slots []holderSlot
	// mask is len(slots)−1; len(slots) is a power of two.
	mask uint64
	// shift turns the 64-bit mixed hash into a slot index (its top bits).
	shift uint
	n     int
}

// holderSlot is one slot. An empty slot has first.refs == 0: an entry's
// first holder always holds at least one reference (see unref), so no key
// value has to be reserved for emptiness.
type holderSlot struct {
	key uint64
	holders
}

// minHolderSlots is the table's smallest size.
const minHolderSlots = 1 << 10

func (t *holderTable) used(i uint64) bool { return t.slots[i].first.refs > 0 }

// home returns the slot key hashes to. Sequence hashes are already hashes,
// but tests and replicas may send small or patterned ones: Fibonacci
// hashing spreads them anyway, at the cost of a multiply.
func (t *holderTable) home(key uint64) uint64 {
	return (key * 0x9E3779B97F4A7C15) >> t.shift
}

// find returns the slot index of key, or −1.
func (t *holderTable) find(key uint64) int {
	if t.n == 0 {
		return -1
	}
	for i := t.home(key); ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.first.refs == 0 {
			return -1
		}
		if s.key == key {
			return int(i)
		}
	}
}

// get returns key's holders.
func (t *holderTable) get(key uint64) (holders, bool) {
	i := t.find(key)
	if i < 0 {
		return holders{}, false
	}
	return t.slots[i].holders, true
}

// set stores key's holders, which must have first.refs > 0.
func (t *holderTable) set(key uint64, hs holders) {
	if (t.n+1)*2 > len(t.slots) {
		t.resize(max(len(t.slots)*2, minHolderSlots))
	}
	i := t.home(key)
	for ; t.used(i); i = (i + 1) & t.mask {
		if t.slots[i].key == key {
			t.slots[i].holders = hs
			return
		}
	}
	t.slots[i] = holderSlot{key: key, holders: hs}
	t.n++
}

// remove deletes key, if present. Backward-shift deletion: the entries of
// the run after the hole move back into it when the hole is on their
// probe path, so every entry stays reachable from its home without
// tombstones.
func (t *holderTable) remove(key uint64) {
	j := t.find(key)
	if j < 0 {
		return
	}
	hole := uint64(j)
	for i := (hole + 1) & t.mask; t.used(i); i = (i + 1) & t.mask {
		// The entry at i may fill the hole if its home is not in (hole, i]
		// (cyclically): then the hole lies on its probe path.
		h := t.home(t.slots[i].key)
		if (i-h)&t.mask >= (i-hole)&t.mask {
			t.slots[hole] = t.slots[i]
			hole = i
		}
	}
	t.slots[hole] = holderSlot{}
	t.n--
	if len(t.slots) > minHolderSlots && t.n*8 < len(t.slots) {
		// Give back the memory of a burst once it is mostly gone; the
		// hysteresis (grow at ½, shrink at ⅛) keeps resizes amortised.
		t.resize(len(t.slots) / 2)
	}
}

// resize rehashes into size slots, a power of two.
func (t *holderTable) resize(size int) {
	old := t.slots
	t.slots = make([]holderSlot, size)
	t.mask = uint64(size - 1)
	t.shift = 64
	for s := size; s > 1; s >>= 1 {
		t.shift--
	}
	t.n = 0
	for i := range old {
		if s := &old[i]; s.first.refs > 0 {
			j := t.home(s.key)
			for t.used(j) {
				j = (j + 1) & t.mask
			}
			t.slots[j] = *s
			t.n++
		}
	}
}

// len returns the number of keys.
func (t *holderTable) len() int { return t.n }
