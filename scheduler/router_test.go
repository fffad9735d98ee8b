package scheduler

import (
	"cmp"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kvrouter/router/indexer"
)

func route(t *testing.T, e *env, req *Request) Decision {
	t.Helper()
	d, err := e.r.Route(context.Background(), req)
	if err != nil {
		t.Fatalf("Route: %v", err)
	}
	return d
}

func TestRouteChoosesTheOverlap(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1, 2, 3), nil))
	prompt := tokens(100, 4, 4)
	e.store(t, w(2), prompt[:12]) // 3 of the 4 blocks
	e.store(t, w(3), prompt[:4])  // 1 block
	d := route(t, e, &Request{ID: "r1", Tokens: prompt})
	want := Decision{RequestID: "r1", Choice: Choice{Worker: w(2), OverlapBlocks: 3}, NumBlocks: 4, Type: WorkerTypeAggregated}
	if diff := gocmp.Diff(want, d); diff != "" {
		t.Fatalf("decision (-want +got):\n%s", diff)
	}
	l, _ := e.r.Load(w(2))
	if want := (RankLoad{Worker: w(2), Kind: KindDecode, PrefillTokens: 4, DecodeBlocks: 4, Requests: 1}); l != want {
		t.Errorf("load of worker 2 = %+v, want %+v", l, want)
	}
	if got := promtest.ToFloat64(e.r.m.RequestsTotal); got != 1 {
		t.Errorf("requests_total = %v, want 1", got)
	}
}

func TestRouteSpreadsLoad(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1, 2, 3), nil))
	for i := range 6 {
		route(t, e, &Request{Tokens: tokens(1000*i, 2, 4)})
	}
	for _, id := range []uint64{1, 2, 3} {
		if l, _ := e.r.Load(w(id)); l.Requests != 2 {
			t.Errorf("worker %d has %d requests, want 2 (loads %+v)", id, l.Requests, e.r.Loads())
		}
	}
}

func TestRouteSharedPrefixCountsOnce(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1, 2), nil))
	p := tokens(0, 3, 4)
	d1 := route(t, e, &Request{Tokens: p})
	// The same prompt again: the chosen rank would add no new blocks, the
	// other three; with no index overlap (no events) the prefill cost is
	// the same on both, so the active blocks decide.
	d2 := route(t, e, &Request{Tokens: p})
	l, _ := e.r.Load(d1.Worker)
	if d2.Worker == d1.Worker && l.DecodeBlocks != 3 {
		t.Errorf("same prompt twice on %v: %d decode blocks, want 3", d1.Worker, l.DecodeBlocks)
	}
}

