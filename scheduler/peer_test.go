package scheduler

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

func TestLLMDScores(t *testing.T) {
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		// Precise-prefix-cache scorer: matched blocks over the prompt's.
		{name: "prefix 3 of 4", got: llmdPrefixScore(3, 4), want: 0.75},
		{name: "prefix none", got: llmdPrefixScore(0, 4), want: 0},
		{name: "prefix whole prompt", got: llmdPrefixScore(4, 4), want: 1},
		{name: "prefix clipped at 1", got: llmdPrefixScore(5, 4), want: 1},
		{name: "prefix of an empty prompt", got: llmdPrefixScore(2, 0), want: 0},
		// KV-cache utilisation scorer: 1 − usage.
		{name: "kv util quarter used", got: llmdKVUtilScore(25, 100), want: 0.75},
		{name: "kv util idle", got: llmdKVUtilScore(0, 100), want: 1},
		{name: "kv util over capacity clamps at 0", got: llmdKVUtilScore(150, 100), want: 0},
		{name: "kv util unknown capacity", got: llmdKVUtilScore(40, 0), want: 1},
		// Queue scorer: (max − q) / (max − min), 1 when all equal.
		{name: "queue shortest", got: llmdQueueScore(1, 1, 5), want: 1},
		{name: "queue longest", got: llmdQueueScore(5, 1, 5), want: 0},
		{name: "queue between", got: llmdQueueScore(2, 1, 5), want: 0.75},
		{name: "queue all equal", got: llmdQueueScore(3, 3, 3), want: 1},
		// The profile: 2 × prefix + 1 × kv util + 1 × queue.
		{name: "weighted sum", got: llmdScore(0.5, 0.25, 1), want: 2.25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if math.Abs(tt.got-tt.want) > 1e-12 {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestDynamoCurrentCost(t *testing.T) {
	def := DefaultConfig().params(nil)
	tests := []struct {
		name                                    string
		p                                       costParams
		blockSize, active, isl, overlap, decode int
		decay                                   float64
		minActive                               int
		weight                                  float64
		requests                                int
		want                                    float64
		sameAsKV                                bool
	}{
		// docs/compat.md §5 worked example: at Dynamo's defaults (decay 0,
		// request weight 0) the cost is kv's.
		{name: "worked example A", p: def, blockSize: 16, active: 96, isl: 64, overlap: 2, decode: 10, want: 18, sameAsKV: true},
		{name: "worked example B", p: def, blockSize: 16, active: 96, isl: 64, overlap: 5, decode: 5, want: 10, sameAsKV: true},
		{name: "worked example C", p: def, blockSize: 16, active: 96, isl: 64, overlap: 8, decode: 9, want: 11, sameAsKV: true},
		// Credit 2 (Dynamo's agentic preset): each cached block credits
		// two blocks of prefill: max(0, 10 − 2 × 3) + 4 = 8.
		{name: "credit above 1", p: costParams{credit: 2, scale: 1}, blockSize: 16, active: 96, isl: 64, overlap: 3, decode: 4, want: 8},
		// Per-request weight 64 with 3 active requests: 18 + 192.
		{name: "active request weight", p: def, blockSize: 16, active: 96, isl: 64, overlap: 2, decode: 10, weight: 64, requests: 3, want: 210},
		// Decay 1, the rank 64 tokens (4 blocks) above the least loaded,
		// a 4-block prompt: factor 1 / (1 + 1 × 4 / 4) = 0.5, so
		// max(0, 10 − 0.5 × 8) + 9 = 15.
		{name: "credit decay", p: def, blockSize: 16, active: 96, isl: 64, overlap: 8, decode: 9, decay: 1, minActive: 32, want: 15},
		{name: "decay at the least loaded rank is none", p: def, blockSize: 16, active: 96, isl: 64, overlap: 8, decode: 9, decay: 1, minActive: 96, want: 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := dynamoCreditDecay(tt.decay, tt.blockSize, tt.active, tt.minActive, tt.isl)
			got := dynamoCurrentCost(tt.p, tt.blockSize, tt.active, tt.isl, tt.overlap, tt.decode, f, tt.weight, tt.requests)
			if math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("dynamoCurrentCost = %v, want %v", got, tt.want)
			}
			if kv := kvCost(tt.p, tt.blockSize, tt.active, tt.isl, tt.overlap, tt.decode); tt.sameAsKV && got != kv {
				t.Errorf("dynamoCurrentCost = %v, kvCost = %v: not equal to the bit at the defaults", got, kv)
			}
		})
	}
}

// peerEnv is a Router of a peer mode over workers 1, 2 and 3, each with
// 100 KV blocks, block size 4.
func peerEnv(t *testing.T, mode Mode, modify func(*Config)) *env {
	t.Helper()
	cfg := testConfig()
	cfg.Mode = mode
	if modify != nil {
		modify(&cfg)
	}
	return newEnv(t, cfg, newFleet(cands(100, 0, 1, 2, 3), nil))
}

// TestLLMDChoice is a hand-computed three-rank case. The prompt has 4
// blocks; worker 1 holds 3 of them, worker 2 holds 1, worker 3 none.
// Worker 1 has two requests active (8 + 8 blocks), worker 2 one (4
// blocks), worker 3 none:
//
//	worker  prefix   kv util          queue (min 0, max 2)   score
//	1       3/4      1 − 16/100       0                      1.5 + 0.84 + 0   = 2.34
//	2       1/4      1 − 4/100        0.5                    0.5 + 0.96 + 0.5 = 1.96
//	3       0        1                1                      0 + 1 + 1        = 2
//
// so worker 1 wins: the prefix weight beats its load. With a 1-block
// overlap on worker 1 instead (score 0.5 + 0.84 + 0 = 1.34) the idle
// worker 3 wins.
func TestLLMDChoice(t *testing.T) {
	p := tokens(100, 4, 4)
	load := func(t *testing.T, e *env) {
		route(t, e, &Request{ID: "a", Tokens: tokens(1000, 8, 4), AllowedWorkerIDs: []indexer.WorkerID{1}})
		route(t, e, &Request{ID: "b", Tokens: tokens(2000, 8, 4), AllowedWorkerIDs: []indexer.WorkerID{1}})
		route(t, e, &Request{ID: "c", Tokens: tokens(3000, 4, 4), AllowedWorkerIDs: []indexer.WorkerID{2}})
	}
	for _, tc := range []struct {
		name string
		// held1 and held2 are the prompt tokens workers 1 and 2 hold.
		held1, held2 int
		allowed      []indexer.WorkerID
		want         Choice
	}{
		{name: "prefix wins", held1: 12, held2: 4, want: Choice{Worker: w(1), OverlapBlocks: 3}},
		{name: "load wins", held1: 4, held2: 4, want: Choice{Worker: w(3)}},
		// Allowed 1 and 2 only: queue min 1, max 2, so worker 2 scores
		// 0.5 + 0.96 + 1 = 2.46 and worker 1 1.5 + 0.84 + 0 = 2.34.
		{name: "queue normalised over the allowed ranks", held1: 12, held2: 4, allowed: []indexer.WorkerID{1, 2},
			want: Choice{Worker: w(2), OverlapBlocks: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := peerEnv(t, ModeLLMDPrecisePrefix, nil)
			load(t, e)
			e.store(t, w(1), p[:tc.held1])
			e.store(t, w(2), p[:tc.held2])
			d := route(t, e, &Request{Tokens: p, QueryOnly: true, AllowedWorkerIDs: tc.allowed})
			if d.Choice != tc.want {
				t.Errorf("choice %+v, want %+v", d.Choice, tc.want)
			}
		})
	}
}

// TestDynamoCurrentChoice: hand-computed cases where a term of current
// Dynamo's cost changes the choice. Block size 4; every case books an
// 8-block request (32 prefill tokens, 8 blocks) on worker 3, then its own
// request on worker 2 and overlaps; each is routed by kv, by
// dynamo-current at Dynamo's defaults (which must agree) and by
// dynamo-current with the term set. Cost = max(0, prefill blocks − credit
// × decay × overlap) + decode blocks + weight × requests:
//
//   - defaults, 4-block prompt, worker 2 holds 2 blocks, worker 3 all 4:
//     worker 1 4 + 4 = 8, worker 2 (4 − 2) + 4 = 6, worker 3 (12 − 4) +
//     12 = 20. Worker 2 both ways.
//   - credit 2, 4-block prompt, worker 2 has a 3-block request and holds
//     the prompt: worker 1 8, worker 3 12 + 12 = 24, worker 2 (7 − 4) + 7
//     = 10 at credit 1 (worker 1 wins), max(0, 7 − 8) + 7 = 7 at credit 2
//     (worker 2 wins).
//   - active-request weight 10, 4-block prompt, worker 2 has a 1-block
//     request and holds the prompt: worker 2 (5 − 4) + 5 = 6 (wins), with
//     the weight 6 + 10 = 16; worker 1 8 (wins), worker 3 24 + 10 = 34.
//   - credit decay 56, 16-block prompt, worker 2 has a 2-block request
//     (8 prefill tokens) and holds the prompt: worker 1 16 + 16 = 32,
//     worker 3 24 + 24 = 48, worker 2 (18 − 16) + 18 = 20 (wins); the
//     least loaded rank has 0 prefill tokens, so worker 2's decay is
//     1 / (1 + 56 × (8 / 4) / 16) = 1/8 and its cost (18 − 2) + 18 = 34:
//     worker 1 wins.
func TestDynamoCurrentChoice(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		blocks int
		// setup books and stores on worker 2; p is the prompt.
		setup            func(t *testing.T, e *env, p []uint32)
		wantKV, wantTerm Choice
	}{
		{
			name: "defaults", modify: func(*Config) {}, blocks: 4,
			setup: func(t *testing.T, e *env, p []uint32) {
				e.store(t, w(2), p[:8])
				e.store(t, w(3), p)
			},
			wantKV: Choice{Worker: w(2), OverlapBlocks: 2}, wantTerm: Choice{Worker: w(2), OverlapBlocks: 2},
		},
		{
			name: "credit 2", modify: func(c *Config) { c.OverlapScoreCredit = 2 }, blocks: 4,
			setup: func(t *testing.T, e *env, p []uint32) {
				route(t, e, &Request{ID: "on2", Tokens: tokens(5000, 3, 4), AllowedWorkerIDs: []indexer.WorkerID{2}})
				e.store(t, w(2), p)
			},
			wantKV: Choice{Worker: w(1)}, wantTerm: Choice{Worker: w(2), OverlapBlocks: 4},
		},
		{
			name: "active request weight 10", modify: func(c *Config) { c.DecodeActiveRequestWeight = 10 }, blocks: 4,
			setup: func(t *testing.T, e *env, p []uint32) {
				route(t, e, &Request{ID: "on2", Tokens: tokens(5000, 1, 4), AllowedWorkerIDs: []indexer.WorkerID{2}})
				e.store(t, w(2), p)
			},
			wantKV: Choice{Worker: w(2), OverlapBlocks: 4}, wantTerm: Choice{Worker: w(1)},
		},
		{
			name: "credit decay 56", modify: func(c *Config) { c.OverlapScoreCreditDecay = 56 }, blocks: 16,
			setup: func(t *testing.T, e *env, p []uint32) {
				route(t, e, &Request{ID: "on2", Tokens: tokens(5000, 2, 4), AllowedWorkerIDs: []indexer.WorkerID{2}})
				e.store(t, w(2), p)
			},
			wantKV: Choice{Worker: w(2), OverlapBlocks: 16}, wantTerm: Choice{Worker: w(1)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tokens(100, tt.blocks, 4)
			for _, run := range []struct {
				name   string
				mode   Mode
				modify func(*Config)
				want   Choice
			}{
				{"kv", ModeKV, nil, tt.wantKV},
				{"dynamo-current defaults", ModeDynamoCurrent, nil, tt.wantKV},
				{"dynamo-current with the term", ModeDynamoCurrent, tt.modify, tt.wantTerm},
			} {
				e := peerEnv(t, run.mode, run.modify)
				route(t, e, &Request{ID: "on3", Tokens: tokens(9000, 8, 4), AllowedWorkerIDs: []indexer.WorkerID{3}})
				tt.setup(t, e, p)
				if d := route(t, e, &Request{Tokens: p, QueryOnly: true}); d.Choice != run.want {
					t.Errorf("%s: choice %+v, want %+v", run.name, d.Choice, run.want)
				}
			}
		})
	}
}

