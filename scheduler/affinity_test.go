package scheduler

import (
	"fmt"
	"testing"
	"time"

	"github.com/kvrouter/router/indexer"
)

// TestCacheAffinity checks the cache affinity on the fleet of
// TestAdaptivePrefillWeight, at scale 1: worker 1 holds 3 of the prompt's
// 4 blocks and has 16 prefill tokens and 6 blocks active, worker 2 holds
// nothing and has 8 prefill tokens and 2 blocks active. Without affinity
// worker 1 costs (16 + 16)/4 − 3 + 6 + 4 = 15 and worker 2 (8 + 16)/4 + 2
// + 4 = 12; an affinity of a takes 3a off worker 1's cost, so it wins
// above 1 and ties at 1. With no overlap credit worker 1 costs 18, and
// the affinity, which is not part of the credit, still takes 3a off.
func TestCacheAffinity(t *testing.T) {
	tests := []struct {
		name     string
		affinity float64
		override *Override
		want     []uint64 // the workers the choice may be
	}{
		{name: "off: the load wins", want: []uint64{2}},
		{name: "0.5: not enough", affinity: 0.5, want: []uint64{2}},
		{name: "1: a tie", affinity: 1, want: []uint64{1, 2}},
		{name: "2: the cache wins", affinity: 2, want: []uint64{1}},
		{name: "3 with no overlap credit: the affinity alone wins", affinity: 3, override: &Override{OverlapScoreCredit: ptr(0.0)}, want: []uint64{1}},
		{name: "2, but a legacy weight of 0 ignores the cache", affinity: 2, override: &Override{OverlapScoreWeight: ptr(0.0)}, want: []uint64{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.CacheAffinity = tt.affinity
			e := newEnv(t, cfg, newFleet(cands(0, 0, 1, 2), nil))
			prompt := tokens(100, 4, 4)
			e.store(t, w(1), prompt[:12])
			bookLoads(t, e)
			// The unfiltered fast path and the filtered one agree; ties
			// are broken at random, so a tie is routed a few times.
			for _, allowed := range [][]indexer.WorkerID{nil, {1, 2}} {
				seen := map[uint64]bool{}
				for range 32 {
					d := route(t, e, &Request{Tokens: prompt, QueryOnly: true, Override: tt.override, AllowedWorkerIDs: allowed})
					seen[uint64(d.Worker.ID)] = true
				}
				for _, id := range tt.want {
					if !seen[id] {
						t.Errorf("allowed %v: chose %v in 32 decisions, never worker %d; want %v", allowed, seen, id, tt.want)
					}
				}
				if len(seen) != len(tt.want) {
					t.Errorf("allowed %v: chose %v, want only %v", allowed, seen, tt.want)
				}
			}
		})
	}
}

// The affinity counts blocks on the device only. On tierEnv's fleet with
// host weight 0.9, worker 1 (the prompt's 10 blocks in host memory) costs
// 10 − 9 + 10 = 11 and worker 2 (its first 8 on the device) 10 − 8 + 10 =
// 12. An affinity of 0.25 takes 2 off worker 2 and nothing off worker 1,
// so worker 2 wins; counted on every tier it would take 2.5 off worker 1,
// which would still win. Both paths (fast, filtered) agree.
func TestCacheAffinityDeviceOnly(t *testing.T) {
	for _, tt := range []struct {
		name     string
		affinity float64
		want     indexer.Worker
	}{
		{name: "off: the host blocks win", want: w(1)},
		{name: "0.25: the device blocks win", affinity: 0.25, want: w(2)},
	} {
		for _, filtered := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/filtered=%v", tt.name, filtered), func(t *testing.T) {
				cfg := DefaultConfig()
				cfg.BlockSize, cfg.HostCacheHitWeight, cfg.CacheAffinity = 16, 0.9, tt.affinity
				e := newEnv(t, cfg, newFleet(cands(0, 0, 1, 2), nil))
				p := &prompt{numBlocks: 10, isl: 160, matches: []indexer.Match{tiered(1, 10, 10, 0, 0), tiered(2, 8, 0, 0, 0)}}
				s := &scratch{}
				if filtered {
					s.allowed = []indexer.WorkerID{1, 2}
				}
				e.r.mu.Lock()
				d, wait, err := e.r.attemptLocked(&Request{ID: "r"}, s, p, time.Now(), false)
				e.r.mu.Unlock()
				if err != nil || wait {
					t.Fatalf("attemptLocked: %v, wait %v", err, wait)
				}
				if d.Worker != tt.want {
					t.Errorf("chose %v, want %v", d.Worker, tt.want)
				}
			})
		}
	}
}