func TestRouteErrors(t *testing.T) {
	over := testConfig()
	over.ActivePrefillTokensThreshold = ptr(0)
	tests := []struct {
		name  string
		cfg   Config
		fleet *fleet
		setup func(t *testing.T, e *env)
		req   Request
		want  error
	}{
		{name: "no workers", cfg: testConfig(), fleet: newFleet(nil, nil), req: Request{Tokens: tokens(0, 1, 4)}, want: ErrNoWorkers},
		{name: "none allowed", cfg: testConfig(), fleet: newFleet(cands(0, 0, 1, 2), nil), req: Request{Tokens: tokens(0, 1, 4), AllowedWorkerIDs: []indexer.WorkerID{9}}, want: ErrNoWorkers},
		{name: "empty allowed list", cfg: testConfig(), fleet: newFleet(cands(0, 0, 1), nil), req: Request{Tokens: tokens(0, 1, 4), AllowedWorkerIDs: []indexer.WorkerID{}}, want: ErrNoWorkers},
		{name: "prefill without prefill workers", cfg: testConfig(), fleet: newFleet(cands(0, 0, 1), nil), req: Request{Tokens: tokens(0, 1, 4), Type: WorkerTypePrefill}, want: ErrNoWorkers},
		{name: "disaggregated without decode workers", cfg: testConfig(), fleet: newFleet(nil, cands(0, 0, 10)), req: Request{Tokens: tokens(0, 1, 4)}, want: ErrNoWorkers},
		{
			name: "overloaded", cfg: over, fleet: newFleet(cands(0, 0, 1), nil),
			setup: func(t *testing.T, e *env) { route(t, e, &Request{Tokens: tokens(0, 1, 4)}) },
			req:   Request{Tokens: tokens(0, 1, 4)}, want: ErrOverloaded,
		},
		{name: "tokens and block hashes", cfg: testConfig(), fleet: newFleet(cands(0, 0, 1), nil), req: Request{Tokens: tokens(0, 1, 4), BlockHashes: []indexer.LocalHash{1}}, want: ErrBadRequest},
		{name: "negative priority jump", cfg: testConfig(), fleet: newFleet(cands(0, 0, 1), nil), req: Request{Tokens: tokens(0, 1, 4), PriorityJump: -1}, want: ErrBadRequest},
		{name: "NaN temperature", cfg: testConfig(), fleet: newFleet(cands(0, 0, 1), nil), req: Request{Tokens: tokens(0, 1, 4), Override: &Override{Temperature: ptr(math.NaN())}}, want: ErrBadRequest},
		{name: "isl absurd", cfg: testConfig(), fleet: newFleet(cands(0, 0, 1), nil), req: Request{Tokens: tokens(0, 1, 4), ISL: MaxTokens + 1}, want: ErrBadRequest},
		{
			name: "request id already active", cfg: testConfig(), fleet: newFleet(cands(0, 0, 1), nil),
			setup: func(t *testing.T, e *env) { route(t, e, &Request{ID: "dup", Tokens: tokens(0, 1, 4)}) },
			req:   Request{ID: "dup", Tokens: tokens(0, 1, 4)}, want: ErrBadRequest,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg, tt.fleet)
			if tt.setup != nil {
				tt.setup(t, e)
			}
			before := busyLoads(e)
			_, err := e.r.Route(context.Background(), &tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Route = %v, want %v", err, tt.want)
			}
			if diff := gocmp.Diff(before, busyLoads(e)); diff != "" {
				t.Errorf("a failed request changed the loads (-before +after):\n%s", diff)
			}
		})
	}
}

// busyLoads returns the loads of the ranks with something booked, by
// worker.
func busyLoads(e *env) []RankLoad {
	var out []RankLoad
	for _, l := range e.r.Loads() {
		if l.Requests != 0 || l.PrefillTokens != 0 || l.DecodeBlocks != 0 {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b RankLoad) int { return cmp.Compare(a.Worker.ID, b.Worker.ID) })
	return out
}

func TestRouteQueryOnlyBooksNothing(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1), nil))
	d := route(t, e, &Request{ID: "q", Tokens: tokens(0, 2, 4), QueryOnly: true})
	if d.Worker != w(1) || e.r.Active() != 0 {
		t.Errorf("query-only: decision %+v, %d active; want worker 1 and nothing booked", d, e.r.Active())
	}
	if got := promtest.ToFloat64(e.r.m.RequestsTotal); got != 0 {
		t.Errorf("requests_total = %v after a query, want 0", got)
	}
	if got := promtest.CollectAndCount(e.r.m.Route.Total); got != 1 {
		t.Errorf("overhead_total series = %d, want 1", got)
	}
}

func TestRouteIgnoresUntrustedOverlap(t *testing.T) {
	c := cands(0, 0, 1, 2)
	c[1].OverlapTrusted = false
	e := newEnv(t, testConfig(), newFleet(c, nil))
	p := tokens(0, 4, 4)
	e.store(t, w(2), p)
	route(t, e, &Request{ID: "busy", Tokens: tokens(500, 1, 4)}) // lands on 1 or 2
	d := route(t, e, &Request{Tokens: p, QueryOnly: true})
	if d.OverlapBlocks != 0 {
		t.Errorf("decision %+v: the untrusted worker's overlap counted", d)
	}
}

