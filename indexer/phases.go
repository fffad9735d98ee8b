package indexer

import "sync/atomic"

// An event is applied in three phases, so that Index can apply the events of
// different ranks in parallel:
//
//   - begin, under the rank's slot lock only: the lookups in the rank's
//     engine-hash table (blockMap), whose cache misses are most of a write's
//     cost;
//   - commit, under the tree's exclusivity: the change of the tree;
//   - end, under the slot lock again: the inserts into the table.
//
// Only the common shapes take the split: a stored event of new blocks
// (no hash of it already held) and a removed event, both for a rank that
// holds every block on the device alone. Every other event does all of its
// work in commit, as a single-threaded tree would, still holding the slot
// lock, so that the table is never touched without it.
//
// The slot lock is held from begin to end, so the table stays as begin
// left it until commit, and nothing else changes a rank's blocks in
// between: other ranks' events never change what this rank holds, and what
// does (eviction, RemoveWorker, Dump's reads of the tables) waits, in
// Index, until no event is in flight. Lock order: the slot lock, then the
// tree's.

// lane is the way commit applies an event.
type lane uint8

const (
	// laneSlow: every step in commit.
	laneSlow lane = iota
	// laneDone: begin decided the outcome (o.status); commit only ticks
	// the clock.
	laneDone
	// laneStore: begin found the parent and that no hash is held yet;
	// commit adds the nodes (o.w.nodes), end maps the hashes to them.
	laneStore
	// laneRemove: begin took every hash out of the table (o.w.nodes,
	// none for a hash not held); commit releases the nodes.
	laneRemove
)

// scratch is the working memory of an event: it holds a store's new nodes,
// or a removal's taken ones, from one phase to the next, and the set that
// checks a stored event's hashes. Each goroutine applying events brings its
// own.
type scratch struct {
	nodes []uint32
	// dups finds repeated hashes in a long stored event (distinct).
	dups hashSet
}

// op carries one event through its phases.
type op struct {
	ev Event
	// w is the caller's scratch.
	w *scratch
	// sl is the event's slot, locked, and s its index; nil if the rank
	// had none at begin and commit did not add one.
	sl *slot
	s  uint32
	// lane is how commit applies the event; status is laneDone's outcome
	// and parent laneStore's node to store under.
	lane   lane
	status Status
	parent uint32
	// evict says the event was a stored event applied whole that left
	// the entries over the memory cap: Tree.evict is due.
	evict bool
}

// rankMap returns the map of known ranks; it must not be changed.
func (t *Tree) rankMap() map[Worker]rank {
	if m := t.ranks.Load(); m != nil {
		return *m
	}
	return nil
}

// lookup finds w's slot; it needs no exclusivity.
func (t *Tree) lookup(w Worker) (rank, bool) {
	r, ok := t.rankMap()[w]
	return r, ok
}

// begin locks the event's slot, if its rank has one, and does the table's
// part of the fast paths.
func (t *Tree) begin(o *op, ev Event, w *scratch) {
	*o = op{ev: ev, w: w}
	r, ok := t.lookup(ev.Worker)
	if !ok {
		return
	}
	r.sl.mu.Lock()
	o.sl, o.s = r.sl, r.s
	if r.sl.tiers != nil || ev.Tier != TierDevice {
		return
	}
	switch ev.Kind {
	case KindStored:
		if !ev.ByHash {
			t.beginStore(o)
		}
	case KindRemoved:
		t.beginRemove(o)
	}
}

// commit applies the event to the tree; the caller has the tree to itself.
// It reports false, having changed nothing, if a slot was added for the
// event's rank after begin found none: the caller ends nothing and begins
// again.
func (t *Tree) commit(o *op) (Result, bool) {
	if o.sl == nil {
		if _, ok := t.lookup(o.ev.Worker); ok {
			return Result{}, false
		}
	}
	atomic.StoreUint32(&t.clock, t.clock+1)
	if t.clock%maxAge == 0 {
		t.rebase()
	}
	// purged serves one removed event; other events' cascades add to it too.
	t.purged, t.purgedSet = t.purged[:0], nil
	var r Result
	switch o.lane {
	case laneSlow:
		r = t.commitSlow(o)
	case laneDone:
		r.Status = o.status
	case laneStore:
		t.commitStore(o)
	case laneRemove:
		r.Missing = t.commitRemove(o)
		if r.Missing > 0 {
			r.Status = StatusBlockNotFound
		}
	}
	ev := &o.ev
	// Only a stored event adds entries; one about a tier past NumTiers is
	// not StatusOK.
	o.evict = ev.Kind == KindStored && !ev.ByHash && r.Status == StatusOK && t.overCap()
	return r, true
}

