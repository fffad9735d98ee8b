package indexer

import (
	"math/rand/v2"
	"testing"
)

// The table agrees with a Go map under random puts and deletes, including
// keys that collide on their home slot.
func TestBlockMapAgreesWithMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var m blockMap
	ref := map[BlockHash]uint32{}
	for step := range 200_000 {
		k := BlockHash(r.IntN(30000)) // includes 0
		if r.IntN(4) == 0 {
			k = BlockHash(r.Uint64()) // wide keys too
		}
		switch r.IntN(3) {
		case 0, 1:
			v := uint32(1 + r.IntN(1000))
			m.Put(k, v)
			ref[k] = v
		case 2:
			m.Delete(k)
			delete(ref, k)
		}
		if step%1000 == 0 {
			if m.Len() != len(ref) {
				t.Fatalf("step %d: Len %d, want %d", step, m.Len(), len(ref))
			}
			for k, v := range ref {
				if got, ok := m.Get(k); !ok || got != v {
					t.Fatalf("step %d: Get(%d) = %d, %v; want %d", step, k, got, ok, v)
				}
			}
			seen := 0
			m.All(func(k BlockHash, v uint32) {
				seen++
				if ref[k] != v {
					t.Fatalf("step %d: All gave %d→%d, want %d", step, k, v, ref[k])
				}
			})
			if seen != len(ref) {
				t.Fatalf("step %d: All visited %d, want %d", step, seen, len(ref))
			}
		}
	}
	for k := range ref {
		m.Delete(k)
	}
	if m.Len() != 0 || len(m.keys) > blockMapShrinkSlots {
		t.Fatalf("after deleting everything: Len %d, %d slots", m.Len(), len(m.vals))
	}
	if _, ok := m.Get(5); ok {
		t.Fatal("Get on an empty map found a key")
	}
}