func TestRoundRobinAndRandom(t *testing.T) {
	t.Run("round-robin", func(t *testing.T) {
		cfg := testConfig()
		cfg.Mode = ModeRoundRobin
		e := newEnv(t, cfg, newFleet(cands(0, 0, 1, 2, 3), nil))
		var got []indexer.WorkerID
		for i := range 6 {
			got = append(got, route(t, e, &Request{Tokens: tokens(i, 1, 4)}).Worker.ID)
		}
		if diff := gocmp.Diff([]indexer.WorkerID{1, 2, 3, 1, 2, 3}, got); diff != "" {
			t.Errorf("round-robin order (-want +got):\n%s", diff)
		}
		if n := promtest.CollectAndCount(e.r.m.Route.Total); n != 1 || sampleCount(t, e, "dynamo_router_overhead_total_ms") != 0 {
			t.Errorf("round-robin observed routing overhead")
		}
	})
	t.Run("random", func(t *testing.T) {
		cfg := testConfig()
		cfg.Mode = ModeRandom
		e := newEnv(t, cfg, newFleet(cands(0, 0, 1, 2, 3, 4), nil))
		share := frequencies(8000, 5, func() int {
			return int(route(t, e, &Request{Tokens: tokens(0, 1, 4), QueryOnly: true}).Worker.ID)
		})
		for id := 1; id <= 4; id++ {
			if math.Abs(share[id]-0.25) > 0.03 {
				t.Errorf("random chose worker %d %.3f of the time, want 0.25 ± 0.03", id, share[id])
			}
		}
	})
}

// sampleCount returns the number of observations of a histogram family.
func sampleCount(t *testing.T, e *env, name string) uint64 {
	t.Helper()
	mfs, err := e.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var n uint64
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
			return n
		}
	}
	return 0
}

func TestRouteTemperatureSamplesSoftmax(t *testing.T) {
	// Three idle workers, a 4-block prompt, overlaps 0, 2 and 4: costs
	// (prefill blocks − overlap + decode blocks) are 8, 6 and 4.
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1, 2, 3), nil))
	p := tokens(0, 4, 4)
	e.store(t, w(2), p[:8])
	e.store(t, w(3), p)
	temp := 0.5
	want := map[indexer.WorkerID]float64{}
	var sum float64
	for id, c := range map[indexer.WorkerID]float64{1: 8, 2: 6, 3: 4} {
		want[id] = math.Exp(-(c - 4) / ((8 - 4) * temp))
		sum += want[id]
	}
	for id := range want {
		want[id] /= sum
	}
	const n = 30000
	got := map[indexer.WorkerID]float64{}
	for range n {
		d := route(t, e, &Request{Tokens: p, QueryOnly: true, Override: &Override{Temperature: &temp}})
		got[d.Worker.ID] += 1.0 / n
	}
	for id := range want {
		if math.Abs(got[id]-want[id]) > 0.015 {
			t.Errorf("worker %d chosen %.4f of the time, want %.4f ± 0.015", id, got[id], want[id])
		}
	}
}

