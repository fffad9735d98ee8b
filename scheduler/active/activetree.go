package active

import "slices"

// activeTree holds the active blocks of every rank as a tree of sequence
// hashes with compressed paths: each node is a run of blocks that the same
// requests share, and carries, per rank, how many of that rank's
// placements pass through it. A placement references the path from the
// root to its terminal node, which ends where the placement's prompt ends.
//
// Why a tree and not a count per (hash, rank): a booking then costs one
// step per node, not per block. Prompts share long prefixes (a system
// prompt, a conversation so far) and end in blocks of their own, so a
// thirty-block prompt is typically two or three nodes: booking it touches
// two or three counters instead of thirty hash-table entries scattered
// over memory, and freeing it walks up from its terminal node without a
// single lookup.
//
// Nodes split where a new prompt leaves a path mid-node; a node stays
// split after the prompt that split it is freed (merging would rewrite
// the edges of every child), so a path has at most one node per point
// where active prompts diverged.
//
// A rank has a block active when it has a placement through the block's
// node; its active blocks are the total length of those nodes. For
// sequence hashes, which name their whole prefix, that is the number of
// distinct hashes the rank has active, Dynamo's count; for a hash list
// that repeats a hash (only a malformed replica event can), each position
// counts.
type activeTree struct {
	// nodes[0] is the root: it has no blocks and no holders.
	nodes []treeNode
	free  []int32
	// children are the tree's edges.
	children childTable
	// overflow holds the holders beyond the first of each node (see
	// holders); freeOverflow the indices free for reuse.
	overflow     [][]holderRef
	freeOverflow []int32
	// spare are hash slices of removed nodes, reused by new ones (bounded).
	spare [][]uint64
}

// treeNode is one run of blocks that the same placements pass through.
type treeNode struct {
	hashes  []uint64
	parent  int32
	holders holders
}

// holderRef is one rank's placements through one node.
type holderRef struct {
	rank int32
	refs int32
}

// holders are the ranks that have a node's blocks active: most nodes are
// active on one rank, kept inline; the others, sorted by rank, are in
// activeTree.overflow at more−1. No holder has refs 0: a node whose last
// holder leaves is removed.
type holders struct {
	first holderRef
	more  int32
}

// maxSpareHashes bounds activeTree.spare.
const maxSpareHashes = 1024

func newActiveTree() activeTree {
	return activeTree{nodes: make([]treeNode, 1)}
}

// add books a placement of rank r on the blocks named by hashes and
// returns its terminal node and how many of the blocks are new to r. The
// terminal node is 0 (the root) for an empty prompt.
func (t *activeTree) add(hashes []uint64, r int32) (term int32, fresh int) {
	cur, i := int32(0), 0
	for i < len(hashes) {
		c := t.children.get(cur, hashes[i])
		if c == 0 {
			break
		}
		n := &t.nodes[c]
		m := commonPrefix(n.hashes, hashes[i:])
		if m < len(n.hashes) {
			c = t.split(c, m)
		}
		if t.ref(c, r) {
			fresh += m
		}
		cur, i = c, i+m
	}
	if i < len(hashes) {
		cur = t.newNode(cur, hashes[i:], r)
		fresh += len(hashes) - i
	}
	return cur, fresh
}

// release drops the placement of rank r ending at node term and returns
// how many blocks r no longer has active.
func (t *activeTree) release(term, r int32) (gone int) {
	for n := term; n != 0; {
		node := &t.nodes[n]
		parent := node.parent
		last, empty := t.unref(n, r)
		if last {
			gone += len(node.hashes)
		}
		if empty {
			t.removeNode(n)
		}
		n = parent
	}
	return gone
}

// commonPrefix returns how many leading elements a and b share.
func commonPrefix(a, b []uint64) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// newNode adds a child of parent holding hashes, with one placement of
// rank r, and returns it.
func (t *activeTree) newNode(parent int32, hashes []uint64, r int32) int32 {
	var buf []uint64
	if n := len(t.spare); n > 0 {
		buf, t.spare = t.spare[n-1], t.spare[:n-1]
	}
	node := treeNode{
		hashes:  append(buf, hashes...),
		parent:  parent,
		holders: holders{first: holderRef{rank: r, refs: 1}},
	}
	var id int32
	if n := len(t.free); n > 0 {
		id, t.free = t.free[n-1], t.free[:n-1]
		t.nodes[id] = node
	} else {
		id = int32(len(t.nodes))
		t.nodes = append(t.nodes, node)
	}
	t.children.set(parent, hashes[0], id)
	return id
}

