// Package lru is a set of keys in least-recently-used order, for the
// simulations that need one cache without timing: the index benchmark's
// workers (internal/indexbench) and router compare's hit-rate references
// (replay.ComputeBounds). It keeps the order only; a capacity is the
// caller's, which evicts when it wants.
//
// A Set is not safe for concurrent use.
package lru

// Set holds keys, most recently used first. Links are int32 indices into
// nodes; nodes[0] is the sentinel of the circular list, so nodes[0].next is
// the most recent entry and nodes[0].prev the least recent.
type Set[K comparable] struct {
	at    map[K]int32
	nodes []node[K]
	free  []int32
}

type node[K comparable] struct {
	key        K
	prev, next int32
}

// New returns an empty set with room for about n keys.
func New[K comparable](n int) *Set[K] {
	return &Set[K]{at: make(map[K]int32, n), nodes: make([]node[K], 1, n+1)}
}

// Len returns the number of keys.
func (c *Set[K]) Len() int { return len(c.at) }

// Contains tells whether k is held, without touching it.
func (c *Set[K]) Contains(k K) bool {
	_, ok := c.at[k]
	return ok
}

// Touch makes k, which must be held, the most recent entry.
func (c *Set[K]) Touch(k K) {
	i := c.at[k]
	c.unlink(i)
	c.linkFront(i)
}

// Add holds k, which must not be held, as the most recent entry.
func (c *Set[K]) Add(k K) {
	var i int32
	if n := len(c.free); n > 0 {
		i = c.free[n-1]
		c.free = c.free[:n-1]
	} else {
		i = int32(len(c.nodes))
		c.nodes = append(c.nodes, node[K]{})
	}
	c.nodes[i].key = k
	c.at[k] = i
	c.linkFront(i)
}

// Use makes k the most recent entry, adding it if it is not held.
func (c *Set[K]) Use(k K) {
	if c.Contains(k) {
		c.Touch(k)
		return
	}
	c.Add(k)
}

// Evict drops the least recent entry, which must exist, and returns it.
func (c *Set[K]) Evict() K {
	i := c.nodes[0].prev
	k := c.nodes[i].key
	c.unlink(i)
	delete(c.at, k)
	c.free = append(c.free, i)
	return k
}

func (c *Set[K]) unlink(i int32) {
	n := &c.nodes[i]
	c.nodes[n.prev].next = n.next
	c.nodes[n.next].prev = n.prev
}

func (c *Set[K]) linkFront(i int32) {
	head := c.nodes[0].next
	c.nodes[i].prev, c.nodes[i].next = 0, head
	c.nodes[head].prev = i
	c.nodes[0].next = i
}