// TestDynamoCurrentDefaultsChooseAsKV: at Dynamo's defaults the current
// cost is kv's to the bit, so dynamo-current and kv, drawing from the same
// random stream, choose the same ranks, exact ties included (kv through
// its fast path, dynamo-current through its own).
func TestDynamoCurrentDefaultsChooseAsKV(t *testing.T) {
	for _, n := range []int{3, 50} {
		tw := newTwins(t, n)
		cfg := testConfig()
		cfg.Mode = ModeDynamoCurrent
		tw.b = newEnv(t, cfg, newFleet(cands(0, 0, tw.ids...), nil))
		rng := rand.New(rand.NewPCG(4, 4))
		for i := range 300 {
			p := tw.prompt(t, rng, i)
			for _, typ := range []WorkerType{WorkerTypeAggregated, WorkerTypeDecode} {
				seed := rng.Uint64()
				tw.a.r.rng, tw.b.r.rng = rand.New(rand.NewPCG(seed, 0)), rand.New(rand.NewPCG(seed, 0))
				ra := Request{Tokens: p, Type: typ, QueryOnly: i%2 == 0}
				rb := ra
				da, db := route(t, tw.a, &ra), route(t, tw.b, &rb)
				da.RequestID, db.RequestID = "", ""
				if da != db {
					t.Fatalf("%d workers, step %d, %v: kv chose %+v, dynamo-current %+v", n, i, typ, da, db)
				}
			}
		}
	}
}

