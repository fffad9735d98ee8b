package workers

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

const (
	nameRegistered = metrics.NameRouterWorkerRegistered
	nameMalformed  = metrics.NameDiscoveryMalformedTotal
	nameMismatches = metrics.NameBlockSizeMismatchesTotal
)

func TestRegistryRegistersWorkersAndCandidates(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Defaults = RuntimeDefaults{TotalKVBlocks: 100, MaxNumSeqs: 8, MaxNumBatchedTokens: 2048}
	e := newEnv(t, cfg)
	e.reg.replace(puts(
		instanceKey("dynamo", "backend", 1), instanceValue("dynamo", "backend", 1),
		cardKey("dynamo", "backend", 1), cardValue("dynamo", "backend", 1, cardSpec{blockSize: 128, totalKVBlocks: 5000, maxNumSeqs: 64, maxNumBatchedTokens: 8192, dpStart: 2, dpSize: 3}),
		instanceKey("dynamo", "prefill", 0x2b), instanceValue("dynamo", "prefill", 0x2b),
	))

	s := e.reg.Snapshot()
	want := []Worker{
		{ID: 1, Type: TypeDecode, Namespace: "dynamo", Component: "backend", DPStart: 2, DPSize: 3, BlockSize: 128,
			TotalKVBlocks: 5000, MaxNumSeqs: 64, MaxNumBatchedTokens: 8192, HasCard: true, Model: "Qwen/Qwen3-0.6B"},
		{ID: 0x2b, Type: TypePrefill, Namespace: "dynamo", Component: "prefill", DPSize: 1, BlockSize: 128,
			TotalKVBlocks: 100, MaxNumSeqs: 8, MaxNumBatchedTokens: 2048},
	}
	if diff := cmp.Diff(want, s.Workers()); diff != "" {
		t.Fatalf("Workers() (-want +got):\n%s", diff)
	}
	if s.Version() == 0 {
		t.Error("Version() = 0 after a change")
	}
	if w, ok := s.Get(0x2b); !ok || w.Type != TypePrefill {
		t.Errorf("Get(0x2b) = %+v, %v", w, ok)
	}
	if _, ok := s.Get(99); ok {
		t.Error("Get(99) found an unregistered worker")
	}

	var decode []indexer.Worker
	for _, c := range s.Candidates(TypeDecode) {
		decode = append(decode, c.Worker)
		if c.TotalKVBlocks != 5000 || c.MaxNumBatchedTokens != 8192 || c.Type != TypeDecode || c.BlockSizeMismatch {
			t.Errorf("decode candidate %+v does not carry its worker's card", c)
		}
	}
	wantDecode := []indexer.Worker{{ID: 1, DPRank: 2}, {ID: 1, DPRank: 3}, {ID: 1, DPRank: 4}}
	if diff := cmp.Diff(wantDecode, decode); diff != "" {
		t.Errorf("Candidates(TypeDecode) (-want +got):\n%s", diff)
	}
	if got := s.Candidates(TypePrefill); len(got) != 1 || got[0].Worker != (indexer.Worker{ID: 0x2b}) {
		t.Errorf("Candidates(TypePrefill) = %+v", got)
	}
	if got := s.Candidates(Type(0)); got != nil {
		t.Errorf("Candidates(0) = %+v, want none", got)
	}

	wantSeries := map[string]float64{
		registeredLabels(1, 2, "decode"):     1,
		registeredLabels(1, 3, "decode"):     1,
		registeredLabels(1, 4, "decode"):     1,
		registeredLabels(0x2b, 0, "prefill"): 1,
	}
	if diff := cmp.Diff(wantSeries, e.series(t, nameRegistered)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", nameRegistered, diff)
	}
	if n := e.log.count("worker has no model card; using defaults"); n != 1 {
		t.Errorf("missing-card warnings = %d, want 1 (worker 0x2b)", n)
	}
}

