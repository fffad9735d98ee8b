package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestActiveTreeMatchesModel books and frees random prompts, chains over a
// small alphabet of blocks so that they share prefixes and split nodes
// everywhere, on a few ranks, and checks after every step each rank's
// active blocks against the distinct hashes its requests hold, and the
// tree's invariants. When everything is freed the tree must be empty.
func TestActiveTreeMatchesModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 11))
			s := NewSequences(true, true)
			chain := func() []uint64 {
				locals := make([]uint64, rng.IntN(9)) // empty prompts too
				for i := range locals {
					locals[i] = uint64(rng.IntN(3))
				}
				return sequenceHashes(nil, locals)
			}
			const ranks = 4
			var live []string
			for i := range 2000 {
				if len(live) > 0 && (rng.IntN(3) == 0 || i >= 1500) {
					j := rng.IntN(len(live))
					if _, ok := s.Free(live[j]); !ok {
						t.Fatalf("step %d: free %s failed", i, live[j])
					}
					live = slices.Delete(live, j, j+1)
				} else {
					id := fmt.Sprint("r", i)
					c := chain()
					places := []Placement{{Worker: w(uint64(1 + rng.IntN(ranks))), Kind: KindDecode, SeqHashes: c, NumBlocks: len(c)}}
					if rng.IntN(4) == 0 { // a second placement, as disaggregated serving books
						places = append(places, Placement{Worker: w(uint64(1 + rng.IntN(ranks))), Kind: KindDecode, SeqHashes: c, NumBlocks: len(c)})
					}
					if err := s.Add(id, t0, 4, true, places...); err != nil {
						t.Fatal(err)
					}
					live = append(live, id)
				}
				checkTree(t, s, i)
			}
			for _, id := range live {
				s.Free(id)
			}
			checkTree(t, s, -1)
			if s.tree.len() != 0 || s.tree.children.len() != 0 {
				t.Fatalf("all freed, tree holds %d nodes and %d edges", s.tree.len(), s.tree.children.len())
			}
		})
	}
}

// checkTree checks each rank's active blocks against the distinct hashes
// of its placements, and the tree's invariants: every node has holders,
// sorted by rank, with refs equal to the placements through it; a node's
// ranks are among its parent's; every node is its parent's child by its
// first hash.
func checkTree(t *testing.T, s *Sequences, step int) {
	t.Helper()
	tr := &s.tree
	distinct := map[int32]map[uint64]bool{}
	through := map[[2]int32]int32{} // (node, rank) → placements through it
	for _, a := range s.requests {
		for _, pl := range a.places[:a.n] {
			if distinct[pl.rank] == nil {
				distinct[pl.rank] = map[uint64]bool{}
			}
			for _, h := range tr.path(pl.node) {
				distinct[pl.rank][h] = true
			}
			for n := pl.node; n != 0; n = tr.nodes[n].parent {
				through[[2]int32{n, pl.rank}]++
			}
		}
	}
	for r := range s.ranks {
		if got, want := s.ranks[r].blocks, len(distinct[int32(r)]); got != want {
			t.Fatalf("step %d rank %d: %d active blocks, model %d", step, r, got, want)
		}
	}
	free := map[int32]bool{}
	for _, n := range tr.free {
		free[n] = true
	}
	nodes := 0
	for n := int32(1); int(n) < len(tr.nodes); n++ {
		if free[n] {
			continue
		}
		nodes++
		node := &tr.nodes[n]
		if len(node.hashes) == 0 {
			t.Fatalf("step %d node %d: no blocks", step, n)
		}
		if got := tr.children.get(node.parent, node.hashes[0]); got != n {
			t.Fatalf("step %d node %d: edge from %d by its first hash leads to %d", step, n, node.parent, got)
		}
		refs := append([]holderRef{node.holders.first}, tr.others(n)...)
		if !slices.IsSortedFunc(refs[1:], func(a, b holderRef) int { return int(a.rank - b.rank) }) {
			t.Fatalf("step %d node %d: holders not sorted: %v", step, n, refs)
		}
		for _, ref := range refs {
			if want := through[[2]int32{n, ref.rank}]; ref.refs != want || want == 0 {
				t.Fatalf("step %d node %d rank %d: %d refs, %d placements through it", step, n, ref.rank, ref.refs, want)
			}
			if p := node.parent; p != 0 && through[[2]int32{p, ref.rank}] == 0 {
				t.Fatalf("step %d node %d: rank %d holds it but not its parent %d", step, n, ref.rank, p)
			}
		}
	}
	if nodes != tr.len() || nodes != tr.children.len() {
		t.Fatalf("step %d: %d nodes, len %d, %d edges", step, nodes, tr.len(), tr.children.len())
	}
}
