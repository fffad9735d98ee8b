package indexer

import "math/bits"

// blockMap maps one rank's engine hashes to nodes. Its lookups are the write
// path's cache misses and its slots the index's largest per-entry cost after
// the nodes, so its layout serves both:
//
//   - The table is an array of 64-byte buckets of five entries, each entry an
//     engine hash (mixed, see mix) in two halves and a node: 12 bytes an
//     entry, and a lookup reads one bucket, one cache line, nearly always.
//   - A hash's home bucket is the high half of its mixed value times the
//     number of buckets, so the table may have any size. It is kept between
//     70% and 90% full: about 16 bytes an entry, where a power-of-two table
//     that doubles at 85% holds a rank of exactly 16,384 blocks at 50%.
//   - A full home bucket sends a new entry on to the next bucket with room
//     (linear probing by bucket), and counts the entry in its overflow
//     count. A lookup goes on past a bucket only while that count is not 0.
//     A removal needs no tombstones: it moves the bucket's last entry into
//     the hole, lowers the counts the removed entry had raised, and pulls
//     back an entry that passed the bucket (backfill), so that only full
//     buckets are ever passed and chains stay as short as in a table filled
//     afresh: 1.5 buckets a lookup on the Mooncake replay.
//
// Engine hashes are mixed by a bijection before use, so sequential ids
// spread over the buckets like random ones.
type blockMap struct {
	buckets []bucket
	n       int
}

// bucketSlots is the entries of a bucket: five 12-byte entries and a 4-byte
// meta word fill 64 bytes.
const bucketSlots = 5

// bucket holds up to bucketSlots entries in its first meta&0xff slots.
type bucket struct {
	lo, hi [bucketSlots]uint32 // the mixed hash, in halves
	node   [bucketSlots]uint32
	// meta: bits 0-7 count the used slots; bits 8-31 count the entries
	// that found this bucket full on their way from their home bucket to
	// a later one.
	meta uint32
}

const overflowOne = 1 << 8

// used returns the number of entries the bucket holds.
func (bk *bucket) used() int { return min(int(bk.meta&0xff), bucketSlots) }

// key returns the mixed hash of entry j.
func (bk *bucket) key(j int) uint64 { return uint64(bk.hi[j])<<32 | uint64(bk.lo[j]) }

// push appends an entry; the bucket has room.
func (bk *bucket) push(lo, hi, node uint32) {
	used := bk.meta & 0xff
	bk.lo[used], bk.hi[used], bk.node[used] = lo, hi, node
	bk.meta++
}

const (
	blockMapMinBuckets = 2
	// A table grows past blockMapMaxLoad, to blockMapGrowLoad.
	blockMapMaxLoad  = 0.9
	blockMapGrowLoad = 0.7
	// Tables above blockMapShrinkBuckets shrink when less than an eighth
	// full.
	blockMapShrinkBuckets = 256
)

// mix scrambles an engine hash so that its high bits are uniform, whatever
// the engine's hashes look like. It is a bijection, undone by unmix.
func mix(k BlockHash) uint64   { return uint64(k) * 0x9E3779B97F4A7C15 }
func unmix(x uint64) BlockHash { return BlockHash(x * 0xF1DE83E19937733D) }

// home is the bucket where mixed hash x belongs.
func (m *blockMap) home(x uint64) int {
	hi, _ := bits.Mul64(x, uint64(len(m.buckets)))
	return int(hi)
}

// next is the bucket after b, wrapping at the end.
func (m *blockMap) next(b int) int {
	if b++; b == len(m.buckets) {
		return 0
	}
	return b
}

// Len returns the number of entries.
func (m *blockMap) Len() int { return m.n }

// Get returns the node k names.
func (m *blockMap) Get(k BlockHash) (uint32, bool) {
	if m.n == 0 {
		return 0, false
	}
	b, j := m.find(mix(k))
	if b < 0 {
		return 0, false
	}
	return m.buckets[b].node[j], true
}

// find returns the bucket and slot of mixed hash x, or -1. The table is not
// empty.
func (m *blockMap) find(x uint64) (int, int) {
	lo, hi := uint32(x), uint32(x>>32)
	b := m.home(x)
	// Only full buckets are passed (backfill), and the table is never
	// full, so the walk ends at a bucket with room; it also stops once it
	// has seen every bucket, should that ever not hold.
	for range m.buckets {
		bk := &m.buckets[b]
		for j, l := range bk.lo[:bk.used()] {
			if l == lo && bk.hi[j] == hi {
				return b, j
			}
		}
		if bk.meta < overflowOne {
			return -1, 0
		}
		b = m.next(b)
	}
	return -1, 0
}

// Add sets k, which the map does not hold, to node v, for a caller that has
// just looked k up (the tree never overwrites an entry).
func (m *blockMap) Add(k BlockHash, v uint32) { m.add(mix(k), v) }

func (m *blockMap) add(x uint64, v uint32) {
	if float64(m.n+1) > blockMapMaxLoad*float64(bucketSlots*len(m.buckets)) {
		m.resize(float64(m.n+1) / blockMapGrowLoad)
	}
	m.insert(x, v)
}

// insert adds mixed hash x, which the table does not hold, with node v; the
// table has room.
func (m *blockMap) insert(x uint64, v uint32) {
	b := m.home(x)
	for {
		bk := &m.buckets[b]
		if bk.used() < bucketSlots {
			bk.push(uint32(x), uint32(x>>32), v)
			m.n++
			return
		}
		bk.meta += overflowOne
		b = m.next(b)
	}
}

