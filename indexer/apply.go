package indexer

import (
	"sync/atomic"
)

// Apply applies one event and reports its outcome. A stored event is applied
// whole or not at all; a removed event removes every block it names that the
// rank holds and counts the others; a stored event by hash (Event.ByHash)
// adds its tier to every block it names that the rank holds and counts the
// others. An event about a tier past NumTiers is invalid and changes
// nothing.
func (t *Tree) Apply(ev Event) Result {
	var o op
	t.begin(&o, ev, &t.work)
	r, _ := t.commit(&o)
	t.end(&o)
	if o.evict {
		r.Evicted = t.evict()
	}
	return r
}

// commitSlow applies an event that no fast path of phases.go takes, all of
// it under the tree's exclusivity.
func (t *Tree) commitSlow(o *op) Result {
	ev := &o.ev
	var r Result
	switch ev.Kind {
	case KindStored:
		switch {
		case ev.Tier >= NumTiers:
			r.Status = StatusInvalidBlock
		case ev.ByHash:
			r.Missing = t.storeByHash(o)
			if r.Missing > 0 {
				r.Status = StatusBlockNotFound
			}
		default:
			r.Status = t.store(o)
		}
	case KindRemoved:
		if ev.Tier >= NumTiers {
			r.Status = StatusInvalidBlock
			break
		}
		r.Missing = t.remove(o)
		if r.Missing > 0 {
			r.Status = StatusBlockNotFound
		}
	case KindCleared:
		if o.sl != nil {
			t.clear(o.s)
		}
	default:
		r.Status = StatusInvalidBlock
	}
	return r
}

// store applies a stored event.
func (t *Tree) store(o *op) Status {
	ev, s, known := &o.ev, o.s, o.sl != nil
	cur := root
	if ev.HasParent {
		if !known {
			return StatusParentNotFound
		}
		p, ok := t.slots[s].blocks.Get(ev.Parent)
		if !ok {
			return StatusParentNotFound
		}
		cur = p
	}
	if !t.validStore(o, cur) {
		return StatusInvalidBlock
	}
	if len(ev.Blocks) == 0 {
		return StatusOK
	}
	if !known {
		s = t.newSlot(ev.Worker)
		o.s, o.sl = s, t.slots[s]
	}
	now := t.clock
	t.touchUp(cur, now)
	// A device event for a rank on the device alone leaves it there: the
	// loop then skips the tier bookkeeping with one test of a register.
	tiered := ev.Tier != TierDevice || t.slots[s].tiers != nil
	// validStore looked up every hash already; the lookups stay good until
	// a moved hash makes dropBlock change the map.
	olds, moved := t.olds, false
	for i, b := range ev.Blocks {
		c := t.child(cur, b.Tokens)
		if c == none {
			c = t.newNode(cur, b.Tokens)
		} else {
			atomic.StoreUint32(&t.nodes[c].stamp, now)
		}
		sl := t.slots[s]
		old := none // a new rank holds nothing yet
		switch {
		case known && !moved:
			old = olds[i]
		case known:
			old, _ = sl.blocks.Get(b.Hash)
		}
		if old != none {
			if old == c {
				// A repeated store: the block gains the event's tier.
				if tiered {
					t.addTier(s, b.Hash, c, ev.Tier)
				}
				cur = c
				continue
			}
			// The hash moves to another block: the rank no longer
			// holds the old one (nor what hangs below it), on any tier.
			if tiered {
				t.retier(s, b.Hash, old, sl.maskOf(b.Hash, old), 0)
			}
			t.dropBlock(s, b.Hash, old)
			moved = true
			sl = t.slots[s]
		}
		// No event repeats a hash (validStore), and a moved one was just
		// dropped: the map does not hold b.Hash.
		sl.blocks.Add(b.Hash, c)
		t.hold(s, c)
		if tiered {
			t.retier(s, b.Hash, c, 0, bit(ev.Tier))
		}
		cur = c
	}
	return StatusOK
}

