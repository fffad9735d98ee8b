package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kvrouter/router/blockhash"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/metrics"
)

// batchOpts compare batches: nil and empty slices alike, NaN timestamps alike, the intern table
// left out.
var batchOpts = cmp.Options{cmpopts.EquateEmpty(), cmpopts.EquateNaNs(), cmpopts.IgnoreUnexported(EngineBatch{})}

// specFile reads one of the documented examples of docs/compat.md §11.8.
func specFile(t testing.TB, name string) []byte {
	t.Helper()
	return readHex(t, filepath.Join(engineDir, name+".hex"))
}

func mustConverter(t testing.TB, blockSize int) *EngineConverter {
	t.Helper()
	c, err := NewEngineConverter(blockSize)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEngineSpecExamples: the worked examples of docs/compat.md §11.8, in
// both encodings, decode to the documented events, and convert to blocks
// named by the documented engine hashes and Dynamo tokens hashes.
func TestEngineSpecExamples(t *testing.T) {
	const (
		hash1, hash2     = 1882140585328457242, 15284023028817948126
		tokens1, tokens2 = 14643705804678351452, 16777012769546811212
	)
	stored := EngineEvent{Kind: indexer.KindStored, Hashes: []uint64{hash1, hash2}, TokenIDs: []uint32{1, 2, 3, 4, 5, 6, 7, 8},
		BlockSize: 4, Medium: "GPU", HasGroup: true, SpecKind: "full_attention"}
	removed := EngineEvent{Kind: indexer.KindRemoved, Hashes: []uint64{hash2}, Medium: "GPU", HasGroup: true}
	cleared := EngineEvent{Kind: indexer.KindCleared}
	batch := func(ev EngineEvent) EngineBatch {
		return EngineBatch{TS: 1767225600.5, HasDPRank: true, Events: []EngineEvent{ev}}
	}
	rank := indexer.Worker{ID: 9, DPRank: 0}
	tests := []struct {
		files []string
		want  EngineBatch
		index indexer.Event
	}{
		{[]string{"vllm_spec_stored", "vllm_spec_legacy_stored"}, batch(stored), indexer.Event{Worker: rank, Kind: indexer.KindStored,
			Blocks: []indexer.Block{{Hash: hash1, Tokens: tokens1}, {Hash: hash2, Tokens: tokens2}}}},
		{[]string{"vllm_spec_removed", "vllm_spec_legacy_removed"}, batch(removed), indexer.Event{Worker: rank, Kind: indexer.KindRemoved,
			Removed: []indexer.BlockHash{hash2}}},
		{[]string{"vllm_spec_cleared", "vllm_spec_legacy_cleared"}, batch(cleared), indexer.Event{Worker: rank, Kind: indexer.KindCleared}},
	}
	conv := mustConverter(t, 4)
	for _, tt := range tests {
		for _, name := range tt.files {
			t.Run(name, func(t *testing.T) {
				var got EngineBatch
				if err := DecodeEngineBatch(specFile(t, name), &got); err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, got, batchOpts); diff != "" {
					t.Fatalf("batch (-want +got):\n%s", diff)
				}
				var ev indexer.Event
				apply, o := conv.Convert(&got.Events[0], rank, &ev)
				if !apply || o != OutcomeOK {
					t.Fatalf("Convert = %v, %v; want applied whole", apply, o)
				}
				if diff := cmp.Diff(tt.index, ev, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("index event (-want +got):\n%s", diff)
				}
			})
		}
	}
	// The LoRA check: block 1..4 under sql-lora.
	t.Run("lora", func(t *testing.T) {
		var got EngineBatch
		if err := DecodeEngineBatch(specFile(t, "vllm_lora"), &got); err != nil {
			t.Fatal(err)
		}
		var ev indexer.Event
		apply, o := conv.Convert(&got.Events[0], rank, &ev)
		want := []indexer.Block{{Hash: 3238220789867815757, Tokens: 19676506188544538}}
		if !apply || o != OutcomeOK || !cmp.Equal(ev.Blocks, want) {
			t.Errorf("Convert = %v, %v, %v; want %v applied whole", apply, o, ev.Blocks, want)
		}
	})
}

