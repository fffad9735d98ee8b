package scheduler

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/indexer"
)

// The index does not report tiers yet, so these tests build matches with
// tiers by hand and give them to the pure cost functions, or, for the
// choice and the booking, to the Router's scoring with a prompt whose
// matches they set: the index itself is not faked.

// defaultTiers are Dynamo's default tier weights.
var defaultTiers = tierWeights{host: DefaultHostCacheHitWeight, disk: DefaultDiskCacheHitWeight}

// tiered returns a match of blocks on rank 0 of worker id, host, disk and
// external of them below the device.
func tiered(id uint64, blocks, host, disk, external uint32) indexer.Match {
	return indexer.Match{Worker: w(id), Blocks: blocks, TierBlocks: indexer.TierBlocks{Host: host, Disk: disk, External: external}}
}

func TestTieredCost(t *testing.T) {
	def := DefaultConfig().params(nil)
	// Every case: block size 16; isl 160 (10 blocks of prefill) unless
	// stated; weights host 0.75, disk 0.25 unless stated.
	tests := []struct {
		name           string
		p              costParams
		tw             tierWeights
		active, isl    int
		m              indexer.Match
		decode         int
		want           float64
		wantCachedBlks float64
	}{
		// 10 − 0.75 × 10 = 2.5 blocks of prefill left, + 10 decode blocks.
		{name: "10 host blocks", p: def, tw: defaultTiers, isl: 160, m: tiered(1, 10, 10, 0, 0), decode: 10, want: 12.5, wantCachedBlks: 7.5},
		// 10 − 8 = 2, + 10: cheaper than the 10 host blocks above.
		{name: "8 device blocks", p: def, tw: defaultTiers, isl: 160, m: tiered(2, 8, 0, 0, 0), decode: 10, want: 12, wantCachedBlks: 8},
		// 4 device + 0.75 × 3 host + 0.25 × (2 disk + 1 external) = 7.
		{name: "every tier", p: def, tw: defaultTiers, isl: 160, m: tiered(1, 10, 3, 2, 1), decode: 5, want: 8, wantCachedBlks: 7},
		// External storage is credited as disk: 10 − 0.25 × 4 = 9.
		{name: "external credited as disk", p: def, tw: defaultTiers, isl: 160, m: tiered(1, 4, 0, 0, 4), decode: 0, want: 9, wantCachedBlks: 1},
		// Active prefill counts: (96 + 160) / 16 = 16 − 7.5 = 8.5, + 2.
		{name: "with active prefill", p: def, tw: defaultTiers, active: 96, isl: 160, m: tiered(1, 10, 10, 0, 0), decode: 2, want: 10.5, wantCachedBlks: 7.5},
		// The overlap score credit weighs the device only, as in Dynamo:
		// 10 − (0.5 × 8 + 0.75 × 2) = 4.5.
		{name: "credit 0.5 weighs the device only", p: costParams{credit: 0.5, scale: 1}, tw: defaultTiers, isl: 160, m: tiered(1, 10, 2, 0, 0), decode: 0, want: 4.5, wantCachedBlks: 9.5},
		// The scale multiplies the whole prefill term: 2 × (10 − 7.5) + 3.
		{name: "scale 2", p: costParams{credit: 1, scale: 2}, tw: defaultTiers, isl: 160, m: tiered(1, 10, 10, 0, 0), decode: 3, want: 8, wantCachedBlks: 7.5},
		// 2 blocks of prefill, 0.75 × 4 = 3 credited: clamped at 0.
		{name: "credit past the prefill clamps at zero", p: def, tw: defaultTiers, isl: 32, m: tiered(1, 4, 4, 0, 0), decode: 4, want: 4, wantCachedBlks: 3},
		{name: "weights 0 credit nothing below the device", p: def, tw: tierWeights{}, isl: 160, m: tiered(1, 10, 4, 3, 1), decode: 1, want: 9, wantCachedBlks: 2},
		{name: "weights 1 credit every tier as the device", p: def, tw: tierWeights{host: 1, disk: 1}, isl: 160, m: tiered(1, 10, 4, 3, 1), decode: 1, want: 1, wantCachedBlks: 10},
		// An index that reports more lower-tier blocks than matched blocks
		// is clamped: 4 blocks, all on the host.
		{name: "tier counts past the blocks are clamped", p: def, tw: defaultTiers, isl: 160, m: tiered(1, 4, 9, 9, 9), decode: 0, want: 7, wantCachedBlks: 3},
		{name: "legacy weight 0 is decode only", p: DefaultConfig().params(&Override{OverlapScoreWeight: ptr(0.0)}), tw: defaultTiers, isl: 160, m: tiered(1, 10, 10, 0, 0), decode: 3, want: 3, wantCachedBlks: 7.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tieredCost(tt.p, tt.tw, 16, tt.active, tt.isl, tt.m, tt.decode)
			if math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("tieredCost = %v, want %v", got, tt.want)
			}
			if got := tt.tw.cached(tt.m); math.Abs(got-tt.wantCachedBlks) > 1e-12 {
				t.Errorf("cached = %v, want %v", got, tt.wantCachedBlks)
			}
		})
	}
}