func TestRegistryCardUpdates(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.reg.replace(puts(instanceKey("dynamo", "backend", 7), instanceValue("dynamo", "backend", 7)))
	if w, _ := e.reg.Snapshot().Get(7); w.HasCard || w.DPSize != 1 {
		t.Fatalf("worker without a card = %+v, want defaults", w)
	}
	v0 := e.reg.Snapshot().Version()

	// The card arrives: two ranks.
	e.reg.apply([]change{{key: cardKey("dynamo", "backend", 7), value: []byte(cardValue("dynamo", "backend", 7, cardSpec{blockSize: 128, totalKVBlocks: 900, dpSize: 2})), modRev: 10}})
	w, _ := e.reg.Snapshot().Get(7)
	if !w.HasCard || w.TotalKVBlocks != 900 || w.DPSize != 2 {
		t.Fatalf("after the card: %+v", w)
	}
	if e.reg.Snapshot().Version() <= v0 {
		t.Error("version did not increase")
	}
	if err := e.reg.applyLoad(loadUpdate{worker: indexer.Worker{ID: 7, DPRank: 1}, fields: fieldKVUsedBlocks, load: Load{KVUsedBlocks: 5}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	e.store(t, indexer.Worker{ID: 7}, 2)
	e.store(t, indexer.Worker{ID: 7, DPRank: 1}, 3)

	// The card shrinks to one rank: rank 1's series, load and blocks go.
	e.reg.apply([]change{{key: cardKey("dynamo", "backend", 7), value: []byte(cardValue("dynamo", "backend", 7, cardSpec{blockSize: 128, totalKVBlocks: 1000, dpSize: 1})), modRev: 11}})
	if diff := cmp.Diff(map[string]float64{registeredLabels(7, 0, "decode"): 1}, e.series(t, nameRegistered)); diff != "" {
		t.Errorf("%s after shrinking (-want +got):\n%s", nameRegistered, diff)
	}
	if _, ok := e.reg.Load(indexer.Worker{ID: 7, DPRank: 1}); ok {
		t.Error("load of a rank the worker no longer has is kept")
	}
	if got := len(e.series(t, metrics.NameKVStatsActiveBlocks)); got != 0 {
		t.Errorf("%d kvstats series of the old ranks remain", got)
	}
	if n0, n1 := e.size(t, indexer.Worker{ID: 7}), e.size(t, indexer.Worker{ID: 7, DPRank: 1}); n0 != 2 || n1 != 0 {
		t.Errorf("blocks of ranks 0 and 1 after shrinking: %d, %d; want 2, 0", n0, n1)
	}

	// An identical put changes nothing, not even the version.
	v1 := e.reg.Snapshot().Version()
	e.reg.apply([]change{{key: cardKey("dynamo", "backend", 7), value: []byte(cardValue("dynamo", "backend", 7, cardSpec{blockSize: 128, totalKVBlocks: 1000, dpSize: 1})), modRev: 12}})
	if got := e.reg.Snapshot().Version(); got != v1 {
		t.Errorf("version %d → %d on a put that changed nothing", v1, got)
	}

	// The card goes: defaults again, and a warning again.
	e.reg.apply([]change{{key: cardKey("dynamo", "backend", 7), deleted: true}})
	if w, _ := e.reg.Snapshot().Get(7); w.HasCard {
		t.Errorf("after deleting the card: %+v", w)
	}
	if n := e.log.count("worker has no model card; using defaults"); n != 2 {
		t.Errorf("missing-card warnings = %d, want 2 (at registration, after the delete)", n)
	}
}

// The registered series of a worker's ranks exist before the scheduler
// hears of the worker and before the snapshot holding it is published, so
// whoever sees it registered, or is routed to it, finds them; the series
// of what left go only after the scheduler let go of it.
func TestRegistrySeriesAroundPublication(t *testing.T) {
	backend := func(dpSize int) []change {
		return puts(
			instanceKey("dynamo", "backend", 7), instanceValue("dynamo", "backend", 7),
			cardKey("dynamo", "backend", 7), cardValue("dynamo", "backend", 7, cardSpec{blockSize: 128, dpSize: dpSize}),
		)
	}
	d0, d1, d2 := registeredLabels(7, 0, "decode"), registeredLabels(7, 1, "decode"), registeredLabels(7, 2, "decode")
	p0 := registeredLabels(7, 0, "prefill")
	tests := []struct {
		name           string
		before, change []change
		// atFleet is what the listener sees when it hears of the change;
		// after, what is left once the change is applied.
		atFleet, after map[string]float64
	}{
		{
			name:    "new worker",
			change:  backend(2),
			atFleet: map[string]float64{d0: 1, d1: 1},
			after:   map[string]float64{d0: 1, d1: 1},
		},
		{
			name:    "ranks grow",
			before:  backend(1),
			change:  backend(3),
			atFleet: map[string]float64{d0: 1, d1: 1, d2: 1},
			after:   map[string]float64{d0: 1, d1: 1, d2: 1},
		},
		{
			name:    "ranks shrink",
			before:  backend(2),
			change:  backend(1),
			atFleet: map[string]float64{d0: 1, d1: 1},
			after:   map[string]float64{d0: 1},
		},
		{
			name:    "type changes",
			before:  puts(instanceKey("dynamo", "prefill", 7), instanceValue("dynamo", "prefill", 7)),
			change:  puts(instanceKey("dynamo", "backend", 7), instanceValue("dynamo", "backend", 7)),
			atFleet: map[string]float64{p0: 1, d0: 1},
			after:   map[string]float64{d0: 1},
		},
		{
			name:    "worker leaves",
			before:  puts(instanceKey("dynamo", "backend", 7), instanceValue("dynamo", "backend", 7)),
			change:  []change{{key: instanceKey("dynamo", "backend", 7), deleted: true}},
			atFleet: map[string]float64{d0: 1},
			after:   map[string]float64{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, DefaultConfig())
			e.reg.replace(tt.before)
			var atFleet map[string]float64
			e.fleet.setOnChange(func(*Snapshot) { atFleet = e.series(t, nameRegistered) })
			e.reg.apply(tt.change)
			if atFleet == nil {
				t.Fatal("the fleet listener did not hear of the change")
			}
			if diff := cmp.Diff(tt.atFleet, atFleet); diff != "" {
				t.Errorf("%s when the listener heard of the change (-want +got):\n%s", nameRegistered, diff)
			}
			if diff := cmp.Diff(tt.after, e.series(t, nameRegistered)); diff != "" {
				t.Errorf("%s after the change (-want +got):\n%s", nameRegistered, diff)
			}
		})
	}
}

func TestRegistryRemovalDropsBlocksSeriesAndLoads(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.reg.replace(puts(
		instanceKey("dynamo", "backend", 1), instanceValue("dynamo", "backend", 1),
		cardKey("dynamo", "backend", 1), cardValue("dynamo", "backend", 1, cardSpec{blockSize: 128, dpSize: 2}),
		instanceKey("dynamo", "backend", 2), instanceValue("dynamo", "backend", 2),
		instanceKey("dynamo", "prefill", 3), instanceValue("dynamo", "prefill", 3),
	))
	w10, w11, w20, w30 := indexer.Worker{ID: 1}, indexer.Worker{ID: 1, DPRank: 1}, indexer.Worker{ID: 2}, indexer.Worker{ID: 3}
	for _, w := range []indexer.Worker{w10, w11, w20, w30} {
		e.store(t, w, 4)
		if err := e.reg.applyLoad(loadUpdate{worker: w, fields: fieldKVUsedBlocks, load: Load{KVUsedBlocks: 9}}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}

	// A deleted instance key removes the worker and every block of every
	// rank; the other workers keep theirs.
	e.reg.apply([]change{{key: instanceKey("dynamo", "backend", 1), deleted: true}})
	if got := ids(e.reg.Snapshot()); !cmp.Equal(got, []uint64{2, 3}) {
		t.Fatalf("workers = %v, want [2 3]", got)
	}
	for _, w := range []indexer.Worker{w10, w11} {
		if n := e.size(t, w); n != 0 {
			t.Errorf("index still holds %d blocks of removed rank %v", n, w)
		}
		if _, ok := e.reg.Load(w); ok {
			t.Errorf("load of removed rank %v kept", w)
		}
	}
	if e.size(t, w20) != 4 || e.size(t, w30) != 4 {
		t.Errorf("blocks of remaining workers: %d, %d; want 4, 4", e.size(t, w20), e.size(t, w30))
	}
	// The registry owns these per-worker families; the scheduler deletes
	// its dynamo_frontend_worker_* series itself (scheduler tests).
	for _, name := range []string{nameRegistered, metrics.NameKVStatsActiveBlocks} {
		for labels := range e.series(t, name) {
			if slices.Contains(strings.Split(labels, ","), "worker_id=1") || slices.Contains(strings.Split(labels, ","), "router_worker_id=1") {
				t.Errorf("%s{%s} outlived its worker", name, labels)
			}
		}
	}

	// A relist without worker 3 removes it too.
	e.reg.replace(puts(instanceKey("dynamo", "backend", 2), instanceValue("dynamo", "backend", 2)))
	if got := ids(e.reg.Snapshot()); !cmp.Equal(got, []uint64{2}) {
		t.Fatalf("workers after relist = %v, want [2]", got)
	}
	if n := e.size(t, w30); n != 0 {
		t.Errorf("index still holds %d blocks of worker 3", n)
	}
	if diff := cmp.Diff(map[string]float64{registeredLabels(2, 0, "decode"): 1}, e.series(t, nameRegistered)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", nameRegistered, diff)
	}
	e.sync(t)
	if got := e.idx.Workers(); !cmp.Equal(got, []indexer.Worker{w20}) {
		t.Errorf("index workers = %v, want [%v]", got, w20)
	}
}

func TestRegistryBlockSizeMismatch(t *testing.T) {
	e := newEnv(t, DefaultConfig()) // router block size 128
	list := puts(
		instanceKey("dynamo", "backend", 5), instanceValue("dynamo", "backend", 5),
		cardKey("dynamo", "backend", 5), cardValue("dynamo", "backend", 5, cardSpec{blockSize: 16, totalKVBlocks: 10}),
		instanceKey("dynamo", "backend", 6), instanceValue("dynamo", "backend", 6),
		cardKey("dynamo", "backend", 6), cardValue("dynamo", "backend", 6, cardSpec{blockSize: 128}),
	)
	e.reg.replace(list)
	w, _ := e.reg.Snapshot().Get(5)
	if !w.BlockSizeMismatch || w.BlockSize != 16 {
		t.Fatalf("worker 5 = %+v, want a mismatch at block size 16", w)
	}
	if c := e.reg.Snapshot().Candidates(TypeDecode); !c[0].BlockSizeMismatch || c[1].BlockSizeMismatch {
		t.Errorf("candidates %+v: want worker 5 untrusted, worker 6 trusted", c)
	}
	wantStatus := []Mismatch{{WorkerID: 5, WorkerType: TypeDecode, BlockSize: 16, RouterBlockSize: 128}}
	if diff := cmp.Diff(wantStatus, e.reg.Status().BlockSizeMismatches); diff != "" {
		t.Errorf("Status().BlockSizeMismatches (-want +got):\n%s", diff)
	}

	// Updates and relists do not count or log it again.
	e.reg.apply([]change{{key: cardKey("dynamo", "backend", 5), value: []byte(cardValue("dynamo", "backend", 5, cardSpec{blockSize: 16, totalKVBlocks: 20})), modRev: 50}})
	e.reg.replace(list)
	if got := e.counter(t, nameMismatches, ""); got != 1 {
		t.Errorf("%s = %v, want 1", nameMismatches, got)
	}
	if n := e.log.count("worker block size differs from the router's; its overlaps will not be trusted"); n != 1 {
		t.Errorf("mismatch logged %d times, want once", n)
	}

	// Fixed: no longer reported.
	e.reg.apply([]change{{key: cardKey("dynamo", "backend", 5), value: []byte(cardValue("dynamo", "backend", 5, cardSpec{blockSize: 128})), modRev: 51}})
	if got := e.reg.Status().BlockSizeMismatches; len(got) != 0 {
		t.Errorf("mismatches after the fix: %+v", got)
	}
	// Leaving and coming back with the wrong size again counts again: it is
	// a new registration.
	e.reg.apply([]change{{key: instanceKey("dynamo", "backend", 5), deleted: true}})
	e.reg.apply([]change{
		{key: instanceKey("dynamo", "backend", 5), value: []byte(instanceValue("dynamo", "backend", 5)), modRev: 60},
		{key: cardKey("dynamo", "backend", 5), value: []byte(cardValue("dynamo", "backend", 5, cardSpec{blockSize: 64})), modRev: 60},
	})
	if got := e.counter(t, nameMismatches, ""); got != 2 {
		t.Errorf("%s = %v after re-registration, want 2", nameMismatches, got)
	}
}

func TestRegistrySkipsMalformedEntries(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	list := puts(
		instanceKey("dynamo", "backend", 1), instanceValue("dynamo", "backend", 1),
		cardKey("dynamo", "backend", 1), cardValue("dynamo", "backend", 1, cardSpec{blockSize: 128, totalKVBlocks: 77}),
		"v1/instances/dynamo/backend/generate/not-hex", instanceValue("dynamo", "backend", 2),
		"v1/instances/dynamo/backend", `{}`,
		instanceKey("dynamo", "backend", 3), `{"type":"Endpoint","instance_id":`,
		instanceKey("dynamo", "backend", 4), instanceValue("dynamo", "backend", 4),
		cardKey("dynamo", "backend", 4), `{"card_json":{"kv_cache_block_size":"sixteen"}}`,
		// Not tracked, so neither decoded nor counted.
		instanceKey("dynamo", "router", 9), `garbage`,
		"v1/instances/dynamo/backend/health/a", `garbage`,
		"v1/instances/other/backend/generate/zz", `garbage`,
	)
	e.reg.replace(list)
	if got := ids(e.reg.Snapshot()); !cmp.Equal(got, []uint64{1, 4}) {
		t.Fatalf("workers = %v, want [1 4]", got)
	}
	if w, _ := e.reg.Snapshot().Get(4); w.HasCard {
		t.Errorf("worker 4 took its malformed card: %+v", w)
	}
	want := map[string]float64{"kind=instance": 3, "kind=model_card": 1}
	if diff := cmp.Diff(want, e.series(t, nameMalformed)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", nameMalformed, diff)
	}
	if n := e.log.count("skipping malformed discovery entry"); n != 4 {
		t.Errorf("malformed entries logged %d times, want 4", n)
	}

	// Listing the same bad revisions again counts nothing new.
	e.reg.replace(list)
	if diff := cmp.Diff(want, e.series(t, nameMalformed)); diff != "" {
		t.Errorf("%s after a relist (-want +got):\n%s", nameMalformed, diff)
	}

	// A watch put of a malformed card keeps the last good one; a later good
	// put replaces it.
	ck := cardKey("dynamo", "backend", 1)
	e.reg.apply([]change{{key: ck, value: []byte(`{"card_json":{"runtime_config":{"data_parallel_size":0}}}`), modRev: 100}})
	if w, _ := e.reg.Snapshot().Get(1); !w.HasCard || w.TotalKVBlocks != 77 {
		t.Errorf("worker 1 after a malformed card update = %+v, want its last good card", w)
	}
	if got := e.counter(t, nameMalformed, "kind=model_card"); got != 2 {
		t.Errorf("model_card malformed = %v, want 2", got)
	}
	e.reg.apply([]change{{key: ck, value: []byte(cardValue("dynamo", "backend", 1, cardSpec{blockSize: 128, totalKVBlocks: 88})), modRev: 101}})
	if w, _ := e.reg.Snapshot().Get(1); w.TotalKVBlocks != 88 {
		t.Errorf("worker 1 after a good card update = %+v", w)
	}
	// A malformed instance at a new key registers nothing; the rest works.
	e.reg.apply([]change{
		{key: instanceKey("dynamo", "prefill", 5), value: []byte(`[1,2,3]`), modRev: 102},
		{key: instanceKey("dynamo", "prefill", 6), value: []byte(instanceValue("dynamo", "prefill", 6)), modRev: 102},
	})
	if got := ids(e.reg.Snapshot()); !cmp.Equal(got, []uint64{1, 4, 6}) {
		t.Errorf("workers = %v, want [1 4 6]", got)
	}
}

func TestRegistryLoRACards(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.reg.replace(puts(
		instanceKey("dynamo", "backend", 1), instanceValue("dynamo", "backend", 1),
		cardKey("dynamo", "backend", 1)+"/adapter-a", cardValue("dynamo", "backend", 1, cardSpec{blockSize: 128, totalKVBlocks: 11}),
	))
	if w, _ := e.reg.Snapshot().Get(1); !w.HasCard || w.TotalKVBlocks != 11 {
		t.Fatalf("worker with only a LoRA card = %+v, want that card's runtime config", w)
	}
	e.reg.apply([]change{{key: cardKey("dynamo", "backend", 1), value: []byte(cardValue("dynamo", "backend", 1, cardSpec{blockSize: 128, totalKVBlocks: 22})), modRev: 9}})
	if w, _ := e.reg.Snapshot().Get(1); w.TotalKVBlocks != 22 {
		t.Errorf("worker with a base card = %+v, want the base card's runtime config", w)
	}
}

func TestRegistryWorkerUnderBothComponents(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.reg.replace(puts(
		instanceKey("dynamo", "prefill", 1), instanceValue("dynamo", "prefill", 1),
		instanceKey("dynamo", "backend", 1), instanceValue("dynamo", "backend", 1),
	))
	if w, _ := e.reg.Snapshot().Get(1); w.Type != TypeDecode {
		t.Errorf("worker under both components = %+v, want decode", w)
	}
	if n := len(e.reg.Snapshot().Candidates(TypePrefill)); n != 0 {
		t.Errorf("%d prefill candidates, want 0", n)
	}
}

func TestRegistryReadiness(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MinInitialWorkers = 2
	e := newEnv(t, cfg)
	check := func(wantReady bool, wantReason string) {
		t.Helper()
		st := e.reg.Status()
		if st.Ready != wantReady || !strings.Contains(st.Reason, wantReason) || e.reg.Ready() != wantReady {
			t.Fatalf("Status() = %+v; want ready %v, reason containing %q", st, wantReady, wantReason)
		}
	}
	check(false, "not listed")
	e.reg.etcdDown(errUnreachable)
	check(false, "etcd unreachable")

	one := puts(instanceKey("dynamo", "backend", 1), instanceValue("dynamo", "backend", 1))
	e.reg.replace(one)
	check(false, "1 of 2 initial workers")
	e.reg.apply([]change{{key: instanceKey("dynamo", "prefill", 2), value: []byte(instanceValue("dynamo", "prefill", 2)), modRev: 5}})
	check(true, "")

	// The minimum is for the start only: losing a worker later keeps the
	// registry ready.
	e.reg.apply([]change{{key: instanceKey("dynamo", "prefill", 2), deleted: true}})
	check(true, "")

	// etcd down: still ready, last workers still served
	// (TestRegistryStaleness covers the limit).
	e.reg.etcdDown(errUnreachable)
	check(true, "")
	if st := e.reg.Status(); st.EtcdReachable || !st.Listed || st.Workers != 1 || !strings.Contains(st.EtcdError, "etcd unreachable") {
		t.Errorf("Status() while etcd is down = %+v", st)
	}
	if got := ids(e.reg.Snapshot()); !cmp.Equal(got, []uint64{1}) {
		t.Errorf("workers while etcd is down = %v, want [1]", got)
	}
	e.reg.replace(one)
	check(true, "")
	if n := e.log.count("etcd unreachable; serving the last known workers"); n != 2 {
		t.Errorf("unreachable logged %d times, want 2 (once per outage)", n)
	}
}

func TestRegistryGolden(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.reg.replace(puts(
		instanceKey("dynamo", "backend", 9), instanceValue("dynamo", "backend", 9),
		cardKey("dynamo", "backend", 9), cardValue("dynamo", "backend", 9, cardSpec{blockSize: 128, totalKVBlocks: 1000, dpSize: 2}),
		instanceKey("dynamo", "prefill", 10), instanceValue("dynamo", "prefill", 10),
	))
	for _, msg := range []string{
		`{"worker_id":9,"data":{"worker_stats":{"data_parallel_rank":1,"request_active_slots":2,"request_total_slots":8,"num_requests_waiting":0},"kv_stats":{"kv_active_blocks":100,"kv_total_blocks":1000,"gpu_cache_usage_perc":0.1,"gpu_prefix_cache_hit_rate":0.5}}}`,
		`{"worker_id":10,"dp_rank":0,"kv_used_blocks":7}`,
	} {
		u, err := decodeLoad([]byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.reg.applyLoad(u, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	families := []string{nameRegistered, metrics.NameKVStatsActiveBlocks, metrics.NameKVStatsTotalBlocks,
		metrics.NameKVStatsGPUCacheUsagePercent, metrics.NameKVStatsGPUPrefixCacheHitRate, nameMismatches, nameMalformed}
	e.checkGolden(t, "registered.prom", families...)

	e.reg.replace(nil)
	e.checkGolden(t, "all_removed.prom", families...)
}

func TestRegistryConcurrentUse(t *testing.T) {
	e := newEnv(t, DefaultConfig())
	e.reg.replace(nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s := e.reg.Snapshot()
				for _, c := range s.Candidates(TypeDecode) {
					if _, ok := s.Get(c.Worker.ID); !ok {
						t.Errorf("candidate %v not in its snapshot", c.Worker)
						return
					}
					e.reg.Load(c.Worker)
				}
				e.w.Submit(indexer.Event{Worker: indexer.Worker{ID: indexer.WorkerID(i % 8)}, Kind: indexer.KindCleared}, uint64(i+1))
				if g == 0 {
					_ = e.reg.Status()
				}
				u := loadUpdate{worker: indexer.Worker{ID: indexer.WorkerID(i % 8)}, fields: fieldKVUsedBlocks, load: Load{KVUsedBlocks: i}}
				_ = e.reg.applyLoad(u, time.Now())
			}
		})
	}
	for i := range 200 {
		id := uint64(i % 8)
		if i%3 == 2 {
			e.reg.apply([]change{{key: instanceKey("dynamo", "backend", id), deleted: true}})
			continue
		}
		e.reg.apply([]change{
			{key: instanceKey("dynamo", "backend", id), value: []byte(instanceValue("dynamo", "backend", id)), modRev: int64(i)},
			{key: cardKey("dynamo", "backend", id), value: []byte(cardValue("dynamo", "backend", id, cardSpec{blockSize: 128, dpSize: 1 + i%3})), modRev: int64(i)},
		})
	}
	close(stop)
	wg.Wait()
	// Every series belongs to a registered rank.
	s := e.reg.Snapshot()
	for labels := range e.series(t, metrics.NameKVStatsActiveBlocks) {
		var id, rank int
		if _, err := fmt.Sscanf(labels, "dp_rank=%d,worker_id=%d", &rank, &id); err != nil {
			t.Fatal(err)
		}
		if w, ok := s.Get(indexer.WorkerID(id)); !ok || !w.HasRank(indexer.DPRank(rank)) {
			t.Errorf("kvstats series %s outlived its rank", labels)
		}
	}
}
