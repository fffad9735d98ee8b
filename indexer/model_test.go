package indexer

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// model is the brute-force reference of the index semantics: per rank, a map
// from engine hash to the path of local hashes it names and the tiers it is
// held on. A rank holds a path while some hash names it, on the union of
// those hashes' tiers.
type model struct {
	ranks map[Worker]map[BlockHash]held
}

// held is one engine hash of a rank: the path it names and its tiers.
type held struct {
	Path  string
	Tiers tierMask
}

func newModel() *model { return &model{ranks: make(map[Worker]map[BlockHash]held)} }

func pathKey(p []LocalHash) string {
	var b strings.Builder
	for _, h := range p {
		fmt.Fprintf(&b, "/%d", h)
	}
	return b.String()
}

// tiersOf returns the tiers rank w holds path on; 0 if it does not hold it.
func (m *model) tiersOf(w Worker, path string) tierMask {
	var tiers tierMask
	for _, e := range m.ranks[w] {
		if e.Path == path {
			tiers |= e.Tiers
		}
	}
	return tiers
}

func (m *model) holds(w Worker, path string) bool { return m.tiersOf(w, path) != 0 }

// drop forgets hash h of rank w, on every tier; if no other hash names its
// path, the rank loses the path and everything below it.
func (m *model) drop(w Worker, h BlockHash) {
	hs := m.ranks[w]
	p := hs[h].Path
	delete(hs, h)
	if m.holds(w, p) {
		return
	}
	for o, q := range hs {
		if strings.HasPrefix(q.Path, p+"/") {
			delete(hs, o)
		}
	}
}

func (m *model) apply(ev Event) Result {
	hs := m.ranks[ev.Worker]
	if ev.Kind != KindCleared && ev.Tier >= NumTiers {
		return Result{Status: StatusInvalidBlock}
	}
	tier := bit(ev.Tier)
	switch ev.Kind {
	case KindStored:
		if ev.ByHash {
			missing := 0
			for _, b := range ev.Blocks {
				e, ok := hs[b.Hash]
				if !ok {
					missing++
					continue
				}
				e.Tiers |= tier
				hs[b.Hash] = e
			}
			if missing > 0 {
				return Result{Status: StatusBlockNotFound, Missing: missing}
			}
			return Result{}
		}
		base := ""
		if ev.HasParent {
			p, ok := hs[ev.Parent]
			if !ok {
				return Result{Status: StatusParentNotFound}
			}
			base = p.Path
		}
		// Validate: no hash may repeat or name a proper ancestor.
		path := base
		seen := map[BlockHash]bool{}
		for _, b := range ev.Blocks {
			if seen[b.Hash] || (ev.HasParent && b.Hash == ev.Parent) {
				return Result{Status: StatusInvalidBlock}
			}
			seen[b.Hash] = true
			next := path + fmt.Sprintf("/%d", b.Tokens)
			if old, ok := hs[b.Hash]; ok && old.Path != next && (old.Path == path || strings.HasPrefix(path, old.Path+"/")) {
				return Result{Status: StatusInvalidBlock}
			}
			path = next
		}
		if len(ev.Blocks) == 0 {
			return Result{}
		}
		if hs == nil {
			hs = make(map[BlockHash]held)
			m.ranks[ev.Worker] = hs
		}
		path = base
		for _, b := range ev.Blocks {
			next := path + fmt.Sprintf("/%d", b.Tokens)
			e, ok := hs[b.Hash]
			switch {
			case ok && e.Path == next:
				e.Tiers |= tier // the same block on one more tier
			case ok:
				m.drop(ev.Worker, b.Hash) // moved: every tier goes
				e = held{Path: next, Tiers: tier}
			default:
				e = held{Path: next, Tiers: tier}
			}
			hs[b.Hash] = e
			path = next
		}
		return Result{}
	case KindRemoved:
		// A hash is missing if the worker did not hold it when the event
		// began, or holds it but not on the event's tier; one an earlier
		// hash cascaded away is not.
		known := map[BlockHash]bool{}
		for h := range hs {
			known[h] = true
		}
		missing := 0
		for _, h := range ev.Removed {
			e, ok := hs[h]
			if !ok {
				if !known[h] {
					missing++
				}
				continue
			}
			if e.Tiers&tier == 0 {
				missing++
				continue
			}
			e.Tiers &^= tier
			if e.Tiers != 0 {
				hs[h] = e
				continue
			}
			m.drop(ev.Worker, h)
		}
		if missing > 0 {
			return Result{Status: StatusBlockNotFound, Missing: missing}
		}
		return Result{}
	case KindCleared:
		if hs != nil {
			m.ranks[ev.Worker] = make(map[BlockHash]held)
		}
		return Result{}
	}
	return Result{Status: StatusInvalidBlock}
}

