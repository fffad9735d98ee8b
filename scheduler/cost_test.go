package scheduler

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKVCost(t *testing.T) {
	def := DefaultConfig().params(nil)
	tests := []struct {
		name                            string
		p                               costParams
		blockSize, active, isl, overlap int
		decode                          int
		want                            float64
	}{
		// docs/compat.md §5 worked example: credit 1.0, raw prefill 10
		// blocks ((active + isl) / block size = 160 / 16).
		{name: "worked example overlap 2 decode 10", p: def, blockSize: 16, active: 96, isl: 64, overlap: 2, decode: 10, want: 18},
		{name: "worked example overlap 5 decode 5 (chosen)", p: def, blockSize: 16, active: 96, isl: 64, overlap: 5, decode: 5, want: 10},
		{name: "worked example overlap 8 decode 9", p: def, blockSize: 16, active: 96, isl: 64, overlap: 8, decode: 9, want: 11},
		{name: "idle rank no overlap", p: def, blockSize: 16, isl: 64, decode: 4, want: 8},
		{name: "partial block counts as a fraction", p: def, blockSize: 16, isl: 24, decode: 1, want: 2.5},
		{name: "overlap past the prefill clamps at zero", p: def, blockSize: 16, isl: 32, overlap: 4, decode: 4, want: 4},
		{name: "credit 0.5", p: costParams{credit: 0.5, scale: 1}, blockSize: 16, isl: 160, overlap: 4, decode: 0, want: 8},
		{name: "scale 2", p: costParams{credit: 1, scale: 2}, blockSize: 16, isl: 160, overlap: 4, decode: 3, want: 15},
		// Classic form: weight × (active + isl − overlap × bs) / bs + decode
		// = 0.5 × (32 + 64 − 32) / 16 + 3 = 5.
		{name: "legacy weight 0.5", p: DefaultConfig().params(&Override{OverlapScoreWeight: ptr(0.5)}), blockSize: 16, active: 32, isl: 64, overlap: 2, decode: 3, want: 5},
		{name: "legacy weight 0 is decode only", p: DefaultConfig().params(&Override{OverlapScoreWeight: ptr(0.0)}), blockSize: 16, active: 32, isl: 64, overlap: 2, decode: 3, want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := kvCost(tt.p, tt.blockSize, tt.active, tt.isl, tt.overlap, tt.decode)
			if math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("kvCost = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParams(t *testing.T) {
	withWeight := DefaultConfig()
	withWeight.OverlapScoreWeight = ptr(2.0)
	zeroWeight := DefaultConfig()
	zeroWeight.OverlapScoreWeight = ptr(0.0)
	adaptive := DefaultConfig()
	adaptive.PrefillLoadScale, adaptive.PrefillLoadScaleSaturated, adaptive.SaturationPrefillTokens = 8, 0.5, 2048
	tests := []struct {
		name string
		cfg  Config
		o    *Override
		want costParams
	}{
		{name: "defaults", cfg: DefaultConfig(), want: costParams{credit: 1, scale: 1}},
		{name: "legacy weight is the scale", cfg: withWeight, want: costParams{credit: 1, scale: 2}},
		{name: "legacy weight 0 drops the credit", cfg: zeroWeight, want: costParams{credit: 0, scale: 0}},
		{name: "override weight", cfg: DefaultConfig(), o: &Override{OverlapScoreWeight: ptr(3.0)}, want: costParams{credit: 1, scale: 3}},
		{name: "override weight beats configured weight", cfg: withWeight, o: &Override{OverlapScoreWeight: ptr(0.5)}, want: costParams{credit: 1, scale: 0.5}},
		{name: "adaptive weight", cfg: adaptive, want: costParams{credit: 1, scale: 8, sat: saturation{prefillTokens: 2048, scale: 0.5}}},
		{name: "adaptive weight, override credit", cfg: adaptive, o: &Override{OverlapScoreCredit: ptr(0.5)}, want: costParams{credit: 0.5, scale: 8, sat: saturation{prefillTokens: 2048, scale: 0.5}}},
		{name: "adaptive weight, override scale", cfg: adaptive, o: &Override{PrefillLoadScale: ptr(2.0)}, want: costParams{credit: 1, scale: 2}},
		{name: "adaptive weight, override weight", cfg: adaptive, o: &Override{OverlapScoreWeight: ptr(3.0)}, want: costParams{credit: 1, scale: 3}},
		{name: "override credit and temperature", cfg: DefaultConfig(), o: &Override{OverlapScoreCredit: ptr(0.25), Temperature: ptr(0.7)}, want: costParams{credit: 0.25, scale: 1, temperature: 0.7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.cfg.params(tt.o), cmp.AllowUnexported(costParams{}, saturation{})); diff != "" {
				t.Errorf("params (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrefillTokens(t *testing.T) {
	tests := []struct{ isl, overlap, bs, want int }{
		{isl: 100, overlap: 0, bs: 16, want: 100},
		{isl: 100, overlap: 3, bs: 16, want: 52},
		{isl: 100, overlap: 7, bs: 16, want: 0},
	}
	for _, tt := range tests {
		if got := prefillTokens(tt.isl, tt.overlap, tt.bs); got != tt.want {
			t.Errorf("prefillTokens(%d, %d, %d) = %d, want %d", tt.isl, tt.overlap, tt.bs, got, tt.want)
		}
	}
}

// frequencies draws n picks and returns each index's share.
func frequencies(n, size int, pick func() int) []float64 {
	counts := make([]float64, size)
	for range n {
		counts[pick()]++
	}
	for i := range counts {
		counts[i] /= float64(n)
	}
	return counts
}

func TestPickMinTiesAreUniform(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	costs := []float64{1, 1, 2, 1, 3}
	got := frequencies(60000, len(costs), func() int { i, _ := pickMin(costs, nil, rng); return i })
	want := []float64{1.0 / 3, 1.0 / 3, 0, 1.0 / 3, 0}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 0.01 {
			t.Errorf("share of %d = %.4f, want %.4f ± 0.01 (all: %v)", i, got[i], want[i], got)
		}
	}
}

func TestPickSoftmaxStatistics(t *testing.T) {
	tests := []struct {
		name        string
		costs       []float64
		temperature float64
	}{
		{name: "T=1", costs: []float64{0, 5, 10}, temperature: 1},
		{name: "T=0.1 is sharp", costs: []float64{0, 5, 10}, temperature: 0.1},
		{name: "T=10 is nearly uniform", costs: []float64{3, 4, 8, 10}, temperature: 10},
		{name: "equal costs are uniform", costs: []float64{2, 2, 2, 2}, temperature: 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Expected: p_i ∝ exp(−(c_i − c_min) / ((c_max − c_min) T)).
			lo, hi := tt.costs[0], tt.costs[0]
			for _, c := range tt.costs {
				lo, hi = min(lo, c), max(hi, c)
			}
			want := make([]float64, len(tt.costs))
			var sum float64
			for i, c := range tt.costs {
				want[i] = 1
				if hi > lo {
					want[i] = math.Exp(-(c - lo) / ((hi - lo) * tt.temperature))
				}
				sum += want[i]
			}
			for i := range want {
				want[i] /= sum
			}
			rng := rand.New(rand.NewPCG(3, 4))
			weights := make([]float64, len(tt.costs))
			got := frequencies(100000, len(tt.costs), func() int { return pickSoftmax(tt.costs, weights, tt.temperature, rng) })
			for i := range want {
				// 100,000 draws: a standard error under 0.0016; 0.008 is 5σ.
				if math.Abs(got[i]-want[i]) > 0.008 {
					t.Errorf("share of cost %v = %.4f, want %.4f ± 0.008", tt.costs[i], got[i], want[i])
				}
			}
		})
	}
}