// TestPeerModesTies: on idle ranks with no overlap every score is equal,
// and each mode draws uniformly among them.
func TestPeerModesTies(t *testing.T) {
	for _, mode := range []Mode{ModeLLMDPrecisePrefix, ModeDynamoCurrent} {
		t.Run(mode.String(), func(t *testing.T) {
			e := peerEnv(t, mode, nil)
			share := frequencies(6000, 4, func() int {
				return int(route(t, e, &Request{Tokens: tokens(0, 2, 4), QueryOnly: true}).Worker.ID)
			})
			for id := 1; id <= 3; id++ {
				if math.Abs(share[id]-1.0/3) > 0.03 {
					t.Errorf("worker %d chosen %.3f of the time, want 1/3 ± 0.03", id, share[id])
				}
			}
		})
	}
}

// TestPeerModesFilters: allowed_worker_ids and busy thresholds apply as
// for kv.
func TestPeerModesFilters(t *testing.T) {
	p := tokens(100, 4, 4)
	for _, mode := range []Mode{ModeLLMDPrecisePrefix, ModeDynamoCurrent} {
		t.Run(mode.String(), func(t *testing.T) {
			e := peerEnv(t, mode, nil)
			e.store(t, w(3), p)
			d := route(t, e, &Request{Tokens: p, QueryOnly: true, AllowedWorkerIDs: []indexer.WorkerID{1, 2}})
			if d.Worker == w(3) {
				t.Errorf("chose worker 3, not among allowed_worker_ids")
			}
			if _, err := e.r.Route(context.Background(), &Request{Tokens: p, AllowedWorkerIDs: []indexer.WorkerID{9}}); !errors.Is(err, ErrNoWorkers) {
				t.Errorf("no allowed worker: %v, want ErrNoWorkers", err)
			}

			// Worker 3 holds the whole prompt but is over the prefill
			// threshold: the choice goes elsewhere; all over it is
			// ErrOverloaded.
			th := peerEnv(t, mode, func(c *Config) { c.ActivePrefillTokensThreshold = ptr(10) })
			th.store(t, w(3), p)
			route(t, th, &Request{ID: "big", Tokens: tokens(7000, 4, 4), AllowedWorkerIDs: []indexer.WorkerID{3}})
			if d := route(t, th, &Request{Tokens: p, QueryOnly: true}); d.Worker == w(3) {
				t.Errorf("chose worker 3, over the busy threshold")
			}
			route(t, th, &Request{ID: "big1", Tokens: tokens(8000, 4, 4), AllowedWorkerIDs: []indexer.WorkerID{1}})
			route(t, th, &Request{ID: "big2", Tokens: tokens(9000, 4, 4), AllowedWorkerIDs: []indexer.WorkerID{2}})
			if _, err := th.r.Route(context.Background(), &Request{Tokens: p}); !errors.Is(err, ErrOverloaded) {
				t.Errorf("every worker over the threshold: %v, want ErrOverloaded", err)
			}
		})
	}
}

