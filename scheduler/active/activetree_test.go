package active

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
			s := newSequences(true, true)
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
					places := []Placement{{Worker: w(uint64(1 + rng.IntN(ranks))), SeqHashes: c, NumBlocks: len(c)}}
					if rng.IntN(4) == 0 { // a second placement, as disaggregated serving books
						places = append(places, Placement{Worker: w(uint64(1 + rng.IntN(ranks))), SeqHashes: c, NumBlocks: len(c)})
					}
					if err := s.Add(id, t0, 4, true, places...); err != nil {
						t.Fatal(err)
					}
					live = append(live, id)
				}
				checkTree(t, s, i)
			}
			freeAllLeavesEmptyTree(t, s, live)
		})
	}
}

// freeAllLeavesEmptyTree frees the live requests, checks the tree after,
// and checks that nothing is left in it.
func freeAllLeavesEmptyTree(t testing.TB, s *Sequences, live []string) {
	t.Helper()
	for _, id := range live {
		s.Free(id)
	}
	checkTree(t, s, -1)
	if s.tree.len() != 0 || s.tree.children.len() != 0 {
		t.Fatalf("all freed, tree holds %d nodes and %d edges", s.tree.len(), s.tree.children.len())
	}
}

// checkTree checks each rank's active blocks against the distinct
// prefixes of its placements' hash lists (for sequence hashes, which name
// their prefix, the distinct hashes), and the tree's invariants: every
// node has holders, sorted by rank, with refs equal to the placements
// through it; a node's ranks are among its parent's; every node is its
// parent's child by its first hash.
func checkTree(t testing.TB, s *Sequences, step int) {
	t.Helper()
	tr := &s.tree
	distinct := map[int32]map[uint64]bool{}
	through := map[[2]int32]int32{} // (node, rank) → placements through it
	for _, a := range s.requests {
		for _, pl := range a.places[:a.n] {
			if distinct[pl.rank] == nil {
				distinct[pl.rank] = map[uint64]bool{}
			}
			// A prefix by an FNV-style fold of its hashes, cheaper than
			// strings; a collision (as unlikely as in any 64-bit hash)
			// would undercount and fail the test, never pass it.
			prefix := uint64(14695981039346656037)
			for _, h := range tr.path(pl.node) {
				prefix = (prefix ^ h) * 1099511628211
				distinct[pl.rank][prefix] = true
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

// FuzzActiveTree books and frees placements with arbitrary hash lists,
// not sequence hashes: repeated hashes, one hash at several depths, the
// shapes a malformed replica event could carry. The model and invariants
// of checkTree must hold after every step, and the tree must be empty
// once everything is freed.
func FuzzActiveTree(f *testing.F) {
	f.Add([]byte{0x13, 1, 1, 1, 0x22, 1, 2, 0x80, 0x11, 3})
	f.Add([]byte{0x05, 1, 2, 3, 4, 5, 0x05, 1, 2, 3, 4, 6, 0x81, 0x02, 1, 2, 0x80})
	f.Fuzz(func(t *testing.T, ops []byte) {
		s := newSequences(true, true)
		var live []string
		for i := 0; i < len(ops); {
			op := ops[i]
			i++
			if op&0x80 != 0 { // free the live request op selects
				if len(live) > 0 {
					j := int(op&0x7f) % len(live)
					s.Free(live[j])
					live = slices.Delete(live, j, j+1)
				}
			} else { // book op&0x0f hashes, from the next bytes, on rank op>>4
				n := min(int(op&0x0f), len(ops)-i)
				hashes := make([]uint64, n)
				for k := range hashes {
					hashes[k] = uint64(ops[i+k] % 4)
				}
				i += n
				id := fmt.Sprint("r", i)
				if err := s.Add(id, t0, 4, true, Placement{Worker: w(uint64(op >> 4)), SeqHashes: hashes, NumBlocks: n}); err != nil {
					continue // a repeated id: nothing booked
				}
				live = append(live, id)
			}
			checkTree(t, s, i)
		}
		freeAllLeavesEmptyTree(t, s, live)
	})
}