// end finishes the event in its rank's table and unlocks the slot.
func (t *Tree) end(o *op) {
	sl := o.sl
	if sl == nil {
		return
	}
	if o.lane == laneStore {
		// begin found none of the hashes, and the event repeats none.
		for i, b := range o.ev.Blocks {
			sl.blocks.Add(b.Hash, o.w.nodes[i])
		}
	}
	sl.mu.Unlock()
}

// beginStore checks a stored event of a device-only rank against its table:
// the parent must be held, and the event takes the fast path if it holds
// none of the hashes yet. Otherwise a hash moves or repeats, which needs
// the tree to check, and commit does it all (Tree.store).
func (t *Tree) beginStore(o *op) {
	ev, sl := &o.ev, o.sl
	o.parent = root
	if ev.HasParent {
		p, ok := sl.blocks.Get(ev.Parent)
		if !ok {
			o.lane, o.status = laneDone, StatusParentNotFound
			return
		}
		o.parent = p
	}
	if !distinct(ev, &o.w.dups) {
		o.lane, o.status = laneDone, StatusInvalidBlock
		return
	}
	if len(ev.Blocks) == 0 {
		o.lane, o.status = laneDone, StatusOK
		return
	}
	sl.sink ^= sl.blocks.TouchBlocks(ev.Blocks)
	for _, b := range ev.Blocks {
		if _, ok := sl.blocks.Get(b.Hash); ok {
			return
		}
	}
	o.lane = laneStore
}

// distinct reports whether no engine hash repeats in a stored event, its
// parent's included; dups is scratch for long events.
func distinct(ev *Event, dups *hashSet) bool {
	blocks := ev.Blocks
	if len(blocks) <= 32 {
		for i, b := range blocks {
			if ev.HasParent && b.Hash == ev.Parent {
				return false
			}
			for _, o := range blocks[:i] {
				if o.Hash == b.Hash {
					return false
				}
			}
		}
		return true
	}
	dups.reset(len(blocks) + 1)
	if ev.HasParent {
		dups.add(ev.Parent)
	}
	for _, b := range blocks {
		if !dups.add(b.Hash) {
			return false
		}
	}
	return true
}

// commitStore hangs the blocks of a stored event below o.parent and records
// their nodes for end. It is Tree.store for an event none of whose hashes
// the rank holds.
func (t *Tree) commitStore(o *op) {
	s := o.s
	cur, now := o.parent, t.clock
	t.touchUp(cur, now)
	nodes := o.w.nodes[:0]
	for _, b := range o.ev.Blocks {
		c := t.child(cur, b.Tokens)
		if c == none {
			c = t.newNode(cur, b.Tokens)
		} else {
			atomic.StoreUint32(&t.nodes[c].stamp, now)
		}
		t.hold(s, c)
		nodes = append(nodes, c)
		cur = c
	}
	o.w.nodes = nodes
}

// beginRemove takes every hash of a removed event out of the table,
// noting the node each named (none for a hash not held).
func (t *Tree) beginRemove(o *op) {
	sl := o.sl
	sl.sink ^= sl.blocks.Touch(o.ev.Removed)
	nodes := o.w.nodes[:0]
	for _, h := range o.ev.Removed {
		n, _ := sl.blocks.Take(h)
		nodes = append(nodes, n)
	}
	o.w.nodes = nodes
	o.lane = laneRemove
}

// commitRemove releases the nodes begin took and returns how many hashes
// the rank did not hold. It is Tree.removeFrom with the table's work done
// ahead, until a release cascades (the rank held blocks below the node, or
// the node under another hash): the purge that follows must see the table
// as removeFrom would, so the hashes not yet released go back into it, and
// removeFrom does the rest.
func (t *Tree) commitRemove(o *op) (missing int) {
	s, sl, hashes := o.s, o.sl, o.ev.Removed
	nodes := o.w.nodes
	for i, h := range hashes {
		n := nodes[i]
		if n == none {
			if !t.purgedInEvent(h) {
				missing++
			}
			continue
		}
		if t.unalias(s, n) || !t.detach(s, n) {
			t.purged = append(t.purged, h)
			continue
		}
		for j := i + 1; j < len(hashes); j++ {
			if nodes[j] != none {
				sl.blocks.Add(hashes[j], nodes[j])
			}
		}
		t.purge(s)
		t.purged = append(t.purged, h)
		missing += t.removeFrom(s, hashes[i+1:])
		break
	}
	t.purged, t.purgedSet = t.purged[:0], nil
	return missing
}