func TestDisaggregated(t *testing.T) {
	p := tokens(0, 4, 4)
	tests := []struct {
		name    string
		typ     WorkerType
		prefill []Candidate
		setup   func(t *testing.T, e *env)
		want    Decision
	}{
		{
			name: "auto with prefill workers", typ: WorkerTypeAuto, prefill: cands(0, 0, 10, 11),
			setup: func(t *testing.T, e *env) {
				e.store(t, w(11), p)    // the prefill choice follows the overlap
				e.store(t, w(1), p[:4]) // the decode choice ignores overlap
				route(t, e, &Request{ID: "load", Tokens: tokens(900, 3, 4), Type: WorkerTypeDecode, AllowedWorkerIDs: []indexer.WorkerID{1}})
			},
			want: Decision{
				RequestID: "r", Choice: Choice{Worker: w(11), OverlapBlocks: 4}, NumBlocks: 4, Type: WorkerTypeDisaggregated,
				Prefill: Choice{Worker: w(11), OverlapBlocks: 4}, Decode: Choice{Worker: w(2)},
			},
		},
		{
			name: "disaggregated falls back to aggregated", typ: WorkerTypeDisaggregated,
			want: Decision{RequestID: "r", Choice: Choice{Worker: w(1)}, NumBlocks: 4, Type: WorkerTypeAggregated},
		},
		{
			name: "auto without prefill workers", typ: WorkerTypeAuto,
			want: Decision{RequestID: "r", Choice: Choice{Worker: w(1)}, NumBlocks: 4, Type: WorkerTypeAggregated},
		},
		{
			name: "prefill only", typ: WorkerTypePrefill, prefill: cands(0, 0, 10),
			want: Decision{RequestID: "r", Choice: Choice{Worker: w(10)}, NumBlocks: 4, Type: WorkerTypePrefill},
		},
		{
			name: "decode only is by load", typ: WorkerTypeDecode, prefill: cands(0, 0, 10),
			setup: func(t *testing.T, e *env) {
				e.store(t, w(1), p)
				route(t, e, &Request{ID: "load", Tokens: tokens(900, 3, 4), Type: WorkerTypeDecode, AllowedWorkerIDs: []indexer.WorkerID{1}})
			},
			want: Decision{RequestID: "r", Choice: Choice{Worker: w(2)}, NumBlocks: 4, Type: WorkerTypeDecode},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1, 2)[:2], tt.prefill))
			if tt.typ == WorkerTypeDisaggregated || tt.name == "auto without prefill workers" {
				e.fleet.set(cands(0, 0, 1), nil)
			}
			if tt.setup != nil {
				tt.setup(t, e)
			}
			d := route(t, e, &Request{ID: "r", Tokens: p, Type: tt.typ})
			if diff := gocmp.Diff(tt.want, d); diff != "" {
				t.Fatalf("decision (-want +got):\n%s", diff)
			}
			// A retry of the booked id is answered from the booking, and
			// books nothing more.
			before := busyLoads(e)
			again := route(t, e, &Request{ID: "r", Tokens: p, Type: tt.typ, Retry: true})
			if diff := gocmp.Diff(tt.want, again); diff != "" {
				t.Errorf("retry's decision (-want +got):\n%s", diff)
			}
			if diff := gocmp.Diff(before, busyLoads(e)); diff != "" {
				t.Errorf("a retry changed the loads (-before +after):\n%s", diff)
			}
		})
	}
}

func TestDisaggregatedBookkeeping(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1), cands(0, 0, 10)))
	route(t, e, &Request{ID: "r", Tokens: tokens(0, 4, 4)})
	pre, _ := e.r.Load(w(10))
	dec, _ := e.r.Load(w(1))
	if pre.PrefillTokens != 16 || pre.Kind != KindPrefill || dec.PrefillTokens != 0 || dec.DecodeBlocks != 4 {
		t.Fatalf("after routing: prefill %+v, decode %+v", pre, dec)
	}
	if !e.r.MarkPrefill("r") {
		t.Fatal("MarkPrefill: unknown")
	}
	pre, _ = e.r.Load(w(10))
	if pre.Requests != 0 || pre.DecodeBlocks != 0 {
		t.Errorf("prefill rank still holds the request after its first token: %+v", pre)
	}
	if !e.r.Free("r", 10) {
		t.Fatal("Free: unknown")
	}
	if dec, _ = e.r.Load(w(1)); dec != (RankLoad{Worker: w(1), Kind: KindDecode}) {
		t.Errorf("decode rank after Free: %+v", dec)
	}
}