// Delete removes k.
func (m *blockMap) Delete(k BlockHash) { m.Take(k) }

// Take removes k and returns the node it named: a lookup and a removal in
// one.
func (m *blockMap) Take(k BlockHash) (uint32, bool) {
	if m.n == 0 {
		return 0, false
	}
	x := mix(k)
	b, j := m.find(x)
	if b < 0 {
		return 0, false
	}
	v := m.buckets[b].node[j]
	m.cut(b, j)
	// The buckets the entry passed on its way here count it no more.
	for h := m.home(x); h != b; h = m.next(h) {
		m.buckets[h].meta -= overflowOne
	}
	m.n--
	m.backfill(b)
	// Shrink lazily: small tables are not worth reallocating as a worker's
	// cache fills and drains.
	if len(m.buckets) > blockMapShrinkBuckets && m.n*8 < bucketSlots*len(m.buckets) {
		m.resize(float64(m.n) / blockMapGrowLoad)
	}
	return v, true
}

// cut removes slot j of bucket b, moving the bucket's last entry into it.
func (m *blockMap) cut(b, j int) {
	bk := &m.buckets[b]
	last := bk.used() - 1
	bk.lo[j], bk.hi[j], bk.node[j] = bk.lo[last], bk.hi[last], bk.node[last]
	bk.lo[last], bk.hi[last], bk.node[last] = 0, 0, 0
	bk.meta--
}

// backfill fills the room a removal made in bucket b with the nearest entry
// that passed b on its way to a later bucket, and so on from the bucket that
// entry left, so that chains of passed buckets stay as short as if the
// table had been filled afresh. Without it, churn (a rank's cache evicting
// and storing blocks) left most buckets passed, and a lookup of a missing
// hash walked 15 buckets instead of 2.
func (m *blockMap) backfill(b int) {
	for m.buckets[b].meta >= overflowOne {
		p, j, ok := m.passer(b)
		if !ok {
			return
		}
		src := &m.buckets[p]
		lo, hi, node := src.lo[j], src.hi[j], src.node[j]
		m.cut(p, j)
		m.buckets[b].push(lo, hi, node)
		// The entry no longer passes b, nor the buckets up to p.
		for h := b; h != p; h = m.next(h) {
			m.buckets[h].meta -= overflowOne
		}
		b = p
	}
}

// passer finds the nearest entry after bucket b that passed b: its bucket
// and slot.
func (m *blockMap) passer(b int) (int, int, bool) {
	n := len(m.buckets)
	for p, steps := m.next(b), 1; steps < n; p, steps = m.next(p), steps+1 {
		bk := &m.buckets[p]
		for j := range bk.used() {
			h := m.home(bk.key(j))
			// It passed b if b lies on its way, from h up to p.
			if m.dist(h, b) < m.dist(h, p) {
				return p, j, true
			}
		}
		// An entry further on that passed b passed p too.
		if bk.meta < overflowOne {
			return 0, 0, false
		}
	}
	return 0, 0, false
}

// dist is how many buckets lie from bucket h on to bucket b, wrapping at
// the end. It compares and adds rather than taking a remainder: a division
// for each entry that passer looks at was a tenth of the index's writes.
func (m *blockMap) dist(h, b int) int {
	d := b - h
	if d < 0 {
		d += len(m.buckets)
	}
	return d
}

// Touch reads the home bucket of every hash in ks, and the bucket after it
// (where a lookup or an insert goes on, and where a removal's backfill
// looks), and returns a value that depends on them all. The reads do not
// depend on each other, so the processor overlaps their cache misses;
// lookups of the same hashes right after it then mostly hit the cache. The
// caller keeps the result somewhere the compiler cannot discard it.
func (m *blockMap) Touch(ks []BlockHash) uint32 {
	if m.n == 0 {
		return 0
	}
	var x uint32
	for _, k := range ks {
		x ^= m.touch(k)
	}
	return x
}

// TouchBlocks is Touch for the engine hashes of blocks.
func (m *blockMap) TouchBlocks(bs []Block) uint32 {
	if m.n == 0 {
		return 0
	}
	var x uint32
	for _, b := range bs {
		x ^= m.touch(b.Hash)
	}
	return x
}

// touch reads k's home bucket and the next one.
func (m *blockMap) touch(k BlockHash) uint32 {
	h := m.home(mix(k))
	return m.buckets[h].meta ^ m.buckets[m.next(h)].meta
}

// Reset empties the map and frees its memory.
func (m *blockMap) Reset() { *m = blockMap{} }

// All calls fn for every entry. fn must not change the map.
func (m *blockMap) All(fn func(k BlockHash, v uint32)) {
	for i := range m.buckets {
		bk := &m.buckets[i]
		for j := range bk.used() {
			fn(unmix(bk.key(j)), bk.node[j])
		}
	}
}

// resize rebuilds the table with room for slots entries.
func (m *blockMap) resize(slots float64) {
	old := m.buckets
	m.buckets = make([]bucket, max(blockMapMinBuckets, int(slots/bucketSlots)+1))
	m.n = 0
	for i := range old {
		bk := &old[i]
		for j := range bk.used() {
			m.insert(bk.key(j), bk.node[j])
		}
	}
}
