package indexbench

import "github.com/kvrouter/router/indexer"

// lru is one simulated worker's cache of engine block hashes, most recently
// used first. Links are int32 indices into nodes; nodes[0] is the sentinel
// of the circular list, so nodes[0].next is the most recent entry and
// nodes[0].prev the least recent.
type lru struct {
	at    map[indexer.BlockHash]int32
	nodes []lruNode
	free  []int32
}

type lruNode struct {
	hash       indexer.BlockHash
	prev, next int32
}

func newLRU() *lru {
	return &lru{at: make(map[indexer.BlockHash]int32), nodes: []lruNode{{}}}
}

// len returns the number of cached blocks.
func (c *lru) len() int { return len(c.at) }

// contains tells whether h is cached, without touching it.
func (c *lru) contains(h indexer.BlockHash) bool {
	_, ok := c.at[h]
	return ok
}

// touch makes h, which must be cached, the most recent entry.
func (c *lru) touch(h indexer.BlockHash) {
	i := c.at[h]
	c.unlink(i)
	c.linkFront(i)
}

// add caches h, which must not be cached, as the most recent entry.
func (c *lru) add(h indexer.BlockHash) {
	var i int32
	if n := len(c.free); n > 0 {
		i = c.free[n-1]
		c.free = c.free[:n-1]
	} else {
		i = int32(len(c.nodes))
		c.nodes = append(c.nodes, lruNode{})
	}
	c.nodes[i].hash = h
	c.at[h] = i
	c.linkFront(i)
}

// evict drops the least recent entry, which must exist, and returns it.
func (c *lru) evict() indexer.BlockHash {
	i := c.nodes[0].prev
	h := c.nodes[i].hash
	c.unlink(i)
	delete(c.at, h)
	c.free = append(c.free, i)
	return h
}

func (c *lru) unlink(i int32) {
	n := &c.nodes[i]
	c.nodes[n.prev].next = n.next
	c.nodes[n.next].prev = n.prev
}

func (c *lru) linkFront(i int32) {
	head := c.nodes[0].next
	c.nodes[i].prev, c.nodes[i].next = 0, head
	c.nodes[head].prev = i
	c.nodes[0].next = i
}