// TestPeerModesDeterministic: two routers seeded alike make the same
// choices over the same prompts.
func TestPeerModesDeterministic(t *testing.T) {
	for _, mode := range []Mode{ModeLLMDPrecisePrefix, ModeDynamoCurrent} {
		t.Run(mode.String(), func(t *testing.T) {
			run := func() []indexer.WorkerID {
				cfg := testConfig()
				cfg.Mode = mode
				m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
				if err != nil {
					t.Fatal(err)
				}
				r, err := New(cfg, indexer.NewIndex(indexer.Config{}), nil, m, Options{Rand: rand.New(rand.NewPCG(7, 7))})
				if err != nil {
					t.Fatal(err)
				}
				r.SetCandidates(cands(100, 0, 1, 2, 3, 4), nil)
				var got []indexer.WorkerID
				for i := range 60 {
					d, err := r.Route(context.Background(), &Request{Tokens: tokens(i%7*1000, 1+i%5, 4)})
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, d.Worker.ID)
				}
				return got
			}
			if diff := gocmp.Diff(run(), run()); diff != "" {
				t.Errorf("two seeded runs differ (-first +second):\n%s", diff)
			}
		})
	}
}

func TestPeerModesConfig(t *testing.T) {
	tests := []validateCase{
		{name: "credit above 1 with dynamo-current", modify: func(c *Config) { c.Mode, c.OverlapScoreCredit = ModeDynamoCurrent, 2 }},
		{name: "decay with dynamo-current", modify: func(c *Config) { c.Mode, c.OverlapScoreCreditDecay = ModeDynamoCurrent, 1 }},
		{name: "decay with kv", modify: func(c *Config) { c.OverlapScoreCreditDecay = 1 },
			want: "--router-kv-overlap-score-credit-decay: 1 applies only with --router-mode dynamo-current (allowed 0 with --router-mode kv)"},
		{name: "request weight with llmd", modify: func(c *Config) { c.Mode, c.DecodeActiveRequestWeight = ModeLLMDPrecisePrefix, 64 },
			want: "--router-decode-active-request-weight: 64 applies only with --router-mode dynamo-current (allowed 0 with --router-mode llmd-precise-prefix)"},
		{name: "negative request weight", modify: func(c *Config) { c.Mode, c.DecodeActiveRequestWeight = ModeDynamoCurrent, -1 },
			want: "--router-decode-active-request-weight: -1 is negative (allowed ≥ 0)"},
		{name: "unknown mode", modify: func(c *Config) { c.Mode = ModeDynamoCurrent + 1 },
			want: "--router-mode: mode(5) is not a mode (allowed kv, round-robin, random, llmd-precise-prefix, dynamo-current)"},
	}
	checkValidate(t, tests)
	// A request may override the credit above 1 in dynamo-current only.
	over := &Request{Tokens: tokens(0, 1, 4), QueryOnly: true, Override: &Override{OverlapScoreCredit: ptr(2.0)}}
	if _, err := peerEnv(t, ModeDynamoCurrent, nil).r.Route(context.Background(), over); err != nil {
		t.Errorf("dynamo-current refused credit 2: %v", err)
	}
	if _, err := peerEnv(t, ModeKV, nil).r.Route(context.Background(), over); !errors.Is(err, ErrBadRequest) {
		t.Errorf("kv with credit 2: %v, want ErrBadRequest", err)
	}
}

// TestPeerModesTimeAndIndex: like kv, the peers' modes hash and look up the
// prompt and time the decision.
func TestPeerModesTimeAndIndex(t *testing.T) {
	for _, mode := range []Mode{ModeLLMDPrecisePrefix, ModeDynamoCurrent} {
		t.Run(mode.String(), func(t *testing.T) {
			e := peerEnv(t, mode, nil)
			route(t, e, &Request{Tokens: tokens(0, 2, 4)})
			if n := sampleCount(t, e, "dynamo_router_overhead_total_ms"); n != 1 {
				t.Errorf("%d decisions timed, want 1", n)
			}
		})
	}
}

// validateCase is a configuration, DefaultConfig changed by modify, and
// the error its Validate must give ("" for none).
type validateCase struct {
	name   string
	modify func(*Config)
	want   string
}

// checkValidate runs each case as a subtest.
func checkValidate(t *testing.T, tests []validateCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.modify(&c)
			got := ""
			if err := c.Validate(); err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Validate() = %q, want %q", got, tt.want)
			}
		})
	}
}
