package workers

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

const classicLoad = `{"worker_id":7,"data":{"worker_stats":{"data_parallel_rank":1,"request_active_slots":3,"request_total_slots":16,"num_requests_waiting":2},` +
	`"kv_stats":{"kv_active_blocks":120,"kv_total_blocks":1000,"gpu_cache_usage_perc":0.12,"gpu_prefix_cache_hit_rate":0.5}}}`

func TestDecodeLoad(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		worker indexer.Worker
		fields loadField
		load   Load
		err    error
	}{
		{name: "classic", in: classicLoad, worker: indexer.Worker{ID: 7, DPRank: 1},
			fields: fieldKVUsedBlocks | fieldKVTotalBlocks | fieldGPUCacheUsage | fieldGPUPrefixCacheHitRate | fieldRequestActiveSlots | fieldRequestTotalSlots | fieldNumRequestsWaiting,
			load:   Load{KVUsedBlocks: 120, KVTotalBlocks: 1000, GPUCacheUsage: 0.12, GPUPrefixCacheHitRate: 0.5, RequestActiveSlots: 3, RequestTotalSlots: 16, NumRequestsWaiting: 2}},
		{name: "classic without rank", in: `{"worker_id":7,"data":{"worker_stats":{"data_parallel_rank":null,"request_active_slots":1,"request_total_slots":2,"num_requests_waiting":0},"kv_stats":{"kv_active_blocks":1,"kv_total_blocks":2,"gpu_cache_usage_perc":0.5,"gpu_prefix_cache_hit_rate":0}}}`,
			worker: indexer.Worker{ID: 7},
			fields: fieldKVUsedBlocks | fieldKVTotalBlocks | fieldGPUCacheUsage | fieldGPUPrefixCacheHitRate | fieldRequestActiveSlots | fieldRequestTotalSlots | fieldNumRequestsWaiting,
			load:   Load{KVUsedBlocks: 1, KVTotalBlocks: 2, GPUCacheUsage: 0.5, RequestActiveSlots: 1, RequestTotalSlots: 2}},
		{name: "classic tagged engine metrics", in: `{"worker_id":7,"data":{"engine_load_metrics":{"kv_stats":{"kv_active_blocks":4,"kv_total_blocks":8,"gpu_cache_usage_perc":0.5,"gpu_prefix_cache_hit_rate":0.25}}}}`,
			worker: indexer.Worker{ID: 7}, fields: fieldsKVStats,
			load: Load{KVUsedBlocks: 4, KVTotalBlocks: 8, GPUCacheUsage: 0.5, GPUPrefixCacheHitRate: 0.25}},
		{name: "classic predictive metrics", in: `{"worker_id":7,"data":{"predictive_load_metrics":{"kv_active_blocks":9}}}`,
			worker: indexer.Worker{ID: 7}, fields: fieldKVUsedBlocks, load: Load{KVUsedBlocks: 9}},
		{name: "active load from a worker", in: `{"worker_id":7,"dp_rank":3,"kv_used_blocks":55}`,
			worker: indexer.Worker{ID: 7, DPRank: 3}, fields: fieldKVUsedBlocks, load: Load{KVUsedBlocks: 55}},
		{name: "active load from a scheduler", in: `{"worker_id":18446744073709551615,"dp_rank":0,"active_decode_blocks":10,"active_prefill_tokens":300,"kv_used_blocks":null}`,
			worker: indexer.Worker{ID: 1<<64 - 1}, fields: fieldActiveDecodeBlocks | fieldActivePrefillTokens,
			load: Load{ActiveDecodeBlocks: 10, ActivePrefillTokens: 300}},
		{name: "active load without rank", in: `{"worker_id":7,"active_decode_blocks":0}`,
			worker: indexer.Worker{ID: 7}, fields: fieldActiveDecodeBlocks},
		{name: "not json", in: `nope`, err: errLoadJSON},
		{name: "truncated", in: `{"worker_id":7,"data":`, err: errLoadJSON},
		{name: "array", in: `[7]`, err: errLoadJSON},
		{name: "worker id as string", in: `{"worker_id":"7","kv_used_blocks":1}`, err: errLoadJSON},
		{name: "negative count", in: `{"worker_id":7,"kv_used_blocks":-1}`, err: errLoadJSON},
		{name: "no worker id", in: `{"dp_rank":0,"kv_used_blocks":1}`, err: errLoadSchema},
		{name: "no figures", in: `{"worker_id":7,"dp_rank":0}`, err: errLoadSchema},
		{name: "empty data", in: `{"worker_id":7,"data":{}}`, err: errLoadSchema},
		{name: "rank over 32 bits", in: `{"worker_id":7,"dp_rank":4294967296,"kv_used_blocks":1}`, err: errLoadSchema},
		{name: "absurd count", in: `{"worker_id":7,"active_prefill_tokens":18446744073709551615}`, err: errLoadSchema},
		{name: "negative usage", in: `{"worker_id":7,"data":{"kv_stats":{"kv_active_blocks":1,"kv_total_blocks":2,"gpu_cache_usage_perc":-0.5,"gpu_prefix_cache_hit_rate":0}}}`, err: errLoadSchema},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := decodeLoad([]byte(tt.in))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("decodeLoad(%s) = %+v, %v; want %v", tt.in, u, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeLoad(%s): %v", tt.in, err)
			}
			if u.worker != tt.worker || u.fields != tt.fields {
				t.Errorf("decodeLoad(%s) = worker %v fields %b; want %v, %b", tt.in, u.worker, u.fields, tt.worker, tt.fields)
			}
			if diff := cmp.Diff(tt.load, u.load); diff != "" {
				t.Errorf("decodeLoad(%s) load (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestLoadMergeKeepsUnstatedFields(t *testing.T) {
	l := Load{ActiveDecodeBlocks: 1, ActivePrefillTokens: 2, KVUsedBlocks: 3, KVTotalBlocks: 4, GPUCacheUsage: 0.5}
	u, err := decodeLoad([]byte(`{"worker_id":1,"kv_used_blocks":30}`))
	if err != nil {
		t.Fatal(err)
	}
	want := l
	want.KVUsedBlocks = 30
	if diff := cmp.Diff(want, u.merge(l)); diff != "" {
		t.Errorf("merge (-want +got):\n%s", diff)
	}
}

func FuzzDecodeLoad(f *testing.F) {
	f.Add(classicLoad)
	f.Add(`{"worker_id":7,"dp_rank":3,"kv_used_blocks":55}`)
	f.Add(`{"worker_id":7,"dp_rank":0,"active_decode_blocks":10,"active_prefill_tokens":300}`)
	f.Add(`{"worker_id":7,"data":{"engine_load_metrics":{"kv_stats":{"kv_active_blocks":4}}}}`)
	f.Add(`{"worker_id":7,"data":{"predictive_load_metrics":{"kv_active_blocks":9}}}`)
	f.Fuzz(func(t *testing.T, s string) {
		u, err := decodeLoad([]byte(s))
		if err != nil {
			if !errors.Is(err, errLoadJSON) && !errors.Is(err, errLoadSchema) {
				t.Fatalf("decodeLoad(%q): error %v is neither errLoadJSON nor errLoadSchema", s, err)
			}
			return
		}
		if u.fields == 0 {
			t.Fatalf("decodeLoad(%q) = %+v: accepted with no figures", s, u)
		}
		l := u.load
		for _, n := range []int{l.ActiveDecodeBlocks, l.ActivePrefillTokens, l.KVUsedBlocks, l.KVTotalBlocks, l.RequestActiveSlots, l.RequestTotalSlots, l.NumRequestsWaiting} {
			if n < 0 || n > maxCount {
				t.Fatalf("decodeLoad(%q) = %+v: a count out of range", s, l)
			}
		}
		if l.GPUCacheUsage < 0 || l.GPUCacheUsage > 100 || l.GPUPrefixCacheHitRate < 0 || l.GPUPrefixCacheHitRate > 100 {
			t.Fatalf("decodeLoad(%q) = %+v: a fraction out of range", s, l)
		}
		// Merging into the zero load yields exactly the stated fields.
		if diff := cmp.Diff(l, u.merge(Load{})); diff != "" {
			t.Fatalf("decodeLoad(%q): merge into zero (-decoded +merged):\n%s", s, diff)
		}
	})
}

func TestLoadSubscriberBothShapes(t *testing.T) {
	n := testutil.NATS(t)
	nc := testutil.NATSConn(t, n.URL())
	pub := testutil.NATSConn(t, n.URL())
	cfg := DefaultConfig()
	e := newEnv(t, cfg)
	e.reg.replace(puts(
		instanceKey("dynamo", "backend", 7), instanceValue("dynamo", "backend", 7),
		cardKey("dynamo", "backend", 7), cardValue("dynamo", "backend", 7, cardSpec{blockSize: 128, totalKVBlocks: 2000, dpSize: 4}),
	))
	s, err := NewLoadSubscriber(cfg, nc, e.reg, e.m, e.log.logger())
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunUntilCleanup(t, s.Run)
	rejected := metrics.NameWorkerLoadRejectedTotal

	// Publish until the subscription is live (the first message may go
	// before it is).
	rank1 := indexer.Worker{ID: 7, DPRank: 1}
	testutil.Eventually(t, 10*time.Second, func() bool {
		if err := pub.Publish(LoadSubject("dynamo"), []byte(classicLoad)); err != nil {
			t.Fatal(err)
		}
		_ = pub.Flush()
		_, ok := e.reg.Load(rank1)
		return ok
	}, "classic load message not applied")
	got, _ := e.reg.Load(rank1)
	want := Load{KVUsedBlocks: 120, KVTotalBlocks: 1000, GPUCacheUsage: 0.12, GPUPrefixCacheHitRate: 0.5, RequestActiveSlots: 3, RequestTotalSlots: 16, NumRequestsWaiting: 2}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Load{}, "Updated")); diff != "" {
		t.Errorf("Load(%v) after the classic message (-want +got):\n%s", rank1, diff)
	}
	if got.Updated.IsZero() {
		t.Error("Updated not set")
	}

	// The newer shape, from a worker (kv_used_blocks) and from a scheduler
	// (active blocks and tokens), merges into the same load; a rank it
	// never mentioned has no kvstats.
	for _, msg := range []string{
		`{"worker_id":7,"dp_rank":1,"kv_used_blocks":150}`,
		`{"worker_id":7,"dp_rank":1,"active_decode_blocks":30,"active_prefill_tokens":900}`,
		`{"worker_id":7,"dp_rank":2,"active_decode_blocks":5}`,
		// Rejected: bad JSON, no worker_id, an unregistered worker, a rank
		// the worker does not have.
		`{"worker_id":`,
		`{"dp_rank":1,"kv_used_blocks":3}`,
		`{"worker_id":8,"kv_used_blocks":3}`,
		`{"worker_id":7,"dp_rank":4,"kv_used_blocks":3}`,
	} {
		if err := pub.Publish(LoadSubject("dynamo"), []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		return e.counter(t, rejected, "reason="+metrics.LoadRejectUnknownWorker) == 2
	}, "the last messages were not handled")
	got, _ = e.reg.Load(rank1)
	want.KVUsedBlocks, want.ActiveDecodeBlocks, want.ActivePrefillTokens = 150, 30, 900
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Load{}, "Updated")); diff != "" {
		t.Errorf("Load(%v) after the ActiveLoad messages (-want +got):\n%s", rank1, diff)
	}
	if got, ok := e.reg.Load(indexer.Worker{ID: 7, DPRank: 2}); !ok || got.ActiveDecodeBlocks != 5 {
		t.Errorf("Load(7/2) = %+v, %v", got, ok)
	}
	wantRejected := map[string]float64{"reason=json": 1, "reason=schema": 1, "reason=unknown_worker": 2}
	if diff := cmp.Diff(wantRejected, e.series(t, rejected)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", rejected, diff)
	}
	wantActive := map[string]float64{"dp_rank=1,worker_id=7": 150}
	if diff := cmp.Diff(wantActive, e.series(t, metrics.NameKVStatsActiveBlocks)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", metrics.NameKVStatsActiveBlocks, diff)
	}
	// kv_total_blocks came from the classic message; before it, the card's.
	if got := e.series(t, metrics.NameKVStatsTotalBlocks)["dp_rank=1,worker_id=7"]; got != 1000 {
		t.Errorf("%s = %v, want 1000", metrics.NameKVStatsTotalBlocks, got)
	}

	// The worker leaves: its loads and kvstats series go.
	e.reg.replace(nil)
	if _, ok := e.reg.Load(rank1); ok {
		t.Error("load kept after the worker left")
	}
	if got := e.series(t, metrics.NameKVStatsActiveBlocks); len(got) != 0 {
		t.Errorf("%s after the worker left: %v", metrics.NameKVStatsActiveBlocks, got)
	}
}

func TestLoadSubscriberKVTotalFromCard(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.reg.replace(puts(
		instanceKey("dynamo", "backend", 7), instanceValue("dynamo", "backend", 7),
		cardKey("dynamo", "backend", 7), cardValue("dynamo", "backend", 7, cardSpec{blockSize: 128, totalKVBlocks: 2000}),
	))
	u, err := decodeLoad([]byte(`{"worker_id":7,"kv_used_blocks":10}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.reg.applyLoad(u, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := e.series(t, metrics.NameKVStatsTotalBlocks)["dp_rank=0,worker_id=7"]; got != 2000 {
		t.Errorf("%s = %v, want the card's 2000", metrics.NameKVStatsTotalBlocks, got)
	}
}
