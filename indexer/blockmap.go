package indexer

// blockMap maps one rank's engine hashes to nodes. It is an open-addressing
// table with Robin Hood linear probing and backward-shift deletion, 12 bytes a
// slot, kept between 0.42 and 0.85 full: about 20 bytes an entry against
// about 26 for a Go map of the same types, which matters at millions of
// entries. Robin Hood ordering lets a lookup of a missing hash stop after a
// few slots even when the table is full, and probes read only the key array.
//
// Key 0 marks an empty slot; a real hash 0 is kept aside in zero/zeroVal.
// Node 0 (the root) is never stored.
type blockMap struct {
	keys    []BlockHash
	vals    []uint32
	n       int // entries in keys
	mask    uint64
	hasZero bool
	zeroVal uint32
}

const (
	blockMapMinSlots    = 8
	blockMapShrinkSlots = 1024
)

// home is the slot where k's probe starts.
func (m *blockMap) home(k BlockHash) uint64 {
	h := uint64(k) * 0x9E3779B97F4A7C15
	return (h ^ h>>29) & m.mask
}

// dist is how far slot i lies from k's home.
func (m *blockMap) dist(k BlockHash, i uint64) uint64 { return (i - m.home(k)) & m.mask }

// Len returns the number of entries.
func (m *blockMap) Len() int {
	if m.hasZero {
		return m.n + 1
	}
	return m.n
}

// Get returns the node k names.
func (m *blockMap) Get(k BlockHash) (uint32, bool) {
	if k == 0 {
		return m.zeroVal, m.hasZero
	}
	if m.n == 0 {
		return 0, false
	}
	i := m.home(k)
	for d := uint64(0); ; d++ {
		o := m.keys[i]
		if o == k {
			return m.vals[i], true
		}
		// An empty slot, or a resident closer to its home than k would
		// be: k is not here.
		if o == 0 || m.dist(o, i) < d {
			return 0, false
		}
		i = (i + 1) & m.mask
	}
}

// Put sets k to node v.
func (m *blockMap) Put(k BlockHash, v uint32) {
	if k == 0 {
		m.hasZero, m.zeroVal = true, v
		return
	}
	if (m.n+1)*20 > len(m.keys)*17 {
		m.resize(max(blockMapMinSlots, 2*len(m.keys)))
	}
	i := m.home(k)
	for d := uint64(0); ; d++ {
		o := m.keys[i]
		if o == 0 {
			m.keys[i], m.vals[i] = k, v
			m.n++
			return
		}
		if o == k {
			m.vals[i] = v
			return
		}
		// Robin Hood: the entry further from its home takes the slot.
		if od := m.dist(o, i); od < d {
			m.keys[i], k = k, o
			m.vals[i], v = v, m.vals[i]
			d = od
		}
		i = (i + 1) & m.mask
	}
}

// Delete removes k.
func (m *blockMap) Delete(k BlockHash) {
	if k == 0 {
		m.hasZero, m.zeroVal = false, 0
		return
	}
	if m.n == 0 {
		return
	}
	i := m.home(k)
	for d := uint64(0); ; d++ {
		o := m.keys[i]
		if o == k {
			break
		}
		if o == 0 || m.dist(o, i) < d {
			return
		}
		i = (i + 1) & m.mask
	}
	// Shift the rest of the run back one slot, so no tombstones are needed.
	for {
		j := (i + 1) & m.mask
		o := m.keys[j]
		if o == 0 || m.dist(o, j) == 0 {
			break
		}
		m.keys[i], m.vals[i] = o, m.vals[j]
		i = j
	}
	m.keys[i], m.vals[i] = 0, 0
	m.n--
	// Shrink lazily: small tables are not worth reallocating as a worker's
	// cache fills and drains.
	if len(m.keys) > blockMapShrinkSlots && m.n*8 < len(m.keys) {
		m.resize(len(m.keys) / 2)
	}
}

// Reset empties the map and frees its memory.
func (m *blockMap) Reset() { *m = blockMap{} }

// All calls fn for every entry. fn must not change the map.
func (m *blockMap) All(fn func(k BlockHash, v uint32)) {
	if m.hasZero {
		fn(0, m.zeroVal)
	}
	for i, k := range m.keys {
		if k != 0 {
			fn(k, m.vals[i])
		}
	}
}

func (m *blockMap) resize(slots int) {
	keys, vals := m.keys, m.vals
	m.keys = make([]BlockHash, slots)
	m.vals = make([]uint32, slots)
	m.mask = uint64(slots - 1)
	m.n = 0
	for i, k := range keys {
		if k != 0 {
			m.Put(k, vals[i])
		}
	}
}
