package scheduler

import (
	"math/rand/v2"
	"testing"

	"github.com/kvrouter/router/indexer"
)

// TestAdaptivePrefillWeight checks the adaptive weight of prefill work on
// a hand-built fleet of two workers, block size 4. Worker 1 holds 3 of the
// prompt's 4 blocks and has 16 prefill tokens and 6 blocks active; worker
// 2 holds nothing and has 8 prefill tokens and 2 blocks active. The cost
// of worker 1 less worker 2's is scale × (8/4 − 3) + 4: worker 1 wins at
// scale 8 (−4), worker 2 at scale 1 (+3). The least active prefill is 8
// tokens and the least active blocks 2, so a threshold below either
// finds the fleet saturated and one at either does not.
func TestAdaptivePrefillWeight(t *testing.T) {
	tests := []struct {
		name           string
		tokens, blocks int
		override       *Override
		want           uint64
	}{
		{name: "off: scale 8", want: 1},
		{name: "not saturated: least prefill 8 is not above 8", tokens: 8, want: 1},
		{name: "saturated: least prefill 8 is above 7, scale 1", tokens: 7, want: 2},
		{name: "not saturated: least blocks 2 are not above 2", blocks: 2, want: 1},
		{name: "saturated: least blocks 2 are above 1, scale 1", blocks: 1, want: 2},
		{name: "saturated by blocks, not by prefill", tokens: 8, blocks: 1, want: 2},
		{name: "saturated by prefill, not by blocks", tokens: 7, blocks: 2, want: 2},
		{name: "not saturated by either", tokens: 8, blocks: 2, want: 1},
		{name: "saturated: a request's own scale wins", tokens: 7, override: &Override{PrefillLoadScale: ptr(8.0)}, want: 1},
		{name: "saturated: a request's legacy weight wins", blocks: 1, override: &Override{OverlapScoreWeight: ptr(8.0)}, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.PrefillLoadScale, cfg.PrefillLoadScaleSaturated = 8, 1
			cfg.SaturationPrefillTokens, cfg.SaturationDecodeBlocks = tt.tokens, tt.blocks
			e := newEnv(t, cfg, newFleet(cands(0, 0, 1, 2), nil))
			prompt := tokens(100, 4, 4)
			e.store(t, w(1), prompt[:12])
			bookLoads(t, e)
			for id, want := range map[uint64]RankLoad{
				1: {Worker: w(1), Kind: KindDecode, PrefillTokens: 16, DecodeBlocks: 6, Requests: 2},
				2: {Worker: w(2), Kind: KindDecode, PrefillTokens: 8, DecodeBlocks: 2, Requests: 1},
			} {
				if l, _ := e.r.Load(w(id)); l != want {
					t.Fatalf("load of worker %d = %+v, want %+v", id, l, want)
				}
			}
			// The unfiltered fast path and the filtered one agree.
			for _, allowed := range [][]indexer.WorkerID{nil, {1, 2}} {
				d := route(t, e, &Request{Tokens: prompt, QueryOnly: true, Override: tt.override, AllowedWorkerIDs: allowed})
				if d.Worker != w(tt.want) {
					t.Errorf("allowed %v: chose %v, want worker %d", allowed, d.Worker, tt.want)
				}
			}
		})
	}
}

// TestAdaptiveFastPathMatchesFilteredPath is TestFastPathMatchesFilteredPath
// with the adaptive weight on, at a saturated scale whose keys are exact
// (the view's second key tree) and one whose are not (fusedMin), tested
// by prefill tokens and by blocks, while requests are booked, prefilled
// and freed so that the fleet goes in and out of saturation.
func TestAdaptiveFastPathMatchesFilteredPath(t *testing.T) {
	for _, tc := range []struct {
		satScale       float64
		tokens, blocks int
	}{{1, 6, 0}, {3, 6, 0}, {1, 0, 4}, {3, 0, 4}} {
		cfg := testConfig()
		cfg.PrefillLoadScale, cfg.PrefillLoadScaleSaturated = 8, tc.satScale
		cfg.SaturationPrefillTokens, cfg.SaturationDecodeBlocks = tc.tokens, tc.blocks
		tw := newTwinsWith(t, 8, cfg)
		sat := tw.a.r.cfg.params(nil).sat
		rng := rand.New(rand.NewPCG(5, 5))
		saturated, booked := 0, [2][]string{}
		const steps = 400
		for i := range steps {
			p := tw.prompt(t, rng, i)
			if tw.a.r.views[KindDecode].saturated(sat) {
				saturated++
			}
			ids := tw.sameChoice(t, i, rng.Uint64(), Request{Tokens: p})
			for k, e := range []*env{tw.a, tw.b} {
				booked[k] = append(booked[k], ids[k])
				switch n := len(booked[k]); {
				case i%3 == 2: // the oldest booking prefilled
					e.r.MarkPrefill(booked[k][max(0, n-12)])
				case n > 24: // and freed
					e.r.Free(booked[k][0], 10)
					booked[k] = booked[k][1:]
				}
			}
		}
		if saturated == 0 || saturated == steps {
			t.Errorf("%+v: the fleet was saturated at %d of %d decisions; want some and not all", tc, saturated, steps)
		}
	}
}

// bookLoads books three requests pinned to ranks 1 and 2 of e's fleet,
// which leaves rank 1 with 16 prefill tokens and 6 blocks, and rank 2 with
// 8 prefill tokens and 2 blocks.
func bookLoads(t *testing.T, e *env) {
	t.Helper()
	book := func(id string, worker uint64, base, blocks int) {
		t.Helper()
		route(t, e, &Request{ID: id, Tokens: tokens(base, blocks, 4), AllowedWorkerIDs: []indexer.WorkerID{indexer.WorkerID(worker)}})
	}
	book("a", 1, 1000, 4) // 16 prefill tokens, 4 blocks
	book("b", 1, 2000, 2) // 2 blocks once prefilled
	if !e.r.MarkPrefill("b") {
		t.Fatal("MarkPrefill(b) = false")
	}
	book("c", 2, 3000, 2) // 8 prefill tokens, 2 blocks
}