// TestDecodeEngineBatch decodes the batch and event shapes the engines
// publish and some the spec only allows.
func TestDecodeEngineBatch(t *testing.T) {
	cleared := EngineEvent{Kind: indexer.KindCleared}
	tests := []struct {
		name string
		in   any // a value to encode, or []byte as is
		want EngineBatch
	}{
		{name: "two-element batch", in: mpArr{1.5, mpArr{mpArr{"AllBlocksCleared"}}},
			want: EngineBatch{TS: 1.5, Events: []EngineEvent{cleared}}},
		{name: "nil rank, extra batch elements", in: mpArr{nil, mpArr{}, nil, "future", mpMap{"x": 1}}},
		{name: "integer timestamps", in: mpArr{-3, mpArr{}, 4294967295}, want: EngineBatch{TS: -3, DPRank: 4294967295, HasDPRank: true}},
		{name: "float32 timestamp", in: []byte{0x92, 0xca, 0x3f, 0xc0, 0x00, 0x00, 0x90}, want: EngineBatch{TS: 1.5}},
		{name: "map batch, vLLM's rank", in: mpMap{"events": mpArr{}, "data_parallel_rank": 2, "other": mpArr{1}},
			want: EngineBatch{DPRank: 2, HasDPRank: true}},
		{name: "map batch, nil rank", in: mpMap{"ts": 2.0, "events": mpArr{}, "attn_dp_rank": nil}, want: EngineBatch{TS: 2}},
		{name: "tag last in a map event, unknown keys",
			in:   mpArr{0.0, mpArr{mpMap{"block_hashes": mpArr{1}, "medium": "GPU", "zz": mpMap{"a": mpArr{}}, "type": "BlockRemoved"}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindRemoved, Hashes: []uint64{1}, Medium: "GPU"}}}},
		{name: "nil fields",
			in: mpArr{0.0, mpArr{mpMap{"type": "BlockStored", "block_hashes": nil, "parent_block_hash": nil, "token_ids": nil, "block_size": nil,
				"lora_id": nil, "medium": nil, "lora_name": nil, "extra_keys": nil, "group_idx": nil, "kv_cache_spec_kind": nil, "metadata": nil}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindStored}}}},
		{name: "short legacy store, extra positions ignored",
			in: mpArr{0.0, mpArr{mpArr{"BlockStored", mpArr{5}}, mpArr{"BlockRemoved", mpArr{6}, "cpu", 0, "future", mpArr{1}}, mpArr{"AllBlocksCleared", 1, 2}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindStored, Hashes: []uint64{5}},
				{Kind: indexer.KindRemoved, Hashes: []uint64{6}, Medium: "cpu", HasGroup: true}, cleared}}},
		{name: "hash forms",
			in:   mpArr{0.0, mpArr{mpArr{"BlockRemoved", mpArr{0, -1, uint64(1) << 63, []byte{1, 2, 3}, bytes.Repeat([]byte{0xab}, 9)}}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindRemoved, Hashes: []uint64{0, math.MaxUint64, 1 << 63, 0x010203, 0xabababababababab}}}}},
		{name: "tagged BlockStoredWithMetadata",
			in: mpArr{0.0, mpArr{mpArr{"BlockStoredWithMetadata", mpArr{1}, 7, mpArr{1, 2}, 2, nil, "GPU", mpMap{"cache_salt": "s", "x": 1}}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindStored, Hashes: []uint64{1}, HasParent: true, Parent: 7, TokenIDs: []uint32{1, 2},
				BlockSize: 2, Medium: "GPU", Opaque: true}}}},
		{name: "metadata key in a map event, empty salt",
			in:   mpArr{0.0, mpArr{mpMap{"type": "BlockStored", "block_hashes": mpArr{1}, "metadata": mpMap{"cache_salt": ""}}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindStored, Hashes: []uint64{1}}}}},
		{name: "cache_salt of a map event",
			in:   mpArr{0.0, mpArr{mpMap{"type": "BlockStored", "block_hashes": mpArr{1}, "cache_salt": "t"}, mpMap{"type": "BlockStored", "cache_salt": nil}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindStored, Hashes: []uint64{1}, Opaque: true}, {Kind: indexer.KindStored}}}},
		{name: "extra keys: nil, empty, the LoRA name, then a cache salt",
			in: mpArr{0.0, mpArr{mpMap{"type": "BlockStored", "block_hashes": mpArr{1, 2, 3, 4, 5}, "lora_name": "a",
				"extra_keys": mpArr{nil, mpArr{}, mpArr{"a", nil}, mpMap{"type": "lora", "name": "a"}, mpArr{"salt"}}}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindStored, Hashes: []uint64{1, 2, 3, 4, 5}, LoraName: "a", Opaque: true, OpaqueFrom: 4}}}},
		{name: "extra keys read after a later lora_name",
			in:   mpArr{0.0, mpArr{mpMap{"type": "BlockStored", "block_hashes": mpArr{1}, "extra_keys": mpArr{mpArr{"zz-lora"}}, "lora_name": "zz-lora"}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindStored, Hashes: []uint64{1}, LoraName: "zz-lora"}}}},
		{name: "extra keys: a name without lora_name is opaque",
			in:   mpArr{0.0, mpArr{mpMap{"type": "BlockStored", "block_hashes": mpArr{1}, "extra_keys": mpArr{"a"}}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindStored, Hashes: []uint64{1}, Opaque: true}}}},
		{name: "extra keys: a tagged lora struct of another name, a number",
			in: mpArr{0.0, mpArr{
				mpMap{"type": "BlockStored", "lora_name": "a", "extra_keys": mpArr{mpArr{mpMap{"type": "lora", "name": "b"}}}},
				mpMap{"type": "BlockStored", "lora_name": "a", "extra_keys": mpArr{nil, 5}}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindStored, LoraName: "a", Opaque: true},
				{Kind: indexer.KindStored, LoraName: "a", Opaque: true, OpaqueFrom: 1}}}},
		{name: "EAGLE pairs keep only the kind",
			in:   mpArr{0.0, mpArr{mpArr{"BlockStored", mpArr{1}, nil, mpArr{1, mpArr{2, 3}}, 2, nil, "GPU"}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindStored, Skip: OutcomeEagle}}}},
		{name: "unknown tags",
			in:   mpArr{0.0, mpArr{mpArr{"Nope"}, mpMap{"type": "Nope", "block_hashes": "not checked"}}},
			want: EngineBatch{Events: []EngineEvent{{Skip: OutcomeUnknownTag}, {Skip: OutcomeUnknownTag}}}},
		{name: "group and spec kind",
			in:   mpArr{0.0, mpArr{mpMap{"type": "BlockRemoved", "block_hashes": mpArr{1}, "group_idx": 4294967295, "kv_cache_spec_kind": "mamba"}}},
			want: EngineBatch{Events: []EngineEvent{{Kind: indexer.KindRemoved, Hashes: []uint64{1}, HasGroup: true, GroupIdx: 4294967295, SpecKind: "mamba"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, ok := tt.in.([]byte)
			if !ok {
				in = encodeFixture(t, tt.in)
			}
			var got EngineBatch
			if err := DecodeEngineBatch(in, &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, batchOpts); diff != "" {
				t.Errorf("batch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodeEngineBatchRejects: garbage is rejected whole, with the field and
// the reason, and leaves the batch empty.
func TestDecodeEngineBatchRejects(t *testing.T) {
	good := mpArr{"BlockStored", mpArr{1}, nil, mpArr{1, 2}, 2}
	tests := []struct {
		name   string
		in     any
		field  string
		reason string
	}{
		{"nil", []byte{0xc0}, "", metrics.DecodeSchema},
		{"empty", []byte{}, "", metrics.DecodeMsgpack},
		{"invalid type byte in an event", []byte{0x92, 0x00, 0x91, 0xc1}, "events[0]", metrics.DecodeMsgpack},
		{"duplicate batch field", []byte{0x82, 0xa6, 'e', 'v', 'e', 'n', 't', 's', 0x90, 0xa6, 'e', 'v', 'e', 'n', 't', 's', 0x90}, "events", metrics.DecodeSchema},
		{"both rank names", mpMap{"events": mpArr{}, "attn_dp_rank": 1, "data_parallel_rank": 1}, "data_parallel_rank", metrics.DecodeSchema},
		{"events not an array", mpArr{0, mpMap{}}, "events", metrics.DecodeSchema},
		{"an error after a good event", mpArr{0, mpArr{good, good, mpArr{"BlockRemoved", mpArr{"x"}}}}, "events[2].block_hashes[0]", metrics.DecodeSchema},
		{"empty event array", mpArr{0, mpArr{mpArr{}}}, "events[0]", metrics.DecodeSchema},
		{"parent a string", mpArr{0, mpArr{mpArr{"BlockStored", mpArr{1}, "p"}}}, "events[0].parent_block_hash", metrics.DecodeSchema},
		{"token a float", mpArr{0, mpArr{mpArr{"BlockStored", mpArr{1}, nil, mpArr{1, 2.5}}}}, "events[0].token_ids[1]", metrics.DecodeSchema},
		{"tokens a map", mpArr{0, mpArr{mpArr{"BlockStored", mpArr{1}, nil, mpMap{}}}}, "events[0].token_ids", metrics.DecodeSchema},
		{"malformed EAGLE pair", []byte{0x92, 0x00, 0x91, 0x94, 0xab, 'B', 'l', 'o', 'c', 'k', 'S', 't', 'o', 'r', 'e', 'd', 0x90, 0xc0, 0x92, 0x92, 0x01, 0x02, 0x92, 0x01},
			"events[0].token_ids[1]", metrics.DecodeMsgpack},
		{"token array cut short after a wide token", []byte{0x92, 0x00, 0x91, 0x94, 0xab, 'B', 'l', 'o', 'c', 'k', 'S', 't', 'o', 'r', 'e', 'd', 0x91, 0x01, 0xc0, 0x93, 0xcd, 0x01, 0x02},
			"events[0].token_ids[1]", metrics.DecodeMsgpack},
		{"block size negative", mpArr{0, mpArr{mpArr{"BlockStored", mpArr{1}, nil, mpArr{}, -4}}}, "events[0].block_size", metrics.DecodeSchema},
		{"spec kind an array", mpArr{0, mpArr{mpMap{"type": "BlockRemoved", "kv_cache_spec_kind": mpArr{}}}}, "events[0].kv_cache_spec_kind", metrics.DecodeSchema},
		{"lora name an integer", mpArr{0, mpArr{mpArr{"BlockStored", mpArr{1}, nil, mpArr{}, 1, nil, nil, 3}}}, "events[0].lora_name", metrics.DecodeSchema},
		{"cache_salt an integer", mpArr{0, mpArr{mpMap{"type": "BlockStored", "cache_salt": 1}}}, "events[0].cache_salt", metrics.DecodeSchema},
		{"metadata a string", mpArr{0, mpArr{mpMap{"type": "BlockStored", "metadata": "x"}}}, "events[0].metadata", metrics.DecodeSchema},
		{"duplicate event field", []byte{0x92, 0x00, 0x91, 0x83, 0xa4, 't', 'y', 'p', 'e', 0xb0, 'A', 'l', 'l', 'B', 'l', 'o', 'c', 'k', 's', 'C', 'l', 'e', 'a', 'r', 'e', 'd',
			0xa6, 'm', 'e', 'd', 'i', 'u', 'm', 0xc0, 0xa6, 'm', 'e', 'd', 'i', 'u', 'm', 0xc0}, "events[0].medium", metrics.DecodeSchema},
		{"non-string key", []byte{0x92, 0x00, 0x91, 0x81, 0x01, 0x02}, "events[0].key", metrics.DecodeSchema},
		{"unknown tag, malformed rest", []byte{0x92, 0x00, 0x91, 0x92, 0xa1, 'X', 0xc1}, "events[0][1]", metrics.DecodeMsgpack},
		{"map count past the end", []byte{0x92, 0x00, 0x91, 0xdf, 0xff, 0xff, 0xff, 0xff}, "events[0]", metrics.DecodeMsgpack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, ok := tt.in.([]byte)
			if !ok {
				in = encodeFixture(t, tt.in)
			}
			got := EngineBatch{TS: 1, HasDPRank: true, Events: make([]EngineEvent, 3)}
			err := DecodeEngineBatch(in, &got)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("DecodeEngineBatch = %v, want a *DecodeError", err)
			}
			if de.Field != tt.field || reasonOf(de) != tt.reason {
				t.Errorf("rejected at %q for %s (%v), want %q for %s", de.Field, reasonOf(de), err, tt.field, tt.reason)
			}
			if !cmp.Equal(got, EngineBatch{}, batchOpts) {
				t.Errorf("a rejected batch left data: %+v", got)
			}
		})
	}
}

// TestEngineLimits: lists up to the limits decode, one more is too large.
func TestEngineLimits(t *testing.T) {
	ints := func(n int) mpArr {
		a := make(mpArr, n)
		for i := range a {
			a[i] = 1
		}
		return a
	}
	tests := []struct {
		name  string
		in    func(n int) any
		limit int
		field string
	}{
		{"hashes", func(n int) any { return mpArr{0, mpArr{mpArr{"BlockRemoved", ints(n)}}} }, MaxBlocksPerEvent, "events[0].block_hashes"},
		{"extra keys", func(n int) any { return mpArr{0, mpArr{mpMap{"type": "BlockStored", "extra_keys": ints(n)}}} }, MaxBlocksPerEvent, "events[0].extra_keys"},
		{"tokens", func(n int) any { return mpArr{0, mpArr{mpArr{"BlockStored", mpArr{}, nil, ints(n), 2}}} }, 2 * MaxBlocksPerEvent, "events[0].token_ids"},
		{"tokens, no block size", func(n int) any { return mpArr{0, mpArr{mpArr{"BlockStored", mpArr{}, nil, ints(n)}}} }, MaxBlocksPerEvent, "events[0].token_ids"},
		{"events", func(n int) any {
			evs := make(mpArr, n)
			for i := range evs {
				evs[i] = mpArr{"AllBlocksCleared"}
			}
			return mpArr{0, evs}
		}, MaxEventsPerBatch, "events"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b EngineBatch
			if err := DecodeEngineBatch(encodeFixture(t, tt.in(tt.limit)), &b); err != nil {
				t.Fatalf("at the limit: %v", err)
			}
			err := DecodeEngineBatch(encodeFixture(t, tt.in(tt.limit+1)), &b)
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, ErrTooLarge) || de.Field != tt.field {
				t.Fatalf("past the limit: %v, want ErrTooLarge at %s", err, tt.field)
			}
		})
	}
	big := make([]byte, MaxMessageBytes+1)
	big[0] = 0x92
	if err := DecodeEngineBatch(big, &EngineBatch{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a payload of %d bytes: %v, want ErrTooLarge", len(big), err)
	}
}

// TestDecodeEngineBatchReuse: decoding into a used batch gives what decoding
// into a new one gives, whatever came before.
func TestDecodeEngineBatchReuse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(engineDir, "*.hex"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	var used EngineBatch
	for _, prev := range files {
		for _, next := range files {
			_ = DecodeEngineBatch(readHex(t, prev), &used)
			var fresh EngineBatch
			in := readHex(t, next)
			errFresh := DecodeEngineBatch(in, &fresh)
			errUsed := DecodeEngineBatch(in, &used)
			if (errFresh == nil) != (errUsed == nil) || !cmp.Equal(fresh, used, batchOpts) {
				t.Fatalf("%s after %s: decoded into a used batch %+v (%v), into a new one %+v (%v)",
					filepath.Base(next), filepath.Base(prev), used, errUsed, fresh, errFresh)
			}
		}
	}
}

// TestEngineConvert checks the conversion rules one by one.
func TestEngineConvert(t *testing.T) {
	tokens := func(n int) []uint32 {
		s := make([]uint32, n)
		for i := range s {
			s[i] = uint32(i + 1)
		}
		return s
	}
	locals := blockhash.LocalHashesSeed(nil, tokens(12), 4, blockhash.DefaultSeed)
	loraLocals := blockhash.LocalHashesSeed(nil, tokens(12), 4, blockhash.Seed("a", ""))
	rank := indexer.Worker{ID: 3, DPRank: 1}
	stored := func(mod func(*EngineEvent)) EngineEvent {
		ev := EngineEvent{Kind: indexer.KindStored, Hashes: []uint64{101, 102, 103}, HasParent: true, Parent: 100, TokenIDs: tokens(12), BlockSize: 4, Medium: "GPU"}
		if mod != nil {
			mod(&ev)
		}
		return ev
	}
	blocks := func(locals []uint64, n int) []indexer.Block {
		var b []indexer.Block
		for i := range n {
			b = append(b, indexer.Block{Hash: indexer.BlockHash(101 + i), Tokens: indexer.LocalHash(locals[i])})
		}
		return b
	}
	storedEv := func(n int, mod func(*indexer.Event)) *indexer.Event {
		ev := &indexer.Event{Worker: rank, Kind: indexer.KindStored, HasParent: true, Parent: 100, Blocks: blocks(locals, n)}
		if mod != nil {
			mod(ev)
		}
		return ev
	}
	tests := []struct {
		name    string
		in      EngineEvent
		want    *indexer.Event // nil: not applied
		outcome Outcome
	}{
		{"stored whole", stored(nil), storedEv(3, nil), OutcomeOK},
		{"stored under a LoRA", stored(func(e *EngineEvent) { e.LoraName = "a" }),
			storedEv(3, func(e *indexer.Event) { e.Blocks = blocks(loraLocals, 3) }), OutcomeOK},
		{"more tokens than hashes", stored(func(e *EngineEvent) { e.TokenIDs = tokens(13) }), storedEv(3, nil), OutcomeOK},
		{"partial last block", stored(func(e *EngineEvent) { e.TokenIDs = tokens(11) }), storedEv(2, nil), OutcomePartialBlock},
		{"no full block", stored(func(e *EngineEvent) { e.TokenIDs = tokens(3) }), nil, OutcomePartialBlock},
		{"opaque extra keys from block 1", stored(func(e *EngineEvent) { e.Opaque, e.OpaqueFrom = true, 1 }), storedEv(1, nil), OutcomeExtraKeys},
		{"opaque extra keys from block 0", stored(func(e *EngineEvent) { e.Opaque = true }), nil, OutcomeExtraKeys},
		{"opaque extra keys past the blocks", stored(func(e *EngineEvent) { e.Opaque, e.OpaqueFrom = true, 3 }), storedEv(3, nil), OutcomeOK},
		{"the earlier cut wins", stored(func(e *EngineEvent) { e.Opaque, e.OpaqueFrom, e.TokenIDs = true, 2, tokens(5) }), storedEv(1, nil), OutcomePartialBlock},
		{"block size mismatch", stored(func(e *EngineEvent) { e.BlockSize = 16; e.TokenIDs = tokens(48) }), nil, OutcomeBlockSize},
		{"block size absent", stored(func(e *EngineEvent) { e.BlockSize = 0 }), nil, OutcomeBlockSize},
		{"no tokens: by hash", stored(func(e *EngineEvent) { e.TokenIDs, e.Medium, e.BlockSize = nil, "cpu", 0 }),
			&indexer.Event{Worker: rank, Kind: indexer.KindStored, ByHash: true, Tier: indexer.TierHost, Blocks: []indexer.Block{{Hash: 101}, {Hash: 102}, {Hash: 103}}}, OutcomeOK},
		{"stored without hashes", stored(func(e *EngineEvent) { e.Hashes = nil }), nil, OutcomeEmpty},
		{"removed", EngineEvent{Kind: indexer.KindRemoved, Hashes: []uint64{5, 6}, Medium: "Disk"},
			&indexer.Event{Worker: rank, Kind: indexer.KindRemoved, Removed: []indexer.BlockHash{5, 6}, Tier: indexer.TierDisk}, OutcomeOK},
		{"removed without hashes", EngineEvent{Kind: indexer.KindRemoved}, nil, OutcomeEmpty},
		{"removed, unknown medium", EngineEvent{Kind: indexer.KindRemoved, Hashes: []uint64{5}, Medium: "TAPE"}, nil, OutcomeUnknownMedium},
		{"cleared", EngineEvent{Kind: indexer.KindCleared, Medium: "TAPE", HasGroup: true, GroupIdx: 3}, &indexer.Event{Worker: rank, Kind: indexer.KindCleared}, OutcomeOK},
		{"skipped by the decoder", EngineEvent{Kind: indexer.KindStored, Skip: OutcomeEagle}, nil, OutcomeEagle},
		{"no kind", EngineEvent{}, nil, OutcomeUnknownTag},
		{"sliding window group", stored(func(e *EngineEvent) { e.SpecKind = "sliding_window" }), nil, OutcomeHMAGroup},
		{"group 1 without a kind", stored(func(e *EngineEvent) { e.HasGroup, e.GroupIdx = true, 1 }), nil, OutcomeHMAGroup},
		{"group 0", stored(func(e *EngineEvent) { e.HasGroup = true }), storedEv(3, nil), OutcomeOK},
		{"group 1, sink full attention", stored(func(e *EngineEvent) { e.HasGroup, e.GroupIdx, e.SpecKind = true, 1, "Sink_Full_Attention" }), storedEv(3, nil), OutcomeOK},
		{"removal in group 2", EngineEvent{Kind: indexer.KindRemoved, Hashes: []uint64{5}, HasGroup: true, GroupIdx: 2}, nil, OutcomeHMAGroup},
	}
	conv := mustConverter(t, 4)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A used dst: nothing of it may leak into the result.
			dst := indexer.Event{Worker: indexer.Worker{ID: 99}, Kind: indexer.KindRemoved, HasParent: true, Parent: 1, ByHash: true, Tier: indexer.TierExternal,
				Blocks: make([]indexer.Block, 5), Removed: make([]indexer.BlockHash, 5)}
			apply, o := conv.Convert(&tt.in, rank, &dst)
			if o != tt.outcome || apply != (tt.want != nil) {
				t.Fatalf("Convert = %v, %v; want %v, %v", apply, o, tt.want != nil, tt.outcome)
			}
			if tt.want != nil {
				if diff := cmp.Diff(*tt.want, dst, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("index event (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestEngineTiers maps every medium of docs/compat.md §11.5, in any case.
func TestEngineTiers(t *testing.T) {
	tests := map[string]indexer.Tier{
		"": indexer.TierDevice, "GPU": indexer.TierDevice, "device": indexer.TierDevice,
		"CPU": indexer.TierHost, "cpu_pinned": indexer.TierHost, "CPU_TIER1": indexer.TierHost, "Host": indexer.TierHost,
		"CPU_TIER2": indexer.TierDisk, "DISK": indexer.TierDisk, "nvme": indexer.TierDisk, "STORAGE": indexer.TierDisk,
		"EXTERNAL": indexer.TierExternal, "network": indexer.TierExternal, "REMOTE": indexer.TierExternal, "Shared": indexer.TierExternal,
	}
	for medium, want := range tests {
		if got, ok := engineTier(medium); !ok || got != want {
			t.Errorf("engineTier(%q) = %v, %v; want %v", medium, got, ok, want)
		}
	}
	for _, medium := range []string{"TAPE", "GPU ", "CPU_TIER3", "ssd"} {
		if got, ok := engineTier(medium); ok {
			t.Errorf("engineTier(%q) = %v, want unknown", medium, got)
		}
	}
}

func TestOutcomeNames(t *testing.T) {
	seen := map[string]bool{}
	for o := range NumOutcomes {
		name := o.String()
		if name == "" || seen[name] || strings.ContainsAny(name, " -(") {
			t.Errorf("outcome %d is named %q: want a distinct snake_case label", o, name)
		}
		seen[name] = true
	}
	if got := NumOutcomes.String(); got != "outcome(9)" {
		t.Errorf("NumOutcomes.String() = %q", got)
	}
}

func TestNewEngineConverter(t *testing.T) {
	for _, bs := range []int{0, -1, blockhash.MaxBlockSize + 1} {
		if _, err := NewEngineConverter(bs); !errors.Is(err, blockhash.ErrBlockSize) {
			t.Errorf("NewEngineConverter(%d) = %v, want ErrBlockSize", bs, err)
		}
	}
	if c, err := NewEngineConverter(16); err != nil || c.BlockSize() != 16 {
		t.Errorf("NewEngineConverter(16) = %v, %v", c, err)
	}
}

// TestEngineAllocs: decoding into a used batch and converting into a used
// event allocate nothing.
func TestEngineAllocs(t *testing.T) {
	conv := mustConverter(t, 4)
	for _, name := range []string{"vllm_spec_stored", "vllm_spec_legacy_stored", "vllm_lora", "sglang_stored", "vllm_mm"} {
		in := specFile(t, name)
		var (
			b   EngineBatch
			out indexer.Event
		)
		run := func() {
			if err := DecodeEngineBatch(in, &b); err != nil {
				t.Fatal(err)
			}
			for i := range b.Events {
				conv.Convert(&b.Events[i], indexer.Worker{}, &out)
			}
		}
		run()
		if n := testing.AllocsPerRun(100, run); n != 0 {
			t.Errorf("%s: %v allocations a batch, want 0", name, n)
		}
	}
}

// TestEventPlaneFrame reads hand-built frames of Dynamo's ZMQ event plane:
// the envelope inside decodes with Decode.
func TestEventPlaneFrame(t *testing.T) {
	ev := indexer.Event{Worker: indexer.Worker{ID: 7587890617371926017, DPRank: 1}, Kind: indexer.KindStored, HasParent: true, Parent: 5,
		Blocks: []indexer.Block{{Hash: 1882140585328457242, Tokens: 14643705804678351452}}}
	frame := func(version byte, envelope []byte, extra int) []byte {
		f := []byte{version, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(f[1:], uint32(len(envelope)+extra))
		return append(f, envelope...)
	}
	for _, tc := range []struct {
		name     string
		envelope []byte
	}{
		{"library-built envelope", testutil.MsgpackEnvelope(t, testutil.MsgpackRouterEvent(t, ev, 11, "device", false, false), 11, false)},
		{"hand-built envelope", testutil.AppendMsgpackEnvelope(nil, ev, 11)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := DecodeEventPlaneFrame(frame(EventPlaneVersion, tc.envelope, 0))
			if err != nil {
				t.Fatal(err)
			}
			got, meta, err := Decode(env)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(ev, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
			if meta.EventID != 11 || meta.Sequence != 11 || meta.PublisherID != 42 || !meta.Device() {
				t.Errorf("meta = %+v", meta)
			}
		})
	}
	env := testutil.AppendMsgpackEnvelope(nil, ev, 1)
	bad := []struct {
		name   string
		frame  []byte
		reason error
	}{
		{"empty", nil, ErrFrame},
		{"header only, short", []byte{1, 0, 0}, ErrFrame},
		{"version 2", frame(2, env, 0), ErrFrame},
		{"length too long", frame(EventPlaneVersion, env, 1), ErrFrame},
		{"length too short", frame(EventPlaneVersion, env, -1), ErrFrame},
		{"over the limit", []byte{1, 0xff, 0xff, 0xff, 0xff}, ErrTooLarge},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeEventPlaneFrame(tc.frame)
			var de *DecodeError
			if !errors.As(err, &de) || !errors.Is(err, tc.reason) || de.Field != "frame" || got != nil {
				t.Errorf("DecodeEventPlaneFrame = %x, %v; want a *DecodeError at frame for %v", got, err, tc.reason)
			}
		})
	}
	if env, err := DecodeEventPlaneFrame([]byte{1, 0, 0, 0, 0}); err != nil || len(env) != 0 {
		t.Errorf("an empty envelope: %x, %v", env, err)
	}
}

func TestSeqFrame(t *testing.T) {
	for _, tc := range []struct {
		frame []byte
		want  uint64
	}{
		{[]byte{0, 0, 0, 0, 0, 0, 0, 0}, 0},
		{[]byte{0, 0, 0, 0, 0, 0, 1, 2}, 258},
		{bytes.Repeat([]byte{0xff}, 8), math.MaxUint64},
	} {
		if got, err := DecodeSeqFrame(tc.frame); err != nil || got != tc.want {
			t.Errorf("DecodeSeqFrame(%x) = %d, %v; want %d", tc.frame, got, err, tc.want)
		}
	}
	for _, frame := range [][]byte{nil, make([]byte, 7), make([]byte, 9)} {
		_, err := DecodeSeqFrame(frame)
		var de *DecodeError
		if !errors.As(err, &de) || !errors.Is(err, ErrFrame) || de.Field != "seq" || !strings.Contains(err.Error(), "expected 8") {
			t.Errorf("DecodeSeqFrame(%x) = %v, want ErrFrame at seq", frame, err)
		}
	}
	if _, err := DecodeU64Frame("publisher_id", []byte{1}); err == nil || !strings.Contains(err.Error(), "publisher_id") {
		t.Errorf("DecodeU64Frame names no field: %v", err)
	}
}
