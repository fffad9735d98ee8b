package indexer

import (
	"fmt"
	"sync"
	"sync/atomic"
)

const (
	// root is the index of the root node; it is never a child or a sibling,
	// so 0 also means "no node" in links.
	root uint32 = 0
	none uint32 = 0
	// dead marks a freed node's parent link.
	dead uint32 = ^uint32(0)
	// setFlag in node.holders says the rest is an index into Tree.sets.
	setFlag uint32 = 1 << 31
)

// node is one block position in the tree: 28 bytes, the hash in halves so
// that nothing aligns the node to 8 bytes.
type node struct {
	hashLo, hashHi uint32
	parent         uint32
	first          uint32 // first child
	next           uint32 // next sibling
	// stamp is the clock when the node was last matched or stored. Readers
	// refresh it concurrently, so it is read and written atomically.
	stamp uint32
	// holders: 0 none; slot+1 below setFlag; setFlag|i for Tree.sets[i].
	holders uint32
}

// hash returns the node's LocalHash.
func (nd *node) hash() LocalHash { return LocalHash(nd.hashHi)<<32 | LocalHash(nd.hashLo) }

// childKey finds the children of nodes that have more than one.
type childKey struct {
	parent uint32
	hash   LocalHash
}

// kin is a child of a node with several: the child, and the sibling before
// it (none for the first). Only such children need their previous sibling,
// to unlink in constant time, so it is kept here rather than in every node.
type kin struct {
	node, prev uint32
}

// slot is the state of one worker rank. Slots are allocated one by one and
// never move, so that an event may work on its rank's map (the first and
// last phases of Index.Apply, phases.go) while other ranks' events change
// the tree.
type slot struct {
	// mu is held by the event of this rank in flight, through all its
	// phases; it guards blocks and the scratch below it. Everything else
	// is the tree's, guarded by the tree's exclusivity.
	mu     sync.Mutex
	worker Worker
	// tiers records the copies on tiers other than the device (tiers.go);
	// nil while every hash of the rank is on the device alone.
	tiers *tierState
	// blocks maps the rank's engine hashes to nodes.
	blocks blockMap
	// entries counts nodes the rank holds (less than blocks.Len() when a node
	// is held under several hashes).
	entries int
	// aliased counts extra hashes per node; nil while there are none.
	aliased map[uint32]int
	live    bool

	// sink keeps the results of blockMap.Touch, so that the compiler keeps
	// its reads.
	sink uint32
}

// rank is a slot found without the tree's exclusivity: its index and the
// slot itself (Tree.ranks).
type rank struct {
	s  uint32
	sl *slot
}

// Config sets a Tree's limits.
type Config struct {
	// MaxEntries caps the (worker rank, block) entries; 0 means no cap.
	MaxEntries int
	// EvictTo is the fraction of MaxEntries kept by an eviction pass, in
	// (0, 1); 0 means DefaultEvictTo.
	EvictTo float64
}

// DefaultEvictTo is the fraction of the cap that an eviction pass keeps: a
// pass costs a scan of the tree, so it frees a tenth of the cap at once.
const DefaultEvictTo = 0.9

// Validate reports a configuration error, naming the field.
func (c Config) Validate() error {
	if c.MaxEntries < 0 {
		return fmt.Errorf("max entries: %d is negative (0 means no cap)", c.MaxEntries)
	}
	if c.EvictTo < 0 || c.EvictTo >= 1 {
		return fmt.Errorf("evict to: %v is outside [0, 1) (0 means %v)", c.EvictTo, DefaultEvictTo)
	}
	return nil
}

// Tree is the KV index. See the package documentation for its model and
// concurrency contract.
type Tree struct {
	cfg       Config
	nodes     []node
	freeNodes []uint32
	kids      map[childKey]kin
	sets      [][]uint32
	freeSets  []uint32
	slots     []*slot
	// workers is each slot's worker, dense for FindMatches.
	workers   []Worker
	freeSlots []uint32
	// ranks maps each known worker rank to its slot. The map is never
	// changed once stored, but replaced whole when a slot is added or
	// removed (rare), so that lookups may run without the tree's
	// exclusivity (Tree.lookup).
	ranks   atomic.Pointer[map[Worker]rank]
	entries int
	live    int // nodes, root excluded
	evicted uint64
	// scratch is reused by purge; olds by validStore and store.
	scratch []BlockHash
	olds    []uint32
	// work is Apply's scratch for an event's phases (phases.go).
	work scratch
	// purged collects the hashes one removed event took away, directly or
	// by cascade; purgedSet indexes it when it grows long.
	purged    []BlockHash
	purgedSet map[BlockHash]struct{}
	// clock advances once per applied event; read atomically by FindMatches.
	clock uint32
	// tiered counts the slots with copies off the device (slot.tiers not
	// nil): while it is 0, FindMatches counts no tiers.
	tiered int
	// slowCount counts, per node, the slots that hold it with no device
	// copy, and slowBits has bit n set while slowCount[n] > 0: FindMatches
	// looks a slot's tiers up only on such nodes. Both stay nil until a
	// slot holds a block off the device alone (then 4 bytes and a bit per
	// node); nodes past their end count 0.
	slowCount []uint32
	slowBits  []uint64
}