func (m *model) removeWorker(id WorkerID) int {
	n := 0
	for w := range m.ranks {
		if w.ID == id {
			n += m.size(w)
			delete(m.ranks, w)
		}
	}
	return n
}

func (m *model) size(w Worker) int {
	paths := map[string]bool{}
	for _, e := range m.ranks[w] {
		paths[e.Path] = true
	}
	return len(paths)
}

func (m *model) stats() Stats {
	all := map[string]bool{}
	entries := 0
	for w, hs := range m.ranks {
		entries += m.size(w)
		for _, e := range hs {
			all[e.Path] = true
		}
	}
	return Stats{Entries: entries, Nodes: len(all), Workers: len(m.ranks)}
}

// findMatches scores a query as FindMatches does without early exit: each
// matched block counts on its fastest tier.
func (m *model) findMatches(query []LocalHash) []Match {
	var out []Match
	for w := range m.ranks {
		mt := Match{Worker: w}
		for d := range query {
			tiers := m.tiersOf(w, pathKey(query[:d+1]))
			if tiers == 0 {
				break
			}
			mt.Blocks++
			switch tiers.fastest() {
			case TierHost:
				mt.Host++
			case TierDisk:
				mt.Disk++
			case TierExternal:
				mt.External++
			}
		}
		if mt.Blocks > 0 {
			out = append(out, mt)
		}
	}
	sortMatches(out)
	return out
}

func sortMatches(ms []Match) {
	slices.SortFunc(ms, func(a, b Match) int {
		if a.Worker.ID != b.Worker.ID {
			return int(int64(a.Worker.ID) - int64(b.Worker.ID))
		}
		return int(a.Worker.DPRank) - int(b.Worker.DPRank)
	})
}

// canonical renders a tree's state like the model's: per rank, hash → path
// and tiers.
func canonical(t *Tree) map[Worker]map[BlockHash]held {
	out := make(map[Worker]map[BlockHash]held)
	for w, r := range t.rankMap() {
		sl := r.sl
		hs := make(map[BlockHash]held)
		sl.blocks.All(func(h BlockHash, n uint32) { hs[h] = held{Path: t.path(n), Tiers: sl.maskOf(h, n)} })
		out[w] = hs
	}
	return out
}

// path renders the local hashes from the root to n.
func (t *Tree) path(n uint32) string {
	var hs []LocalHash
	for ; n != root; n = t.nodes[n].parent {
		hs = append(hs, t.nodes[n].hash())
	}
	slices.Reverse(hs)
	return pathKey(hs)
}