// split cuts node c after its first m blocks (0 < m < its length) and
// returns the new node holding them, which takes c's place under its
// parent; c keeps the rest, and with it its children and the placements
// that end at it. Both have c's holders.
func (t *activeTree) split(c int32, m int) int32 {
	old := t.nodes[c]
	hs := old.holders
	if hs.more != 0 {
		more := t.newOverflow()
		t.overflow[more-1] = append(t.overflow[more-1], t.overflow[hs.more-1]...)
		hs.more = more
	}
	head := t.newNode(old.parent, old.hashes[:m], 0) // takes c's edge
	t.nodes[head].holders = hs
	n := &t.nodes[c]
	n.hashes = n.hashes[m:]
	n.parent = head
	t.children.set(head, n.hashes[0], c)
	return head
}

// removeNode removes node n, whose last holder left: so did its
// children's.
func (t *activeTree) removeNode(n int32) {
	node := &t.nodes[n]
	t.children.remove(node.parent, node.hashes[0])
	if len(t.spare) < maxSpareHashes {
		t.spare = append(t.spare, node.hashes[:0])
	}
	*node = treeNode{}
	t.free = append(t.free, n)
}

// ref adds a placement of rank r through node n and reports whether it is
// r's first. The overflow holders are kept sorted by rank, so that a node
// active on many ranks (a system prompt shared by every request) costs a
// binary search, not a scan.
func (t *activeTree) ref(n, r int32) bool {
	hs := &t.nodes[n].holders
	if hs.first.rank == r {
		hs.first.refs++
		return false
	}
	if hs.more == 0 {
		hs.more = t.newOverflow()
	}
	more := &t.overflow[hs.more-1]
	i, found := searchRank(*more, r)
	if found {
		(*more)[i].refs++
		return false
	}
	*more = slices.Insert(*more, i, holderRef{rank: r, refs: 1})
	return true
}

// unref drops a placement of rank r through node n, and reports whether
// it was r's last and whether n has no holder left.
func (t *activeTree) unref(n, r int32) (last, empty bool) {
	hs := &t.nodes[n].holders
	if hs.first.rank == r {
		switch {
		case hs.first.refs > 1:
			hs.first.refs--
			return false, false
		case hs.more == 0:
			hs.first = holderRef{}
			return true, true
		}
		more := &t.overflow[hs.more-1]
		hs.first = (*more)[0]
		*more = slices.Delete(*more, 0, 1)
		if len(*more) == 0 {
			t.dropOverflow(hs.more)
			hs.more = 0
		}
		return true, false
	}
	if hs.more == 0 {
		return false, false
	}
	more := &t.overflow[hs.more-1]
	i, found := searchRank(*more, r)
	if !found {
		return false, false
	}
	(*more)[i].refs--
	if (*more)[i].refs > 0 {
		return false, false
	}
	*more = slices.Delete(*more, i, i+1)
	if len(*more) == 0 {
		t.dropOverflow(hs.more)
		hs.more = 0
	}
	return true, false
}

// searchRank returns the position of rank r in refs, sorted by rank, or
// where it would be inserted, and whether it is there. Hand-written rather
// than slices.BinarySearchFunc: the comparison inlines, which halves the
// cost on lists of hundreds of ranks (a prefix shared by many requests).
func searchRank(refs []holderRef, r int32) (int, bool) {
	lo, hi := 0, len(refs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if refs[m].rank < r {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(refs) && refs[lo].rank == r
}

// newOverflow returns the index+1 of an empty overflow list.
func (t *activeTree) newOverflow() int32 {
	if n := len(t.freeOverflow); n > 0 {
		i := t.freeOverflow[n-1]
		t.freeOverflow = t.freeOverflow[:n-1]
		return i + 1
	}
	t.overflow = append(t.overflow, nil)
	return int32(len(t.overflow))
}

// dropOverflow frees overflow list more−1, which is empty.
func (t *activeTree) dropOverflow(more int32) {
	t.overflow[more-1] = t.overflow[more-1][:0]
	t.freeOverflow = append(t.freeOverflow, more-1)
}

// others returns the holders of n beyond the first.
func (t *activeTree) others(n int32) []holderRef {
	if more := t.nodes[n].holders.more; more != 0 {
		return t.overflow[more-1]
	}
	return nil
}

// size returns the number of ranks holding node n.
func (t *activeTree) size(n int32) int { return 1 + len(t.others(n)) }

// len returns the number of nodes besides the root.
func (t *activeTree) len() int { return len(t.nodes) - 1 - len(t.free) }
