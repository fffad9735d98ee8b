package indexer

import (
	"fmt"
	"slices"
	"strings"
)

// model is the brute-force reference of the index semantics: per rank, a map
// from engine hash to the path of local hashes it names. A rank holds a path
// while some hash names it.
type model struct {
	ranks map[Worker]map[BlockHash]string
}

func newModel() *model { return &model{ranks: make(map[Worker]map[BlockHash]string)} }

func pathKey(p []LocalHash) string {
	var b strings.Builder
	for _, h := range p {
		fmt.Fprintf(&b, "/%d", h)
	}
	return b.String()
}

func (m *model) holds(w Worker, path string) bool {
	for _, p := range m.ranks[w] {
		if p == path {
			return true
		}
	}
	return false
}

// drop forgets hash h of rank w; if no other hash names its path, the rank
// loses the path and everything below it.
func (m *model) drop(w Worker, h BlockHash) {
	hs := m.ranks[w]
	p := hs[h]
	delete(hs, h)
	if m.holds(w, p) {
		return
	}
	for o, q := range hs {
		if strings.HasPrefix(q, p+"/") {
			delete(hs, o)
		}
	}
}

func (m *model) apply(ev Event) Result {
	hs := m.ranks[ev.Worker]
	switch ev.Kind {
	case KindStored:
		base := ""
		if ev.HasParent {
			p, ok := hs[ev.Parent]
			if !ok {
				return Result{Status: StatusParentNotFound}
			}
			base = p
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
			if old, ok := hs[b.Hash]; ok && old != next && (old == path || strings.HasPrefix(path, old+"/")) {
				return Result{Status: StatusInvalidBlock}
			}
			path = next
		}
		if len(ev.Blocks) == 0 {
			return Result{}
		}
		if hs == nil {
			hs = make(map[BlockHash]string)
			m.ranks[ev.Worker] = hs
		}
		path = base
		for _, b := range ev.Blocks {
			next := path + fmt.Sprintf("/%d", b.Tokens)
			if old, ok := hs[b.Hash]; ok && old != next {
				m.drop(ev.Worker, b.Hash)
			}
			hs[b.Hash] = next
			path = next
		}
		return Result{}
	case KindRemoved:
		// A hash is missing if the worker did not hold it when the event
		// began; one an earlier hash cascaded away is not.
		known := map[BlockHash]bool{}
		for h := range hs {
			known[h] = true
		}
		missing := 0
		for _, h := range ev.Removed {
			if _, ok := hs[h]; !ok {
				if !known[h] {
					missing++
				}
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
			m.ranks[ev.Worker] = make(map[BlockHash]string)
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
	for _, p := range m.ranks[w] {
		paths[p] = true
	}
	return len(paths)
}

func (m *model) stats() Stats {
	all := map[string]bool{}
	entries := 0
	for w, hs := range m.ranks {
		entries += m.size(w)
		for _, p := range hs {
			all[p] = true
		}
	}
	return Stats{Entries: entries, Nodes: len(all), Workers: len(m.ranks)}
}

func (m *model) findMatches(query []LocalHash) []Match {
	var out []Match
	for w := range m.ranks {
		d := 0
		for d < len(query) && m.holds(w, pathKey(query[:d+1])) {
			d++
		}
		if d > 0 {
			out = append(out, Match{Worker: w, Blocks: uint32(d)})
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

// canonical renders a tree's state like the model's: per rank, hash → path.
func canonical(t *Tree) map[Worker]map[BlockHash]string {
	out := make(map[Worker]map[BlockHash]string)
	for w, s := range t.slotOf {
		hs := make(map[BlockHash]string)
		t.slots[s].blocks.All(func(h BlockHash, n uint32) { hs[h] = t.path(n) })
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
	for w, s := range t.slotOf {
		sl := &t.slots[s]
		if sl.worker != w || !sl.live {
			return fmt.Errorf("slot %d: worker %v live %v, want %v", s, sl.worker, sl.live, w)
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