// validStore reports whether a stored event hanging below cur is well formed:
// no block may be its own ancestor, so no hash may repeat in the event or name
// a node on the path above it.
func (t *Tree) validStore(o *op, cur uint32) bool {
	ev, s, sl := &o.ev, o.s, o.sl
	blocks := ev.Blocks
	if sl != nil {
		// Start the map's cache misses now; the lookups below find the
		// slots in the cache.
		sl.sink ^= sl.blocks.TouchBlocks(blocks)
	}
	if !distinct(ev, &o.w.dups) {
		return false
	}
	if sl == nil {
		return true
	}
	t.olds = t.olds[:0]
	// A hash the rank already holds elsewhere must not name a node on the
	// path above where the event puts it. at is the deepest existing node of
	// that path; past it the event creates new nodes.
	at, exists := cur, true
	for _, b := range blocks {
		next := none
		if exists {
			next = t.child(at, b.Tokens)
		}
		old, ok := t.slots[s].blocks.Get(b.Hash)
		if ok && (!exists || old != next) && t.isAncestorOrSelf(old, at) {
			return false
		}
		t.olds = append(t.olds, old)
		if exists && next != none {
			at = next
		} else {
			exists = false
		}
	}
	return true
}

// isAncestorOrSelf reports whether a lies on the path from the root to n.
func (t *Tree) isAncestorOrSelf(a, n uint32) bool {
	for ; n != root; n = t.nodes[n].parent {
		if n == a {
			return true
		}
	}
	return false
}

// remove applies a removed event about tier tr and returns how many hashes
// were unknown, or held but not on tr.
//
// A hash that an earlier hash of the same event already took away (a
// parent removed before its children, or the same hash twice) is not
// missing: the worker held it when it sent the event, and Dynamo counts such
// an event ok.
func (t *Tree) remove(o *op) int {
	s, hashes, tr := o.s, o.ev.Removed, o.ev.Tier
	if o.sl == nil {
		return len(hashes)
	}
	if t.slots[s].tiers == nil && tr != TierDevice {
		// Every hash of the slot is on the device alone.
		return len(hashes)
	}
	// Apply emptied t.purged for this event.
	if t.slots[s].tiers != nil {
		missing := t.removeTier(s, hashes, tr)
		t.purged, t.purgedSet = t.purged[:0], nil
		return missing
	}
	o.sl.sink ^= o.sl.blocks.Touch(hashes)
	missing := t.removeFrom(s, hashes)
	t.purged, t.purgedSet = t.purged[:0], nil
	return missing
}

// removeFrom removes the given hashes from slot s, which holds every block
// on the device alone, and returns how many it did not hold.
func (t *Tree) removeFrom(s uint32, hashes []BlockHash) (missing int) {
	for _, h := range hashes {
		n, ok := t.slots[s].blocks.Take(h)
		if !ok {
			if !t.purgedInEvent(h) {
				missing++
			}
			continue
		}
		t.release(s, n)
		t.purged = append(t.purged, h)
	}
	return missing
}

// purgedInEvent reports whether the current removed event already took
// hash h away. Misses are rare, so the list is scanned, or indexed once it
// is long.
func (t *Tree) purgedInEvent(h BlockHash) bool {
	if len(t.purged) <= 64 {
		for _, p := range t.purged {
			if p == h {
				return true
			}
		}
		return false
	}
	if len(t.purgedSet) != len(t.purged) {
		t.purgedSet = make(map[BlockHash]struct{}, len(t.purged))
		for _, p := range t.purged {
			t.purgedSet[p] = struct{}{}
		}
	}
	_, ok := t.purgedSet[h]
	return ok
}

// dropBlock removes node n, which hash h names, from slot s, with everything
// the slot holds below it, and forgets the hashes that named them.
func (t *Tree) dropBlock(s uint32, h BlockHash, n uint32) {
	t.slots[s].blocks.Delete(h)
	t.release(s, n)
}

// release is dropBlock once the hash is out of the slot's map.
func (t *Tree) release(s, n uint32) {
	if !t.unalias(s, n) && t.detach(s, n) {
		t.purge(s)
	}
}

// unalias drops one alias of node n from slot s, if another hash still
// names n besides the one going, and reports whether it did.
func (t *Tree) unalias(s, n uint32) bool {
	sl := t.slots[s]
	if sl.aliased[n] == 0 {
		return false
	}
	sl.aliased[n]--
	if sl.aliased[n] == 0 {
		delete(sl.aliased, n)
	}
	return true
}

