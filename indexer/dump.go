package indexer

import "slices"

// Dump returns the tree as events that rebuild it: for every block and every
// rank holding it, one single-block stored event (one per engine hash when a
// rank holds the block under several), parents before children. The event
// is about the hash's fastest tier; a hash held on more tiers is followed by
// the same event about each of the others, in order, which adds that tier
// (a repeated store). Applying the dump to an empty tree yields a tree that
// answers every query, size and later event alike, tiers included.
//
// Why not stored events by hash (Event.ByHash) for the extra tiers: a
// stored event with tokens and parent is the one shape every reader of a
// dump already understands (snapshots are Dynamo's RouterEvents, and
// Dynamo's routers read them too), and it is self-contained.
func (t *Tree) Dump() []Event {
	// Each rank's engine hashes per node, sorted so the dump is stable.
	inv := make([]map[uint32][]BlockHash, len(t.slots))
	for s := range t.slots {
		sl := t.slots[s]
		if !sl.live {
			continue
		}
		m := make(map[uint32][]BlockHash, sl.blocks.Len())
		sl.blocks.All(func(h BlockHash, n uint32) { m[n] = append(m[n], h) })
		inv[s] = m
		for _, hs := range inv[s] {
			slices.Sort(hs)
		}
	}
	events := make([]Event, 0, t.entries)
	stack := []uint32{}
	for c := t.nodes[root].first; c != none; c = t.nodes[c].next {
		stack = append(stack, c)
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		nd := &t.nodes[n]
		t.forHolders(n, func(s uint32) {
			ev := Event{Worker: t.slots[s].worker, Kind: KindStored}
			if nd.parent != root {
				ev.HasParent = true
				ev.Parent = inv[s][nd.parent][0]
			}
			for _, h := range inv[s][n] {
				m := t.slots[s].maskOf(h, n)
				for tr := range NumTiers {
					if m&bit(tr) == 0 {
						continue
					}
					e := ev
					e.Blocks = []Block{{Hash: h, Tokens: nd.hash()}}
					e.Tier = tr
					events = append(events, e)
				}
			}
		})
		for c := nd.first; c != none; c = t.nodes[c].next {
			stack = append(stack, c)
		}
	}
	return events
}