// On a device-only match the tiered cost is kv's to the bit, at any
// weights, so a fleet without lower tiers is scored as before; and so is
// dynamo-current's.
func TestTieredCostOnTheDeviceIsKVCost(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for range 20000 {
		p := costParams{credit: rng.Float64(), scale: rng.Float64() * 8}
		tw := tierWeights{host: rng.Float64(), disk: rng.Float64()}
		bs := 1 + rng.IntN(256)
		active, isl, overlap, decode := rng.IntN(1<<20), rng.IntN(1<<17), rng.IntN(2000), rng.IntN(1<<16)
		m := indexer.Match{Blocks: uint32(overlap)}
		if got, want := tieredCost(p, tw, bs, active, isl, m, decode), kvCost(p, bs, active, isl, overlap, decode); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("tieredCost(%+v, %+v, %d, %d, %d, %d, %d) = %v, kvCost = %v", p, tw, bs, active, isl, overlap, decode, got, want)
		}
		if got, want := creditedPrefillTokens(isl, tw.cached(m), bs), prefillTokens(isl, overlap, bs); got != want {
			t.Fatalf("creditedPrefillTokens(%d, %d blocks, %d) = %d, prefillTokens = %d", isl, overlap, bs, got, want)
		}
		f, rw, reqs := rng.Float64(), rng.Float64()*4, rng.IntN(100)
		got := dynamoCurrentTieredCost(p, bs, active, isl, overlap, 0, decode, f, rw, reqs)
		if want := dynamoCurrentCost(p, bs, active, isl, overlap, decode, f, rw, reqs); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("dynamoCurrentTieredCost = %v, dynamoCurrentCost = %v", got, want)
		}
	}
}