func TestMarksFeedMetrics(t *testing.T) {
	e := newEnv(t, testConfig(), newFleet(cands(0, 0, 1), nil))
	route(t, e, &Request{ID: "r", Tokens: tokens(0, 2, 4)})
	if e.r.MarkPrefill("nope") || e.r.Free("nope", 1) {
		t.Fatal("marks of an unknown id succeeded")
	}
	e.r.MarkPrefill("r")
	e.r.MarkPrefill("r") // a repeat observes nothing
	e.r.Free("r", 11)
	for name, want := range map[string]uint64{
		"dynamo_component_router_time_to_first_token_seconds": 1,
		"dynamo_component_router_inter_token_latency_seconds": 1,
		"dynamo_component_router_output_sequence_tokens":      1,
		"dynamo_component_router_input_sequence_tokens":       1,
		"dynamo_component_router_kv_hit_rate":                 1,
	} {
		if got := sampleCount(t, e, name); got != want {
			t.Errorf("%s: %d observations, want %d", name, got, want)
		}
	}
	if got := promtest.ToFloat64(e.r.m.WorkerActiveDecodeBlocks.WithLabelValues("1", "0", "decode")); got != 0 {
		t.Errorf("active decode blocks after free = %v, want 0", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{name: "defaults", modify: func(*Config) {}},
		{name: "negative temperature", modify: func(c *Config) { c.Temperature = -1 }, want: "--router-temperature: -1 is negative (allowed ≥ 0)"},
		{name: "credit above 1", modify: func(c *Config) { c.OverlapScoreCredit = 1.5 }, want: "--router-kv-overlap-score-credit: 1.5 is out of range (allowed 0..1)"},
		{name: "block size 0", modify: func(c *Config) { c.BlockSize = 0 }, want: "--router-block-size: 0 is out of range (allowed 1..65536)"},
		{name: "NaN weight", modify: func(c *Config) { c.OverlapScoreWeight = ptr(math.NaN()) }, want: "--router-kv-overlap-score-weight: NaN is not a finite number (allowed ≥ 0)"},
		{name: "negative queue threshold", modify: func(c *Config) { c.QueueThreshold = ptr(-0.5) }, want: "--router-queue-threshold: -0.5 is negative (allowed ≥ 0)"},
		{name: "zero ttl", modify: func(c *Config) { c.TTL = 0 }, want: "--router-ttl-secs: 0s is out of range (allowed > 0 and ≤ 24h0m0s)"},
		{name: "decode threshold 0", modify: func(c *Config) { c.ActiveDecodeBlocksThreshold = ptr(0.0) }, want: "--active-decode-blocks-threshold: 0 is out of range (allowed > 0 and ≤ 1)"},
		{name: "queue capacity 0", modify: func(c *Config) { c.QueueCapacity = 0 }, want: "--router-queue-capacity: 0 is out of range (allowed 1..1048576)"},
		{name: "prefill timeout off", modify: func(c *Config) { c.PrefillTimeout = 0 }},
		{name: "prefill timeout negative", modify: func(c *Config) { c.PrefillTimeout = -time.Second }, want: "--router-prefill-timeout: -1s is out of range (allowed 0 to disable, or > 0 and ≤ --router-stale-timeout, 1h0m0s)"},
		{name: "every problem, one line each", modify: func(c *Config) { c.BlockSize, c.Temperature, c.QueueCapacity = 0, -1, 0 },
			want: "--router-block-size: 0 is out of range (allowed 1..65536)\n--router-temperature: -1 is negative (allowed ≥ 0)\n--router-queue-capacity: 0 is out of range (allowed 1..1048576)"},
		{name: "adaptive weight on", modify: func(c *Config) {
			c.SaturationPrefillTokens, c.PrefillLoadScale, c.PrefillLoadScaleSaturated = 2048, 8, 1
		}},
		{name: "saturation threshold negative", modify: func(c *Config) { c.SaturationPrefillTokens = -1 },
			want: "--router-saturation-prefill-tokens: -1 is out of range (allowed 0 to disable, or 1..1000000)"},
		{name: "saturation threshold too large", modify: func(c *Config) { c.SaturationPrefillTokens = MaxTokens + 1 },
			want: "--router-saturation-prefill-tokens: 1000001 is out of range (allowed 0 to disable, or 1..1000000)"},
		{name: "saturation threshold outside kv", modify: func(c *Config) { c.SaturationPrefillTokens, c.Mode = 2048, ModeDynamoCurrent },
			want: "--router-saturation-prefill-tokens: 2048 applies only with --router-mode kv (allowed 0 with --router-mode dynamo-current)"},
		{name: "saturation blocks outside kv", modify: func(c *Config) { c.SaturationDecodeBlocks, c.Mode = 64, ModeRoundRobin },
			want: "--router-saturation-decode-blocks: 64 applies only with --router-mode kv (allowed 0 with --router-mode round-robin)"},
		{name: "cache affinity on", modify: func(c *Config) { c.CacheAffinity = 16 }},
		{name: "cache affinity negative", modify: func(c *Config) { c.CacheAffinity = -1 },
			want: "--router-cache-affinity: -1 is negative (allowed ≥ 0)"},
		{name: "cache affinity outside kv", modify: func(c *Config) { c.CacheAffinity, c.Mode = 16, ModeLLMDPrecisePrefix },
			want: "--router-cache-affinity: 16 applies only with --router-mode kv (allowed 0 with --router-mode llmd-precise-prefix)"},
		{name: "saturated scale negative", modify: func(c *Config) { c.PrefillLoadScaleSaturated = -1 },
			want: "--router-prefill-load-scale-saturated: -1 is negative (allowed ≥ 0)"},
		{name: "saturated scale NaN", modify: func(c *Config) { c.PrefillLoadScaleSaturated = math.NaN() },
			want: "--router-prefill-load-scale-saturated: NaN is not a finite number (allowed ≥ 0)"},
		{name: "prefill timeout over stale", modify: func(c *Config) { c.StaleTimeout = time.Minute; c.PrefillTimeout = 2 * time.Minute }, want: "--router-prefill-timeout: 2m0s is out of range (allowed 0 to disable, or > 0 and ≤ --router-stale-timeout, 1m0s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.modify(&c)
			err := c.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Validate() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseNames(t *testing.T) {
	for _, s := range []string{"kv", "round-robin", "random", "llmd-precise-prefix", "dynamo-current"} {
		m, err := ParseMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	for m := ModeKV; m <= ModeDynamoCurrent; m++ {
		if got, err := ParseMode(m.String()); err != nil || got != m {
			t.Errorf("ParseMode(%v.String()) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseMode("least-loaded"); err == nil {
		t.Error("ParseMode accepted an unknown mode")
	}
	for _, s := range []string{"fcfs", "wspt"} {
		p, err := ParseQueuePolicy(s)
		if err != nil || p.String() != s {
			t.Errorf("ParseQueuePolicy(%q) = %v, %v", s, p, err)
		}
	}
	for _, s := range []string{"auto", "aggregated", "prefill", "decode", "disaggregated"} {
		wt, ok := ParseWorkerType(s)
		if !ok || wt.String() != s {
			t.Errorf("ParseWorkerType(%q) = %v, %v", s, wt, ok)
		}
	}
	for err, code := range map[error]string{
		ErrBadRequest: CodeBadRequest, ErrNoWorkers: CodeNoWorkers, ErrOverloaded: CodeOverloaded,
		ErrQueueFull: CodeQueueFull, ErrQueueRejected: CodeQueueRejected, ErrTimeout: CodeTimeout,
		context.Canceled: CodeInternal,
	} {
		if got := Code(errors.Join(errors.New("detail"), err)); got != code {
			t.Errorf("Code(%v) = %q, want %q", err, got, code)
		}
	}
}

func TestDecisionAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	adaptive := DefaultConfig() // saturated at once: every threshold is below any load
	adaptive.PrefillLoadScale, adaptive.SaturationDecodeBlocks = 8, 1
	for name, cfg := range map[string]Config{"default": DefaultConfig(), "adaptive": adaptive} {
		e := newEnv(t, cfg, newFleet(cands(16384, 8192, 1, 2, 3, 4, 5, 6, 7, 8), nil))
		p := tokens(0, 30, 128)
		e.store(t, w(3), p[:10*128])
		for i := range uint64(8) {
			route(t, e, &Request{Tokens: tokens(1000*int(i+1), 2, 128), AllowedWorkerIDs: []indexer.WorkerID{indexer.WorkerID(i + 1)}})
		}
		req := &Request{Tokens: p, QueryOnly: true}
		ctx := context.Background()
		route(t, e, req) // warm the pools and the view
		if allocs := testing.AllocsPerRun(200, func() { _, _ = e.r.Route(ctx, req) }); allocs > 0.1 {
			t.Errorf("%s: a routing decision allocates %v times", name, allocs)
		}
	}
}

// TestFastPathMatchesFilteredPath checks that the common-case choice (no
// filter in force: minScan, or fusedMin where keys are not exact) and the
// multi-pass one (here forced by an allowed_worker_ids listing every
// worker) choose the same ranks from the same random draws, over random
// loads and overlaps.
func TestFastPathMatchesFilteredPath(t *testing.T) {
	tw := newTwins(t, 50)
	rng := rand.New(rand.NewPCG(4, 4))
	for i := range 400 {
		p := tw.prompt(t, rng, i)
		for _, byLoad := range []WorkerType{WorkerTypeAggregated, WorkerTypeDecode} {
			tw.sameChoice(t, i, rng.Uint64(), Request{Tokens: p, Type: byLoad, QueryOnly: i%2 == 0})
		}
	}
}

// twins are two routers on the same workers, fed the same prompts, to
// compare the unfiltered choice on a with the filtered one on b.
type twins struct {
	a, b *env
	ids  []uint64
	// all is an allowed_worker_ids listing every worker: it forces the
	// filtered path and excludes nobody.
	all []indexer.WorkerID
}

func newTwins(t *testing.T, n int) *twins { return newTwinsWith(t, n, testConfig()) }

// newTwinsWith is newTwins with routers configured by cfg.
func newTwinsWith(t *testing.T, n int, cfg Config) *twins {
	tw := &twins{ids: make([]uint64, n), all: make([]indexer.WorkerID, n)}
	for i := range tw.ids {
		tw.ids[i] = uint64(i + 1)
		tw.all[i] = indexer.WorkerID(i + 1)
	}
	tw.a = newEnv(t, cfg, newFleet(cands(0, 0, tw.ids...), nil))
	tw.b = newEnv(t, cfg, newFleet(cands(0, 0, tw.ids...), nil))
	return tw
}

// prompt draws step i's prompt, and every fifth step caches it on a random
// worker of both routers.
func (tw *twins) prompt(t *testing.T, rng *rand.Rand, i int) []uint32 {
	p := tokens(rng.IntN(8)*100, 1+rng.IntN(5), 4)
	if i%5 == 0 {
		id := tw.ids[rng.IntN(len(tw.ids))]
		tw.a.store(t, w(id), p)
		tw.b.store(t, w(id), p)
	}
	return p
}

// sameChoice routes req on a unfiltered and on b filtered, both routers
// drawing from a random stream seeded with seed, and fails if they
// decide differently. It returns the request ids of the two decisions.
func (tw *twins) sameChoice(t *testing.T, step int, seed uint64, req Request) [2]string {
	t.Helper()
	tw.a.r.rng, tw.b.r.rng = rand.New(rand.NewPCG(seed, 0)), rand.New(rand.NewPCG(seed, 0))
	ra, rb := req, req
	rb.AllowedWorkerIDs = tw.all
	da, db := route(t, tw.a, &ra), route(t, tw.b, &rb)
	ids := [2]string{da.RequestID, db.RequestID}
	da.RequestID, db.RequestID = "", ""
	if da != db {
		t.Fatalf("step %d: unfiltered path chose %+v, filtered path %+v", step, da, db)
	}
	return ids
}