// New returns an empty tree. An invalid cfg is corrected to its defaults; call
// cfg.Validate first to report it.
func New(cfg Config) *Tree {
	if cfg.MaxEntries < 0 {
		cfg.MaxEntries = 0
	}
	if cfg.EvictTo <= 0 || cfg.EvictTo >= 1 {
		cfg.EvictTo = DefaultEvictTo
	}
	return &Tree{
		cfg:   cfg,
		nodes: make([]node, 1, 1024),
		kids:  make(map[childKey]kin),
	}
}

// child returns the child of p keyed by h, or none.
func (t *Tree) child(p uint32, h LocalHash) uint32 {
	c := t.nodes[p].first
	if c == none {
		return none
	}
	if t.nodes[c].hash() == h {
		return c
	}
	if t.nodes[c].next == none {
		return none
	}
	return t.kids[childKey{p, h}].node
}

// newNode adds an empty child of p keyed by h and returns it.
func (t *Tree) newNode(p uint32, h LocalHash) uint32 {
	var c uint32
	if n := len(t.freeNodes); n > 0 {
		c = t.freeNodes[n-1]
		t.freeNodes = t.freeNodes[:n-1]
	} else {
		c = uint32(len(t.nodes))
		if len(t.nodes) == cap(t.nodes) {
			// Grow by a sixteenth, not by append's quarter or more: the
			// nodes are most of the index's memory, and the copy is
			// cheap next to filling the new room.
			grown := make([]node, len(t.nodes), len(t.nodes)+max(len(t.nodes)/16, 1024))
			copy(grown, t.nodes)
			t.nodes = grown
		}
		t.nodes = append(t.nodes, node{})
	}
	t.nodes[c] = node{hashLo: uint32(h), hashHi: uint32(h >> 32), parent: p, stamp: t.clock}
	t.live++
	f := t.nodes[p].first
	if f == none {
		t.nodes[p].first = c
		return c
	}
	// Insert after the first child; the first child stays the fast path,
	// and every child of a node with several, and only those, is in kids.
	nx := t.nodes[f].next
	t.nodes[c].next = nx
	if nx != none {
		t.setPrev(p, nx, c)
	} else {
		t.kids[childKey{p, t.nodes[f].hash()}] = kin{node: f, prev: none}
	}
	t.nodes[f].next = c
	t.kids[childKey{p, h}] = kin{node: c, prev: f}
	return c
}

// setPrev records that the sibling before c, a child of p, is now prev.
func (t *Tree) setPrev(p, c, prev uint32) {
	t.kids[childKey{p, t.nodes[c].hash()}] = kin{node: c, prev: prev}
}

// freeNode unlinks n from its parent and recycles it. Its children must be
// gone already. kids holds exactly the nodes that have a sibling, so a node
// leaves it, and so does its last sibling, only when it had one: most frees
// touch no map.
func (t *Tree) freeNode(n uint32) {
	nd := &t.nodes[n]
	p := nd.parent
	if t.nodes[p].first == n && nd.next == none {
		t.nodes[p].first = none
	} else {
		k := childKey{p, nd.hash()}
		prev := t.kids[k].prev
		delete(t.kids, k)
		if prev != none {
			t.nodes[prev].next = nd.next
		} else {
			t.nodes[p].first = nd.next
		}
		if nd.next != none {
			t.setPrev(p, nd.next, prev)
		}
		if f := t.nodes[p].first; t.nodes[f].next == none {
			delete(t.kids, childKey{p, t.nodes[f].hash()})
		}
	}
	if nd.holders&setFlag != 0 {
		t.releaseSet(nd.holders &^ setFlag)
	}
	*nd = node{parent: dead}
	t.freeNodes = append(t.freeNodes, n)
	t.live--
}

// freeSubtree frees n and everything below it (all of it empty).
func (t *Tree) freeSubtree(n uint32) {
	for c := t.nodes[n].first; c != none; {
		next := t.nodes[c].next
		t.freeSubtree(c)
		c = next
	}
	t.freeNode(n)
}

// touchUp stamps n and its ancestors with now, stopping at the first that
// already has it: ancestors are never older than their descendants, so
// eviction by age takes leaves first.
func (t *Tree) touchUp(n uint32, now uint32) {
	for n != root {
		nd := &t.nodes[n]
		if atomic.LoadUint32(&nd.stamp) == now {
			return
		}
		atomic.StoreUint32(&nd.stamp, now)
		n = nd.parent
	}
}

// Size returns how many blocks w holds.
func (t *Tree) Size(w Worker) int {
	r, ok := t.lookup(w)
	if !ok {
		return 0
	}
	return r.sl.entries
}

// Workers returns the worker ranks the tree knows.
func (t *Tree) Workers() []Worker {
	ranks := t.rankMap()
	out := make([]Worker, 0, len(ranks))
	for w := range ranks {
		out = append(out, w)
	}
	return out
}

// Stats returns the tree's sizes.
func (t *Tree) Stats() Stats {
	return Stats{Entries: t.entries, Nodes: t.live, Workers: len(t.rankMap()), Evicted: t.evicted}
}
