package indexer

import "math/bits"

// hashSet is a scratch set of engine hashes: one event's duplicate check.
// It is an open-addressing table of at least twice the hashes it will hold,
// cleared for each use; a real hash 0 is kept aside.
type hashSet struct {
	slots []BlockHash
	shift uint8
	zero  bool
}

// reset empties the set, sized for n hashes.
func (h *hashSet) reset(n int) {
	size := 1 << max(4, bits.Len(uint(2*n)))
	if cap(h.slots) < size {
		h.slots = make([]BlockHash, size)
	} else {
		h.slots = h.slots[:size]
		clear(h.slots)
	}
	h.shift = uint8(64 - bits.Len(uint(size-1)))
	h.zero = false
}

// add adds k and reports whether it was not there yet.
func (h *hashSet) add(k BlockHash) bool {
	if k == 0 {
		fresh := !h.zero
		h.zero = true
		return fresh
	}
	mask := len(h.slots) - 1
	for i := int((uint64(k) * 0x9E3779B97F4A7C15) >> h.shift); ; i = (i + 1) & mask {
		switch h.slots[i] {
		case 0:
			h.slots[i] = k
			return true
		case k:
			return false
		}
	}
}
