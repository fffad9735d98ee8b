package active

import (
	"math/rand/v2"
	"testing"
)

// TestChildTableModel checks the open-addressing table against a Go map
// under random sets and removes, with keys drawn from a small range so
// that runs collide, wrap around the end of the table, grow and shrink.
func TestChildTableModel(t *testing.T) {
	type key struct {
		parent int32
		hash   uint64
	}
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
			var tab childTable
			model := map[key]int32{}
			keyOf := func(n uint64) key {
				k := key{parent: int32(n % 7), hash: n / 7}
				if tc.name == "patterned-keys" {
					k.hash <<= 20 // same low bits: a plain modulo would pile them up
				}
				return k
			}
			for i := range tc.ops {
				k := keyOf(rng.Uint64N(tc.keys))
				// Mostly sets in the first half, mostly removes in the
				// second, so the table grows and then shrinks.
				grow := i < tc.ops/2
				if (rng.IntN(4) != 0) == grow {
					child := int32(1 + i)
					tab.set(k.parent, k.hash, child)
					model[k] = child
				} else {
					tab.remove(k.parent, k.hash)
					delete(model, k)
				}
				if tab.len() != len(model) {
					t.Fatalf("op %d: len %d, want %d", i, tab.len(), len(model))
				}
			}
			for k, want := range model {
				if got := tab.get(k.parent, k.hash); got != want {
					t.Fatalf("get(%v) = %d, want %d", k, got, want)
				}
			}
			for n := range tc.keys {
				k := keyOf(n)
				if _, in := model[k]; !in {
					if got := tab.get(k.parent, k.hash); got != 0 {
						t.Fatalf("get(%v) found a removed key: %d", k, got)
					}
				}
			}
		})
	}
}
