package replay

import (
	"math"
	"testing"
)

// A hand-worked example: blocks of 2 tokens, one hash id per block, a
// pooled cache of 3 blocks.
//
//	r0 [1 2 3]    6 tokens: 3 blocks, hits counted on the first 2 (the
//	              last token's block is always computed); empty cache: 0.
//	              LRU after: 1 2 3 (most recent first).
//	r1 [1 2 4]    LRU and infinite both hold 1 2: 2 hits. Touching 4, 2, 1
//	              gives 1 2 4 3, and 3 is evicted.
//	r2 [1 2 3 5]  8 tokens: 4 blocks, hits on the first 3. LRU holds 1 2
//	              but not 3: 2 hits; the infinite cache 3.
//
// Prompt blocks 3 + 3 + 4 = 10: pooled 4/10, infinite 5/10.
func TestComputeBoundsByHand(t *testing.T) {
	wl := &Workload{Name: "hand", BlockTokens: 2, Requests: []Request{
		{Index: 0, InputLength: 6, OutputLength: 1, HashIDs: []uint64{1, 2, 3}},
		{Index: 1, InputLength: 6, OutputLength: 1, HashIDs: []uint64{1, 2, 4}},
		{Index: 2, InputLength: 8, OutputLength: 1, HashIDs: []uint64{1, 2, 3, 5}},
	}}
	b, err := ComputeBounds(wl, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if b.PooledLRU != 0.4 || b.Infinite != 0.5 || b.BlockSize != 2 || b.Capacity != 3 {
		t.Fatalf("bounds %+v, want pooled 0.4, infinite 0.5", b)
	}
	// With room for everything, the pooled cache is the infinite one.
	b, err = ComputeBounds(wl, 2, 100)
	if err != nil {
		t.Fatal(err)
	}
	if b.PooledLRU != b.Infinite {
		t.Fatalf("bounds %+v: an LRU that never fills must equal the infinite cache", b)
	}
	if _, err := ComputeBounds(wl, 0, 3); err == nil {
		t.Fatal("block size 0 accepted")
	}
}

// On a real excerpt the bounds are ordered: no more hits than an infinite
// cache, and a bigger pooled cache never hits less on this workload.
func TestComputeBoundsOrdered(t *testing.T) {
	wl := excerpt(t, 400, 1)
	small, err := ComputeBounds(wl, 64, 512)
	if err != nil {
		t.Fatal(err)
	}
	big, err := ComputeBounds(wl, 64, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if small.PooledLRU > big.PooledLRU || big.PooledLRU > big.Infinite+1e-12 || big.Infinite <= 0 || math.IsNaN(small.PooledLRU) {
		t.Fatalf("small %+v, big %+v", small, big)
	}
	if small.Infinite != big.Infinite {
		t.Fatalf("the infinite cache depends on the capacity: %v, %v", small.Infinite, big.Infinite)
	}
}

// TestBoundsDoNotDependOnTheRate: the references of a workload are the
// same at any rate scale (the same requests in the same order), which is
// why a sweep computes them once: for a trace's excerpt at two scales, and
// for a synthetic workload at two rates.
func TestBoundsDoNotDependOnTheRate(t *testing.T) {
	s := DefaultSyntheticConfig()
	s.Requests = 200
	tests := []struct {
		name string
		at   func(scale float64) (*Workload, error)
	}{
		{"trace", func(scale float64) (*Workload, error) { return excerpt(t, 200, scale), nil }},
		{"synthetic", func(scale float64) (*Workload, error) {
			c := s
			c.Rate *= scale
			return Synthetic(c)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []Bounds
			for _, scale := range []float64{1, 2.5} {
				wl, err := tt.at(scale)
				if err != nil {
					t.Fatal(err)
				}
				b, err := ComputeBounds(wl, 64, 512)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, b)
			}
			if got[0] != got[1] || got[0].Infinite == 0 {
				t.Fatalf("bounds at ×1 %+v, at ×2.5 %+v: want equal and some hits", got[0], got[1])
			}
		})
	}
}