// detach removes slot s from node n and from every node below n that it
// holds, freeing nodes left empty. It reports whether the slot held anything
// below n or under another hash, so that the caller must purge the slot's map.
func (t *Tree) detach(s, n uint32) (stale bool) {
	for c := t.nodes[n].first; c != none; {
		next := t.nodes[c].next
		if t.holds(c, s) {
			t.detach(s, c)
			stale = true
		}
		c = next
	}
	if t.removeHolder(n, s) {
		t.slots[s].entries--
		t.entries--
		t.forgetNode(s, n)
	}
	if t.slots[s].aliased[n] > 0 {
		stale = true
	}
	if t.nodes[n].holders == 0 {
		// Every child is empty too: a holder of a child holds n.
		t.freeSubtree(n)
	}
	return stale
}

// purge drops the slot's hashes that name nodes it no longer holds, and
// recounts its aliases.
func (t *Tree) purge(s uint32) {
	sl := t.slots[s]
	stale := t.scratch[:0]
	sl.blocks.All(func(h BlockHash, n uint32) {
		if t.nodes[n].parent == dead || !t.holds(n, s) {
			stale = append(stale, h)
		}
	})
	for _, h := range stale {
		sl.blocks.Delete(h)
	}
	t.trimTiers(s)
	t.purged = append(t.purged, stale...)
	t.scratch = stale[:0]
	sl.aliased = nil
	if sl.blocks.Len() == sl.entries {
		return
	}
	per := make(map[uint32]int, sl.blocks.Len()-sl.entries)
	sl.blocks.All(func(_ BlockHash, n uint32) { per[n]++ })
	for n, k := range per {
		if k > 1 {
			if sl.aliased == nil {
				sl.aliased = make(map[uint32]int)
			}
			sl.aliased[n] = k - 1
		}
	}
}

// clear drops every block of slot s; the slot stays known.
func (t *Tree) clear(s uint32) {
	sl := t.slots[s]
	emptied := make([]uint32, 0, sl.entries)
	sl.blocks.All(func(_ BlockHash, n uint32) {
		if t.removeHolder(n, s) {
			t.entries--
			if t.nodes[n].holders == 0 {
				emptied = append(emptied, n)
			}
		}
	})
	sl.blocks.Reset()
	sl.entries = 0
	sl.aliased = nil
	t.dropTiers(s)
	t.freeEmpty(emptied)
}

// freeEmpty frees the given empty nodes and their (empty) subtrees, in any
// order.
func (t *Tree) freeEmpty(ns []uint32) {
	for _, n := range ns {
		if t.nodes[n].parent == dead {
			continue // freed with an ancestor
		}
		// Free from the topmost empty ancestor so the subtree goes whole.
		top := n
		for p := t.nodes[top].parent; p != root && t.nodes[p].holders == 0; p = t.nodes[p].parent {
			top = p
		}
		t.freeSubtree(top)
	}
}

// RemoveWorker drops every rank of worker id and returns how many entries
// went with them.
func (t *Tree) RemoveWorker(id WorkerID) int {
	dropped := 0
	old := t.rankMap()
	ranks := make(map[Worker]rank, len(old))
	for w, r := range old {
		if w.ID != id {
			ranks[w] = r
			continue
		}
		s := r.s
		dropped += t.slots[s].entries
		t.clear(s)
		t.slots[s] = &slot{}
		t.workers[s] = Worker{}
		t.freeSlots = append(t.freeSlots, s)
	}
	t.ranks.Store(&ranks)
	return dropped
}

// newSlot adds a slot for w, its mu locked: the event that adds it holds it
// to its end (phases.go), and no one else can hold a new slot's lock.
func (t *Tree) newSlot(w Worker) uint32 {
	var s uint32
	if n := len(t.freeSlots); n > 0 {
		s = t.freeSlots[n-1]
		t.freeSlots = t.freeSlots[:n-1]
	} else {
		s = uint32(len(t.slots))
		t.slots = append(t.slots, nil)
		t.workers = append(t.workers, Worker{})
	}
	sl := &slot{worker: w, live: true}
	sl.mu.Lock()
	t.slots[s] = sl
	t.workers[s] = w
	old := t.rankMap()
	ranks := make(map[Worker]rank, len(old)+1)
	for v, r := range old {
		ranks[v] = r
	}
	ranks[w] = rank{s: s, sl: sl}
	t.ranks.Store(&ranks)
	return s
}