func TestDynamoCurrentTieredCost(t *testing.T) {
	def := DefaultConfig().params(nil)
	tests := []struct {
		name                string
		device              int
		lower               float64
		decay, weight       float64
		requests, isl, want int
	}{
		// The decay fades the device's credit only: 10 − (0.5 × 4 + 3) = 5,
		// + 4 decode blocks.
		{name: "decay fades the device only", device: 4, lower: 0.75 * 4, decay: 0.5, isl: 160, want: 9},
		{name: "no decay", device: 4, lower: 3, decay: 1, isl: 160, want: 7},
		// Request weight 2 × 3 requests on top.
		{name: "request weight", device: 4, lower: 3, decay: 1, weight: 2, requests: 3, isl: 160, want: 13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := dynamoCurrentTieredCost(def, 16, 0, tt.isl, tt.device, tt.lower, 4, tt.decay, tt.weight, tt.requests)
			if math.Abs(got-float64(tt.want)) > 1e-12 {
				t.Errorf("dynamoCurrentTieredCost = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCreditedPrefillTokens(t *testing.T) {
	tests := []struct {
		isl    int
		cached float64
		bs     int
		want   int
	}{
		{isl: 160, cached: 7.5, bs: 16, want: 40},      // 160 − 120
		{isl: 160, cached: 7.53, bs: 16, want: 40},     // 120.48 cached tokens round to 120
		{isl: 160, cached: 0.53125, bs: 16, want: 151}, // 8.5 rounds half away from zero, to 9
		{isl: 100, cached: 3, bs: 16, want: 52},        // whole: prefillTokens
		{isl: 100, cached: 6.75, bs: 16, want: 0},      // never below 0
		{isl: 100, cached: 0, bs: 16, want: 100},
	}
	for _, tt := range tests {
		if got := creditedPrefillTokens(tt.isl, tt.cached, tt.bs); got != tt.want {
			t.Errorf("creditedPrefillTokens(%d, %v, %d) = %d, want %d", tt.isl, tt.cached, tt.bs, got, tt.want)
		}
	}
}

func TestTierWeightsValidate(t *testing.T) {
	tests := []validateCase{
		{name: "defaults are Dynamo's", modify: func(c *Config) {
			if c.HostCacheHitWeight != 0.75 || c.DiskCacheHitWeight != 0.25 {
				t.Errorf("default weights host %v, disk %v; want 0.75, 0.25", c.HostCacheHitWeight, c.DiskCacheHitWeight)
			}
		}},
		{name: "bounds", modify: func(c *Config) { c.HostCacheHitWeight, c.DiskCacheHitWeight = 0, 1 }},
		{name: "host above 1", modify: func(c *Config) { c.HostCacheHitWeight = 1.5 },
			want: "--router-host-cache-hit-weight: 1.5 is out of range (allowed 0..1)"},
		{name: "disk negative", modify: func(c *Config) { c.DiskCacheHitWeight = -0.25 },
			want: "--router-disk-cache-hit-weight: -0.25 is negative (allowed 0..1)"},
		{name: "not numbers", modify: func(c *Config) { c.HostCacheHitWeight, c.DiskCacheHitWeight = math.NaN(), math.Inf(1) },
			want: "--router-host-cache-hit-weight: NaN is not a finite number (allowed 0..1)\n--router-disk-cache-hit-weight: +Inf is not a finite number (allowed 0..1)"},
		// The weights apply in every mode that reads the index, so none
		// refuses them.
		{name: "any mode", modify: func(c *Config) { c.Mode, c.HostCacheHitWeight = ModeDynamoCurrent, 0.5 }},
	}
	checkValidate(t, tests)
}

// The overlaps overlap_scores reports carry each rank's blocks by tier,
// clamped as the cost clamps them; ranks without a block are left out.
func TestAppendOverlapsTiers(t *testing.T) {
	cs := cands(0, 0, 1, 2, 3, 4)
	byPos := []indexer.Match{tiered(1, 10, 3, 2, 1), {}, tiered(3, 5, 0, 0, 0), tiered(4, 2, 0, 7, 7)}
	got := appendOverlaps(nil, cs, KindPrefill, byPos)
	want := []Overlap{
		{Worker: w(1), Kind: KindPrefill, OverlapBlocks: 10, Host: 3, Disk: 2, External: 1},
		{Worker: w(3), Kind: KindPrefill, OverlapBlocks: 5},
		{Worker: w(4), Kind: KindPrefill, OverlapBlocks: 2, Disk: 2},
	}
	if diff := gocmp.Diff(want, got); diff != "" {
		t.Errorf("overlaps (-want +got):\n%s", diff)
	}
	if d := got[0].DeviceBlocks(); d != 4 {
		t.Errorf("device blocks of %+v = %d, want 4", got[0], d)
	}
}

// tierEnv is a Router (block size 16) over workers 1 and 2, with host
// weight host, and a 10-block prompt whose matches the test sets.
func tierEnv(t *testing.T, mode Mode, host float64) (*env, *prompt) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BlockSize, cfg.Mode, cfg.HostCacheHitWeight = 16, mode, host
	e := newEnv(t, cfg, newFleet(cands(0, 0, 1, 2), nil))
	// Worker 1 holds the prompt's 10 blocks in host memory, worker 2 its
	// first 8 on the device.
	return e, &prompt{numBlocks: 10, isl: 160, matches: []indexer.Match{tiered(1, 10, 10, 0, 0), tiered(2, 8, 0, 0, 0)}}
}

// The choice weighs each rank's blocks by tier, whichever path chooses
// (the fast path, or the filtered one forced by allowed_worker_ids), and
// the booking charges the prefill tokens the credited overlap leaves.
func TestChoiceCreditsTiers(t *testing.T) {
	tests := []struct {
		name        string
		mode        Mode
		host        float64
		want        indexer.Worker
		wantOverlap int
		wantPrefill int
	}{
		// Worker 1: 10 − 7.5 + 10 = 12.5; worker 2: 10 − 8 + 10 = 12,
		// booked with 160 − 8 × 16 tokens.
		{name: "8 device blocks beat 10 host blocks at 0.75", mode: ModeKV, host: 0.75, want: w(2), wantOverlap: 8, wantPrefill: 32},
		// Worker 1: 10 − 9 + 10 = 11, booked with 160 − 144 tokens; the
		// reply's overlap is every tier's.
		{name: "10 host blocks beat 8 device blocks at 0.9", mode: ModeKV, host: 0.9, want: w(1), wantOverlap: 10, wantPrefill: 16},
		{name: "dynamo-current at 0.75", mode: ModeDynamoCurrent, host: 0.75, want: w(2), wantOverlap: 8, wantPrefill: 32},
		{name: "dynamo-current at 0.9", mode: ModeDynamoCurrent, host: 0.9, want: w(1), wantOverlap: 10, wantPrefill: 16},
	}
	for _, tt := range tests {
		for _, filtered := range []bool{false, true} {
			name := tt.name
			if filtered {
				name += "/filtered"
			}
			t.Run(name, func(t *testing.T) {
				e, p := tierEnv(t, tt.mode, tt.host)
				s := &scratch{}
				if filtered {
					s.allowed = []indexer.WorkerID{1, 2}
				}
				req := &Request{ID: "r"}
				e.r.mu.Lock()
				d, wait, err := e.r.attemptLocked(req, s, p, time.Now(), false)
				e.r.mu.Unlock()
				if err != nil || wait {
					t.Fatalf("attemptLocked: %v, wait %v", err, wait)
				}
				if d.Worker != tt.want || d.OverlapBlocks != tt.wantOverlap {
					t.Errorf("chose %v with overlap %d, want %v with %d", d.Worker, d.OverlapBlocks, tt.want, tt.wantOverlap)
				}
				if l, _ := e.r.Load(tt.want); l.PrefillTokens != tt.wantPrefill {
					t.Errorf("prefill tokens booked on %v = %d, want %d", tt.want, l.PrefillTokens, tt.wantPrefill)
				}
			})
		}
	}
}

// A waiting request's new tokens, which WSPT orders by, are the prompt
// less its best credited overlap: 160 − round(7.5 × 16) = 40 here, worker
// 1's 10 host blocks beating worker 2's 4 device blocks.
func TestQueueCreditsTiers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BlockSize, cfg.QueueThreshold, cfg.QueuePolicy = 16, ptr(0.0), PolicyWSPT
	e := newEnv(t, cfg, newFleet(cands(0, 1, 1, 2), nil))
	p := &prompt{numBlocks: 10, isl: 160, matches: []indexer.Match{tiered(1, 10, 10, 0, 0), tiered(2, 4, 0, 0, 0)}}
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	wt, err := e.r.enqueueLocked(&Request{ID: "q"}, p, time.Now(), func(Decision, error) {})
	if err != nil {
		t.Fatal(err)
	}
	defer wt.timer.Stop()
	if want := -1.0 / 40; wt.key != want {
		t.Errorf("WSPT key = %v, want %v (40 new tokens)", wt.key, want)
	}
	e.r.queue.Remove(wt)
}

// The flags' names appear in their errors, so that the command line's
// report names them.
func TestTierWeightErrorsNameTheFlags(t *testing.T) {
	c := DefaultConfig()
	c.HostCacheHitWeight, c.DiskCacheHitWeight = 2, 2
	err := c.Validate()
	for _, flag := range []string{"--router-host-cache-hit-weight: 2", "--router-disk-cache-hit-weight: 2"} {
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("Validate() = %v, want it to name %s", err, flag)
		}
	}
}