// check verifies the tree's internal invariants.
func (t *Tree) check() error {
	entries, live := 0, 0
	for i := 1; i < len(t.nodes); i++ {
		n := uint32(i)
		nd := &t.nodes[n]
		if nd.parent == dead {
			continue
		}
		live++
		if nd.holders == 0 {
			return fmt.Errorf("node %d %s has no holders", n, t.path(n))
		}
		if nd.holders&setFlag != 0 {
			set := t.sets[nd.holders&^setFlag]
			if len(set) < 2 || !slices.IsSorted(set) {
				return fmt.Errorf("node %d holder set %v", n, set)
			}
		}
		_, inKids := t.kids[childKey{nd.parent, nd.hash()}]
		if hasSibling := t.nodes[nd.parent].first != n || nd.next != none; inKids != hasSibling {
			return fmt.Errorf("node %d %s: in kids %v, has a sibling %v", n, t.path(n), inKids, hasSibling)
		}
		if got := t.child(nd.parent, nd.hash()); got != n {
			return fmt.Errorf("node %d %s: lookup from parent finds %d", n, t.path(n), got)
		}
		var err error
		t.forHolders(n, func(s uint32) {
			entries++
			if !t.slots[s].live {
				err = fmt.Errorf("node %d held by dead slot %d", n, s)
			}
			if nd.parent != root && !t.holds(nd.parent, s) {
				err = fmt.Errorf("node %d %s held by slot %d without its parent", n, t.path(n), s)
			}
			found := false
			t.slots[s].blocks.All(func(_ BlockHash, m uint32) { found = found || m == n })
			if !found {
				err = fmt.Errorf("node %d held by slot %d under no hash", n, s)
			}
		})
		if err != nil {
			return err
		}
	}
	if entries != t.entries || live != t.live {
		return fmt.Errorf("counted %d entries %d nodes, tree says %d and %d", entries, live, t.entries, t.live)
	}
	tiered := 0
	for s := range t.slots {
		if t.slots[s].tiers != nil {
			tiered++
		}
	}
	if tiered != t.tiered {
		return fmt.Errorf("%d slots with tiers, counted %d", tiered, t.tiered)
	}
	slowNodes := map[uint32]uint32{}
	for s := range t.slots {
		if ts := t.slots[s].tiers; ts != nil {
			for n, m := range ts.node {
				if m&deviceOnly == 0 {
					slowNodes[n]++
				}
			}
		}
	}
	for i, k := range t.slowCount {
		if k != slowNodes[uint32(i)] {
			return fmt.Errorf("node %d: held with no device copy by %d slots, counted %d", i, slowNodes[uint32(i)], k)
		}
		delete(slowNodes, uint32(i))
	}
	if len(slowNodes) > 0 {
		return fmt.Errorf("nodes held with no device copy past the counts: %v", slowNodes)
	}
	for i := range len(t.slowBits) * 64 {
		slow := i < len(t.slowCount) && t.slowCount[i] > 0
		if slow != t.isSlow(uint32(i)) {
			return fmt.Errorf("node %d: slow bit %v, held with no device copy %v", i, t.isSlow(uint32(i)), slow)
		}
	}
	for w, r := range t.rankMap() {
		s, sl := r.s, r.sl
		if sl != t.slots[s] {
			return fmt.Errorf("rank %v: slot %d is not the one the tree holds", w, s)
		}
		if sl.worker != w || !sl.live || t.workers[s] != w {
			return fmt.Errorf("slot %d: worker %v (dense %v) live %v, want %v", s, sl.worker, t.workers[s], sl.live, w)
		}
		if err := sl.blocks.check(); err != nil {
			return fmt.Errorf("slot %d map: %w", s, err)
		}
		held := map[uint32]int{}
		var err error
		sl.blocks.All(func(h BlockHash, n uint32) {
			if t.nodes[n].parent == dead || !t.holds(n, s) {
				err = fmt.Errorf("slot %d hash %d names node %d it does not hold", s, h, n)
			}
			held[n]++
		})
		if err != nil {
			return err
		}
		if len(held) != sl.entries {
			return fmt.Errorf("slot %d holds %d nodes, counts %d", s, len(held), sl.entries)
		}
		for n, k := range held {
			if sl.aliased[n] != k-1 {
				return fmt.Errorf("slot %d node %d: %d hashes, aliased %d", s, n, k, sl.aliased[n])
			}
		}
		if err := t.checkTiers(s); err != nil {
			return err
		}
	}
	for k, c := range t.kids {
		if t.nodes[c.node].parent != k.parent || t.nodes[c.node].hash() != k.hash {
			return fmt.Errorf("kids[%v] = %d, a stale child", k, c.node)
		}
		if c.prev == none && t.nodes[k.parent].first != c.node || c.prev != none && t.nodes[c.prev].next != c.node {
			return fmt.Errorf("kids[%v] = %+v: not the sibling after its prev", k, c)
		}
	}
	return nil
}

// checkTiers verifies the invariants of slot s's tierState (tiers.go).
func (t *Tree) checkTiers(s uint32) error {
	sl := t.slots[s]
	ts := sl.tiers
	if ts == nil {
		return nil
	}
	if len(ts.node) == 0 {
		return fmt.Errorf("slot %d: an empty tierState instead of none", s)
	}
	// The tiers of each node, from the tiers of its hashes.
	union := map[uint32]tierMask{}
	hashes := map[uint32][]BlockHash{}
	sl.blocks.All(func(h BlockHash, n uint32) {
		m := sl.maskOf(h, n)
		if m == 0 || m >= 1<<NumTiers {
			union[n] |= 1 << 7 // reported below
		}
		union[n] |= m
		hashes[n] = append(hashes[n], h)
	})
	want := map[uint32]tierMask{}
	slow := 0
	for n, m := range union {
		if m&^deviceOnly != 0 {
			want[n] = m
			if m&deviceOnly == 0 {
				slow++
			}
		}
	}
	if !maps.Equal(want, ts.node) {
		return fmt.Errorf("slot %d: node tiers %v, want %v", s, ts.node, want)
	}
	if slow != ts.slow {
		return fmt.Errorf("slot %d: %d nodes without a device copy, counted %d", s, slow, ts.slow)
	}
	for n, a := range ts.alias {
		if _, ok := ts.node[n]; !ok || sl.aliased[n] == 0 {
			return fmt.Errorf("slot %d node %d: alias tiers for a node not listed (%v) or named once (%d aliases)", s, n, ok, sl.aliased[n])
		}
		var c tierCounts
		for _, h := range hashes[n] {
			c.add(sl.maskOf(h, n))
		}
		if c != a.counts {
			return fmt.Errorf("slot %d node %d: alias counts %v, want %v", s, n, a.counts, c)
		}
		for h := range a.hash {
			if !slices.Contains(hashes[n], h) {
				return fmt.Errorf("slot %d node %d: alias tiers of hash %d, which does not name it", s, n, h)
			}
		}
	}
	for n := range ts.node {
		if sl.aliased[n] > 0 && ts.alias[n] == nil {
			return fmt.Errorf("slot %d node %d: %d aliases and no alias tiers", s, n, sl.aliased[n])
		}
	}
	return nil
}
