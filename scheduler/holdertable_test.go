package scheduler

import (
	"math/rand/v2"
	"testing"
)

// TestHolderTableModel checks the open-addressing table against a Go map
// under random sets and removes, with keys drawn from a small range so
// that runs collide, wrap around the end of the table, grow and shrink.
func TestHolderTableModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys uint64
		ops  int
	}{
		{"dense-small-keys", 64, 20_000},
		{"grow-and-shrink", 5_000, 200_000},
		{"patterned-keys", 1 << 12, 50_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, tc.keys))
			var tab holderTable
			model := map[uint64]holders{}
			keyOf := func(n uint64) uint64 {
				if tc.name == "patterned-keys" {
					return n << 20 // same low bits: a plain modulo would pile them up
				}
				return n
			}
			for i := range tc.ops {
				k := keyOf(rng.Uint64N(tc.keys))
				// Mostly sets in the first half, mostly removes in the
				// second, so the table grows and then shrinks.
				grow := i < tc.ops/2
				if (rng.IntN(4) != 0) == grow {
					hs := holders{first: holderRef{rank: int32(i), refs: int32(1 + rng.IntN(3))}, more: int32(i)}
					tab.set(k, hs)
					model[k] = hs
				} else {
					tab.remove(k)
					delete(model, k)
				}
				if tab.len() != len(model) {
					t.Fatalf("op %d: len %d, want %d", i, tab.len(), len(model))
				}
			}
			for k, want := range model {
				if got, ok := tab.get(k); !ok || got != want {
					t.Fatalf("get(%d) = %v, %v; want %v, true", k, got, ok, want)
				}
			}
			for n := range tc.keys {
				k := keyOf(n)
				if _, in := model[k]; !in {
					if _, ok := tab.get(k); ok {
						t.Fatalf("get(%d) found a removed key", k)
					}
				}
			}
		})
	}
}
